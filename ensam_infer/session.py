"""EnsamSession: set an image once, add boxes and clicks, get the mask back.

The encoder runs once per image region; every later prompt runs only the prompt encoder,
transformer and decoder, reusing each object's previous logits as the dense prompt. The
same object serves the command line, the challenge container and interactive tools.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .device import autocast, configure_threads, resolve_device
from .merge import LabelMerger
from .model import ClassPrompt, Ensam, load_checkpoint
from .prompts import Box, ObjectPrompts, PromptError, check_point
from .roi import (
    MAX_VOXELS,
    Roi,
    logits_to_roi,
    mask_to_network_logits,
    prepare_input,
    roi_for_prompts,
)
from .rules import (
    PromptRules,
    box_prior_logits,
    enforce_clicks,
    outside_box_slices,
    remove_debris,
)

MAX_LABEL = 255


def default_weights() -> Path:
    """ENSAM_WEIGHTS if set, else the shipped weights: inside the package when installed from
    a wheel (`ensam_infer/weights/ensam.pt`), else the checkout's top-level `weights/ensam.pt`.
    With neither present, the path that the error message should name."""
    env = os.environ.get("ENSAM_WEIGHTS")
    if env:
        return Path(env)
    package = Path(__file__).resolve().parent
    installed = package / "weights" / "ensam.pt"
    checkout = package.parent / "weights" / "ensam.pt"
    for path in (installed, checkout):
        if path.is_file():
            return path
    return installed if installed.parent.is_dir() else checkout


def model_fingerprint(model: Ensam) -> str:
    """A hash of the weights and config: caches made by other weights are never reused."""
    h = hashlib.sha1(repr(model.config.to_dict()).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes()[:4096])
        h.update(str(float(tensor.float().sum())).encode())
    return h.hexdigest()[:16]


def to_uint8(volume: np.ndarray, window: tuple[float, float] | None = None) -> np.ndarray:
    """Map any real-valued volume to 0..255 as the challenge files are: a given window, or
    the 0.5-99.5 percentiles of the volume. uint8 volumes pass through untouched."""
    if volume.dtype == np.uint8:
        return volume
    vol = np.asarray(volume, dtype=np.float32)
    finite = np.isfinite(vol)
    all_finite = bool(finite.all())
    if window is None:
        sample = vol.ravel() if all_finite else vol[finite]
        if sample.size == 0:
            return np.zeros(vol.shape, np.uint8)
        lo, hi = np.percentile(sample[:: max(1, sample.size // 1_000_000)], [0.5, 99.5])
    else:
        lo, hi = window
    if not all_finite:
        # +inf is "brighter than anything", -inf and NaN carry no intensity: window ends.
        vol = np.nan_to_num(vol, nan=lo, posinf=hi, neginf=lo)
    if hi <= lo:
        return np.where(vol > lo, 255, 0).astype(np.uint8)
    scaled = (np.clip(vol, lo, hi) - lo) / (hi - lo) * 255.0
    return np.round(scaled).astype(np.uint8)


@dataclass
class SessionState:
    """What a session knows about its image beyond the prompts: the encoder features for a
    region and each object's latest low-resolution logits in that region's network space."""

    roi: Roi | None = None
    features: list[torch.Tensor] | None = None
    logits: dict[int, torch.Tensor] = field(default_factory=dict)


class EnsamSession:
    def __init__(
        self,
        weights: str | Path | Ensam | None = None,
        device: str | torch.device | None = "auto",
        class_chunk: int | None = None,
        max_voxels: int | None = None,
        rules: PromptRules | None = None,
    ) -> None:
        """weights: a checkpoint path (default: the shipped weights) or a built model.
        max_voxels: the size cap of the network input; default: ENSAM_MAX_VOXELS if set,
        else what the checkpoint recommends (`inference_max_voxels` in its metadata), else
        the reference 256*128*128.
        rules: what the prompts say that every answer must respect (`ensam_infer.rules`);
        default: ENSAM_RULES if set, else the validated default set. `PromptRules.none()` gives the
        network's raw answer."""
        self.device = resolve_device(device)
        if self.device.type == "cpu":
            configure_threads()
        if isinstance(weights, Ensam):
            model = weights
        else:
            path = Path(weights) if weights is not None else default_weights()
            if not path.is_file():
                raise FileNotFoundError(
                    f"no ENSAM weights at {path}: pass weights=... or set ENSAM_WEIGHTS"
                )
            model = load_checkpoint(path)
        self.model_id = model_fingerprint(model)
        self.model = model.to(self.device).eval()
        recommended = getattr(model, "metadata", {}).get("inference_max_voxels")
        env = os.environ.get("ENSAM_MAX_VOXELS")
        self.max_voxels = int(max_voxels or env or recommended or MAX_VOXELS)
        self.rules = rules if rules is not None else PromptRules.from_env()
        # Decoding many objects at once is fastest, but each one holds full-resolution
        # activations: the chunk is sized so a chunk holds at most this many input voxels
        # (4 or 16 full-size crops), which keeps memory flat for cases with many classes.
        self.class_chunk = class_chunk
        self.chunk_voxels = (16 if self.device.type == "cuda" else 4) * MAX_VOXELS
        self.image: np.ndarray | None = None
        self.spacing: tuple[float, float, float] | None = None
        self.objects: dict[int, ObjectPrompts] = {}
        self.state = SessionState()
        self._stale: set[int] = set()
        self._last_labels: np.ndarray | None = None
        self._prev_from_labels = False

    # ----- image and prompts -------------------------------------------------------------
    def set_image(
        self,
        volume: np.ndarray,
        spacing: tuple[float, float, float] | None = None,
        window: tuple[float, float] | None = None,
    ) -> None:
        """A 3D volume (z, y, x); non-uint8 volumes are windowed to 0..255 first."""
        volume = np.asarray(volume)
        if volume.ndim != 3 or min(volume.shape) < 1:
            raise ValueError(f"expected a non-empty 3D volume, got shape {volume.shape}")
        self.image = np.ascontiguousarray(to_uint8(volume, window))
        self.spacing = tuple(float(s) for s in spacing) if spacing is not None else None
        self.reset()
        self.state = SessionState()

    def reset(self) -> None:
        """Forget every prompt and prediction; keep the image and its encoder features."""
        self.objects.clear()
        self.state.logits.clear()
        self._stale.clear()
        self._last_labels = None
        self._prev_from_labels = False

    def _object(self, object_id: int) -> ObjectPrompts:
        if self.image is None:
            raise RuntimeError("call set_image() before adding prompts")
        if not 1 <= int(object_id) <= MAX_LABEL:
            raise PromptError(f"object id {object_id} is not in 1..{MAX_LABEL}")
        self._stale.add(int(object_id))
        return self.objects.setdefault(int(object_id), ObjectPrompts())

    def add_box(self, box: Box | tuple[int, ...], object_id: int = 1) -> None:
        """A box (z0, y0, x0, z1, y1, x1), inclusive voxel corners; replaces an earlier one."""
        if not isinstance(box, Box):
            if len(box) != 6:
                raise PromptError(f"a box needs 6 numbers, got {box!r}")
            box = Box(*(int(round(float(v))) for v in box))
        box = box.clipped(self.image.shape if self.image is not None else (0, 0, 0))
        self._object(object_id).box = box

    def add_click(
        self, point: tuple[int, int, int], positive: bool = True, object_id: int = 1
    ) -> None:
        """A click at voxel (z, y, x): positive adds to the object, negative removes."""
        if self.image is None:
            raise RuntimeError("call set_image() before adding prompts")
        p = check_point(point, self.image.shape)
        self._object(object_id).add_click(p, positive)

    def restore(self, state: SessionState, stale: set[int] | None = None) -> None:
        """Adopt a saved state (features and logits for this image). `stale`: objects whose
        prompts changed since those logits were made (default: all that have none)."""
        self.state = state
        self._stale = set(stale) if stale is not None else set()

    def set_previous_labels(self, labels: np.ndarray) -> None:
        """A previous answer for this image, used at the next predict() as the dense prompt
        of objects without logits of their own (e.g. after a process restart)."""
        self._last_labels = np.asarray(labels, np.uint8)
        self._prev_from_labels = True

    def remove_object(self, object_id: int) -> None:
        self.objects.pop(int(object_id), None)
        self.state.logits.pop(int(object_id), None)
        self._stale.discard(int(object_id))

    # ----- prediction --------------------------------------------------------------------
    def predict(self) -> np.ndarray:
        """The label map (uint8, image shape): each object's id where it wins, 0 elsewhere."""
        if self.image is None:
            raise RuntimeError("call set_image() before predict()")
        ids = sorted(i for i, o in self.objects.items() if not o.empty)
        labels = np.zeros(self.image.shape, np.uint8)
        if not ids:
            return labels
        roi = self.roi()
        self._ensure_features(roi)
        if self._prev_from_labels and self._last_labels is not None:
            self._logits_from_labels(ids, roi)
            self._prev_from_labels = False
        todo = [i for i in ids if i in self._stale or i not in self.state.logits]
        self._decode(todo)
        merger = LabelMerger(roi.shape)
        # One class at a time at crop resolution: memory stays at a few crop-sized arrays
        # however many classes there are (100 classes on a 1000x512x512 CT would otherwise
        # need 100 GB of full-resolution logits).
        for i in ids:
            merger.add(i, self._crop_logits(i, roi))
        present = set(np.flatnonzero(np.bincount(merger.numpy().ravel(), minlength=256)))
        for i in ids:
            if i not in present:
                merger.ensure_present(i, self._crop_logits(i, roi), self._region(i, roi))
        crop = merger.numpy()
        self._apply_rules(crop, ids, roi)
        labels[roi.slices] = crop
        self._last_labels = labels
        return labels

    def _crop_logits(self, object_id: int, roi: Roi) -> torch.Tensor:
        logits = logits_to_roi(self.state.logits[object_id], roi)[0]
        box = self.objects[object_id].box
        if self.rules.z_range and box is not None:
            logits = outside_box_slices(logits, box, roi.start)
        return logits

    def _apply_rules(self, crop: np.ndarray, ids: list[int], roi: Roi) -> None:
        """The label-map rules (debris, then clicks) on the crop's labels, in place."""
        for i in ids:
            obj = self.objects[i]
            points = [tuple(p - s for p, s in zip(q, roi.start, strict=True)) for q in obj.points]
            if self.rules.debris:
                seeds = [p for p, pos in zip(points, obj.positive, strict=True) if pos]
                box = self._box_region(obj.box, roi) if obj.box is not None else None
                remove_debris(crop, i, box, seeds)
            if self.rules.clicks:
                enforce_clicks(crop, i, points, obj.positive, self.rules.click_radius)

    def roi(self) -> Roi:
        """The region the network sees for the current prompts."""
        objects = [o for o in self.objects.values() if not o.empty]
        return roi_for_prompts(self.image.shape, objects, max_voxels=self.max_voxels)

    def _ensure_features(self, roi: Roi) -> None:
        if self.state.features is not None and self.state.roi == roi:
            return
        old_logits = self.state.logits
        x = prepare_input(self.image, roi).to(self.device)
        with torch.no_grad(), autocast(self.device):
            features = self.model.encode(x)
        self.state = SessionState(roi=roi, features=features)
        if old_logits and self._last_labels is not None:
            # A new region invalidates network-space logits; rebuild them from the last
            # answer so later clicks still refine it instead of starting over.
            self._logits_from_labels(list(old_logits), roi)

    def _logits_from_labels(self, ids: list[int], roi: Roi) -> None:
        """Pseudo-logits from the last answer for the objects with none in this region;
        they are decoded again with those as their dense prompt."""
        for i in ids:
            if i not in self.state.logits:
                self.state.logits[i] = mask_to_network_logits(self._last_labels == i, roi)
                self._stale.add(i)

    def _decode(self, ids: list[int]) -> None:
        roi = self.state.roi
        size = self.class_chunk or max(1, min(64, self.chunk_voxels // int(np.prod(roi.padded))))
        for start in range(0, len(ids), size):
            chunk = ids[start : start + size]
            prompts = [self._network_prompt(self.objects[i], roi) for i in chunk]
            prev = [self._previous_logits(i, p, roi) for i, p in zip(chunk, prompts, strict=True)]
            prev_logits = prev_valid = None
            if any(p is not None for p in prev):
                zeros = torch.zeros((1, 1, *roi.padded))
                prev_logits = torch.cat([p if p is not None else zeros for p in prev])
                prev_valid = torch.tensor([p is not None for p in prev])
                prev_logits, prev_valid = prev_logits.to(self.device), prev_valid.to(self.device)
            with torch.no_grad(), autocast(self.device):
                out = self.model.decode(self.state.features, prompts, prev_logits, prev_valid)
            for k, i in enumerate(chunk):
                self.state.logits[i] = out[k : k + 1].float().cpu()
                self._stale.discard(i)

    def _previous_logits(
        self, object_id: int, prompt: ClassPrompt, roi: Roi
    ) -> torch.Tensor | None:
        """The dense prompt: the object's latest logits; at its first step, the box itself
        when the box_prior rule is on."""
        logits = self.state.logits.get(object_id)
        if logits is None and self.rules.box_prior and prompt.box is not None:
            logits = box_prior_logits(prompt.box, roi.padded)
        return logits

    @staticmethod
    def _network_prompt(obj: ObjectPrompts, roi: Roi) -> ClassPrompt:
        box = roi.box_to_network(obj.box) if obj.box is not None else None
        points = np.array([roi.point_to_network(p) for p in obj.points], np.float32)
        return ClassPrompt(
            box=box,
            points=points.reshape(-1, 3),
            positive=np.array(obj.positive, bool),
        )

    def _region(self, object_id: int, roi: Roi) -> tuple[slice, slice, slice] | None:
        """Where a vanished object may be forced back: its box, else its positive clicks."""
        obj = self.objects[object_id]
        if obj.box is not None:
            return self._box_region(obj.box, roi)
        pos = [p for p, s in zip(obj.points, obj.positive, strict=True) if s]
        if not pos:
            return None
        return self._box_region(Box(*np.min(pos, axis=0), *np.max(pos, axis=0)), roi)

    @staticmethod
    def _box_region(box: Box, roi: Roi) -> tuple[slice, slice, slice]:
        """The box's slices on the crop of `roi`."""
        return tuple(
            slice(max(0, a - s), max(0, b - s) + 1)
            for a, b, s in zip(box.lo, box.hi, roi.start, strict=True)
        )
