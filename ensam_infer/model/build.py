"""Build a model from a config or preset name; save and load checkpoints that carry their
config, so any weights file rebuilds its own network."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ..atomic import atomic_path
from .config import ModelConfig, preset
from .ensam import Ensam

CHECKPOINT_FORMAT = "ensam-checkpoint-v1"


def build_model(config: ModelConfig | dict | str | None = None, **overrides: object) -> Ensam:
    """Build ENSAM from a ModelConfig, a config dict or a preset name ("ensam", "ensam_light",
    "ensam_tiny"). Keyword overrides replace config fields."""
    if config is None:
        config = "ensam"
    if isinstance(config, str):
        cfg = preset(config, **overrides)
    elif isinstance(config, dict):
        cfg = ModelConfig.from_dict({**config, **overrides})
    else:
        cfg = ModelConfig.from_dict({**config.to_dict(), **overrides})
    return Ensam(cfg)


def save_checkpoint(
    model: Ensam, path: str | Path, half: bool = True, metadata: dict | None = None
) -> None:
    """Write weights (fp16 when `half`, to keep shipped files small) with the config,
    atomically: a crash never leaves a half-written checkpoint behind."""
    state = {
        k: (v.half() if half and v.is_floating_point() else v).cpu()
        for k, v in model.state_dict().items()
    }
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": model.config.to_dict(),
        "state_dict": state,
        "metadata": metadata or {},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Ensam:
    """Rebuild the network stored in `path` and load its weights (in float32)."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an ENSAM checkpoint")
    model = Ensam(ModelConfig.from_dict(payload["config"]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    model.load_state_dict(state)
    if not model.config.trained:
        warnings.warn(f"{path} holds UNTRAINED weights: its masks are meaningless", stacklevel=2)
    model.metadata = payload.get("metadata", {})
    return model.eval()


INFERENCE_KEYS = ("inference_crop", "inference_max_voxels", "inference_tta")


def read_metadata(path: str | Path) -> dict:
    """The metadata of a checkpoint ({} when it has none)."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    return dict(payload.get("metadata", {}))


def set_metadata(path: str | Path, **values: object) -> dict:
    """Update a checkpoint's metadata in place (weights untouched, written atomically), e.g.
    the inference settings it recommends (`inference_crop`, `inference_max_voxels`), which
    a session uses when the caller does not choose. A value of None removes the key."""
    path = Path(path)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an ENSAM checkpoint")
    metadata = dict(payload.get("metadata", {}))
    for key, value in values.items():
        if value is None:
            metadata.pop(key, None)
        else:
            metadata[key] = value
    payload["metadata"] = metadata
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return metadata
