"""Synthetic sample cases in the challenge format, made by our own code so the smoke test
and the README's first command need nothing from outside.

Each case is a noisy phantom with a few objects of distinct contrast (ellipsoids, a tube, a
shell) and its labels; one case has no boxes and starts from one click per object, as the
challenge's click-only cases (vessels) do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from .evaluation.clicks import simulate_click
from .rules import challenge_box


def _ellipsoid(shape: tuple[int, int, int], centre: tuple, radii: tuple) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    dist = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii, strict=True))
    return dist <= 1.0


def _tube(shape: tuple[int, int, int], rng: np.random.Generator, radius: float) -> np.ndarray:
    """A smooth curve along z with a given radius."""
    mask = np.zeros(shape, bool)
    y0, x0 = shape[1] * rng.uniform(0.3, 0.7), shape[2] * rng.uniform(0.3, 0.7)
    phase = rng.uniform(0, 2 * np.pi)
    yy, xx = np.ogrid[: shape[1], : shape[2]]
    for z in range(shape[0] // 6, shape[0] - shape[0] // 6):
        cy = y0 + 0.15 * shape[1] * np.sin(z / shape[0] * 2 * np.pi + phase)
        cx = x0 + 0.15 * shape[2] * np.cos(z / shape[0] * 2 * np.pi + phase)
        mask[z] = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    return mask


def make_phantom(
    shape: tuple[int, int, int], rng: np.random.Generator, kinds: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """An image (uint8) and labels (1..len(kinds)) with one object per kind."""
    labels = np.zeros(shape, np.uint8)
    for k, kind in enumerate(kinds, start=1):
        centre = tuple(rng.uniform(0.3, 0.7) * n for n in shape)
        radii = tuple(rng.uniform(0.12, 0.22) * n for n in shape)
        if kind == "ellipsoid":
            obj = _ellipsoid(shape, centre, radii)
        elif kind == "shell":
            outer = _ellipsoid(shape, centre, radii)
            inner = _ellipsoid(shape, centre, tuple(r * 0.6 for r in radii))
            obj = outer & ~inner
        elif kind == "tube":
            obj = _tube(shape, rng, radius=max(2.0, min(shape[1:]) * 0.05))
        else:
            raise ValueError(f"unknown kind {kind!r}")
        labels[obj & (labels == 0)] = k
    body = _ellipsoid(shape, tuple(n / 2 for n in shape), tuple(n * 0.48 for n in shape))
    image = np.where(body, 60.0, 0.0)
    for k in range(1, len(kinds) + 1):
        image[labels == k] = rng.uniform(100, 240)
    image = ndimage.gaussian_filter(image, 0.8) + rng.normal(0, 8, shape) * body
    return np.clip(image, 0, 255).astype(np.uint8), labels


SAMPLES = {
    "Sample_phantom_organs": ((48, 80, 80), ["ellipsoid", "ellipsoid", "shell"], True),
    "Sample_phantom_vessel": ((40, 64, 72), ["tube", "ellipsoid"], True),
    "Sample_phantom_clicks_only": ((32, 56, 56), ["tube", "ellipsoid"], False),
}


def write_samples(out_dir: str | Path, seed: int = 0) -> list[Path]:
    """Write out_dir/imgs/<case>.npz (the first step's input) and out_dir/gts/<case>.npz."""
    out = Path(out_dir)
    (out / "imgs").mkdir(parents=True, exist_ok=True)
    (out / "gts").mkdir(parents=True, exist_ok=True)
    written = []
    for i, (name, (shape, kinds, with_boxes)) in enumerate(SAMPLES.items()):
        rng = np.random.default_rng(seed + i)
        image, labels = make_phantom(shape, rng, kinds)
        spacing = np.array([1.0, 1.0, 2.5])  # (x, y, z) as in the official files
        fields = {"imgs": image, "spacing": spacing}
        if with_boxes:
            boxes = [challenge_box(labels == k) for k in range(1, len(kinds) + 1)]
            fields["boxes"] = np.array(boxes, dtype=object)
        else:
            # Click-only cases start at the first click step: one click per object on an
            # empty prediction, as the organizers' simulator would place it.
            empty = np.zeros(shape, bool)
            clicks, order = [], []
            for k in range(1, len(kinds) + 1):
                (point, fg) = simulate_click(empty, labels == k)
                clicks.append(
                    {"fg": [list(point)] if fg else [], "bg": [] if fg else [list(point)]}
                )
                order.append(["fg" if fg else "bg"])
            fields["clicks"] = np.array(clicks, dtype=object)
            fields["clicks_order"] = np.array(order)
            fields["prev_pred"] = np.zeros(shape, np.uint8)
        np.savez_compressed(out / "imgs" / f"{name}.npz", **fields)
        np.savez_compressed(out / "gts" / f"{name}.npz", gts=labels, spacing=spacing)
        written.append(out / "imgs" / f"{name}.npz")
    return written
