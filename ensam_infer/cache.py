"""A per-case cache of encoder features and per-class logits between challenge steps.

The organizers start a fresh container for every click, so without a cache every step would
re-run the encoder. The cache lives in a hidden folder of the outputs directory (which
persists across steps) and is trusted only when everything matches: format version, model,
image content, region, and the hash of the prediction it produced equals the `prev_pred`
the evaluator hands back. Anything else (missing, stale, truncated, another model) is
treated as absent and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_path
from .roi import Roi
from .session import SessionState

CACHE_DIRNAME = ".ensam_cache"
CACHE_VERSION = 2  # 2: one region per object
# Feature values kept on disk per case (float16): 256 MB. The reference's largest region
# (256*128*128 voxels) has about 89M values over its four levels.
FEATURE_BUDGET = 128 * 1024 * 1024
KEEP_CASES = 2  # the outputs folder is shared by every case: keep only the newest few


def array_hash(array: np.ndarray) -> str:
    h = hashlib.sha1(str((array.shape, str(array.dtype))).encode())
    h.update(np.ascontiguousarray(array).data)
    return h.hexdigest()


def _roi_key(roi: Roi) -> list[list[int]]:
    return [list(roi.start), list(roi.stop), list(roi.pool)]


class CaseCache:
    def __init__(self, output_dir: str | Path, case_name: str, model_id: str) -> None:
        self.root = Path(output_dir) / CACHE_DIRNAME
        self.dir = self.root / case_name
        self.model_id = model_id

    def _meta(self, image_hash: str) -> dict:
        return {"version": CACHE_VERSION, "model": self.model_id, "image": image_hash}

    def load(
        self,
        image_hash: str,
        rois: dict[int, Roi],
        prev_pred_hash: str | None,
        whole: Roi | None = None,
    ) -> SessionState | None:
        """What the cache holds that is valid for this image, these object regions and this
        previous prediction: each object's logits when its region is unchanged and the
        prediction they made is `prev_pred`, and the features of every region still in use.
        `whole` (the ``blend`` rule): the whole volume's region when some object uses it, as
        its own region or besides its own; logits made there for an object now elsewhere, and
        the saved `whole_logits`, become `whole_logits`. None when nothing is usable."""
        try:
            meta = json.loads((self.dir / "meta.json").read_text())
            if any(meta.get(k) != v for k, v in self._meta(image_hash).items()):
                return None
            payload = torch.load(self.dir / "state.pt", map_location="cpu", weights_only=True)
            if payload.get("token") != meta.get("token"):
                return None
            state = SessionState(rois=dict(rois))
            regions = set(rois.values()) | ({whole} if whole is not None else set())
            wanted = {json.dumps(_roi_key(r)): r for r in regions}
            for key, features in payload["features"].items():
                roi = wanted.get(key)
                if roi is not None and self._fits(features, roi):
                    state.features[roi] = [f.float() for f in features]
            if prev_pred_hash is not None and meta.get("segs") == prev_pred_hash:
                cached_rois = meta.get("rois", {})
                for k, logits in payload["logits"].items():
                    i = int(k)
                    roi = rois.get(i)
                    if roi is None:
                        continue
                    if cached_rois.get(k) == _roi_key(roi):
                        self._put(state.logits, i, logits, roi)
                    elif whole is not None and cached_rois.get(k) == _roi_key(whole):
                        # made in the whole volume, the object now has a crop of its own
                        self._put(state.whole_logits, i, logits, whole)
                if whole is not None and meta.get("whole") == _roi_key(whole):
                    for k, logits in payload.get("whole_logits", {}).items():
                        if int(k) in rois:
                            self._put(state.whole_logits, int(k), logits, whole)
            return state if state.features or state.logits or state.whole_logits else None
        except Exception:  # any fault in a cache means "no cache", never a failed case
            return None

    @staticmethod
    def _put(store: dict[int, torch.Tensor], i: int, logits: torch.Tensor, roi: Roi) -> None:
        if tuple(logits.shape[2:]) == roi.padded:
            store[i] = logits.float()

    @staticmethod
    def _fits(features: list[torch.Tensor], roi: Roi) -> bool:
        grid = tuple(n // (2 ** (len(features) - 1)) for n in roi.padded)
        return tuple(features[-1].shape[2:]) == grid and tuple(features[0].shape[2:]) == roi.padded

    def save(
        self, image_hash: str, state: SessionState, segs_hash: str, whole: Roi | None = None
    ) -> None:
        """Store the state that produced `segs` (written before this is called); `whole`: the
        region of its `whole_logits`. Features are kept only up to FEATURE_BUDGET values:
        past that, re-encoding a region costs less than writing and reading its features at
        every step."""
        self.dir.mkdir(parents=True, exist_ok=True)
        token = f"{time.time_ns()}-{os.getpid()}"
        rois = {str(i): _roi_key(r) for i, r in state.rois.items() if i in state.logits}
        meta = {**self._meta(image_hash), "rois": rois, "segs": segs_hash, "token": token}
        whole_logits = state.whole_logits if whole is not None else {}
        if whole_logits:
            meta["whole"] = _roi_key(whole)
        features, budget = {}, FEATURE_BUDGET
        for roi, feats in state.features.items():
            size = sum(f.numel() for f in feats)
            if size > budget:
                continue
            budget -= size
            # Half precision halves the disk traffic; its rounding error is far below what
            # changes a mask.
            features[json.dumps(_roi_key(roi))] = [
                f.detach().to("cpu", torch.float16) for f in feats
            ]
        payload = {
            "token": token,
            "features": features,
            "logits": {str(k): v.to("cpu", torch.float16) for k, v in state.logits.items()},
            "whole_logits": {str(k): v.to("cpu", torch.float16) for k, v in whole_logits.items()},
        }
        (self.dir / "meta.json").unlink(missing_ok=True)
        with atomic_path(self.dir / "state.pt") as tmp:
            torch.save(payload, tmp)
        with atomic_path(self.dir / "meta.json") as tmp:
            tmp.write_text(json.dumps(meta))
        self._remove_leftovers()
        self._prune()

    def _remove_leftovers(self) -> None:
        """Temporary files of a save killed midway (SIGKILL runs no clean-up): only
        this process writes this folder now, so every *.tmp in it is dead weight."""
        for p in self.dir.glob(".*.tmp"):
            p.unlink(missing_ok=True)

    def _prune(self) -> None:
        """Drop the caches of older cases so the shared outputs folder does not fill up."""
        try:
            others = [d for d in self.root.iterdir() if d.is_dir() and d != self.dir]
        except OSError:
            return
        others.sort(key=lambda d: d.stat().st_mtime, reverse=True)
        for d in others[KEEP_CASES - 1 :]:
            shutil.rmtree(d, ignore_errors=True)
