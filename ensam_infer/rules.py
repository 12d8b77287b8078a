"""What the prompts already say about the answer, applied to every prediction.

The network's mask is a guess; some facts about the object are certain from the prompts
alone, and each rule below enforces one of them on the final label map:

* ``z_range``: a challenge box spans exactly the object's slices (``z_min`` .. ``z_max`` are
  the label's first and last slice), so an object never appears on slices outside its box.
  Applied to the logits before the classes are merged, so another class may still win there.
* ``debris``: a part of an object's mask (a 26-connected component) that touches neither its
  box nor one of its positive clicks is not what the user pointed at.
* ``click_grow``: an object given by clicks alone whose answer is no more than its clicks'
  balls (the network found nothing there) grows, around each positive click, to the
  connected region on the click's side of a local Otsu split (a cube of ``GROW_RADIUS``
  voxels): a positive click says the object is there and looks like the clicked voxel.
* ``box_prior`` (a prompt, not a check): the box step starts from the box itself, its
  middle-slice rectangle over its z-range as pseudo-logits in the dense prompt, so the network
  corrects the box instead of drawing the object from nothing.
* ``click_crop`` (a region, not a check): an object given by clicks alone
  is first seen in the whole volume, pooled to the size cap, far coarser than a boxed object's
  crop. Once it has an answer, its next region is a crop around that answer and its clicks
  with a generous margin (``roi.click_crop_roi``), when that shows it at a finer scale.
* ``recrop`` (with ``click_crop``): when the answer just made places a box-less object in
  a different region than the one that made it, the object is answered again in that region
  in the same step, so a step's answer never comes from a view its own answer has ruled
  out (the first click's whole-volume view, above all); one extra pass at most per step.
* ``blend`` (with ``click_crop``; off by default): an object answered in its click crop is
  answered in the whole volume too, and its logits in the crop are the mean of the two
  answers. The crop stops the coarse view's spill over the rest of the volume; the coarse
  view stops the crop from shrinking an object it sees closer than it was trained to (on
  training-split tumours the crop alone answered smaller than the object where the whole
  volume did not). One more decoder pass per such object and step; the whole volume's
  features are kept. Only for an object whose last answer spans ``BLEND_MIN_CELLS`` pooled
  voxels of the whole volume along every axis: a thinner one (a cord, a small organ) is
  below what the coarse view resolves (ungated, averaging it in cost those objects more than
  it gave tumours on validation). Off by default: gated, still no net gain on validation and
  one case lowered by 0.116 (docs/ablations.md).
* ``clicks``: a positive click lies inside its object and a negative click outside, so the
  clicked voxel and its near neighbourhood (``click_radius`` voxels) say so after the step.
  Clicks are applied in the order they were given: a later click wins where two overlap.
  The session applies them before the debris rule, so a part of the mask that touches a
  positive click's ball is kept even when the network missed the clicked voxel itself.

The same functions serve the session (full-volume crops), the challenge runner (through the
session) and the training loop (network space), so a rule means one thing everywhere.
Rules are chosen by ``PromptRules`` (its defaults are the set that won on validation);
``ENSAM_RULES`` (``default``, ``all``, ``none`` or a comma-separated list such as
``z_range,clicks``) sets the session default, so script-mode evaluation can ablate them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import cc3d
import numpy as np
import torch

from .prompts import Box
from .roi import PSEUDO_LOGIT

Slices = tuple[slice, slice, slice]

RULE_NAMES = (
    "z_range",
    "debris",
    "clicks",
    "click_grow",
    "box_prior",
    "click_crop",
    "recrop",
    "blend",
)
GROW_RADIUS = 10  # half size of the cube split around a click (the Otsu baseline's)
GROW_BELOW = 27  # voxels beyond the click balls under which an answer counts as empty
# blend: the object must span at least one cell of the encoder's deepest feature map (8 input
# voxels) along every axis of the whole volume's pooled view, or that view cannot resolve it
BLEND_MIN_CELLS = 8


@dataclass(frozen=True)
class PromptRules:
    z_range: bool = True
    debris: bool = True
    clicks: bool = True
    click_grow: bool = True
    box_prior: bool = False
    click_crop: bool = True
    recrop: bool = False
    blend: bool = False
    click_radius: int = 1

    @classmethod
    def none(cls) -> PromptRules:
        return cls(**dict.fromkeys(RULE_NAMES, False))

    @classmethod
    def parse(cls, text: str) -> PromptRules:
        """``default``, ``all``, ``none``, or a comma-separated list of rules to switch on."""
        text = text.strip().lower()
        if text in ("", "default"):
            return cls()
        if text == "all":
            return cls(**dict.fromkeys(RULE_NAMES, True))
        if text == "none":
            return cls.none()
        names = {t.strip() for t in text.split(",") if t.strip()}
        unknown = names - set(RULE_NAMES)
        if unknown:
            known = ", ".join(RULE_NAMES)
            raise ValueError(
                f"unknown prompt rules {sorted(unknown)} (known: default, all, none, {known})"
            )
        return cls(**{n: n in names for n in RULE_NAMES})

    @classmethod
    def from_env(cls) -> PromptRules:
        return cls.parse(os.environ.get("ENSAM_RULES", "default"))

    def describe(self) -> str:
        on = [n for n in RULE_NAMES if getattr(self, n)]
        return ",".join(on) if on else "none"


def challenge_box(mask: np.ndarray) -> dict:
    """The challenge's box for one object (its own prompt rule, beside the rules that read
    it): the 2D box on the middle slice of its z-range, plus that z-range, in the npz
    format's keys. No jitter: the organizers add 0-5 voxels, training adds them itself
    (`ensam_train.example.challenge_box`), sample cases stay reproducible."""
    zs = np.nonzero(mask.any(axis=(1, 2)))[0]
    z_min, z_max = int(zs.min()), int(zs.max())
    z_mid = (z_min + z_max) // 2
    if not mask[z_mid].any():
        z_mid = int(zs[len(zs) // 2])
    ys, xs = np.nonzero(mask[z_mid])
    return {
        "z_min": z_min,
        "z_max": z_max,
        "z_mid": z_mid,
        "z_mid_x_min": int(xs.min()),
        "z_mid_y_min": int(ys.min()),
        "z_mid_x_max": int(xs.max()),
        "z_mid_y_max": int(ys.max()),
    }


def box_prior_logits(
    net_box: Sequence[int], padded: Sequence[int], value: float = PSEUDO_LOGIT
) -> torch.Tensor:
    """(1, 1, *padded) pseudo-logits: +value inside the network-space box (inclusive corners
    z0, y0, x0, z1, y1, x1), -value elsewhere."""
    out = torch.full((1, 1, *padded), -value)
    z0, y0, x0, z1, y1, x1 = (int(v) for v in net_box)
    out[..., z0 : z1 + 1, y0 : y1 + 1, x0 : x1 + 1] = value
    return out


def outside_box_slices(logits: torch.Tensor, box: Box, start: Sequence[int]) -> torch.Tensor:
    """Crop-shaped logits (..., D, H, W) with every slice outside the box's z-range set to
    -inf: the object cannot win a voxel there. `start` is the crop's origin in the volume."""
    z0 = max(0, box.z0 - int(start[0]))
    z1 = max(0, box.z1 - int(start[0]) + 1)
    out = logits.clone()
    out[..., :z0, :, :] = float("-inf")
    out[..., z1:, :, :] = float("-inf")
    return out


def remove_debris(
    labels: np.ndarray,
    label: int,
    box: tuple[slice, slice, slice] | None,
    seeds: Sequence[tuple[int, int, int]],
) -> int:
    """Clear the components of `label` that touch neither `box` (slices of `labels`) nor a
    seed voxel; returns how many voxels were cleared. With neither a box nor a seed nothing
    says where the object is, and the mask is left alone."""
    if box is None and not seeds:
        return 0
    mask = labels == label
    if not mask.any():
        return 0
    components, count = cc3d.connected_components(mask, connectivity=26, return_N=True)
    keep = {int(components[tuple(p)]) for p in seeds if _inside(p, labels.shape)}
    if box is not None:
        keep |= _components_in_box(components, count, box)
    debris_ids = [k for k in range(1, count + 1) if k not in keep]
    if not debris_ids:
        return 0
    is_debris = np.zeros(count + 1, bool)
    is_debris[debris_ids] = True
    debris = is_debris[components]
    labels[debris] = 0
    return int(debris.sum())


def _components_in_box(
    components: np.ndarray, count: int, box: tuple[slice, slice, slice]
) -> set[int]:
    """The component ids (1..count) with a voxel inside `box`. Decided from each component's
    bounding box (one pass, in C); only a component whose bounding box straddles the box's
    side is looked at voxel by voxel, and only where the two overlap. (np.unique over the box
    took about a second per step on a 300x512x512 volume.)"""
    bounds = [s.indices(n)[:2] for s, n in zip(box, components.shape, strict=True)]
    found = cc3d.statistics(components)["bounding_boxes"]
    inside = set()
    for k in range(1, count + 1):
        extent = found[k]
        overlap = tuple(
            slice(max(e.start, lo), min(e.stop, hi))
            for e, (lo, hi) in zip(extent, bounds, strict=True)
        )
        if any(o.start >= o.stop for o in overlap):
            continue
        if overlap == tuple(extent) or (components[overlap] == k).any():
            inside.add(k)
    return inside


def enforce_clicks(
    labels: np.ndarray,
    label: int,
    points: Sequence[tuple[int, int, int]],
    positive: Sequence[bool],
    radius: int = 1,
) -> None:
    """Positive clicks paint `label` on a ball of `radius` voxels around them; negative
    clicks clear `label` there (other classes keep their voxels). In click order."""
    for p, is_positive in zip(points, positive, strict=True):
        if not _inside(p, labels.shape):
            continue
        slices, sphere = ball(labels.shape, p, radius)
        view = labels[slices]
        if is_positive:
            view[sphere] = label
        else:
            view[sphere & (view == label)] = 0


def _inside(point: Sequence[int], shape: tuple[int, ...]) -> bool:
    return all(0 <= c < n for c, n in zip(point, shape, strict=True))


def cube_slices(point: Sequence[int], radius: int, shape: tuple[int, ...]) -> Slices:
    """The cube of `radius` voxels around `point` (side 2 * radius + 1), clipped to `shape`."""
    return tuple(
        slice(max(0, int(c) - radius), min(n, int(c) + radius + 1))
        for c, n in zip(point, shape, strict=True)
    )


def ball(shape: tuple[int, ...], point: Sequence[int], radius: float) -> tuple[Slices, np.ndarray]:
    """A ball of `radius` voxels around `point`, clipped to the volume: (the slices of its
    bounding cube, the ball inside them)."""
    slices = cube_slices(point, int(np.ceil(radius)), shape)
    offsets = [slice(s.start - int(c), s.stop - int(c)) for s, c in zip(slices, point, strict=True)]
    grids = np.ogrid[tuple(offsets)]
    return slices, sum(g.astype(np.int64) ** 2 for g in grids) <= radius * radius


def otsu_threshold(values: np.ndarray) -> int | None:
    """Otsu's threshold of uint8 intensities: `values > t` is the bright class.

    Maximizes the between-class variance over the 256-bin histogram. None when the values
    are constant (no split exists).
    """
    values = np.asarray(values).ravel()
    if values.size == 0:
        return None
    hist, _ = np.histogram(values, bins=256, range=(0, 256))
    p = hist.astype(np.float64) / values.size
    levels = np.arange(256, dtype=np.float64)
    omega = np.cumsum(p)  # weight of the dark class for threshold t (values <= t)
    mu = np.cumsum(p * levels)
    mu_total = mu[-1]
    denom = omega * (1.0 - omega)
    valid = denom > 1e-12
    if not valid.any():
        return None
    between = np.zeros(256)
    between[valid] = (mu_total * omega[valid] - mu[valid]) ** 2 / denom[valid]
    return int(np.argmax(between))


def local_index(point: Sequence[int], slices: Slices) -> tuple[int, int, int]:
    """`point` (volume indices) as indices into the crop `slices`."""
    return tuple(int(c) - s.start for c, s in zip(point, slices, strict=True))


def component_at(mask: np.ndarray, point: tuple[int, int, int]) -> np.ndarray | None:
    """The 6-connected component of `mask` that holds `point`; None when `mask` is off
    there. Face connectivity: a thresholded object leaks less into its neighbours."""
    if not mask[point]:
        return None
    components = cc3d.connected_components(np.ascontiguousarray(mask, np.uint8), connectivity=6)
    return components == components[point]


def click_side(
    image: np.ndarray, point: Sequence[int], radius: int = GROW_RADIUS
) -> tuple[Slices, np.ndarray]:
    """The click's side of the Otsu split of the cube of `radius` voxels around `point`
    (all of the cube when its intensities are constant): (the cube's slices, the side)."""
    slices = cube_slices(point, radius, image.shape)
    cube = image[slices]
    t = otsu_threshold(cube)
    if t is None:
        return slices, np.ones(cube.shape, bool)
    return slices, (cube > t) == (cube[local_index(point, slices)] > t)


def click_region(
    image: np.ndarray, point: Sequence[int], radius: int = GROW_RADIUS
) -> tuple[Slices, np.ndarray]:
    """The connected part of `click_side` that holds the click: (the cube's slices, the
    region inside the cube)."""
    slices, side = click_side(image, point, radius)
    return slices, component_at(side, local_index(point, slices))


def grow_empty_answer(
    labels: np.ndarray,
    image: np.ndarray,
    label: int,
    points: Sequence[tuple[int, int, int]],
    positive: Sequence[bool],
    click_radius: int = 1,
) -> bool:
    """The `click_grow` rule for one click-only object, in place; True if it grew."""
    seeds = [p for p, s in zip(points, positive, strict=True) if s]
    seeds = [p for p in seeds if _inside(p, labels.shape)]
    if not seeds:
        return False
    r = click_radius
    ball_voxels = int(ball((2 * r + 1,) * 3, (r, r, r), r)[1].sum())
    if int((labels == label).sum()) - len(seeds) * ball_voxels >= GROW_BELOW:
        return False
    for p in seeds:
        slices, region = click_region(image, p)
        view = labels[slices]
        view[region & (view == 0)] = label
    return True
