"""Test-time flips: the network answers the same question on mirrored copies of its input,
and the answers, mirrored back, are averaged. Training flipped every volume at random, so
each mirror is an input it knows, and the mean of their logits is steadier than any one.

A flip mirrors only the content of the network input (its first `pooled` voxels per axis),
never the padding after it: inputs keep their padding at the end, as in training. Every
flip is its own inverse.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from .model import ClassPrompt

# Single axes first (x, y, z), then pairs, then all three: `flips(k)` takes the first k
# (of `flip_order()`, which can put y or z second).
FLIP_ORDER: tuple[tuple[int, ...], ...] = (
    (),
    (2,),
    (1,),
    (0,),
    (1, 2),
    (0, 2),
    (0, 1),
    (0, 1, 2),
)


@dataclass(frozen=True)
class Flip:
    """A mirror of the spatial axes `axes` (0 = z, 1 = y, 2 = x) of a network input whose
    content is `extent` voxels per axis."""

    axes: tuple[int, ...]
    extent: tuple[int, int, int]

    def tensor(self, t: torch.Tensor) -> torch.Tensor:
        """t (..., D, H, W) in network space, its content mirrored."""
        for axis in self.axes:
            dim = t.dim() - 3 + axis
            n = self.extent[axis]
            order = torch.cat([torch.arange(n - 1, -1, -1), torch.arange(n, t.shape[dim])])
            t = t.index_select(dim, order.to(t.device))
        return t

    def coordinate(self, value: float | np.ndarray, axis: int) -> float | np.ndarray:
        """Coordinates (one or an array) along `axis` on the mirrored input."""
        return self.extent[axis] - 1 - value if axis in self.axes else value

    def prompt(self, prompt: ClassPrompt) -> ClassPrompt:
        """The same prompt on the mirrored input: clicks mirrored, box corners swapped on
        each mirrored axis so that the low corner stays low."""
        box = prompt.box
        if box is not None:
            lo = [self.coordinate(v, a) for a, v in enumerate(box[:3])]
            hi = [self.coordinate(v, a) for a, v in enumerate(box[3:])]
            box = tuple(min(a, b) for a, b in zip(lo, hi, strict=True)) + tuple(
                max(a, b) for a, b in zip(lo, hi, strict=True)
            )
        points = np.array(prompt.points, np.float32).reshape(-1, 3)
        for axis in range(3):
            points[:, axis] = self.coordinate(points[:, axis], axis)
        return ClassPrompt(box=box, points=points, positive=prompt.positive)


def checked_count(count: int) -> int:
    """`count` when it is a number of mirrors FLIP_ORDER has (1..8), else a ValueError."""
    if not 1 <= count <= len(FLIP_ORDER):
        raise ValueError(f"test-time flips must be 1..{len(FLIP_ORDER)}, got {count}")
    return count


AXIS_NAMES = {"z": 0, "y": 1, "x": 2}


def flip_order() -> tuple[tuple[int, ...], ...]:
    """FLIP_ORDER, with the single-axis mirror that ENSAM_TTA_FIRST_AXIS names (x, y or z;
    default x) moved to second place. Mirrors along any axis are equally valid inputs, so
    this gives an equivalent setting, in which a measurement can be repeated to tell a
    change's effect on one case from that case's click-trajectory noise."""
    name = os.environ.get("ENSAM_TTA_FIRST_AXIS", "x").strip().lower() or "x"
    if name not in AXIS_NAMES:
        raise ValueError(f"ENSAM_TTA_FIRST_AXIS must be x, y or z, got {name!r}")
    first = (AXIS_NAMES[name],)
    return ((), first) + tuple(a for a in FLIP_ORDER[1:] if a != first)


def flips(count: int, extent: tuple[int, int, int]) -> list[Flip]:
    """The first `count` mirrors of `flip_order()` (1: the input alone)."""
    return [Flip(axes, tuple(extent)) for axes in flip_order()[: checked_count(count)]]


def flips_requested(default: int = 1) -> int:
    """ENSAM_TTA if set (the number of mirrored inputs), else `default`."""
    value = os.environ.get("ENSAM_TTA")
    if not value:
        return default
    try:
        count = int(value)
    except ValueError:
        raise ValueError(
            f"ENSAM_TTA must be a whole number 1..{len(FLIP_ORDER)}, got {value!r}"
        ) from None
    return checked_count(count)
