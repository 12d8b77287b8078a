"""ENSAM network components, one file each, and the build/load registry."""

from .build import build_model, load_checkpoint, save_checkpoint
from .config import ModelConfig, preset
from .ensam import Ensam
from .prompts import ClassPrompt

__all__ = [
    "ClassPrompt",
    "Ensam",
    "ModelConfig",
    "build_model",
    "load_checkpoint",
    "preset",
    "save_checkpoint",
]
