"""On-the-fly training volumes: synthesized atlases, procedural shapes and real cases.

``VolumeSampler(...).sample(rng)`` returns ``(image uint8, labels int32, spacing)`` with
(z, y, x) axes and spacing in (z, y, x) order; ``pick_target`` then chooses the object to
segment. The same ``rng`` state gives the same sample.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..splits import case_files, shared_data_root
from .intensity import RealIntensity, random_intensity
from .label_maps import (
    default_label_map_root,
    discover_label_maps,
    downsample_indices,
    load_label_map,
)
from .shapes import random_shape_label_map
from .synth import random_deform, synthesize_image

__all__ = ["DEFAULT_PROBS", "SOURCES", "VolumeSampler", "load_real_case", "pick_target"]

SOURCES = ("atlas", "shapes", "real")
DEFAULT_PROBS = {"atlas": 0.6, "shapes": 0.25, "real": 0.15}


def pick_target(labels: np.ndarray, rng: np.random.Generator, min_voxels: int = 10) -> np.ndarray:
    """Boolean mask of one random object: a label with at least ``min_voxels`` voxels.

    Falls back to any present label when none is that large; raises ``ValueError`` when
    the map has no foreground.
    """
    counts = np.bincount(np.asarray(labels).ravel().astype(np.int64, copy=False))
    ids = np.flatnonzero(counts[1:] >= min_voxels) + 1
    if ids.size == 0:
        ids = np.flatnonzero(counts[1:]) + 1
    if ids.size == 0:
        raise ValueError("label map has no foreground object")
    return labels == ids[int(rng.integers(ids.size))]


def load_real_case(
    root: Path, case: str, max_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A real case of a split (image uint8, labels int32, spacing z/y/x), nearest-downsampled
    where an axis exceeds ``max_size``."""
    image_file, labels_file = case_files(root, case)
    with np.load(image_file, allow_pickle=True) as z:
        image = np.asarray(z["imgs"])
        spacing = np.asarray(z["spacing"], dtype=np.float64)
    with np.load(labels_file, allow_pickle=True) as z:
        labels = np.asarray(z["gts"])
    if image.shape != labels.shape:
        raise ValueError(f"{case}: imgs {image.shape} and gts {labels.shape} differ")
    # challenge files store spacing as (x, y, z); flip to match the (z, y, x) arrays
    spacing = spacing[::-1].copy()
    idx, spacing = downsample_indices(image.shape, spacing, max_size)
    image = np.ascontiguousarray(image[np.ix_(*idx)]).astype(np.uint8, copy=False)
    labels = np.ascontiguousarray(labels[np.ix_(*idx)]).astype(np.int32)
    return image, labels, spacing


def _compact(labels: np.ndarray) -> np.ndarray:
    """int32 labels with the present ids made consecutive 1..K (a lookup table, no sort)."""
    counts = np.bincount(labels.ravel())
    present = counts > 0
    present[0] = False
    lut = np.zeros(counts.size, dtype=np.int32)
    lut[present] = np.arange(1, int(present.sum()) + 1, dtype=np.int32)
    return lut[labels]


class VolumeSampler:
    """Mixes three sources of training volumes.

    - ``atlas``: a label map from ``label_map_root`` (a random dataset, then a random
      file), cropped around a random object to at most ``synth_size`` per axis (halved
      first when the object is larger), randomly deformed, and painted with
      :func:`synthesize_image`.
    - ``shapes``: a procedural label map (blobs, tubes, sheets, cells) painted the same way.
    - ``real``: the cases in ``real_cases`` only, split entries under ``real_root``
      (``<folder>/<case>`` → ``<real_root>/<folder>/imgs|gts/<case>.npz``, a bare ``<case>``
      → ``<real_root>/imgs|gts/<case>.npz``)
      (``None`` or empty disables the source, so evaluation cases never leak in by default),
      used as they are, nearest-downsampled when an axis exceeds ``max_size``.

    ``probs`` weights the sources (default :data:`DEFAULT_PROBS`); sources that are missing
    are skipped and the rest renormalized. A missing root is not an error unless no source
    is left. ``None`` roots mean the defaults beside the checkout (``../shared/data``).
    """

    def __init__(
        self,
        label_map_root: str | Path | None = None,
        real_root: str | Path | None = None,
        real_cases: list[str] | None = None,
        probs: dict | None = None,
        max_size: int = 128,
        *,
        synth_size: int = 96,
        min_voxels: int = 10,
        cache_dir: str | Path | None = None,
        memory_cache: int = 64,
        real_intensity: RealIntensity | None = None,
    ) -> None:
        self.max_size = int(max_size)
        self.real_intensity = real_intensity
        self.synth_size = int(min(synth_size, max_size))
        self.min_voxels = int(min_voxels)
        self.cache_dir = cache_dir
        self.memory_cache = int(memory_cache)
        self._mem: OrderedDict[tuple[str, str], tuple] = OrderedDict()

        probs = dict(DEFAULT_PROBS if probs is None else probs)
        unknown = set(probs) - set(SOURCES)
        if unknown:
            raise ValueError(f"unknown sources {sorted(unknown)}; expected some of {SOURCES}")

        lm_root = Path(label_map_root) if label_map_root is not None else default_label_map_root()
        self.atlas_files = discover_label_maps(lm_root)

        self.real_root = Path(real_root) if real_root is not None else shared_data_root()
        self.real_cases: list[str] = []
        for case in real_cases or []:
            if all(p.is_file() for p in case_files(self.real_root, case)):
                self.real_cases.append(case)
            else:
                warnings.warn(f"real case {case!r} not found under {self.real_root}", stacklevel=2)

        available = {
            "atlas": bool(self.atlas_files),
            "shapes": True,
            "real": bool(self.real_cases),
        }
        self.sources = [s for s in SOURCES if available[s] and probs.get(s, 0.0) > 0]
        if not self.sources:
            raise RuntimeError(
                "VolumeSampler has no source: no label maps under "
                f"{lm_root}, no real cases under {self.real_root}, and shapes disabled "
                f"(probs={probs})"
            )
        p = np.array([float(probs[s]) for s in self.sources])
        self.probs = p / p.sum()

    # ------------------------------------------------------------------ public
    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One training volume: ``(image uint8, labels int32, spacing (3,))``, all z/y/x.

        Retries (with the same ``rng``) until some object has ``min_voxels`` voxels.
        """
        for _ in range(10):
            source = self.sources[int(rng.choice(len(self.sources), p=self.probs))]
            image, labels, spacing = getattr(self, f"_sample_{source}")(rng)
            counts = np.bincount(labels.ravel())
            if counts.size > 1 and counts[1:].max() >= self.min_voxels:
                return image, labels, spacing
        raise RuntimeError("could not draw a volume with an object of min_voxels voxels")

    def warm_cache(self) -> int:
        """Build the on-disk cache of every atlas label map now; returns the file count."""
        n = 0
        for files in self.atlas_files.values():
            for f in files:
                load_label_map(f, self.max_size, self.cache_dir)
                n += 1
        return n

    # ------------------------------------------------------------------ sources
    def _remember(self, key: tuple[str, str], loader: Callable[[], tuple]) -> tuple:
        if key in self._mem:
            self._mem.move_to_end(key)
            return self._mem[key]
        value = loader()
        if self.memory_cache > 0:
            self._mem[key] = value
            while len(self._mem) > self.memory_cache:
                self._mem.popitem(last=False)
        return value

    def _sample_atlas(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        datasets = list(self.atlas_files)
        files = self.atlas_files[datasets[int(rng.integers(len(datasets)))]]
        path = files[int(rng.integers(len(files)))]
        labels, spacing = self._remember(
            ("atlas", str(path)), lambda: load_label_map(path, self.max_size, self.cache_dir)
        )
        labels, spacing = self._crop_block(labels, np.asarray(spacing, dtype=np.float64), rng)
        labels = _compact(random_deform(labels, rng))
        return synthesize_image(labels, rng), labels, spacing

    def _sample_shapes(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lo = min(32, self.synth_size)
        base = int(rng.integers(lo, self.synth_size + 1))
        shape = tuple(int(max(16, min(base, round(base * f)))) for f in rng.uniform(0.6, 1.2, 3))
        labels = random_shape_label_map(shape, rng)
        spacing = np.full(3, 1.0)
        return synthesize_image(labels, rng), labels.astype(np.int32, copy=False), spacing

    def _sample_real(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        case = self.real_cases[int(rng.integers(len(self.real_cases)))]
        image, labels, spacing = self._remember(("real", case), lambda: self._load_real(case))
        if self.real_intensity is not None:
            # drawn only when enabled, so the example streams of older configs stay the same
            image = random_intensity(image, rng, self.real_intensity)
        return image, labels, spacing.copy()

    def _load_real(self, case: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return load_real_case(self.real_root, case, self.max_size)

    # ------------------------------------------------------------------ helpers
    def _crop_block(
        self, labels: np.ndarray, spacing: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """A block of at most ``synth_size`` per axis around one random object.

        Synthesis cost grows with the voxel count, and training crops around one object
        anyway, so only its neighbourhood (a random 1–63 voxel margin) is kept.
        """
        counts = np.bincount(labels.ravel())
        ids = np.flatnonzero(counts[1:] >= self.min_voxels) + 1
        if ids.size == 0:
            ids = np.flatnonzero(counts[1:]) + 1
        if ids.size == 0:
            return labels, spacing
        target = int(ids[int(rng.integers(ids.size))])
        mask = labels == target
        lo = np.empty(3, dtype=np.int64)
        hi = np.empty(3, dtype=np.int64)
        for k in range(3):
            nz = np.flatnonzero(np.any(mask, axis=tuple(j for j in range(3) if j != k)))
            lo[k], hi[k] = nz[0], nz[-1] + 1
        # objects wider than a block: take every other voxel (and again) so they fit
        factor = 1
        while (hi - lo).max() / factor > self.synth_size and factor < 8:
            factor *= 2
        margins = rng.integers(1, 64, (2, 3))
        if factor > 1:
            labels = labels[::factor, ::factor, ::factor]
            spacing = spacing * factor
            lo, hi = lo // factor, -(-hi // factor)
        shape = np.asarray(labels.shape)
        start = np.maximum(lo - margins[0], 0)
        stop = np.minimum(hi + margins[1], shape)
        # over the cap: keep a window of synth_size that still contains as much object
        for k in range(3):
            if stop[k] - start[k] > self.synth_size:
                free = (stop[k] - start[k]) - self.synth_size
                lo_k = max(int(start[k]), int(hi[k]) - self.synth_size)
                hi_k = min(int(start[k]) + free, int(lo[k]))
                if hi_k >= lo_k:
                    start[k] = int(rng.integers(lo_k, hi_k + 1))
                else:
                    start[k] = int(rng.integers(start[k], start[k] + free + 1))
                stop[k] = start[k] + self.synth_size
        block = labels[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]]
        return np.ascontiguousarray(block), spacing
