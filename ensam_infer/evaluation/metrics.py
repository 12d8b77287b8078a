"""The challenge's scores: DSC, NSD at 2 mm, the per-step multi-class scores and the AUC.

This reproduces what the organizers' ``CVPR25_iter_eval.py`` computes after every step, with
its ``SurfaceDice.py`` (a copy of the DeepMind surface-distance code) for the per-class
numbers:

* DSC per class, averaged over the labels present in the ground truth *after dropping the
  smallest one* (``np.sort(pd.unique(gt.ravel()))[1:]``, meant to skip background 0).
  Labels that occur only in the prediction are never scored.
* NSD per class at 2 mm, DeepMind method: surface elements ("surfels") are the corners of
  the voxel grid whose 2x2x2 neighbourhood is mixed; each has an area from a marching-cubes
  lookup table scaled by the spacing; a surfel counts as overlapping when the Euclidean
  distance (in mm, per-axis spacing) to the nearest surfel of the other mask is <= 2 mm.
* If the multi-class DSC is <= 0.2 the step's NSD is set to 0 without being computed.
* The AUC is a trapezoid over the last 5 steps (the click steps), x = 0..4.

The spacing is used exactly as given: the organizers pass the npz ``spacing`` (stored in
(x, y, z) order) unchanged as the per-axis spacing of the (z, y, x) array, so callers who
want the challenge's numbers must do the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

NSD_TOLERANCE_MM = 2.0
NSD_MIN_DSC = 0.2  # at or below this multi-class DSC the organizers set NSD to 0
N_CLICK_STEPS = 5

# Surfel normals per 2x2x2 neighbourhood code, re-encoded from the DeepMind lookup table
# (google-deepmind/surface-distance, lookup_tables.py, Apache-2.0)
# (marching cubes, one normal per triangle, its length = the triangle's area for unit
# spacing). Only the area matters, so each normal is written as its absolute components
# times 8 (all are multiples of 1/8): "400 222 111" = three triangles with normals
# (0.5, 0, 0), (0.25, 0.25, 0.25), (0.125, 0.125, 0.125). Codes 0..127 are listed;
# code c and its complement 255 - c describe the same surface, so 128..255 are mirrored.
# Code bit 7 - (4a + 2b + c) is the voxel at offset (a, b, c) in the neighbourhood.
# fmt: off
_NORMALS_X8_0_127: tuple[str, ...] = (
    "", "111", "111", "220 220",                                                # 0..3
    "111", "202 202", "111 111", "400 222 111",                                 # 4..7
    "111", "111 111", "202 202", "400 222 111",                                 # 8..11
    "220 220", "400 222 111", "400 222 111", "400 400",                         # 12..15
    "111", "022 022", "111 111", "040 222 111",                                 # 16..19
    "111 111", "004 222 111", "111 111 111", "111 222 222 111",                 # 20..23
    "111 111", "022 022 111", "202 202 111", "111 333 022 202",                 # 24..27
    "111 220 220", "333 022 111 220", "400 111 222 111", "400 111 222",         # 28..31
    "111", "111 111", "022 022", "040 111 222",                                 # 32..35
    "111 111", "111 202 202", "022 022 111", "333 022 111 202",                 # 36..39
    "111 111", "111 111 111", "004 222 111", "222 222 111 111",                 # 40..43
    "111 220 220", "400 222 111 111", "022 333 111 220", "400 222 111",         # 44..47
    "220 220", "040 222 111", "040 111 222", "040 040",                         # 48..51
    "220 220 111", "333 202 111 220", "111 040 222 111", "040 222 111",         # 52..55
    "111 220 220", "040 222 111 111", "333 220 111 202", "040 222 111",         # 56..59
    "220 220 220 220", "220 220 111", "111 220 220", "220 220",                 # 60..63
    "111", "111 111", "111 111", "111 220 220",                                 # 64..67
    "022 022", "004 222 111", "022 022 111", "333 022 111 220",                 # 68..71
    "111 111", "111 111 111", "111 202 202", "400 222 111 111",                 # 72..75
    "040 222 111", "222 222 111 111", "202 333 022 111", "400 222 111",         # 76..79
    "202 202", "004 222 111", "111 202 202", "202 333 220 111",                 # 80..83
    "004 222 111", "004 004", "111 111 222 004", "111 222 004",                 # 84..87
    "202 202 111", "004 222 111 111", "202 202 202 202", "111 202 202",         # 88..91
    "202 333 220 111", "004 222 111", "111 202 202", "202 202",                 # 92..95
    "111 111", "111 111 111", "111 022 022", "040 111 222 111",                 # 96..99
    "022 022 111", "004 222 111 111", "022 022 022 022", "022 022 111",         # 100..103
    "111 111 111", "111 111 111 111", "004 222 111 111", "111 111 111",         # 104..107
    "040 222 111 111", "111 111 111", "022 022 111", "111 111",                 # 108..111
    "400 222 111", "222 111 222 111", "333 022 111 202", "040 222 111",         # 112..115
    "333 220 022 111", "111 222 004", "111 022 022", "022 022",                 # 116..119
    "400 222 111 111", "111 111 111", "202 202 111", "111 111",                 # 120..123
    "220 220 111", "111 111", "111 111", "111",                                 # 124..127
)
# fmt: on


def _build_abs_normals() -> np.ndarray:
    """(256, 4, 3) absolute normal components per code, zero rows for missing triangles."""
    table = np.zeros((256, 4, 3))
    for code, entry in enumerate(_NORMALS_X8_0_127):
        for i, triple in enumerate(entry.split()):
            table[code, i] = [int(ch) / 8.0 for ch in triple]
    table[128:] = table[127::-1]
    return table


_ABS_NORMALS = _build_abs_normals()


def surfel_area_table(spacing: Sequence[float]) -> np.ndarray:
    """Area in mm^2 of the surface inside each of the 256 neighbourhood codes.

    A normal (n0, n1, n2) of a triangle drawn in voxel units becomes
    (n0*s1*s2, n1*s0*s2, n2*s0*s1) after scaling the axes by the spacing (the cofactor
    rule), and its length is the scaled triangle's area: the DeepMind formula.
    """
    s0, s1, s2 = (float(s) for s in spacing)
    scaled = np.empty_like(_ABS_NORMALS)
    scaled[..., 0] = _ABS_NORMALS[..., 0] * s1 * s2
    scaled[..., 1] = _ABS_NORMALS[..., 1] * s0 * s2
    scaled[..., 2] = _ABS_NORMALS[..., 2] * s0 * s1
    return np.sqrt(np.sum(scaled * scaled, axis=-1)).sum(axis=-1)


def _bbox(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Tight bounding box of the non-zero voxels of a 3-D mask, or None if it is empty."""
    z = np.flatnonzero(np.any(mask, axis=(1, 2)))
    if z.size == 0:
        return None
    sub = mask[z[0] : z[-1] + 1]
    y = np.flatnonzero(np.any(sub, axis=(0, 2)))
    x = np.flatnonzero(np.any(sub, axis=(0, 1)))
    return slice(z[0], z[-1] + 1), slice(y[0], y[-1] + 1), slice(x[0], x[-1] + 1)


def _neighbour_codes(mask: np.ndarray) -> np.ndarray:
    """8-bit code of every 2x2x2 neighbourhood of voxel corners, zeros outside the mask.

    The output has one more element per axis than ``mask``: entry q looks at voxels q-1 and
    q along each axis, so the outermost corners (where a mask touching its box closes) are
    included. This equals DeepMind's ``correlate`` with the 2x2x2 kernel of weights
    128..1 on their one-voxel zero-padded crop, minus a last layer that is always code 0.
    """
    padded = np.pad(mask.astype(np.uint8), 1)
    m0, m1, m2 = (s - 1 for s in padded.shape)
    codes = np.zeros((m0, m1, m2), np.uint8)
    for a in (0, 1):
        for b in (0, 1):
            for c in (0, 1):
                codes |= padded[a : a + m0, b : b + m1, c : c + m2] << (7 - (4 * a + 2 * b + c))
    return codes


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Soerensen-Dice coefficient of two binary masks.

    Both masks empty gives NaN, as DeepMind's ``compute_dice_coefficient`` used by the
    organizers (they only score labels present in the ground truth, so it never happens
    in their loop).
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    volume_sum = int(np.count_nonzero(gt)) + int(np.count_nonzero(pred))
    if volume_sum == 0:
        return float("nan")
    intersection = int(np.count_nonzero(gt & pred))
    return 2 * intersection / volume_sum


def normalized_surface_dice(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    tolerance_mm: float = NSD_TOLERANCE_MM,
) -> float:
    """Normalized surface Dice of two binary 3-D masks, DeepMind's method.

    (surfel area of gt within ``tolerance_mm`` of pred's surface + the same for pred)
    / (total surfel area of gt + pred); distances <= tolerance count. Empty-mask cases
    follow the organizers' code: both empty -> NaN (their 0/0), one empty -> 0.0.
    Work is done on the bounding box of pred | gt plus one corner layer per side.
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if pred.ndim != 3 or pred.shape != gt.shape:
        raise ValueError(f"need two 3-D masks of one shape, got {pred.shape} and {gt.shape}")
    spacing_t = tuple(float(s) for s in spacing)
    if len(spacing_t) != 3:
        raise ValueError(f"spacing needs 3 values, got {spacing!r}")
    box = _bbox(pred | gt)
    if box is None:
        return float("nan")
    gt_codes = _neighbour_codes(gt[box])
    pred_codes = _neighbour_codes(pred[box])
    gt_border = (gt_codes != 0) & (gt_codes != 255)
    pred_border = (pred_codes != 0) & (pred_codes != 255)
    if not gt_border.any() or not pred_border.any():
        # One mask is empty: every surfel of the other one is at infinite distance.
        return 0.0
    areas = surfel_area_table(spacing_t)
    gt_areas = areas[gt_codes[gt_border]]
    pred_areas = areas[pred_codes[pred_border]]
    to_pred = ndimage.distance_transform_edt(~pred_border, sampling=spacing_t)[gt_border]
    to_gt = ndimage.distance_transform_edt(~gt_border, sampling=spacing_t)[pred_border]
    overlap = np.sum(gt_areas[to_pred <= tolerance_mm]) + np.sum(pred_areas[to_gt <= tolerance_mm])
    return float(overlap / (np.sum(gt_areas) + np.sum(pred_areas)))


def _present_labels(labels: np.ndarray) -> np.ndarray:
    """Sorted distinct values of a label map (chunked bincount for small unsigned types)."""
    if labels.dtype.kind in "bu" and labels.size and int(labels.max()) < 65536:
        present = np.zeros(int(labels.max()) + 1, dtype=bool)
        flat = labels.reshape(-1)
        step = 1 << 24  # bounded temporary: bincount casts its input to intp
        for start in range(0, flat.size, step):
            present |= np.bincount(flat[start : start + step], minlength=present.size) > 0
        return np.flatnonzero(present).astype(labels.dtype)
    return np.unique(labels)


def multiclass_scores(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> dict:
    """One evaluation step as the organizers score it.

    Returns ``{"dsc": float, "nsd": float, "per_class": {label: (dsc, nsd)}}``.

    The classes are the sorted labels of ``gt`` without the first one (assumed to be 0;
    if ``gt`` has no background voxel its smallest label is dropped, as in their code).
    ``dsc`` is the mean per-class DSC (NaN when ``gt`` has no class: their ``np.mean([])``).
    ``nsd`` is the mean per-class NSD at 2 mm when ``dsc > 0.2``, else 0.0 and the per-class
    NSDs are reported as 0.0 too (the organizers do not compute them then).
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} differ in shape")
    classes = [c.item() for c in _present_labels(gt)[1:]]
    masks = {k: (pred == k, gt == k) for k in classes}
    dscs = {k: dice(p, g) for k, (p, g) in masks.items()}
    mean_dsc = float(np.mean(list(dscs.values()))) if dscs else float("nan")
    if mean_dsc > NSD_MIN_DSC:
        nsds = {
            k: normalized_surface_dice(p, g, spacing, NSD_TOLERANCE_MM)
            for k, (p, g) in masks.items()
        }
        mean_nsd = float(np.mean(list(nsds.values())))
    else:
        nsds = dict.fromkeys(classes, 0.0)
        mean_nsd = 0.0
    return {
        "dsc": mean_dsc,
        "nsd": mean_nsd,
        "per_class": {k: (dscs[k], nsds[k]) for k in classes},
    }


def auc(values: Sequence[float]) -> float:
    """Area under a per-step score curve, the organizers' DSC/NSD AUC (at most 4.0).

    Trapezoid rule over the last 5 values with x = 0, 1, 2, 3, 4, like their
    ``cumulative_trapezoid(np.array(dscs[-5:]), np.arange(5))[-1]``. Given all 6 steps, the
    first one (the box step) is therefore dropped: the box prediction only counts through
    the clicks it leads to, and for cases without boxes (where the organizers record 0 for
    step 1) the placeholder never enters the AUC.
    """
    y = np.asarray(values, dtype=np.float64)
    if y.ndim != 1 or y.size < N_CLICK_STEPS:
        raise ValueError(f"need at least {N_CLICK_STEPS} per-step values, got {y.shape}")
    y = y[-N_CLICK_STEPS:]
    return float(np.cumsum((y[1:] + y[:-1]) / 2.0)[-1])
