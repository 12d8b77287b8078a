"""One training example, prepared exactly as inference prepares a case: a challenge-format
box (2D box on the middle slice plus the z-range, with the organizers' jitter), a crop around
it, the size cap, padding — through ensam_infer.roi, the same code the session uses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ensam_infer.prompts import Box
from ensam_infer.roi import Roi, mask_to_network, prepare_input, size_cap
from ensam_infer.rules import challenge_box as mid_slice_box


@dataclass
class Example:
    image: torch.Tensor  # (1, D, H, W) network input
    target: torch.Tensor  # (1, D, H, W) fraction of each network voxel inside the object
    box: tuple[int, int, int, int, int, int] | None  # network coordinates
    # Box-less examples keep their full-resolution image and mask and the region the
    # network input covers, so training can move the region as inference's click_crop
    # rule does (`interaction.click_crop_region`).
    source: tuple[np.ndarray, np.ndarray, Roi] | None = None


def challenge_box(mask: np.ndarray, rng: np.random.Generator) -> Box:
    """The organizers' box: the object's z-range, and the 2D box of its middle slice widened
    by a random 0..5 voxels per side (scaled by in-plane size / 256)."""
    b = mid_slice_box(mask)
    scale = max(1.0, max(mask.shape[1:]) / 256)
    jitter = (rng.integers(0, 6, size=4) * scale).astype(int)
    h, w = mask.shape[1:]
    return Box(
        b["z_min"],
        max(0, b["z_mid_y_min"] - jitter[0]),
        max(0, b["z_mid_x_min"] - jitter[1]),
        b["z_max"],
        min(h - 1, b["z_mid_y_max"] + jitter[2]),
        min(w - 1, b["z_mid_x_max"] + jitter[3]),
    )


def training_roi(
    shape: tuple[int, int, int],
    box: Box | None,
    rng: np.random.Generator,
    max_voxels: int,
    margin_range: tuple[int, int] = (1, 63),
) -> Roi:
    """Crop around the box with a random margin per side (standing in for the other classes'
    boxes that widen the crop at inference); the whole volume when there is no box, as
    inference does for click-only cases."""
    if box is None:
        start, stop = (0, 0, 0), tuple(shape)
    else:
        lo_m = rng.integers(margin_range[0], margin_range[1] + 1, size=3)
        hi_m = rng.integers(margin_range[0], margin_range[1] + 1, size=3)
        start = tuple(int(max(0, v - m)) for v, m in zip(box.lo, lo_m, strict=True))
        stop = tuple(int(min(n, v + m + 1)) for v, m, n in zip(box.hi, hi_m, shape, strict=True))
    crop = tuple(b - a for a, b in zip(start, stop, strict=True))
    return Roi(start, stop, size_cap(crop, max_voxels))


def make_example(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    max_voxels: int,
    p_no_box: float = 0.1,
    augment: bool = True,
    p_single_slice: float = 0.0,
) -> Example:
    """`p_single_slice`: the share of objects labelled on one slice only (as lesions marked
    on their largest slice are); the image keeps the whole object."""
    if augment:
        image, mask = random_flip_permute(image, mask, rng)
    # drawn only when enabled, so the example streams of older configs stay the same
    if p_single_slice > 0 and rng.random() < p_single_slice:
        mask = single_slice(mask, rng)
    box = None if rng.random() < p_no_box else challenge_box(mask, rng)
    roi = training_roi(image.shape, box, rng, max_voxels)
    x = prepare_input(image, roi)[0]
    target = mask_to_network(mask, roi)[0]  # fraction of each network voxel in the object
    net_box = roi.box_to_network(box) if box is not None else None
    source = (image, mask, roi) if box is None else None
    return Example(x, target, net_box, source)


def single_slice(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The object on one random slice (axis 0) that holds at least a tenth of its largest
    slice's voxels, nothing elsewhere."""
    per_slice = mask.reshape(mask.shape[0], -1).sum(axis=1)
    candidates = np.flatnonzero(per_slice >= max(1, per_slice.max() // 10))
    z = int(candidates[int(rng.integers(candidates.size))])
    out = np.zeros_like(mask)
    out[z] = mask[z]
    return out


def random_flip_permute(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random axis flips and, half of the time, a random permutation of the axes (the box is
    simulated afterwards, so it always lies on a slice of the new first axis)."""
    for axis in range(3):
        if rng.random() < 0.5:
            image, mask = np.flip(image, axis), np.flip(mask, axis)
    if rng.random() < 0.5:
        order = tuple(int(a) for a in rng.permutation(3))
        image, mask = image.transpose(order), mask.transpose(order)
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)
