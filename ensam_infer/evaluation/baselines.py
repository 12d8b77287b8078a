"""Non-learned baselines that go through exactly the same challenge protocol as ENSAM.

They answer one question: how much of a score comes from the prompts themselves rather
than from the model? A box that is filled, or thresholded, already scores well on compact
bright organs; the model has to beat that to be worth its run time.

Both baselines are stateless: ``predict`` rebuilds the whole answer from the case's box
and its clicks in the order they were given (``challenge.read_case`` restores that order
from ``clicks_order``), so they need no cache and ignore ``prev_pred``. They read the same
npz files as the container, through the same reader.

* ``boxfill``: each class's challenge box (the 2D box of its middle slice, extruded over
  its z-range) is filled. A click-only class starts empty. Then, click by click, a
  foreground click adds a ball of radius 3 voxels around it, a background click removes one.
* ``otsu``: inside each box, the Otsu threshold of the intensities splits the box into a
  bright and a dark side; the side whose mean is further from the mean of the box's border
  is the object; its largest 6-connected component is kept. Clicks then refine it: a
  foreground click outside the mask adds the connected component containing it of the
  thresholded region (the box's kept side when the click is on it, else a local Otsu split
  of a cube around the click, taking the click's own side), plus a radius-3 ball when
  that component is smaller than the ball; a background click inside the mask removes the
  connected component of the mask containing it, unless that component is the mask's
  largest or holds one of the class's foreground clicks (removing the object itself would
  throw away what the box found): then only a radius-3 ball is carved out.

Multi-class rule: classes are painted in order 1..K and a class never overwrites a voxel
already taken by an earlier class (the earlier class wins where masks overlap).
"""

from __future__ import annotations

import cc3d
import numpy as np

from ..challenge import ChallengeCase
from ..prompts import Box
from ..rules import (
    GROW_RADIUS,
    Slices,
    ball,
    click_side,
    component_at,
    local_index,
    otsu_threshold,
)
from .metrics import _bbox

BALL_RADIUS = 3  # voxels, in index space (the clicks are voxel indices)
LOCAL_RADIUS = GROW_RADIUS  # half size of the cube searched around a click outside any box
CONNECTIVITY = 6  # face connectivity: a thresholded object leaks less into its neighbours


def _box_slices(box: Box) -> Slices:
    return tuple(slice(a, b + 1) for a, b in zip(box.lo, box.hi, strict=True))


def _contains(slices: Slices, point: tuple[int, int, int]) -> bool:
    return all(s.start <= p < s.stop for s, p in zip(slices, point, strict=True))


BALL_VOLUME = int(ball((7, 7, 7), (3, 3, 3), BALL_RADIUS)[1].sum())


def _paint_ball(mask: np.ndarray, point: tuple[int, int, int], value: bool) -> None:
    slices, b = ball(mask.shape, point, BALL_RADIUS)
    mask[slices][b] = value


def merge_classes(masks: list[np.ndarray | None], shape: tuple[int, ...]) -> np.ndarray:
    """Label map from per-class masks (index k is class k + 1); earlier classes win."""
    labels = np.zeros(shape, np.uint8)
    for k, mask in enumerate(masks, start=1):
        if mask is not None:
            labels[mask & (labels == 0)] = k
    return labels


def _largest_component(mask: np.ndarray) -> np.ndarray:
    if not mask.any():
        return mask
    labels = cc3d.connected_components(
        np.ascontiguousarray(mask, np.uint8), connectivity=CONNECTIVITY
    )
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == np.argmax(sizes)


class BoxFillBaseline:
    """Filled boxes plus balls at the clicks: the score that needs no image at all."""

    name = "boxfill"

    def predict(self, case: ChallengeCase) -> np.ndarray:
        """The label map (uint8, the shape of `case.image`)."""
        shape = case.image.shape
        masks: list[np.ndarray | None] = []
        for obj in case.objects:
            if obj.empty:
                masks.append(None)
                continue
            mask = np.zeros(shape, bool)
            if obj.box is not None:
                mask[_box_slices(obj.box)] = True
            for point, positive in zip(obj.points, obj.positive, strict=True):
                _paint_ball(mask, point, positive)
            masks.append(mask)
        return merge_classes(masks, shape)


class OtsuBaseline:
    """Otsu threshold inside each box, refined by the clicks: a classical image-based
    answer that shows how much the intensities alone explain."""

    name = "otsu"

    def __init__(self, local_radius: int = LOCAL_RADIUS) -> None:
        self.local_radius = local_radius

    def box_side(self, image: np.ndarray, box: Box) -> tuple[Slices, np.ndarray]:
        """The thresholded side of the box that is the object: (box slices, mask in box)."""
        slices = _box_slices(box)
        crop = image[slices]
        t = otsu_threshold(crop)
        if t is None:
            return slices, np.ones(crop.shape, bool)
        bright = crop > t
        # The border: the in-plane rectangle's edge on every slice of the z-range. The
        # 2D box was drawn around the object on one slice, so its edge is mostly background.
        border = np.zeros(crop.shape, bool)
        border[:, [0, -1], :] = True
        border[:, :, [0, -1]] = True
        border_mean = float(crop[border].mean())
        sides = []
        for side in (bright, ~bright):
            if side.any():
                sides.append((abs(float(crop[side].mean()) - border_mean), side))
        return slices, max(sides, key=lambda s: s[0])[1]

    def _local_region(
        self, image: np.ndarray, point: tuple[int, int, int]
    ) -> tuple[Slices, np.ndarray]:
        """Otsu split of a cube around the click; the click's own side."""
        return click_side(image, point, self.local_radius)

    def _add_at(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        point: tuple[int, int, int],
        box_region: tuple[Slices, np.ndarray] | None,
    ) -> None:
        if box_region is not None and _contains(box_region[0], point):
            slices, side = box_region
            if not side[local_index(point, slices)]:
                slices, side = self._local_region(image, point)
        else:
            slices, side = self._local_region(image, point)
        comp = component_at(side, local_index(point, slices))
        if comp is not None:
            mask[slices] |= comp
        if comp is None or comp.sum() < BALL_VOLUME:
            _paint_ball(mask, point, True)

    @staticmethod
    def _remove_at(mask: np.ndarray, point: tuple[int, int, int], fg_points: list) -> None:
        box = _bbox(mask)  # `point` is in the mask, so the box exists and holds it
        crop = mask[box]
        labels = cc3d.connected_components(
            np.ascontiguousarray(crop, np.uint8), connectivity=CONNECTIVITY
        )
        target = labels[local_index(point, box)]
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        protected = target == int(np.argmax(sizes)) or any(
            _contains(box, p) and labels[local_index(p, box)] == target for p in fg_points
        )
        if protected:
            _paint_ball(mask, point, False)
        else:
            crop[labels == target] = False

    def predict(self, case: ChallengeCase) -> np.ndarray:
        """The label map (uint8, the shape of `case.image`)."""
        image, shape = case.image, case.image.shape
        masks: list[np.ndarray | None] = []
        for obj in case.objects:
            if obj.empty:
                masks.append(None)
                continue
            mask = np.zeros(shape, bool)
            box_region = None
            if obj.box is not None:
                box_region = self.box_side(image, obj.box)
                slices, side = box_region
                mask[slices] = _largest_component(side)
            fg_points: list[tuple[int, int, int]] = []
            for point, positive in zip(obj.points, obj.positive, strict=True):
                if positive:
                    if not mask[point]:
                        self._add_at(image, mask, point, box_region)
                    fg_points.append(point)
                elif mask[point]:
                    self._remove_at(mask, point, fg_points)
            masks.append(mask)
        return merge_classes(masks, shape)


BASELINES = {"boxfill": BoxFillBaseline, "otsu": OtsuBaseline}


def get_baseline(name: str) -> BoxFillBaseline | OtsuBaseline:
    """A baseline by its method name (`boxfill`, `otsu`)."""
    try:
        return BASELINES[name]()
    except KeyError:
        raise ValueError(f"unknown baseline {name!r} (known: {', '.join(BASELINES)})") from None
