"""The challenge's npz files: read every key with its quirks, write `segs` atomically.

Reading is liberal (numpy ints, object arrays of dicts, missing boxes, None in clicks_order,
2-D string arrays, spacing in any order); whatever is repaired is reported as a warning,
whatever cannot be used raises CaseError with a one-line reason.
"""

from __future__ import annotations

import os
import pickle
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .prompts import Box, ObjectPrompts
from .session import MAX_LABEL, to_uint8

BOX_KEYS = ("z_min", "z_max", "z_mid_y_min", "z_mid_x_min", "z_mid_y_max", "z_mid_x_max")


class CaseError(ValueError):
    """This case cannot be processed; the message says why in one line."""


@dataclass
class ChallengeCase:
    name: str
    image: np.ndarray  # uint8 (z, y, x)
    original_shape: tuple[int, ...]  # the shape `segs` must have
    spacing: tuple[float, float, float]
    objects: list[ObjectPrompts]  # index k is class k + 1
    has_boxes: bool
    new_click: list[bool]  # class k got a click at this step
    prev_pred: np.ndarray | None
    warnings: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.objects)

    @property
    def step(self) -> str:
        return "box" if self.prev_pred is None else "click"


def _as_list(value: object) -> list:
    """Object arrays, 0-d arrays and lists all become a plain list; a lone dict, string or
    number becomes a list of one (it is then judged like any other entry, not a crash)."""
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            value = value.item()
        else:
            return list(value)
    if value is None:
        return []
    if isinstance(value, (dict, str, bytes)) or not hasattr(value, "__iter__"):
        return [value]
    return list(value)


def _read_image(data: np.lib.npyio.NpzFile, warnings: list[str]) -> tuple[np.ndarray, tuple]:
    if "imgs" not in data.files:
        raise CaseError("no 'imgs' array in the file")
    img = np.asarray(data["imgs"])
    original = img.shape
    if img.dtype == object:
        raise CaseError("'imgs' is an object array, not an image")
    if img.size == 0:
        raise CaseError(f"'imgs' is empty (shape {img.shape})")
    if img.ndim == 2:
        warnings.append("2-D image treated as a single slice")
        img = img[None]
    elif img.ndim > 3 and np.squeeze(img).ndim == 3:
        img = np.squeeze(img)
        warnings.append(f"{len(original)}-D image {original} squeezed to {img.shape}")
    if img.ndim != 3:
        raise CaseError(f"'imgs' must be 3-D (z, y, x), got shape {original}")
    if img.dtype == np.bool_:
        warnings.append("'imgs' is boolean: mapped to 0/255")
        img = img.astype(np.uint8) * 255
    elif img.dtype != np.uint8:
        if not np.issubdtype(img.dtype, np.number):
            raise CaseError(f"'imgs' has non-numeric dtype {img.dtype}")
        warnings.append(f"'imgs' is {img.dtype}, not uint8: windowed to 0..255")
        img = to_uint8(img)
    return np.ascontiguousarray(img), original


def _read_spacing(data: np.lib.npyio.NpzFile, warnings: list[str]) -> tuple[float, ...]:
    try:
        spacing = np.asarray(data["spacing"], dtype=np.float64).ravel()
        if spacing.size != 3 or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
            raise ValueError
        return tuple(float(s) for s in spacing)
    except (KeyError, ValueError, TypeError):
        warnings.append("missing or invalid 'spacing': assumed 1 mm")
        return (1.0, 1.0, 1.0)


def _parse_box(entry: object, shape: tuple[int, int, int], warnings: list[str]) -> Box:
    if not isinstance(entry, dict):
        raise ValueError(f"not a dict: {type(entry).__name__}")
    missing = [k for k in BOX_KEYS if k not in entry]
    if missing:
        raise ValueError(f"missing keys {missing}")
    v = {k: int(round(float(entry[k]))) for k in BOX_KEYS}
    lo = [v["z_min"], v["z_mid_y_min"], v["z_mid_x_min"]]
    hi = [v["z_max"], v["z_mid_y_max"], v["z_mid_x_max"]]
    if any(a > b for a, b in zip(lo, hi, strict=True)):
        warnings.append(f"inverted box {tuple(lo)}..{tuple(hi)}: corners swapped")
    # An inverted box is most likely two swapped corners: keep the region they span.
    lo, hi = (
        [min(a, b) for a, b in zip(lo, hi, strict=True)],
        [max(a, b) for a, b in zip(lo, hi, strict=True)],
    )
    return Box(*lo, *hi).clipped(shape)


def _parse_points(raw: object) -> list[tuple[int, int, int]]:
    pts = _as_list(raw)
    if not pts:
        return []
    arr = np.asarray([np.asarray(p, dtype=np.float64).ravel() for p in pts])
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"clicks must be (z, y, x) triples, got shape {arr.shape}")
    return [tuple(int(round(c)) for c in p) for p in arr]


def _chronological(
    fg: list, bg: list, order: list
) -> tuple[list[tuple[int, int, int]], list[bool], bool]:
    """Interleave fg and bg clicks in the order they were given. Returns points, polarity,
    and whether the newest step added a click. Without a usable order: fg first, then bg."""
    kinds = [str(e) for e in order if e is not None and str(e) in ("fg", "bg")]
    if kinds.count("fg") == len(fg) and kinds.count("bg") == len(bg):
        queues = {"fg": list(fg), "bg": list(bg)}
        points, positive = [], []
        for kind in kinds:
            points.append(queues[kind].pop(0))
            positive.append(kind == "fg")
        last = order[-1] if order else None
        new = last is not None and str(last) in ("fg", "bg")
        return points, positive, new
    return list(fg) + list(bg), [True] * len(fg) + [False] * len(bg), bool(fg or bg)


def _read_clicks(
    data: np.lib.npyio.NpzFile, num_classes: int, shape: tuple, warnings: list[str]
) -> list[tuple[list, list[bool], bool]]:
    if "clicks" not in data.files:
        return [([], [], False)] * num_classes
    clicks = _as_list(data["clicks"])
    order_raw = data["clicks_order"] if "clicks_order" in data.files else None
    orders = _as_list(order_raw) if order_raw is not None else []
    if len(clicks) != num_classes:
        warnings.append(f"{len(clicks)} click entries for {num_classes} classes")
    result = []
    for k in range(num_classes):
        entry = clicks[k] if k < len(clicks) else {}
        if not isinstance(entry, dict):
            warnings.append(f"class {k + 1}: clicks entry is not a dict; ignored")
            result.append(([], [], False))
            continue
        try:
            fg, bg = _parse_points(entry.get("fg")), _parse_points(entry.get("bg"))
        except (ValueError, TypeError, OverflowError) as exc:
            warnings.append(f"class {k + 1}: unreadable clicks ({exc}); ignored")
            result.append(([], [], False))
            continue
        order = _as_list(orders[k]) if k < len(orders) else []
        points, positive, new = _chronological(fg, bg, order)
        inside = [all(0 <= c < n for c, n in zip(p, shape, strict=True)) for p in points]
        if not all(inside):
            warnings.append(f"class {k + 1}: {inside.count(False)} click(s) outside the volume")
            points = [p for p, ok in zip(points, inside, strict=True) if ok]
            positive = [s for s, ok in zip(positive, inside, strict=True) if ok]
        result.append((points, positive, new))
    return result


def _count_classes(data: np.lib.npyio.NpzFile) -> tuple[int, list | None]:
    boxes = _as_list(data["boxes"]) if "boxes" in data.files else None
    if boxes:
        return len(boxes), boxes
    # An empty 'boxes' array says as little as a missing one: the clicks decide K.
    if "clicks" in data.files:
        return len(_as_list(data["clicks"])), None
    what = "'boxes' is empty" if boxes is not None else "no 'boxes'"
    raise CaseError(f"{what} and no 'clicks': nothing says what to segment")


def read_case(path: str | Path) -> ChallengeCase:
    """Read one challenge npz. Raises CaseError (one line) when the case is unusable."""
    path = Path(path)
    name = path.name[: -len(".npz")] if path.name.endswith(".npz") else path.stem
    warnings: list[str] = []
    try:
        _check_zip(path)
        with np.load(path, allow_pickle=True) as data:
            return _read_case(data, name, warnings)
    except CaseError:
        raise
    # Truncated or corrupt archives fail in zipfile, zlib (deflate stream), numpy's header
    # parser or pickle (object arrays), depending on where the damage is.
    except (
        zipfile.BadZipFile,
        zlib.error,
        pickle.UnpicklingError,
        EOFError,
        OSError,
        ValueError,
        KeyError,
    ) as exc:
        raise CaseError(f"unreadable npz ({type(exc).__name__}: {exc})") from exc


def _check_zip(path: Path) -> None:
    """np.load, whatever the file is called, reads a .npy or (with allow_pickle) unpickles
    any other content: accept only zip archives, as an npz is."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise CaseError("empty file")
    if head not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise CaseError(f"not an npz (zip) archive: starts with {head!r}")


def _read_case(data: np.lib.npyio.NpzFile, name: str, warnings: list[str]) -> ChallengeCase:
    image, original = _read_image(data, warnings)
    shape = image.shape
    spacing = _read_spacing(data, warnings)
    num_classes, boxes = _count_classes(data)
    if num_classes == 0:
        raise CaseError("no classes: 'boxes' and 'clicks' are empty")
    if num_classes > MAX_LABEL:
        raise CaseError(f"{num_classes} classes do not fit the uint8 output (max {MAX_LABEL})")
    objects = [ObjectPrompts() for _ in range(num_classes)]
    for k, entry in enumerate(boxes or []):
        repairs: list[str] = []
        try:
            objects[k].box = _parse_box(entry, shape, repairs)
        except (ValueError, TypeError, OverflowError) as exc:
            warnings.append(f"class {k + 1}: box unusable ({exc}); ignored")
        warnings.extend(f"class {k + 1}: {w}" for w in repairs)
    clicks = _read_clicks(data, num_classes, shape, warnings)
    new_click = []
    for obj, (points, positive, new) in zip(objects, clicks, strict=True):
        for p, s in zip(points, positive, strict=True):
            obj.add_click(p, s)
        new_click.append(new)
    prev = _read_prev_pred(data, shape, warnings) if "prev_pred" in data.files else None
    for k, obj in enumerate(objects):
        if obj.empty:
            warnings.append(f"class {k + 1} has no usable prompt; it stays empty")
    return ChallengeCase(
        name=name,
        image=image,
        original_shape=original,
        spacing=spacing,
        objects=objects,
        has_boxes=boxes is not None,
        new_click=new_click,
        prev_pred=prev,
        warnings=warnings,
    )


def _read_prev_pred(
    data: np.lib.npyio.NpzFile, shape: tuple, warnings: list[str]
) -> np.ndarray | None:
    """The previous labels in the image's shape, or None (with a warning) if unusable: the
    step then runs from its prompts alone, which beats failing the case."""
    prev = np.asarray(data["prev_pred"])
    if not (np.issubdtype(prev.dtype, np.number) or prev.dtype == np.bool_):
        warnings.append(f"prev_pred has dtype {prev.dtype}; ignored")
        return None
    if prev.size == int(np.prod(shape)) and prev.shape != shape:
        prev = prev.reshape(shape)  # e.g. the 4-D shape of an image we squeezed
    if prev.shape != shape:
        warnings.append(f"prev_pred shape {prev.shape} != image {shape}; ignored")
        return None
    return prev.astype(np.uint8, copy=False)


def write_segs(path: str | Path, segs: np.ndarray) -> None:
    """Write {'segs': uint8} atomically: a temporary file in the same folder, then a rename,
    so readers only ever see the old file or the complete new one."""
    path = Path(path)
    try:
        _write_atomic(path, np.ascontiguousarray(segs, dtype=np.uint8))
    except OSError as exc:  # the raw error would name a random temporary file
        raise OSError(f"cannot write {path} ({exc.strerror or exc})") from exc
    _remove_leftovers(path)


def _write_atomic(path: Path, segs: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, segs=segs)
        os.chmod(tmp, 0o644)


def _remove_leftovers(path: Path) -> None:
    """Delete temporary files of this output left by a process killed mid-write (no
    `except` runs on SIGKILL); the outputs folder persists across all runs."""
    prefix = f".{path.name}."
    try:
        for p in path.parent.iterdir():
            if p.name.startswith(prefix) and p.name.endswith(".tmp"):
                p.unlink(missing_ok=True)
    except OSError:
        pass  # leftovers cost disk space, never results
