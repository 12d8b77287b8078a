"""A compact copy of the training data, for a machine that has no ``../shared`` (a GPU
burst: what travels there is limited to 64 MiB).

Every anatomy label map and every training-split real case, already downsampled exactly as
the sampler downsamples them at ``max_size``, in the shared data's own layout: ``ENSAM_DATA=
DIR`` then trains on it unchanged. Label maps are written as npz (``labels``, ``spacing``
z/y/x), which the label-map reader takes, so the other machine needs no SimpleITK. The
validation split is never packed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ensam_infer.volumes import volume_stem

from .data.label_maps import LABEL_MAP_SUFFIXES, discover_label_maps, load_label_map
from .data.sampler import load_real_case
from .splits import case_files, load_split, shared_data_root


def pack_label_maps(root: Path, out: Path, max_size: int) -> int:
    """`out`/label_maps/<dataset>/<name>.npz for every label map under `root`/label_maps;
    returns the count."""
    n = 0
    for dataset, files in discover_label_maps(root / "label_maps").items():
        folder = out / "label_maps" / dataset
        folder.mkdir(parents=True, exist_ok=True)
        for path in files:
            labels, spacing = load_label_map(path, max_size)
            stem = volume_stem(path.name, LABEL_MAP_SUFFIXES)
            np.savez_compressed(folder / f"{stem}.npz", labels=labels, spacing=spacing)
            n += 1
    return n


def pack_real_cases(root: Path, out: Path, max_size: int) -> int:
    """The training split's real cases as the sampler loads them (the files keep the
    challenge's (x, y, z) spacing order); returns the count."""
    n = 0
    for case in load_split("training"):
        image_file, labels_file = case_files(root, case)
        if not (image_file.is_file() and labels_file.is_file()):
            continue
        image, labels, spacing_zyx = load_real_case(root, case, max_size)
        image_out, labels_out = case_files(out, case)
        image_out.parent.mkdir(parents=True, exist_ok=True)
        labels_out.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(image_out, imgs=image, spacing=spacing_zyx[::-1])
        np.savez_compressed(labels_out, gts=labels)
        n += 1
    return n


def pack_training_data(out: str | Path, root: str | Path | None = None, max_size: int = 96) -> dict:
    """Pack label maps and training cases from `root` (default: the shared data) into `out`."""
    root = Path(root) if root is not None else shared_data_root()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = {
        "label_maps": pack_label_maps(root, out, max_size),
        "real_cases": pack_real_cases(root, out, max_size),
    }
    counts["bytes"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return counts
