"""User-level prompts in full-volume voxel indices (z, y, x): a box and clicks per object."""

from __future__ import annotations

from dataclasses import dataclass, field


class PromptError(ValueError):
    """A prompt that cannot be used (outside the volume, inverted, malformed)."""


@dataclass(frozen=True)
class Box:
    """An axis-aligned box with inclusive voxel corners (z0, y0, x0) .. (z1, y1, x1).

    The challenge gives a 2D box on slice `z_mid` plus a z-range; it is used as this 3D box
    (the model was trained on exactly that format)."""

    z0: int
    y0: int
    x0: int
    z1: int
    y1: int
    x1: int

    @property
    def lo(self) -> tuple[int, int, int]:
        return (self.z0, self.y0, self.x0)

    @property
    def hi(self) -> tuple[int, int, int]:
        return (self.z1, self.y1, self.x1)

    def clipped(self, shape: tuple[int, int, int]) -> Box:
        """The box clipped to a volume of `shape`; raises PromptError if nothing is left or
        the box is inverted."""
        lo, hi = self.lo, self.hi
        if any(a > b for a, b in zip(lo, hi, strict=True)):
            raise PromptError(f"inverted box {lo}..{hi}")
        new_lo = tuple(max(0, a) for a in lo)
        new_hi = tuple(min(n - 1, b) for b, n in zip(hi, shape, strict=True))
        if any(a > b for a, b in zip(new_lo, new_hi, strict=True)):
            raise PromptError(f"box {lo}..{hi} lies outside the volume {shape}")
        return Box(*new_lo, *new_hi)


@dataclass
class ObjectPrompts:
    """Everything the user said about one object, in the order it was said."""

    box: Box | None = None
    points: list[tuple[int, int, int]] = field(default_factory=list)
    positive: list[bool] = field(default_factory=list)

    def add_click(self, point: tuple[int, int, int], positive: bool) -> None:
        self.points.append(tuple(int(v) for v in point))
        self.positive.append(bool(positive))

    @property
    def empty(self) -> bool:
        return self.box is None and not self.points


def check_point(point: tuple[int, int, int], shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """The point as ints, or PromptError if it is not a voxel of the volume."""
    if len(point) != 3:
        raise PromptError(f"click {point!r} does not have 3 coordinates")
    p = tuple(int(round(float(v))) for v in point)
    if any(not 0 <= v < n for v, n in zip(p, shape, strict=True)):
        raise PromptError(f"click {p} lies outside the volume {shape}")
    return p
