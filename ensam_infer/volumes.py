"""Medical image files (NIfTI, NRRD, MHA, anything SimpleITK reads) and prompt JSON files,
for using ENSAM outside the challenge. The mask is written with the image's geometry.

Prompt JSON:
    {"coordinates": "voxel" | "world",
     "window": [lo, hi],                      (optional intensity window)
     "objects": [{"id": 1,
                  "box": [z0, y0, x0, z1, y1, x1]   (voxel: inclusive indices)
                       | [[x, y, z], [x, y, z]]     (world: two corners in mm),
                  "clicks": [{"point": [z, y, x] | [x, y, z] (world), "positive": true}]}]}
Voxel coordinates are array indices in (z, y, x) order, like the challenge's; world
coordinates are physical points (x, y, z) in mm, as image viewers show them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .prompts import Box, ObjectPrompts, PromptError

# The volume files this project reads (SimpleITK's NIfTI, NRRD and MetaImage readers).
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def volume_stem(name: str, suffixes: tuple[str, ...] = VOLUME_SUFFIXES) -> str | None:
    """`name` without its suffix (any case: CT.NII.GZ is a volume too); None when it has
    none of `suffixes`."""
    lower = name.lower()
    for suffix in suffixes:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return None


@dataclass
class Volume:
    array: np.ndarray  # (z, y, x)
    spacing_zyx: tuple[float, float, float]
    image: object  # the SimpleITK image, for its geometry


def read_volume(path: str | Path) -> Volume:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ValueError(f"cannot read image {path}: {str(exc).strip().splitlines()[-1]}") from exc
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{path}: expected a 3-D single-channel image")
    array = sitk.GetArrayFromImage(image)  # SimpleITK returns (z, y, x)
    spacing = tuple(float(s) for s in reversed(image.GetSpacing()))
    return Volume(array, spacing, image)


def write_mask(path: str | Path, mask: np.ndarray, reference: Volume) -> None:
    """Write the label map with the reference image's origin, spacing and direction,
    atomically (temporary file in the same folder, then rename)."""
    import SimpleITK as sitk

    path = Path(path)
    out = sitk.GetImageFromArray(np.ascontiguousarray(mask, dtype=np.uint8))
    out.CopyInformation(reference.image)
    with atomic_path(path, suffix="".join(path.suffixes) or ".nii.gz") as tmp:
        sitk.WriteImage(out, str(tmp), True)


def _world_to_voxel(volume: Volume, point: list[float]) -> tuple[int, int, int]:
    if len(point) != 3:
        raise PromptError(f"world point {point!r} does not have 3 coordinates")
    idx = volume.image.TransformPhysicalPointToContinuousIndex([float(v) for v in point])
    x, y, z = (int(round(v)) for v in idx)
    return (z, y, x)


def read_prompts(path: str | Path, volume: Volume) -> tuple[dict[int, ObjectPrompts], tuple | None]:
    """Objects by id, and the optional intensity window, from a prompt JSON file."""
    try:
        spec = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PromptError(f"cannot read prompts {path}: {exc}") from exc
    world = spec.get("coordinates", "voxel") == "world"
    objects: dict[int, ObjectPrompts] = {}
    for n, entry in enumerate(spec.get("objects", []), start=1):
        obj_id = int(entry.get("id", n))
        obj = ObjectPrompts()
        if entry.get("box") is not None:
            box = entry["box"]
            if world:
                if len(box) != 2:
                    raise PromptError(f"object {obj_id}: a world box is two corner points")
                a, b = (_world_to_voxel(volume, c) for c in box)
                lo = [min(u, v) for u, v in zip(a, b, strict=True)]
                hi = [max(u, v) for u, v in zip(a, b, strict=True)]
                obj.box = Box(*lo, *hi)
            else:
                if len(box) != 6:
                    raise PromptError(f"object {obj_id}: a voxel box has 6 numbers")
                obj.box = Box(*(int(round(float(v))) for v in box))
        for click in entry.get("clicks", []):
            point = click["point"]
            p = _world_to_voxel(volume, point) if world else tuple(int(v) for v in point)
            obj.add_click(p, bool(click.get("positive", True)))
        objects[obj_id] = obj
    if not objects:
        raise PromptError(f"{path}: no objects")
    window = tuple(spec["window"]) if spec.get("window") is not None else None
    return objects, window
