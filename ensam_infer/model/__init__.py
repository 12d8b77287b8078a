"""ENSAM network components, one file each, and the build/load registry."""

from .build import (
    INFERENCE_KEYS,
    build_model,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
    set_metadata,
)
from .config import ModelConfig, preset
from .ensam import Ensam
from .prompts import ClassPrompt

__all__ = [
    "INFERENCE_KEYS",
    "ClassPrompt",
    "Ensam",
    "ModelConfig",
    "build_model",
    "load_checkpoint",
    "preset",
    "read_metadata",
    "save_checkpoint",
    "set_metadata",
]
