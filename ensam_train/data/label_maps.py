"""Atlas label maps (SynthSeg brains, KiTS19 kidneys, TCIA head-and-neck organs).

Read with SimpleITK, reoriented so the numpy axes are (z, y, x) in LPS order, cropped to
the labelled region plus a margin, downsampled (nearest neighbour) so the largest axis is
at most ``max_size`` voxels, and cached as ``.npz`` so later loads take milliseconds.
Spacings are returned in (z, y, x) order, matching the array axes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ensam_infer.volumes import VOLUME_SUFFIXES, volume_stem

from ..splits import shared_data_root

__all__ = [
    "LABEL_MAP_SUFFIXES",
    "REMAP_DATASETS",
    "default_cache_dir",
    "default_label_map_root",
    "discover_label_maps",
    "downsample_indices",
    "downsample_labels",
    "load_label_map",
    "read_label_map",
    "remap_consecutive",
]

# npz (`labels`, `spacing` z/y/x): the packed form (`ensam_train.pack`), no SimpleITK needed
LABEL_MAP_SUFFIXES = (*VOLUME_SUFFIXES, ".npz")
# datasets whose ids are sparse (FreeSurfer ids up to 530) or best made consecutive
REMAP_DATASETS = frozenset({"kits19", "synthseg"})
# bump when the processing changes, so stale cache files are not reused
_CACHE_VERSION = "v1"


def default_label_map_root() -> Path:
    """``$ENSAM_LABEL_MAPS`` if set, else ``<data root>/label_maps``."""
    env = os.environ.get("ENSAM_LABEL_MAPS")
    return Path(env) if env else shared_data_root() / "label_maps"


def default_cache_dir() -> Path:
    """``$ENSAM_CACHE_DIR`` if set, else ``~/.cache/ensam/label_maps``."""
    env = os.environ.get("ENSAM_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "ensam" / "label_maps"


def _is_label_map(p: Path) -> bool:
    return p.is_file() and p.name.endswith(LABEL_MAP_SUFFIXES)


def discover_label_maps(root: str | Path | None = None) -> dict[str, list[Path]]:
    """Label-map files under ``root``, by dataset (sub-folder name); {} if root is missing.

    Files directly in ``root`` form a dataset named after ``root`` itself.
    """
    root = Path(root) if root is not None else default_label_map_root()
    if not root.is_dir():
        return {}
    found: dict[str, list[Path]] = {}
    direct = sorted(p for p in root.iterdir() if _is_label_map(p))
    if direct:
        found[root.name] = direct
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in sub.iterdir() if _is_label_map(p))
        if files:
            found[sub.name] = files
    return found


def read_label_map(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Full-resolution labels (integer, z/y/x in LPS order) and spacing (z, y, x) in mm.

    The axes are permuted and flipped from the image direction so that, e.g., KiTS19's
    files (stored slice axis last) come out with the slice axis first.
    """
    if str(path).endswith(".npz"):  # already z/y/x with its spacing (ensam_train.pack)
        with np.load(path) as z:
            return np.ascontiguousarray(z["labels"]), np.asarray(z["spacing"], np.float64)
    import SimpleITK as sitk

    img = sitk.ReadImage(str(path))
    if img.GetDimension() != 3:
        raise ValueError(f"{path}: expected a 3D label map, got {img.GetDimension()}D")
    arr = sitk.GetArrayFromImage(img)  # (k, j, i)
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    spacing_ijk = np.asarray(img.GetSpacing(), dtype=np.float64)
    order = [0, 0, 0]
    flips = []
    spacing = np.zeros(3)
    used = set()
    for a in range(3):  # numpy axis a is sitk index axis 2 - a
        col = direction[:, 2 - a]
        phys = next(int(p) for p in np.argsort(-np.abs(col)) if int(p) not in used)
        used.add(phys)
        target = 2 - phys  # physical x, y, z -> numpy axis 2, 1, 0
        order[target] = a
        spacing[target] = spacing_ijk[2 - a]
        if col[phys] < 0:
            flips.append(target)
    arr = arr.transpose(order)
    if flips:
        arr = np.flip(arr, axis=flips)
    if arr.dtype.kind == "f":
        arr = np.rint(arr).astype(np.int32)
    return np.ascontiguousarray(arr), spacing


def downsample_indices(
    shape: tuple[int, ...], spacing: np.ndarray, max_size: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """Nearest-neighbour sample indices per axis and the new spacing for a size cap.

    Spacing-aware: the target voxel size is the largest physical extent / ``max_size``, and
    an axis is only downsampled where its voxels are finer than that (never upsampled), so
    anisotropic volumes become closer to isotropic instead of losing their thick axis.
    """
    shape_a = np.asarray(shape, dtype=np.int64)
    spacing = np.asarray(spacing, dtype=np.float64)
    if shape_a.max() <= max_size:
        return [np.arange(s) for s in shape_a], spacing.copy()
    target = float((shape_a * spacing).max()) / max_size
    new = np.minimum(shape_a, np.ceil(shape_a * spacing / target - 1e-6).astype(np.int64))
    new = np.clip(new, 1, max_size)
    idx = [
        np.minimum(((np.arange(m) + 0.5) * s / m).astype(np.int64), s - 1)
        for s, m in zip(shape_a, new, strict=True)
    ]
    return idx, spacing * shape_a / new


def downsample_labels(
    labels: np.ndarray, spacing: np.ndarray, max_size: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-neighbour downsample so the largest axis is at most ``max_size`` voxels."""
    idx, new_spacing = downsample_indices(labels.shape, spacing, max_size)
    return np.ascontiguousarray(labels[np.ix_(*idx)]), new_spacing


def remap_consecutive(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relabel the present ids to 1..K (0 stays 0); returns (labels, original ids)."""
    ids = np.unique(labels)
    if ids.size and ids.min() < 0:
        raise ValueError("negative label ids")
    fg = ids[ids != 0]
    dtype = np.uint8 if fg.size < 256 else np.uint16
    lut_size = int(ids.max()) + 1 if ids.size else 1
    lut = np.zeros(lut_size, dtype=dtype)
    lut[fg] = np.arange(1, fg.size + 1)
    return lut[labels], fg


def _crop_to_labels(labels: np.ndarray, spacing: np.ndarray, margin_mm: float) -> np.ndarray:
    """Crop to the labelled bounding box plus ``margin_mm`` (unchanged if nothing labelled)."""
    nz = [
        np.flatnonzero(np.any(labels, axis=tuple(j for j in range(3) if j != k))) for k in range(3)
    ]
    if any(a.size == 0 for a in nz):
        return labels
    sl = []
    for k, a in enumerate(nz):
        m = int(np.ceil(margin_mm / spacing[k]))
        sl.append(slice(max(int(a[0]) - m, 0), min(int(a[-1]) + 1 + m, labels.shape[k])))
    return labels[tuple(sl)]


def _cache_path(path: Path, max_size: int, cache_dir: Path) -> Path:
    name = volume_stem(path.name, LABEL_MAP_SUFFIXES) or path.name
    return cache_dir / f"{path.parent.name}__{name}__s{max_size}__{_CACHE_VERSION}.npz"


def _source_stamp(path: Path) -> np.ndarray:
    st = path.stat()
    return np.array([st.st_size, st.st_mtime_ns], dtype=np.int64)


def load_label_map(
    path: str | Path,
    max_size: int = 128,
    cache_dir: str | Path | None = None,
    *,
    use_cache: bool = True,
    remap: bool | None = None,
    crop_margin_mm: float = 20.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Downsampled label map (uint8/uint16, z/y/x) and its spacing (z, y, x), cached.

    ``remap=None`` makes ids consecutive for :data:`REMAP_DATASETS` (by folder name) and for
    any map with ids above 255; TCIA head-and-neck ids are kept (``labels.json`` names them).
    The cache key is the dataset folder, the file name and ``max_size``; a changed source
    file (size or mtime) is reprocessed. Cache writes are atomic (safe across workers).
    """
    path = Path(path)
    if path.name.endswith(".npz"):
        # Packed (ensam_train.pack): already cropped, relabelled and downsampled, at the
        # size it was packed for; only a smaller max_size changes it.
        labels, spacing = read_label_map(path)
        return downsample_labels(labels, spacing, max_size)
    cdir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cpath = _cache_path(path, max_size, cdir)
    stamp = _source_stamp(path)
    if use_cache and cpath.is_file():
        try:
            with np.load(cpath) as z:
                if np.array_equal(z["stamp"], stamp):
                    return z["labels"], z["spacing"]
        except (OSError, ValueError, KeyError):
            pass  # unreadable or stale: rebuild below
    labels, spacing = read_label_map(path)
    if crop_margin_mm is not None and crop_margin_mm >= 0:
        labels = _crop_to_labels(labels, spacing, crop_margin_mm)
    labels, spacing = downsample_labels(labels, spacing, max_size)
    if remap is None:
        remap = path.parent.name in REMAP_DATASETS or int(labels.max(initial=0)) > 255
    if remap:
        labels, orig_ids = remap_consecutive(labels)
    else:
        orig_ids = np.unique(labels)
        orig_ids = orig_ids[orig_ids != 0]
        labels = labels.astype(np.uint8 if labels.max(initial=0) < 256 else np.uint16)
    if use_cache:
        cdir.mkdir(parents=True, exist_ok=True)
        tmp = cpath.with_name(f".{cpath.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez_compressed(f, labels=labels, spacing=spacing, orig_ids=orig_ids, stamp=stamp)
        os.replace(tmp, cpath)
    return labels, spacing
