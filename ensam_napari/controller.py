"""The napari plugin's logic without Qt or napari: prompts per object, undo, coordinates.

Coordinates: napari places a layer's data point `d` at world `d * scale + translate`. Prompts
drawn on a Shapes or Points layer are taken to world coordinates with that layer's transform
and back to the image layer's voxel indices (z, y, x) with the image layer's; a voxel is hit
when its centre is (so a rectangle covers the voxels whose centres it encloses).

The controller keeps what the user asked for (a box and clicks per object id) apart from
what the session has been told. The UI thread only edits the former (cheap, validated
against the image shape); `run()`, on a worker thread, brings the session in line and
predicts. After each prediction it keeps each object's logits, keyed by its prompts, so an
undo puts back exactly the answer the object had before its last click without running the
network (`EnsamSession` has no way to take a click back; this is done with its public
`objects` API and `restore()`).

Also here, because they need no Qt either: the reader contribution (NIfTI, NRRD, MHA through
`ensam_infer.volumes.read_volume`, spacing as the layer scale) and the sample phantom.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ensam_infer.prompts import Box, PromptError, check_point
from ensam_infer.volumes import Volume, read_volume, volume_stem, write_mask

if TYPE_CHECKING:  # torch is imported only when a session is made
    from ensam_infer.session import EnsamSession

Point = tuple[int, int, int]
Click = tuple[Point, bool]
LayerData = tuple[Any, dict, str]

GEOMETRY_KEY = "ensam_geometry"
MAX_OBJECT = 255


# ----- coordinates --------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerTransform:
    """The data-to-world map of a napari layer over its last three axes (z, y, x)."""

    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    translate: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @classmethod
    def of(cls, layer: Any) -> LayerTransform:
        """A napari layer's scale and translate (any object with those attributes). Layers
        rotated, sheared or with an affine are refused: voxel boxes need aligned axes."""
        ndim = len(layer.scale)
        for name in ("rotate", "affine"):
            matrix = getattr(layer, name, None)
            matrix = getattr(matrix, "affine_matrix", matrix)
            if matrix is not None and not np.allclose(np.asarray(matrix), np.eye(len(matrix))):
                raise ValueError(f"layer {getattr(layer, 'name', '')!r} has a {name}: unsupported")
        shear = getattr(layer, "shear", None)
        if shear is not None and np.any(np.abs(np.asarray(shear)) > 1e-9):
            raise ValueError(f"layer {getattr(layer, 'name', '')!r} is sheared: unsupported")
        if ndim < 3:
            scale = (1.0,) * (3 - ndim) + tuple(float(v) for v in layer.scale)
            translate = (0.0,) * (3 - ndim) + tuple(float(v) for v in layer.translate)
        else:
            scale = tuple(float(v) for v in layer.scale[-3:])
            translate = tuple(float(v) for v in layer.translate[-3:])
        return cls(scale, translate)

    def to_world(self, data: np.ndarray) -> np.ndarray:
        return np.asarray(data, float) * np.asarray(self.scale) + np.asarray(self.translate)

    def to_data(self, world: np.ndarray) -> np.ndarray:
        return (np.asarray(world, float) - np.asarray(self.translate)) / np.asarray(self.scale)


def _last3(points: np.ndarray | Sequence) -> np.ndarray:
    """(N, 3) float points from (N, >=3) or (3,) data (extra leading axes are dropped)."""
    arr = np.atleast_2d(np.asarray(points, float))
    if arr.shape[-1] < 3:
        raise PromptError(f"expected 3-D points, got shape {arr.shape}")
    return arr[:, -3:]


def to_voxel_coords(
    points: np.ndarray | Sequence, source: LayerTransform, image: LayerTransform
) -> np.ndarray:
    """Points in `source` layer data coordinates -> continuous voxel coordinates of the image."""
    return image.to_data(source.to_world(_last3(points)))


def to_voxels(
    points: np.ndarray | Sequence, source: LayerTransform, image: LayerTransform
) -> np.ndarray:
    """Points in `source` layer data coordinates -> the image voxels (z, y, x) they fall in."""
    return np.floor(to_voxel_coords(points, source, image) + 0.5).astype(int)


def slice_index(world_point: Sequence[float], image: LayerTransform, axis: int = 0) -> int:
    """The image slice along `axis` (0: z) at a world point (e.g. `viewer.dims.point`)."""
    voxel = image.to_data(np.asarray(world_point, float)[-3:])
    return int(np.floor(voxel[axis] + 0.5))


def default_depth(index: int, size: int, margin: int = 3) -> tuple[int, int]:
    """The default z-range of a box drawn on slice `index`: that slice +- `margin`."""
    index = min(max(int(index), 0), max(int(size) - 1, 0))
    return max(0, index - margin), min(int(size) - 1, index + margin)


def rectangle_to_box(
    vertices: np.ndarray | Sequence,
    shape: Sequence[int],
    source: LayerTransform,
    image: LayerTransform,
    depth: tuple[int, int] | None = None,
    axis: int | None = None,
) -> Box:
    """A 3-D voxel box from a rectangle drawn on one slice: its in-plane extent (the voxels
    whose centres it encloses, at least one per axis) and `depth` (first, last slice along
    `axis`, inclusive; default: the rectangle's own slice). `axis` defaults to the axis along
    which the rectangle is flat. 2-D vertices (y, x) are taken as lying in a z slice."""
    arr = np.atleast_2d(np.asarray(vertices, float))
    if arr.shape[-1] == 2:
        if depth is None:
            raise PromptError("a 2-D rectangle needs a z-range")
        arr = np.concatenate([np.zeros((len(arr), 1)), arr], axis=1)
        axis = 0 if axis is None else axis
    coords = to_voxel_coords(arr, source, image)
    if axis is None:
        axis = int(np.argmin(np.ptp(coords, axis=0)))
    lo_f, hi_f = coords.min(axis=0), coords.max(axis=0)
    lo = np.ceil(lo_f - 1e-6).astype(int)
    hi = np.floor(hi_f + 1e-6).astype(int)
    thin = lo > hi  # a rectangle narrower than a voxel: the voxel at its middle
    mid = np.floor((lo_f + hi_f) / 2 + 0.5).astype(int)
    lo[thin], hi[thin] = mid[thin], mid[thin]
    if depth is not None:
        a, b = sorted(int(v) for v in depth)
        lo[axis], hi[axis] = a, b
    else:
        lo[axis] = hi[axis] = int(np.floor(coords[:, axis].mean() + 0.5))
    return Box(*lo.tolist(), *hi.tolist()).clipped(tuple(int(n) for n in shape))


def corners_to_box(
    a: Sequence[float],
    b: Sequence[float],
    shape: Sequence[int],
    source: LayerTransform,
    image: LayerTransform,
) -> Box:
    """A 3-D voxel box with two opposite corner voxels (in `source` data coordinates)."""
    va, vb = to_voxels(np.vstack([_last3(a), _last3(b)]), source, image)
    lo, hi = np.minimum(va, vb), np.maximum(va, vb)
    return Box(*lo.tolist(), *hi.tolist()).clipped(tuple(int(n) for n in shape))


def box_outline(box: Box, index: int | None = None, axis: int = 0) -> np.ndarray:
    """The rectangle (4, 3) in voxel coordinates that shows `box` on slice `index` along
    `axis` (default its middle slice), drawn around the voxels' edges."""
    lo, hi = np.array(box.lo, float) - 0.5, np.array(box.hi, float) + 0.5
    if index is None:
        index = (box.lo[axis] + box.hi[axis]) // 2
    u, v = (k for k in range(3) if k != axis)
    corners = []
    for cu, cv in ((lo[u], lo[v]), (lo[u], hi[v]), (hi[u], hi[v]), (hi[u], lo[v])):
        p = np.zeros(3)
        p[axis], p[u], p[v] = index, cu, cv
        corners.append(p)
    return np.array(corners)


# ----- geometry for saving -----------------------------------------------------------------
@dataclass(frozen=True)
class Geometry:
    """Where the image lies in space, in SimpleITK's (x, y, z) order: what write_mask copies."""

    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    @classmethod
    def of_volume(cls, volume: Volume) -> Geometry:
        img = volume.image
        return cls(
            tuple(float(v) for v in img.GetSpacing()),
            tuple(float(v) for v in img.GetOrigin()),
            tuple(float(v) for v in img.GetDirection()),
        )

    @classmethod
    def of_transform(cls, transform: LayerTransform) -> Geometry:
        """An image known only by its napari layer: spacing from the scale, origin from the
        translate, axes aligned."""
        return cls(
            tuple(abs(v) for v in reversed(transform.scale)),
            tuple(reversed(transform.translate)),
        )

    def to_dict(self) -> dict:
        return {"spacing": self.spacing, "origin": self.origin, "direction": self.direction}

    @classmethod
    def from_dict(cls, d: dict) -> Geometry:
        return cls(
            tuple(float(v) for v in d["spacing"]),
            tuple(float(v) for v in d["origin"]),
            tuple(float(v) for v in d["direction"]),
        )

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return tuple(reversed(self.spacing))

    def reference(self, shape: Sequence[int]) -> Volume:
        """A Volume of `shape` with this geometry, for `write_mask`."""
        import SimpleITK as sitk

        image = sitk.Image([int(n) for n in reversed(tuple(shape))], sitk.sitkUInt8)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return Volume(np.zeros((0, 0, 0), np.uint8), self.spacing_zyx, image)


# ----- reader and sample data (napari contributions) ----------------------------------------
def _is_volume_path(path: Any) -> bool:
    return isinstance(path, str | Path) and volume_stem(str(path)) is not None


def get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """napari reader contribution: a reader for NIfTI, NRRD and MHA paths, else None."""
    paths = path if isinstance(path, list | tuple) else [path]
    if not paths or not all(_is_volume_path(p) for p in paths):
        return None
    return read_layers


def read_layers(path: str | list[str]) -> list[LayerData]:
    """Image layers for medical volumes, read with `read_volume`: the (z, y, x) array, its
    spacing as the layer scale, and its geometry in the layer metadata (used when saving)."""
    paths = path if isinstance(path, list | tuple) else [path]
    layers = []
    for p in paths:
        volume = read_volume(p)
        name = volume_stem(Path(p).name) or Path(p).name
        meta = {GEOMETRY_KEY: Geometry.of_volume(volume).to_dict(), "ensam_path": str(p)}
        attrs = {"name": name, "scale": volume.spacing_zyx, "metadata": meta}
        layers.append((volume.array, attrs, "image"))
    return layers


def sample_phantom() -> list[LayerData]:
    """napari sample data: the organs phantom of `ensam_infer.samples` (48 x 80 x 80 voxels,
    2.5 x 1 x 1 mm)."""
    from ensam_infer.samples import SAMPLES, make_phantom

    shape, kinds, _ = SAMPLES["Sample_phantom_organs"]
    image, _labels = make_phantom(shape, np.random.default_rng(0), kinds)
    scale = (2.5, 1.0, 1.0)
    meta = {GEOMETRY_KEY: Geometry(spacing=tuple(reversed(scale))).to_dict()}
    return [(image, {"name": "ENSAM phantom", "scale": scale, "metadata": meta}, "image")]


# ----- prompts and the controller -----------------------------------------------------------
@dataclass(frozen=True)
class Prompts:
    """What the user said about one object: a box and clicks (voxel (z, y, x), positive?)."""

    box: Box | None = None
    clicks: tuple[Click, ...] = ()

    @property
    def empty(self) -> bool:
        return self.box is None and not self.clicks

    def extends(self, other: Prompts) -> bool:
        """Same box, and other's clicks are the first of ours."""
        n = len(other.clicks)
        return self.box == other.box and len(self.clicks) >= n and self.clicks[:n] == other.clicks


@dataclass
class Step:
    """One prediction: the label map and what it took."""

    labels: np.ndarray
    seconds: float  # session.predict()
    encoded: bool  # the image encoder ran (a new region), not only the decoder
    load_seconds: float = 0.0  # the model was loaded first
    version: int = 0  # the controller's prompt version the labels answer
    decoded: tuple[int, ...] = ()  # the objects the decoder ran for

    @property
    def message(self) -> str:
        """What the widget's status line shows, e.g. "decoded in 0.42 s"."""
        if self.encoded:
            text = f"encoded + decoded in {self.seconds:.2f} s"
        elif self.decoded:
            text = f"decoded in {self.seconds:.2f} s"
        else:
            text = f"updated in {self.seconds:.2f} s (no network run)"
        if self.load_seconds:
            text += f"; model loaded in {self.load_seconds:.1f} s"
        return text


@dataclass
class _Image:
    volume: Any
    spacing: tuple[float, float, float] | None
    geometry: Geometry
    version: int


@dataclass
class _Snapshot:
    logits: Any  # torch.Tensor
    roi: Any  # ensam_infer.roi.Roi


class EnsamController:
    """Prompt bookkeeping for one image and the bridge to an `EnsamSession`.

    UI-thread methods (set_image, new_object, select, set_box, add_click, undo_click,
    reset_object, reset, save) only edit the prompts; `run()` does the model work and must be
    called from one thread at a time (the widget runs it on a napari thread_worker)."""

    def __init__(
        self,
        session: EnsamSession | Callable[[], EnsamSession] | None = None,
        history: int = 16,
    ) -> None:
        """session: a ready session, a function that makes one (called at the first run, on
        the worker thread: loading torch and the weights takes seconds), or None for the
        shipped weights. history: how many answers per object undo can go back to."""
        if session is None:
            self._factory: Callable[[], EnsamSession] | None = _default_session
            self._session: EnsamSession | None = None
        elif not hasattr(session, "predict"):  # a factory
            self._factory, self._session = session, None
        else:
            self._factory, self._session = None, session
        self.history = int(history)
        self._lock = threading.RLock()
        self._run_lock = threading.Lock()
        self._image: _Image | None = None
        self._prompts: dict[int, Prompts] = {}
        self._slices: dict[int, int] = {}  # the slice each box was drawn on (display only)
        self._version = 0
        self._done_version = -1
        self._labels: np.ndarray | None = None
        self.current = 1
        # worker-side state: what the session holds, and the answers undo can return to
        self._applied: dict[int, Prompts] = {}
        self._applied_image = -1
        self._hist: dict[int, OrderedDict[tuple[Prompts, Any], _Snapshot]] = {}

    # ----- image --------------------------------------------------------------------------
    def set_image(
        self,
        volume: Any,
        spacing: Sequence[float] | None = None,
        geometry: Geometry | None = None,
    ) -> None:
        """A 3-D (z, y, x) array (numpy or array-like). Prompts and labels are cleared."""
        shape = tuple(int(n) for n in np.shape(volume))
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"ENSAM needs a 3-D image, got shape {shape}")
        spacing = tuple(float(abs(s)) for s in spacing) if spacing is not None else None
        if geometry is None:
            geometry = Geometry(spacing=tuple(reversed(spacing)) if spacing else (1.0,) * 3)
        with self._lock:
            version = (self._image.version + 1) if self._image else 0
            self._image = _Image(volume, spacing, geometry, version)
            self._prompts.clear()
            self._slices.clear()
            self._labels = None
            self.current = 1
            self._version += 1

    @property
    def has_image(self) -> bool:
        return self._image is not None

    @property
    def shape(self) -> tuple[int, int, int]:
        if self._image is None:
            raise RuntimeError("no image: choose an image layer first")
        return tuple(int(n) for n in np.shape(self._image.volume))

    @property
    def geometry(self) -> Geometry:
        if self._image is None:
            raise RuntimeError("no image: choose an image layer first")
        return self._image.geometry

    # ----- objects and prompts (UI thread) ------------------------------------------------
    @property
    def version(self) -> int:
        """Goes up with every change of the prompts or the image."""
        return self._version

    @property
    def pending(self) -> bool:
        """Whether the prompts changed since the last answer."""
        return self._image is not None and self._done_version != self._version

    def object_ids(self) -> list[int]:
        """Ids of the objects that have prompts."""
        with self._lock:
            return sorted(i for i, p in self._prompts.items() if not p.empty)

    def prompts(self, object_id: int | None = None) -> Prompts:
        with self._lock:
            return self._prompts.get(self._id(object_id), Prompts())

    def box_slice(self, object_id: int | None = None) -> int | None:
        """The slice the object's box was drawn on (None: its middle slice)."""
        return self._slices.get(self._id(object_id))

    def _id(self, object_id: int | None) -> int:
        oid = self.current if object_id is None else int(object_id)
        if not 1 <= oid <= MAX_OBJECT:
            raise PromptError(f"object id {oid} is not in 1..{MAX_OBJECT}")
        return oid

    def select(self, object_id: int) -> None:
        self.current = self._id(object_id)

    def new_object(self) -> int:
        """Make the next unused id the current object (the current one if it is unused)."""
        with self._lock:
            if self.prompts().empty:
                return self.current
            ids = self.object_ids()
            free = [i for i in range(max(ids) + 1, MAX_OBJECT + 1)] if ids else [1]
            free = free or [i for i in range(1, MAX_OBJECT + 1) if i not in ids]
            if not free:
                raise PromptError(f"all {MAX_OBJECT} object ids are in use")
            self.current = free[0]
            return self.current

    def _edit(self, oid: int, prompts: Prompts) -> None:
        with self._lock:
            if prompts.empty:
                self._prompts.pop(oid, None)
                self._slices.pop(oid, None)
            else:
                self._prompts[oid] = prompts
            self._version += 1

    def set_box(
        self,
        box: Box | Sequence[int],
        object_id: int | None = None,
        keep_clicks: bool = False,
        drawn_on: int | None = None,
    ) -> Box:
        """The object's box (z0, y0, x0, z1, y1, x1), inclusive, clipped to the image. A new
        box starts the object over unless keep_clicks (e.g. when only its z-range changes)."""
        oid = self._id(object_id)
        if not isinstance(box, Box):
            if len(box) != 6:
                raise PromptError(f"a box needs 6 numbers, got {box!r}")
            box = Box(*(int(round(float(v))) for v in box))
        box = box.clipped(self.shape)
        with self._lock:
            old = self.prompts(oid)
            self._edit(oid, Prompts(box, old.clicks if keep_clicks else ()))
            if drawn_on is not None:
                self._slices[oid] = int(drawn_on)
            else:
                self._slices.pop(oid, None)
        return box

    def add_click(
        self, point: Sequence[float], positive: bool = True, object_id: int | None = None
    ) -> Point:
        """A click at voxel (z, y, x); PromptError when it is outside the image."""
        oid = self._id(object_id)
        p = check_point(tuple(point), self.shape)
        with self._lock:
            old = self.prompts(oid)
            self._edit(oid, replace(old, clicks=(*old.clicks, (p, bool(positive)))))
        return p

    def undo_click(self, object_id: int | None = None) -> bool:
        """Take back the object's last click; False when it has none."""
        oid = self._id(object_id)
        with self._lock:
            old = self.prompts(oid)
            if not old.clicks:
                return False
            self._edit(oid, replace(old, clicks=old.clicks[:-1]))
            return True

    def reset_object(self, object_id: int | None = None) -> None:
        """Forget the object's box and clicks (its label disappears at the next run)."""
        self._edit(self._id(object_id), Prompts())

    def reset(self) -> None:
        """Forget every object."""
        with self._lock:
            self._prompts.clear()
            self._slices.clear()
            self._version += 1
            self.current = 1

    # ----- results ------------------------------------------------------------------------
    @property
    def labels(self) -> np.ndarray:
        """The latest answer (zeros before the first)."""
        with self._lock:
            if self._labels is None:
                return np.zeros(self.shape, np.uint8)
            return self._labels

    def save(self, path: str | Path) -> Path:
        """Write the latest label map with the image's geometry (NIfTI, NRRD, MHA, ...)."""
        path = Path(path)
        if volume_stem(str(path)) is None:
            raise ValueError(f"{path.name}: save as .nii.gz, .nii, .nrrd or .mha")
        labels = self.labels
        write_mask(path, labels, self.geometry.reference(labels.shape))
        return path

    # ----- the model (worker thread) ------------------------------------------------------
    def session(self) -> EnsamSession:
        """The session, made on first use."""
        if self._session is None:
            assert self._factory is not None
            self._session = self._factory()
        return self._session

    def run(self) -> Step:
        """Bring the session in line with the prompts and predict. The encoder runs only
        for a new image region; otherwise only the changed objects are decoded, and an
        object whose prompts and region were seen before (undo, reset of another object)
        gets its earlier answer back without running the network."""
        with self._run_lock:
            with self._lock:
                if self._image is None:
                    raise RuntimeError("no image: choose an image layer first")
                image = self._image
                target = {i: p for i, p in self._prompts.items() if not p.empty}
                version = self._version
            load = 0.0
            if self._session is None:
                t0 = time.perf_counter()
                self.session()
                load = time.perf_counter() - t0
            session = self.session()
            if self._applied_image != image.version:
                session.set_image(np.asarray(image.volume), spacing=image.spacing)
                self._applied, self._hist = {}, {}
                self._applied_image = image.version
            try:
                stale = self._reconcile(session, target)
                session.restore(session.state, stale=stale)
                features = dict(session.state.features)
                logits = dict(session.state.logits)
                t0 = time.perf_counter()
                labels = session.predict()
                seconds = time.perf_counter() - t0
            except Exception:
                # The session may hold part of the new prompts: tell it everything again
                # next time (the objects then start from their prompts, not their logits).
                session.reset()
                self._applied = {}
                raise
            state = session.state
            encoded = any(f is not features.get(r) for r, f in state.features.items())
            decoded = tuple(i for i in sorted(target) if state.logits.get(i) is not logits.get(i))
            self._applied = dict(target)
            self._remember(session, target)
            with self._lock:
                if self._image is image:
                    self._labels = labels
                    self._done_version = version
            return Step(labels, seconds, encoded, load, version, decoded)

    def _reconcile(self, session: EnsamSession, target: dict[int, Prompts]) -> set[int]:
        """Tell the session what changed; the objects that must be decoded again."""
        stale: set[int] = set()
        rebuilt: set[int] = set()
        for oid in sorted(set(self._applied) | set(target)):
            want, have = target.get(oid), self._applied.get(oid)
            if want == have:
                continue
            if want is None:
                session.remove_object(oid)
                self._hist.pop(oid, None)
                continue
            stale.add(oid)
            if have is not None and want.extends(have):
                # new clicks: the object's current logits are the dense prompt, as usual
                for point, positive in want.clicks[len(have.clicks) :]:
                    session.add_click(point, positive, object_id=oid)
                continue
            # anything else (a click taken back, a new box): the prompts from scratch
            session.remove_object(oid)
            if want.box is not None:
                session.add_box(want.box, object_id=oid)
            for point, positive in want.clicks:
                session.add_click(point, positive, object_id=oid)
            rebuilt.add(oid)
        if not target:
            return stale
        regions = session.regions()
        for oid, want in target.items():
            history = self._hist.get(oid, {})
            snap = history.get((want, regions[oid]))
            if snap is not None:  # exactly this answer was given before: no decoding
                stale.discard(oid)
            elif oid in rebuilt:
                # start from the answer to the longest prefix of these prompts, same region
                bases = [k for k in history if k[1] == regions[oid] and want.extends(k[0])]
                if bases:
                    snap = history[max(bases, key=lambda k: len(k[0].clicks))]
            if snap is not None:
                session.state.logits[oid] = snap.logits
                session.state.rois[oid] = snap.roi
        return stale

    def _remember(self, session: EnsamSession, target: dict[int, Prompts]) -> None:
        for oid, prompts in target.items():
            if oid not in session.state.logits:
                continue
            roi = session.state.rois[oid]
            history = self._hist.setdefault(oid, OrderedDict())
            # the tensors are replaced, never changed in place, so keeping references is safe
            history[(prompts, roi)] = _Snapshot(session.state.logits[oid], roi)
            history.move_to_end((prompts, roi))
            while len(history) > self.history:
                history.popitem(last=False)


def _default_session() -> EnsamSession:
    from ensam_infer.session import EnsamSession

    return EnsamSession()
