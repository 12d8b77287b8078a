"""Stochastic weight averaging: the mean of snapshots taken along one run at a constant
learning rate (or of runs that share a starting point) lies nearer the middle of the basin
they wander in than any one of them, which tends to generalize better than the last step.

The nGPT transformer keeps its matrices on the unit sphere; a mean of unit vectors is shorter
than one, so the average is re-normalized as after an optimizer step.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ensam_infer.model import Ensam, load_checkpoint, save_checkpoint


def average_weights(paths: list[str | Path]) -> Ensam:
    """The mean of the checkpoints' floating-point tensors (integer buffers from the last),
    re-normalized; the checkpoints must share one network config."""
    if not paths:
        raise ValueError("no checkpoints to average")
    models = [load_checkpoint(p) for p in paths]
    config = models[0].config.to_dict()
    for path, model in zip(paths, models, strict=True):
        if model.config.to_dict() != config:
            raise ValueError(f"{path} has another network config than {paths[0]}")
    states = [m.state_dict() for m in models]
    mean = {
        key: torch.stack([s[key] for s in states]).mean(0) if value.is_floating_point() else value
        for key, value in states[-1].items()
    }
    out = models[-1]
    out.load_state_dict(mean)
    out.renormalize_()
    return out


def write_average(paths: list[str | Path], out: str | Path) -> Ensam:
    """Average `paths` into the inference checkpoint `out` (fp16), with the last one's
    metadata and the list of what went in."""
    model = average_weights(paths)
    model.config.trained = True
    metadata = {**model.metadata, "averaged": [str(p) for p in paths]}
    save_checkpoint(model, out, metadata=metadata)
    return model
