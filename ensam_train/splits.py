"""The fixed training/validation split of the shared real cases, and where data lives.

A split entry is ``<folder>/<case>`` relative to the data root (``real/MR_monai_anatomical``,
``real_more/PET_STS_001_gtv``): the image is ``<root>/<folder>/imgs/<case>.npz`` and the
labels ``<root>/<folder>/gts/<case>.npz``. A bare ``<case>`` names a case directly under the
root given (``<root>/imgs/<case>.npz``)."""

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
    """The entries (``<folder>/<case>``) of the ``training`` or ``validation`` split."""
    splits = json.loads(SPLITS_FILE.read_text())
    if name not in ("training", "validation"):
        raise KeyError(f"unknown split {name!r}")
    return list(splits[name])


def case_files(root: str | Path, entry: str) -> tuple[Path, Path]:
    """The image and label npz of a split entry under `root`."""
    folder, _, case = entry.rpartition("/")
    base = Path(root) / folder if folder else Path(root)
    return base / "imgs" / f"{case}.npz", base / "gts" / f"{case}.npz"
