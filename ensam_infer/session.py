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

from .device import autocast, configure_threads, cpu_bf16_requested, resolve_device
from .merge import LabelMerger, present_labels
from .model import ClassPrompt, Ensam, load_checkpoint
from .prompts import Box, ObjectPrompts, PromptError, check_point
from .roi import (
    MAX_VOXELS,
    Extent,
    Roi,
    label_extents,
    logits_to_roi,
    logits_to_subregion,
    mask_to_network_logits,
    object_regions,
    prepare_input,
    whole_volume_roi,
)
from .rules import (
    BLEND_MIN_CELLS,
    PromptRules,
    box_prior_logits,
    enforce_clicks,
    grow_empty_answer,
    outside_box_slices,
    remove_debris,
)
from .tta import checked_count, flips, flips_requested

MAX_LABEL = 255
CROP_MODES = ("union", "object")


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


def _within(roi: Roi, frame: Roi) -> tuple[slice, slice, slice]:
    """The slices of `frame`'s crop that `roi`'s crop covers."""
    return tuple(
        slice(a - f, b - f) for a, b, f in zip(roi.start, roi.stop, frame.start, strict=True)
    )


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
    """What a session knows about its image beyond the prompts: for each object, the region
    its network input covers and its latest low-resolution logits in that region's network
    space; and the encoder features of each region (objects of one region share them).
    `whole_logits` (the ``blend`` rule): the latest logits, in the whole volume's region, of
    the objects answered in a click crop."""

    rois: dict[int, Roi] = field(default_factory=dict)
    logits: dict[int, torch.Tensor] = field(default_factory=dict)
    features: dict[Roi, list[torch.Tensor]] = field(default_factory=dict)
    whole_logits: dict[int, torch.Tensor] = field(default_factory=dict)


class EnsamSession:
    def __init__(
        self,
        weights: str | Path | Ensam | None = None,
        device: str | torch.device | None = "auto",
        class_chunk: int | None = None,
        max_voxels: int | None = None,
        rules: PromptRules | None = None,
        crop: str | None = None,
        cpu_bf16: bool | None = None,
        tta: int | None = None,
    ) -> None:
        """weights: a checkpoint path (default: the shipped weights) or a built model.
        max_voxels: the size cap of the network input; default: ENSAM_MAX_VOXELS if set,
        else what the checkpoint recommends (`inference_max_voxels` in its metadata), else
        the reference 256*128*128.
        rules: what the prompts say that every answer must respect (`ensam_infer.rules`);
        default: ENSAM_RULES if set, else the validated default set. `PromptRules.none()`
        gives the network's raw answer.
        crop: "union" (the reference: one region, the union of every object's prompts, one
        encoder pass for all) or "object" (each object its own region around its own
        prompts, at its own scale, as in training); default: ENSAM_CROP if set, else what
        the checkpoint recommends (`inference_crop`), else "union".
        cpu_bf16: bf16 arithmetic on CPUs that do it in hardware (AVX512-BF16 or AMX);
        default: ENSAM_CPU_BF16 if set, else off. Ignored on GPUs (always mixed precision)
        and on CPUs without it.
        tta: how many mirrored copies of each network input are answered and averaged
        (`ensam_infer.tta`; 1 = none, up to 8); each costs one more encoder and decoder pass.
        default: ENSAM_TTA if set, else what the checkpoint recommends (`inference_tta`),
        else 1."""
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
        self.model = model.to(self.device).eval()
        model_meta = getattr(model, "metadata", {}) or {}
        self.tta = checked_count(
            flips_requested(int(model_meta.get("inference_tta", 1))) if tta is None else tta
        )
        # Features and logits made with another number of mirrors are not this session's.
        suffix = f"-tta{self.tta}" if self.tta > 1 else ""
        self.model_id = model_fingerprint(model) + suffix
        recommended = model_meta.get("inference_max_voxels")
        env = os.environ.get("ENSAM_MAX_VOXELS")
        self.max_voxels = int(max_voxels or env or recommended or MAX_VOXELS)
        self.rules = rules if rules is not None else PromptRules.from_env()
        crop = crop or os.environ.get("ENSAM_CROP") or model_meta.get("inference_crop", "union")
        if crop not in CROP_MODES:
            raise ValueError(f"unknown crop mode {crop!r} (known: {', '.join(CROP_MODES)})")
        self.crop = crop
        self.cpu_bf16 = cpu_bf16_requested() if cpu_bf16 is None else cpu_bf16
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
        self._extents: dict[int, Extent] = {}  # box-less objects in the last answer

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
        self.state.rois.clear()
        self.state.whole_logits.clear()
        self._stale.clear()
        self._last_labels = None
        self._prev_from_labels = False
        self._extents = {}

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
        self.state.rois.pop(int(object_id), None)
        self.state.whole_logits.pop(int(object_id), None)
        self._stale.discard(int(object_id))

    # ----- prediction --------------------------------------------------------------------
    def predict(self) -> np.ndarray:
        """The label map (uint8, image shape): each object's id where it wins, 0 elsewhere."""
        if self.image is None:
            raise RuntimeError("call set_image() before predict()")
        ids = sorted(i for i, o in self.objects.items() if not o.empty)
        if not ids:
            return np.zeros(self.image.shape, np.uint8)
        labels = self._predict_in(self.regions(), ids)
        if self.rules.recrop:
            # the answer just made may place a box-less object in a finer region than the
            # one that made it (click_crop); answer again there, in this step
            rois = self.regions()
            if any(rois[i] != self.state.rois[i] for i in ids):
                labels = self._predict_in(rois, ids)
        return labels

    def _predict_in(self, rois: dict[int, Roi], ids: list[int]) -> np.ndarray:
        """One answer with each object in its region of `rois`."""
        labels = np.zeros(self.image.shape, np.uint8)
        self._adopt_regions(rois)
        if self._prev_from_labels and self._last_labels is not None:
            self._logits_from_labels(ids)
            self._prev_from_labels = False
        todo = [i for i in ids if i in self._stale or i not in self.state.logits]
        self._decode([i for i in todo if i in self.state.whole_logits], self.whole_roi())
        self._decode(todo)
        self._stale.difference_update(todo)
        frame = self._frame(ids)
        merger = LabelMerger(frame.shape)
        # One class at a time at crop resolution: memory stays at a few crop-sized arrays
        # however many classes there are (100 classes on a 1000x512x512 CT would otherwise
        # need 100 GB of full-resolution logits).
        for i in ids:
            merger.add(i, self._crop_logits(i), _within(self.state.rois[i], frame))
        present = present_labels(merger.labels)
        for i in ids:
            if i not in present:
                self._force_present(merger, i, frame)
        crop = merger.numpy()
        self._apply_rules(crop, ids, frame)
        labels[frame.slices] = crop
        self._last_labels = labels
        return labels

    def regions(self) -> dict[int, Roi]:
        """The region each prompted object's network input covers. With the click_crop rule
        it depends on the last answer too (set it first: `set_previous_labels`)."""
        objects = {i: o for i, o in self.objects.items() if not o.empty}
        known = self._known_extents(objects) if self.rules.click_crop else None
        self._extents = known or {}
        return object_regions(self.image.shape, objects, self.crop, self.max_voxels, known)

    def _known_extents(self, objects: dict[int, ObjectPrompts]) -> dict[int, Extent]:
        """For the click_crop rule: where each box-less object is in the last answer (its
        voxels' bounding box). An object absent from it, or with no answer yet, has none and
        keeps the whole volume, the only region that cannot hide it."""
        if self._last_labels is None or self._last_labels.shape != self.image.shape:
            return {}
        ids = [i for i, o in objects.items() if o.box is None]
        return label_extents(self._last_labels, ids)

    def whole_roi(self) -> Roi:
        """The whole volume's region (where box-less objects start)."""
        return whole_volume_roi(self.image.shape, self.max_voxels)

    def blended(self, object_id: int, roi: Roi) -> bool:
        """Whether the ``blend`` rule answers this object in the whole volume too: a box-less
        object whose region is a click crop and whose last answer the whole volume's view
        resolves (``BLEND_MIN_CELLS`` pooled voxels across on every axis)."""
        obj = self.objects.get(object_id)
        if not self.rules.blend or obj is None or obj.box is not None:
            return False
        whole = self.whole_roi()
        extent = self._extents.get(object_id)
        if roi == whole or extent is None:
            return False
        size = np.array(extent[1]) - np.array(extent[0]) + 1
        return bool((size >= BLEND_MIN_CELLS * np.array(whole.pool)).all())

    def feature_regions(self, rois: dict[int, Roi]) -> set[Roi]:
        """The regions whose encoder features predicting with `rois` needs."""
        regions = set(rois.values())
        if any(self.blended(i, r) for i, r in rois.items()):
            regions.add(self.whole_roi())
        return regions

    def _adopt_regions(self, rois: dict[int, Roi]) -> None:
        """Move objects to their current regions. Logits are only valid in the region that
        made them: an object whose region changed gets pseudo-logits from the last answer,
        so later clicks still refine it instead of starting over; with ``blend``, logits made
        in the whole volume move to `whole_logits` (and back). Features of regions no object
        uses any more are dropped."""
        whole = self.whole_roi()
        moved = [
            i
            for i, roi in rois.items()
            if self.state.rois.get(i) not in (None, roi) and i in self.state.logits
        ]
        for i in moved:
            logits = self.state.logits.pop(i)
            if self.state.rois[i] == whole and self.blended(i, rois[i]):
                self.state.whole_logits[i] = logits
        for i, roi in rois.items():
            if not self.blended(i, roi) and i in self.state.whole_logits:
                logits = self.state.whole_logits.pop(i)
                if roi == whole and i not in self.state.logits:
                    self.state.logits[i] = logits
        self.state.rois.update(rois)
        if self._last_labels is not None:
            self._logits_from_labels(moved)
            blended = [i for i, r in rois.items() if self.blended(i, r)]
            self._logits_from_labels(blended, whole)
        in_use = self.feature_regions(self.state.rois)
        for roi in [r for r in self.state.features if r not in in_use]:
            del self.state.features[roi]

    def _frame(self, ids: list[int]) -> Roi:
        """The smallest crop of the volume holding every object's region (the merge runs on
        it; only start and stop matter)."""
        rois = [self.state.rois[i] for i in ids]
        start = tuple(int(v) for v in np.min([r.start for r in rois], axis=0))
        stop = tuple(int(v) for v in np.max([r.stop for r in rois], axis=0))
        return Roi(start, stop, (1, 1, 1))

    def _crop_logits(self, object_id: int) -> torch.Tensor:
        roi = self.state.rois[object_id]
        logits = logits_to_roi(self.state.logits[object_id], roi)[0]
        whole = self.state.whole_logits.get(object_id)
        if whole is not None:
            # the crop lies inside the whole volume, so its slices are the same in both
            logits = (logits + logits_to_subregion(whole, self.whole_roi(), roi.slices)[0]) / 2
        box = self.objects[object_id].box
        if self.rules.z_range and box is not None:
            logits = outside_box_slices(logits, box, roi.start)
        return logits

    def _force_present(self, merger: LabelMerger, object_id: int, frame: Roi) -> None:
        """An object that won no voxel is raised inside its box (or around its positive
        clicks) until it does."""
        roi = self.state.rois[object_id]
        region = self._region(object_id, roi)
        if region is None:
            region = tuple(slice(0, n) for n in roi.shape)
        logits = self._crop_logits(object_id)[region]
        offset = [a - b for a, b in zip(roi.start, frame.start, strict=True)]
        in_frame = tuple(
            slice(s.start + o, s.start + o + n)
            for s, o, n in zip(region, offset, logits.shape, strict=True)
        )
        merger.ensure_present(object_id, logits, in_frame)

    def _apply_rules(self, crop: np.ndarray, ids: list[int], frame: Roi) -> None:
        """The label-map rules on the frame's labels, in place: clicks first, so the parts of
        the mask that touch a positive click's ball count as touching the click (the network
        often misses the clicked voxel itself by a voxel or two), then debris, then growing
        what is left empty. Each object is handled on its own region of the frame (a view),
        the only place its label can be: a rule's cost follows the object, not the frame
        (100 objects spread over a 1000x512x512 CT were 100 passes over the whole volume)."""
        for i in ids:
            obj, roi = self.objects[i], self.state.rois[i]
            view = crop[_within(roi, frame)]
            points = [tuple(p - s for p, s in zip(q, roi.start, strict=True)) for q in obj.points]
            if self.rules.clicks:
                enforce_clicks(view, i, points, obj.positive, self.rules.click_radius)
            if self.rules.debris:
                seeds = [p for p, pos in zip(points, obj.positive, strict=True) if pos]
                box = self._box_region(obj.box, roi) if obj.box is not None else None
                remove_debris(view, i, box, seeds)
            if self.rules.click_grow and obj.box is None:  # judged on what debris left
                image = self.image[roi.slices]
                grow_empty_answer(view, image, i, points, obj.positive, self.rules.click_radius)

    def _features(self, roi: Roi) -> list[torch.Tensor]:
        """The encoder's features of the region, one batch entry per test-time mirror."""
        if roi not in self.state.features:
            x = prepare_input(self.image, roi).to(self.device)
            x = torch.cat([f.tensor(x) for f in flips(self.tta, roi.pooled)])
            with torch.no_grad(), autocast(self.device, self.cpu_bf16):
                self.state.features[roi] = self.model.encode(x)
        return self.state.features[roi]

    def _logits_from_labels(self, ids: list[int], region: Roi | None = None) -> None:
        """Pseudo-logits from the last answer for the objects with none in their region (or
        in `region`, the whole volume, into `whole_logits`, for ``blend``); they are decoded
        again with those as their dense prompt."""
        store = self.state.logits if region is None else self.state.whole_logits
        for i in ids:
            if i not in store:
                roi = region if region is not None else self.state.rois[i]
                store[i] = mask_to_network_logits(self._last_labels == i, roi)
                self._stale.add(i)

    def _decode(self, ids: list[int], region: Roi | None = None) -> None:
        """New logits for `ids`, region by region, in chunks that share the features: each
        in its own region, or all in `region` (the whole volume, for ``blend``), whose logits
        go to `whole_logits`."""
        by_roi: dict[Roi, list[int]] = {}
        for i in ids:
            by_roi.setdefault(region if region is not None else self.state.rois[i], []).append(i)
        store = self.state.logits if region is None else self.state.whole_logits
        for roi, members in by_roi.items():
            features = self._features(roi)
            voxels = int(np.prod(roi.padded))
            size = self.class_chunk or max(1, min(64, self.chunk_voxels // (voxels * self.tta)))
            for start in range(0, len(members), size):
                self._decode_chunk(members[start : start + size], roi, features, store)

    def _decode_chunk(
        self,
        chunk: list[int],
        roi: Roi,
        features: list[torch.Tensor],
        store: dict[int, torch.Tensor],
    ) -> None:
        """Each object of the chunk on every test-time mirror at once (batch entry
        object * mirrors + mirror); its logits (into `store`, which also holds its previous
        ones) are the mean of the mirrored-back answers."""
        mirrors = flips(self.tta, roi.pooled)
        prompts = [self._network_prompt(self.objects[i], roi) for i in chunk]
        prev = [
            self._previous_logits(store.get(i), p, roi) for i, p in zip(chunk, prompts, strict=True)
        ]
        prev_logits = prev_valid = None
        if any(p is not None for p in prev):
            zeros = torch.zeros((1, 1, *roi.padded))
            prev_logits = torch.cat(
                [m.tensor(p if p is not None else zeros) for p in prev for m in mirrors]
            )
            prev_valid = torch.tensor([p is not None for p in prev for _ in mirrors])
            prev_logits, prev_valid = prev_logits.to(self.device), prev_valid.to(self.device)
        prompts = [m.prompt(p) for p in prompts for m in mirrors]
        if len(mirrors) > 1 and len(chunk) > 1:  # one object: its batch is the mirrors'
            features = [f.repeat(len(chunk), 1, 1, 1, 1) for f in features]
        with torch.no_grad(), autocast(self.device, self.cpu_bf16):
            out = self.model.decode(features, prompts, prev_logits, prev_valid).float().cpu()
        for k, i in enumerate(chunk):
            answers = [m.tensor(out[k * len(mirrors) + j]) for j, m in enumerate(mirrors)]
            store[i] = torch.stack(answers).mean(0)[None]

    def _previous_logits(
        self, logits: torch.Tensor | None, prompt: ClassPrompt, roi: Roi
    ) -> torch.Tensor | None:
        """The dense prompt: the object's latest `logits` in this region; at its first step,
        the box itself when the box_prior rule is on."""
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
