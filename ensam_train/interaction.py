"""The interaction loop of one training sample, as the challenge runs it: a box step (or a
first click when there is no box), then click steps at the deepest point of the largest
error, clicks accumulating, the previous logits (detached) as the dense prompt. The encoder
runs once; the loss (soft Dice + BCE) is summed over the steps."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ensam_infer.evaluation.clicks import simulate_click
from ensam_infer.model import ClassPrompt, Ensam
from ensam_infer.roi import PSEUDO_LOGIT
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


def run_interaction(
    model: Ensam,
    example: Example,
    click_steps: int,
    device: torch.device,
    mask_prompt: bool = False,
    box_prompt: bool = False,
) -> tuple[torch.Tensor, list[float]]:
    """Loss summed over the steps, and the hard Dice after each step.

    `mask_prompt`: the dense prompt of each click step is the previous answer as a mask
    (pseudo-logits of +-PSEUDO_LOGIT), not its logits: what inference gives the network
    when an object's crop changed or its cached logits are gone.
    `box_prompt`: the box step's dense prompt is the box itself as pseudo-logits (inference's
    `box_prior` rule), so the network learns to correct the box rather than start from
    nothing."""
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
    return torch.stack(losses).sum(), dices
