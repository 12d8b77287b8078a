"""The fixed training/validation split of the shared real cases, and where data lives."""

from __future__ import annotations

import json
import os
from pathlib import Path

SPLITS_FILE = Path(__file__).with_name("splits.json")


def shared_data_root() -> Path:
    """ENSAM_DATA if set, else ../shared/data beside the repository."""
    env = os.environ.get("ENSAM_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def load_split(name: str) -> list[str]:
    splits = json.loads(SPLITS_FILE.read_text())
    if name not in ("training", "validation"):
        raise KeyError(f"unknown split {name!r}")
    return list(splits[name])
