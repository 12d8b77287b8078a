"""The interaction loop of one training sample, as the challenge runs it: a box step (or a
first click when there is no box), then click steps at the deepest point of the largest
error, clicks accumulating, the previous logits (detached) as the dense prompt. The encoder
runs once (again each time a box-less sample's region moves, with `click_crop`); the loss
(soft Dice + BCE) is summed over the steps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ensam_infer.evaluation.clicks import simulate_click
from ensam_infer.model import ClassPrompt, Ensam
from ensam_infer.roi import (
    PSEUDO_LOGIT,
    Roi,
    click_crop_roi,
    logits_to_roi,
    mask_to_network,
    mask_to_network_logits,
    prepare_input,
)
from ensam_infer.rules import box_prior_logits

from .example import Example


def dice_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice + binary cross-entropy for one object (any shape)."""
    logits = logits.float()
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum()
    dice = 1 - (2 * inter + 1) / (prob.sum() + target.sum() + 1)
    return dice + F.binary_cross_entropy_with_logits(logits, target)


def hard_dice(logits: torch.Tensor, target: torch.Tensor) -> float:
    pred = logits > 0
    gt = target > 0.5
    denom = int(pred.sum() + gt.sum())
    return 1.0 if denom == 0 else 2.0 * int((pred & gt).sum()) / denom


def next_click(logits: torch.Tensor, target: torch.Tensor) -> tuple[np.ndarray, bool] | None:
    """The organizers' click rule applied in network space."""
    pred = (logits.detach() > 0).cpu().numpy()[0]
    gt = (target > 0.5).cpu().numpy()[0]
    found = simulate_click(pred, gt)
    if found is None:
        return None
    point, positive = found
    return np.asarray(point, np.float32), bool(positive)


@dataclass
class Region:
    """Where a box-less sample's network input lies, and its clicks in full-volume voxels."""

    roi: Roi
    clicks: list[tuple[int, int, int]]


def click_to_volume(point: np.ndarray, roi: Roi) -> tuple[int, int, int]:
    """A network-space click → the full-volume voxel at the centre of its pooled cell."""
    return tuple(
        int(min(a + int(p) * f + f // 2, b - 1))
        for p, a, b, f in zip(point, roi.start, roi.stop, roi.pool, strict=True)
    )


def click_crop_region(
    logits: torch.Tensor, region: Region, source: tuple, max_voxels: int
) -> tuple[Roi, torch.Tensor] | None:
    """Inference's click_crop rule on a training sample: the region around the current
    answer and the clicks, and the answer there as pseudo-logits (what the session gives an
    object whose region moved). None when the region stays."""
    image, mask, _ = source
    answer = (logits_to_roi(logits.detach().cpu()[None], region.roi)[0] > 0).numpy()
    full = np.zeros(mask.shape, bool)
    full[region.roi.slices] = answer
    where = np.argwhere(full)
    if not len(where):
        return None
    extent = (tuple(where.min(axis=0)), tuple(where.max(axis=0)))
    roi = click_crop_roi(mask.shape, extent, region.clicks, max_voxels)
    if roi is None or roi == region.roi:
        return None
    return roi, mask_to_network_logits(full, roi)


def run_interaction(
    model: Ensam,
    example: Example,
    click_steps: int,
    device: torch.device,
    mask_prompt: bool = False,
    box_prompt: bool = False,
    click_crop_voxels: int = 0,
) -> tuple[torch.Tensor, list[float]]:
    """Loss summed over the steps, and the hard Dice after each step.

    `mask_prompt`: the dense prompt of each click step is the previous answer as a mask
    (pseudo-logits of +-PSEUDO_LOGIT), not its logits: what inference gives the network
    when an object's crop changed or its cached logits are gone.
    `box_prompt`: the box step's dense prompt is the box itself as pseudo-logits (inference's
    `box_prior` rule), so the network learns to correct the box rather than start from
    nothing.
    `click_crop_voxels`: when > 0 (the size cap), a box-less sample's region follows its
    answer after every click as inference's click_crop rule moves it: image and target are
    cropped anew, the encoder runs again, the clicks are mapped into the new region and the
    answer becomes the dense prompt as pseudo-logits."""
    image = example.image[None].to(device)
    target = example.target.to(device)
    features = model.encode(image)
    points = np.zeros((0, 3), np.float32)
    positive = np.zeros((0,), bool)
    prev = None
    if box_prompt and example.box is not None:
        prev = box_prior_logits(example.box, tuple(image.shape[2:])).to(device)
    if example.box is None:
        # Click-only objects: the first interaction is a click on an empty prediction.
        first = next_click(torch.full_like(target, -1.0), target)
        if first is None:
            # An object thinner than half a pooled cell everywhere has no voxel over 0.5:
            # click where it is densest instead.
            where = np.unravel_index(int(target[0].argmax()), tuple(target.shape[1:]))
            first = (np.asarray(where, np.float32), True)
        points = np.concatenate([points, first[0][None]])
        positive = np.append(positive, first[1])
    region = None
    if click_crop_voxels > 0 and example.source is not None:
        roi = example.source[2]
        region = Region(roi, [click_to_volume(p, roi) for p in points])
    losses, dices = [], []
    for step in range(click_steps + 1):
        prompt = ClassPrompt(box=example.box, points=points, positive=positive)
        logits = model.decode(features, [prompt], prev)[0]
        losses.append(dice_bce(logits, target))
        dices.append(hard_dice(logits, target))
        if step == click_steps:
            break
        click = next_click(logits, target)
        if click is None:
            break
        points = np.concatenate([points, click[0][None]])
        positive = np.append(positive, click[1])
        prev = logits.detach()[None]
        if mask_prompt:
            prev = torch.where(prev > 0, PSEUDO_LOGIT, -PSEUDO_LOGIT)
        if region is not None:
            region.clicks.append(click_to_volume(click[0], region.roi))
            moved = click_crop_region(logits, region, example.source, click_crop_voxels)
            if moved is not None:
                region.roi, prev = moved[0], moved[1].to(device)
                image_full, mask_full, _ = example.source
                features = model.encode(prepare_input(image_full, region.roi).to(device))
                target = mask_to_network(mask_full, region.roi)[0].to(device)
                points = np.array(
                    [region.roi.point_to_network(c) for c in region.clicks], np.float32
                )
    return torch.stack(losses).sum(), dices
