"""Synthetic cases and the two ways a step runs: in-process (EnsamSession kept alive, as an
interactive tool does) and the container path (`predict_file` on challenge npz files with
the on-disk cache, as each of the organizers' six fresh containers does).

Volumes are noise plus bright ellipsoids, made box by box so that a 300×512×512 volume
costs little more memory than its own uint8 array. Speed does not depend on the content.
"""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.common import time_runs
from ensam_infer.cache import CACHE_DIRNAME
from ensam_infer.predict import predict_file
from ensam_infer.prompts import Box
from ensam_infer.roi import object_regions
from ensam_infer.session import EnsamSession

CASE = "Bench_case"


def synthetic_volume(shape: tuple[int, int, int], boxes: list[Box], seed: int = 0) -> np.ndarray:
    """uint8 (z, y, x): background noise and one ellipsoid of its own brightness per box."""
    rng = np.random.default_rng(seed)
    vol = rng.integers(10, 70, size=shape, dtype=np.uint8)
    for box in boxes:
        sl = tuple(slice(a, b + 1) for a, b in zip(box.lo, box.hi, strict=True))
        sub = vol[sl]
        grids = np.ogrid[tuple(slice(0, n) for n in sub.shape)]
        # float32 per-axis terms broadcast into one array: no float64 volume-sized temporaries
        dist = sum(
            (((g - (n - 1) / 2) / max(n / 2, 1)) ** 2).astype(np.float32)
            for g, n in zip(grids, sub.shape, strict=True)
        )
        sub[dist <= 1.0] = int(rng.integers(120, 240))
    return vol


def centred_box(shape: tuple[int, int, int], size: tuple[int, int, int]) -> Box:
    lo = [max(0, (n - s) // 2) for n, s in zip(shape, size, strict=True)]
    hi = [min(n - 1, a + s - 1) for a, s, n in zip(lo, size, shape, strict=True)]
    return Box(*lo, *hi)


def covering_box(shape: tuple[int, int, int], fraction: float = 0.9) -> Box:
    """A box over most of the volume: the region (box + margin) is then the whole volume."""
    return centred_box(shape, tuple(max(1, int(n * fraction)) for n in shape))


def spread_boxes(shape: tuple[int, int, int], count: int, seed: int = 0) -> list[Box]:
    """`count` organ-sized boxes scattered over the volume, as a many-class CT case has:
    their union (the network's region) covers most of the volume once there are several."""
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(count):
        size = [max(4, int(n * rng.uniform(0.12, 0.3))) for n in shape]
        lo = [int(rng.integers(0, n - s + 1)) for n, s in zip(shape, size, strict=True)]
        boxes.append(Box(*lo, *(a + s - 1 for a, s in zip(lo, size, strict=True))))
    # The first and last boxes sit in opposite corners so the region is the same (the whole
    # volume) for every count above one; only the number of classes then changes.
    if count > 1:
        size = [max(4, n // 6) for n in shape]
        boxes[0] = Box(0, 0, 0, *(s - 1 for s in size))
        boxes[-1] = Box(*(n - s for n, s in zip(shape, size, strict=True)), *(n - 1 for n in shape))
    return boxes


def click_point(box: Box, step: int) -> tuple[tuple[int, int, int], bool]:
    """The click of a step inside a box: foreground near its centre, every third one a
    background click near a corner (inside the region, so the cached region stays valid)."""
    lo, hi = np.array(box.lo), np.array(box.hi)
    centre = (lo + hi) // 2
    if step % 3 == 2:
        return tuple(int(v) for v in lo + (hi - lo) // 8), False
    jitter = ((hi - lo) // 8) * ((step % 2) * 2 - 1)
    return tuple(int(v) for v in np.clip(centre + jitter, lo, hi)), True


def network_input_shape(
    session: EnsamSession, shape: tuple[int, int, int], boxes: list[Box]
) -> tuple:
    """(region shape, pooling, network input shape) the session will use for these boxes:
    with one crop per object, the largest network input among them."""
    from ensam_infer.prompts import ObjectPrompts

    objects = {i: ObjectPrompts(box=b) for i, b in enumerate(boxes, start=1)}
    rois = object_regions(shape, objects, session.crop, session.max_voxels).values()
    roi = max(rois, key=lambda r: int(np.prod(r.padded)))
    return roi.shape, roi.pool, roi.padded


# ----- in-process ---------------------------------------------------------------------------
class InProcess:
    """Box and click steps on a live session: the encoder runs in the box step only."""

    def __init__(self, session: EnsamSession, volume: np.ndarray, boxes: list[Box]) -> None:
        self.session, self.volume, self.boxes = session, volume, boxes
        self.step = 0

    def box_step(self) -> None:
        self.session.set_image(self.volume)  # drops the features: the encoder runs again
        for k, box in enumerate(self.boxes, start=1):
            self.session.add_box(box, k)
        self.session.predict()
        self.step = 0

    def click_step(self, ids: list[int] | None = None) -> None:
        """One click on each object in `ids` (default all), then predict: decoder only."""
        for k in ids or range(1, len(self.boxes) + 1):
            point, positive = click_point(self.boxes[k - 1], self.step)
            self.session.add_click(point, positive, k)
        self.step += 1
        self.session.predict()


# ----- container path -----------------------------------------------------------------------
def box_dict(box: Box) -> dict:
    """A box in the challenge's format: a 2D box on the middle slice plus the z-range."""
    return {
        "z_min": box.z0,
        "z_max": box.z1,
        "z_mid": (box.z0 + box.z1) // 2,
        "z_mid_x_min": box.x0,
        "z_mid_y_min": box.y0,
        "z_mid_x_max": box.x1,
        "z_mid_y_max": box.y1,
    }


class ContainerChain:
    """One case through the challenge's steps: writes each step's input npz as the
    organizers' script does (accumulated clicks, prev_pred = the last output), untimed, then
    times `predict_file` on it. The outputs folder (and its cache) persists between steps."""

    def __init__(
        self, work: Path, volume: np.ndarray, boxes: list[Box], use_cache: bool = True
    ) -> None:
        self.inputs, self.outputs = work / "inputs", work / "outputs"
        self.inputs.mkdir(parents=True, exist_ok=True)
        self.outputs.mkdir(parents=True, exist_ok=True)
        self.volume, self.boxes, self.use_cache = volume, boxes, use_cache
        self.clicks: list[dict] = []
        self.order: list[list[str]] = []
        self.step = 0

    @property
    def input_path(self) -> Path:
        return self.inputs / f"{CASE}.npz"

    def write_box_input(self) -> None:
        boxes = np.array([box_dict(b) for b in self.boxes], dtype=object)
        np.savez_compressed(self.input_path, imgs=self.volume, spacing=[1.0, 1.0, 1.0], boxes=boxes)
        self.clicks = [{"fg": [], "bg": []} for _ in self.boxes]
        self.order = [[] for _ in self.boxes]
        self.step = 0

    def write_click_input(self) -> None:
        """The next click step's input: one more click per class on the last output."""
        for k, box in enumerate(self.boxes):
            point, positive = click_point(box, self.step)
            kind = "fg" if positive else "bg"
            self.clicks[k][kind].append(list(point))
            self.order[k].append(kind)
        self.step += 1
        with np.load(self.outputs / f"{CASE}.npz") as out:
            prev = out["segs"]
        boxes = np.array([box_dict(b) for b in self.boxes], dtype=object)
        order = np.empty(len(self.order), dtype=object)
        order[:] = [list(o) for o in self.order]
        np.savez_compressed(
            self.input_path,
            imgs=self.volume,
            spacing=[1.0, 1.0, 1.0],
            boxes=boxes,
            clicks=np.array(self.clicks, dtype=object),
            clicks_order=order,
            prev_pred=prev,
        )

    def _run(self, session: EnsamSession) -> float:
        t0 = time.perf_counter()
        result = predict_file(self.input_path, self.outputs, session, self.use_cache, io.StringIO())
        seconds = time.perf_counter() - t0
        if not result.ok:
            raise RuntimeError(f"predict_file failed: {result.message}")
        return seconds

    def box_step(self, session: EnsamSession) -> float:
        """A first step as on a new case: no cache from an earlier run of it."""
        shutil.rmtree(self.outputs / CACHE_DIRNAME, ignore_errors=True)
        self.write_box_input()
        return self._run(session)

    def click_step(self, session: EnsamSession) -> float:
        self.write_click_input()
        return self._run(session)


class EncoderCounter:
    """Counts encoder runs, to show which steps really skipped the encoder."""

    def __init__(self, session: EnsamSession) -> None:
        self.calls = 0
        original = session.model.encode

        def encode(*args: object, **kwargs: object) -> object:
            self.calls += 1
            return original(*args, **kwargs)

        session.model.encode = encode


def measure(
    fn: Callable[[], float | None],
    repeats: int,
    warmup: int,
    budget: float,
    counter: EncoderCounter | None = None,
) -> dict:
    """time_runs as a dict, with the encoder runs per call when a counter is given."""
    before = counter.calls if counter is not None else 0
    stats = time_runs(fn, repeats, warmup, budget).to_dict()
    if counter is not None:
        stats["encoder_runs_per_call"] = (counter.calls - before) / stats["calls"]
    return stats
