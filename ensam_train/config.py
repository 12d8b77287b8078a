"""Run configuration: one JSON file per run, copied into the run folder so a resumed run
always uses the settings it started with."""

from __future__ import annotations

import copy
import json
from pathlib import Path

DEFAULTS: dict = {
    "model": {"preset": "ensam_light", "overrides": {}},
    "data": {
        "max_size": 96,
        "synth_size": 96,
        "probs": {"atlas": 0.55, "shapes": 0.25, "real": 0.2},
        "p_no_box": 0.1,
        "p_single_slice": 0.0,
        "real_split": "training",
        # random gamma / inverted contrast on real images (data.intensity.RealIntensity's
        # fields, e.g. {"p": 0.8}); null or {}: real images as they are
        "real_intensity": None,
    },
    "train": {
        "optimizer": "muon",
        "lr": 2e-3,
        "weight_decay": 1e-3,
        "warmup": 100,
        "milestones": [],
        "gamma": 0.3,
        "max_voxels": 64 * 64 * 64,
        "click_steps": [2, 3],
        # share of samples whose click steps get the previous answer as a mask, not logits
        "p_mask_prompt": 0.0,
        # share of samples whose box step gets the box itself as the dense prompt
        "p_box_prompt": 0.0,
        # box-less samples move their region after each click as inference's click_crop
        # rule does (a crop around the answer and the clicks), re-encoding the image there
        "click_crop": False,
        "accumulate": 2,
        "clip": 1.0,
        "seed": 0,
        "max_steps": 1_000_000,
        "workers": 1,
        "checkpoint_minutes": 5.0,
        "val_minutes": 20.0,
        "val_objects": 24,
        "log_every": 10,
        # every this many steps, keep the weights as snapshots/step_NNNNNN.pt (0: none), for
        # `python -m ensam_train average` (stochastic weight averaging at a constant rate)
        "snapshot_every": 0,
        # bf16 autocast on the CPU: about twice as fast where the processor has AMX/AVX512-BF16
        # (parameters, gradients and the loss stay float32); ignored on CPUs without them.
        "cpu_bf16": False,
    },
}


def merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "probs":
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(path: str | Path | None, overrides: dict | None = None) -> dict:
    cfg = DEFAULTS
    if path is not None:
        cfg = merge(cfg, json.loads(Path(path).read_text()))
    if overrides:
        cfg = merge(cfg, overrides)
    unknown = {s: set(cfg[s]) - set(DEFAULTS[s]) for s in DEFAULTS}
    bad = {s: sorted(k) for s, k in unknown.items() if k}
    if bad or set(cfg) - set(DEFAULTS):
        raise ValueError(f"unknown config keys: {bad or sorted(set(cfg) - set(DEFAULTS))}")
    return cfg
