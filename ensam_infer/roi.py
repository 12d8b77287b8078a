"""The region the network sees, and the exact way back.

Intensities: voxels <= 0 stay 0, positive voxels map linearly to (0, 1] by the min and max of
the positive voxels. Region: the union of the boxes and clicks plus a margin (the whole volume
when there is no box; with the ``click_crop`` rule, an object without a box that already has an
answer gets a crop around that answer and its clicks, `click_crop_roi`). Size cap: max-pool
by 2 along the two largest axes while the region has more than 256*128*128 voxels. Padding
to a multiple of 8. Back: trilinear up-sampling of the logits onto the region, which is
pasted into the full volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import numpy as np
import torch
import torch.nn.functional as F

from .prompts import Box, ObjectPrompts

# pseudo-logits of a mask given as a dense prompt, where the network's own logits are not at hand
PSEUDO_LOGIT = 5.0

MAX_VOXELS = 256 * 128 * 128
MARGIN = 16
MULTIPLE = 8

# inclusive (lo, hi) voxel corners of what is known of an object
Extent = tuple[tuple[int, int, int], tuple[int, int, int]]


@dataclass(frozen=True)
class Roi:
    """Crop [start, stop) of the full volume, pooled by `pool` per axis, padded to `padded`."""

    start: tuple[int, int, int]
    stop: tuple[int, int, int]
    pool: tuple[int, int, int]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.start, self.stop, strict=True))

    @property
    def pooled(self) -> tuple[int, int, int]:
        return tuple(-(-n // f) for n, f in zip(self.shape, self.pool, strict=True))

    @property
    def padded(self) -> tuple[int, int, int]:
        return tuple(-(-n // MULTIPLE) * MULTIPLE for n in self.pooled)

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop, strict=True))

    def point_to_network(self, point: tuple[int, int, int]) -> tuple[int, int, int]:
        """Full-volume voxel → network-input voxel (the pooled cell that contains it)."""
        return tuple(
            int(min(max((p - s) // f, 0), n - 1))
            for p, s, f, n in zip(point, self.start, self.pool, self.pooled, strict=True)
        )

    def box_to_network(self, box: Box) -> tuple[int, int, int, int, int, int]:
        return (*self.point_to_network(box.lo), *self.point_to_network(box.hi))


def scale_intensity(volume: np.ndarray) -> np.ndarray:
    """Positive voxels → (0, 1] by their own min and max; the rest → 0. float32."""
    vol = volume.astype(np.float32, copy=False)
    positive = vol > 0
    out = np.zeros(vol.shape, np.float32)
    if not positive.any():
        return out
    values = vol[positive]
    lo, hi = float(values.min()), float(values.max())
    if hi > lo:
        # lo maps to a small positive value, not 0, so "positive" stays distinguishable
        # from the zero background after scaling.
        out[positive] = (values - lo) / (hi - lo) * (1.0 - 1.0 / 256) + 1.0 / 256
    else:
        out[positive] = 1.0
    return out


def size_cap(shape: tuple[int, int, int], max_voxels: int = MAX_VOXELS) -> tuple[int, int, int]:
    """Pooling factors: halve the two largest axes until the volume fits in `max_voxels`."""
    pool = [1, 1, 1]
    cur = list(shape)
    while cur[0] * cur[1] * cur[2] > max_voxels:
        order = sorted(range(3), key=lambda a: cur[a])
        for axis in order[1:]:
            pool[axis] *= 2
            cur[axis] = -(-cur[axis] // 2)
    return tuple(pool)


def roi_for_prompts(
    shape: tuple[int, int, int],
    objects: list[ObjectPrompts],
    margin: int = MARGIN,
    max_voxels: int = MAX_VOXELS,
) -> Roi:
    """The union of all boxes and clicks plus `margin`, clipped; the whole volume when no
    object has a box (click-only cases: a crop around one click would hide the object)."""
    boxes = [o.box for o in objects if o.box is not None]
    if not boxes:
        return whole_volume_roi(shape, max_voxels)
    lo = np.min([b.lo for b in boxes], axis=0)
    hi = np.max([b.hi for b in boxes], axis=0)
    points = [p for o in objects for p in o.points]
    if points:
        lo = np.minimum(lo, np.min(points, axis=0))
        hi = np.maximum(hi, np.max(points, axis=0))
    start = tuple(int(max(0, v - margin)) for v in lo)
    stop = tuple(int(min(n, v + margin + 1)) for v, n in zip(hi, shape, strict=True))
    crop_shape = tuple(b - a for a, b in zip(start, stop, strict=True))
    return Roi(start, stop, size_cap(crop_shape, max_voxels))


def whole_volume_roi(shape: tuple[int, int, int], max_voxels: int = MAX_VOXELS) -> Roi:
    """The whole volume as one region, pooled to the size cap: where box-less objects start."""
    return Roi((0, 0, 0), tuple(int(n) for n in shape), size_cap(tuple(shape), max_voxels))


def label_extents(labels: np.ndarray, ids: list[int]) -> dict[int, Extent]:
    """The bounding box of each of `ids` in the label map `labels`, for those present: one
    pass over the volume whatever the number of objects."""
    if not ids or labels.size == 0:
        return {}
    # cc3d, not scipy.ndimage: the predict path imports cc3d anyway, and scipy.ndimage would
    # add about 0.2 s to every container step
    stats = cc3d.statistics(np.ascontiguousarray(labels))
    found, counts = stats["bounding_boxes"], stats["voxel_counts"]
    out = {}
    for i in ids:
        # an absent label below the largest present one has a count of 0 and, on large
        # maps, a placeholder box rather than None
        s = found[i] if 0 < i < len(found) and counts[i] > 0 else None
        if s is not None:
            out[i] = (tuple(int(t.start) for t in s), tuple(int(t.stop) - 1 for t in s))
    return out


def click_crop_margin(extent_shape: np.ndarray) -> np.ndarray:
    """The click_crop margin per axis: max(MARGIN, half the known extent) on each side.

    What is known of a box-less object is a lower bound on its size: the first answer was
    made at the whole volume's coarse scale and may have found only part of the object.
    Half the extent per side makes the region twice the known extent along each axis, so an
    object up to twice as long as its answer showed (about its centre) is still inside; the
    floor of MARGIN gives a small object the same context as a boxed one's crop. Not tuned:
    an object that still touches the region's side moves the region out at the next step."""
    return np.maximum(MARGIN, -(-extent_shape // 2))


def click_crop_roi(
    shape: tuple[int, int, int],
    extent: Extent,
    points: list[tuple[int, int, int]],
    max_voxels: int = MAX_VOXELS,
) -> Roi | None:
    """The ``click_crop`` region of a box-less object: the bounding box of `extent` (its
    voxels in the previous answer) and all its clicks, grown by `click_crop_margin`, clipped,
    size-capped. None when it would not show the object at a finer scale than the whole
    volume (the rule's only purpose): the whole volume then stays, with its logits."""
    lo, hi = np.array(extent[0]), np.array(extent[1])
    if points:
        lo = np.minimum(lo, np.min(points, axis=0))
        hi = np.maximum(hi, np.max(points, axis=0))
    margin = click_crop_margin(hi - lo + 1)
    start = tuple(int(v) for v in np.maximum(0, lo - margin))
    stop = tuple(int(v) for v in np.minimum(shape, hi + margin + 1))
    crop_shape = tuple(b - a for a, b in zip(start, stop, strict=True))
    roi = Roi(start, stop, size_cap(crop_shape, max_voxels))
    if np.prod(roi.pool) >= np.prod(size_cap(tuple(shape), max_voxels)):
        return None
    return roi


def object_regions(
    shape: tuple[int, int, int],
    objects: dict[int, ObjectPrompts],
    crop: str,
    max_voxels: int = MAX_VOXELS,
    known: dict[int, Extent] | None = None,
) -> dict[int, Roi]:
    """The network input region of each object: its own (`crop` "object") or the union of
    all objects' prompts ("union"). `known` (the ``click_crop`` rule): the extent of
    box-less objects in the previous answer; those get `click_crop_roi` instead of the
    whole volume (in "union" mode only when no object has a box, so boxed objects never
    see their region change)."""
    known = known or {}
    if crop == "object":
        return {i: _object_region(shape, o, known.get(i), max_voxels) for i, o in objects.items()}
    union = roi_for_prompts(shape, list(objects.values()), max_voxels=max_voxels)
    if objects and all(o.box is None and i in known for i, o in objects.items()):
        lo = tuple(int(v) for v in np.min([known[i][0] for i in objects], axis=0))
        hi = tuple(int(v) for v in np.max([known[i][1] for i in objects], axis=0))
        points = [p for o in objects.values() for p in o.points]
        union = click_crop_roi(shape, (lo, hi), points, max_voxels) or union
    return dict.fromkeys(objects, union)


def _object_region(
    shape: tuple[int, int, int], obj: ObjectPrompts, extent: Extent | None, max_voxels: int
) -> Roi:
    """One object's own region: its click crop when it has no box and a known extent and
    the crop is finer than the whole volume, else its prompts' region."""
    if obj.box is None and extent is not None:
        roi = click_crop_roi(shape, extent, obj.points, max_voxels)
        if roi is not None:
            return roi
    return roi_for_prompts(shape, [obj], max_voxels=max_voxels)


def prepare_input(volume: np.ndarray, roi: Roi) -> torch.Tensor:
    """Crop, scale, pool and pad: the network input (1, 1, D, H, W) in [0, 1]."""
    crop = torch.from_numpy(scale_intensity(volume[roi.slices]))[None, None]
    return _pool_and_pad(crop, roi, F.max_pool3d).contiguous()


def _pool_and_pad(crop: torch.Tensor, roi: Roi, pool: object) -> torch.Tensor:
    """Crop-shaped (1, 1, *roi.shape) → network space (1, 1, *roi.padded) with `pool`
    (max for intensities, average for masks)."""
    x = crop
    if roi.pool != (1, 1, 1):
        # Pad to a multiple of the pooling factor first so every pooled cell covers exactly
        # `pool` voxels: that keeps the inverse mapping exact.
        pad = [(-n) % f for n, f in zip(roi.shape, roi.pool, strict=True)]
        x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]))
        x = pool(x, kernel_size=roi.pool, stride=roi.pool)
    pad = [p - n for p, n in zip(roi.padded, roi.pooled, strict=True)]
    return F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]))


def logits_to_roi(logits: torch.Tensor, roi: Roi) -> torch.Tensor:
    """Network logits (B, 1, *padded) → logits on the crop (B, *roi.shape), float32."""
    d, h, w = roi.pooled
    x = logits[:, :, :d, :h, :w].float()
    if roi.pool != (1, 1, 1):
        size = tuple(n * f for n, f in zip(roi.pooled, roi.pool, strict=True))
        x = F.interpolate(x, size=size, mode="trilinear", align_corners=False)
        x = x[:, :, : roi.shape[0], : roi.shape[1], : roi.shape[2]]
    return x[:, 0]


def logits_to_subregion(
    logits: torch.Tensor, roi: Roi, sub: tuple[slice, slice, slice]
) -> torch.Tensor:
    """`logits_to_roi(logits, roi)[:, *sub]` without up-sampling the rest of the region:
    only the pooled cells under `sub` and one cell around them (all that trilinear
    interpolation reads there) are up-sampled. `sub`: slices of the region's crop, with
    explicit bounds inside it."""
    lo = [max(0, s.start // f - 1) for s, f in zip(sub, roi.pool, strict=True)]
    hi = [min(n, (s.stop - 1) // f + 2) for s, f, n in zip(sub, roi.pool, roi.pooled, strict=True)]
    block = logits[:, :, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].float()
    if roi.pool != (1, 1, 1):
        size = tuple((b - a) * f for a, b, f in zip(lo, hi, roi.pool, strict=True))
        block = F.interpolate(block, size=size, mode="trilinear", align_corners=False)
    inner = tuple(
        slice(s.start - a * f, s.stop - a * f) for s, a, f in zip(sub, lo, roi.pool, strict=True)
    )
    return block[(slice(None), 0, *inner)]


def mask_to_network(mask: np.ndarray, roi: Roi) -> torch.Tensor:
    """A full-volume binary mask in network space (1, 1, *padded): the fraction of each
    pooled cell that it covers (training targets, pseudo-logits)."""
    m = torch.from_numpy(np.ascontiguousarray(mask[roi.slices])).float()[None, None]
    return _pool_and_pad(m, roi, F.avg_pool3d)


def mask_to_network_logits(mask: np.ndarray, roi: Roi, value: float = PSEUDO_LOGIT) -> torch.Tensor:
    """A binary full-volume mask as pseudo-logits in network space (1, 1, *padded): used when
    the real previous logits are unavailable (lost cache, changed crop)."""
    return (mask_to_network(mask, roi) * 2 - 1) * value
