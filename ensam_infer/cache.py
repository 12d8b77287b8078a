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
CACHE_VERSION = 1
KEEP_CASES = 2  # the outputs folder is shared by every case: keep only the newest few


def array_hash(array: np.ndarray) -> str:
    h = hashlib.sha1(str((array.shape, str(array.dtype))).encode())
    h.update(np.ascontiguousarray(array).data)
    return h.hexdigest()


class CaseCache:
    def __init__(self, output_dir: str | Path, case_name: str, model_id: str) -> None:
        self.root = Path(output_dir) / CACHE_DIRNAME
        self.dir = self.root / case_name
        self.model_id = model_id

    def _meta(self, image_hash: str, roi: Roi) -> dict:
        return {
            "version": CACHE_VERSION,
            "model": self.model_id,
            "image": image_hash,
            "roi": [list(roi.start), list(roi.stop), list(roi.pool)],
        }

    def load(self, image_hash: str, roi: Roi, prev_pred_hash: str | None) -> SessionState | None:
        """The cached state if it is valid for this image, region and previous prediction."""
        try:
            meta = json.loads((self.dir / "meta.json").read_text())
            expected = self._meta(image_hash, roi)
            if any(meta.get(k) != v for k, v in expected.items()):
                return None
            payload = torch.load(self.dir / "state.pt", map_location="cpu", weights_only=True)
            if payload.get("token") != meta.get("token"):
                return None
            features = [f.float() for f in payload["features"]]
            logits = {int(k): v.float() for k, v in payload["logits"].items()}
            if any(tuple(v.shape[2:]) != roi.padded for v in logits.values()):
                return None
            grid = tuple(n // (2 ** (len(features) - 1)) for n in roi.padded)
            if tuple(features[-1].shape[2:]) != grid:
                return None
            if prev_pred_hash is None or meta.get("segs") != prev_pred_hash:
                logits = {}  # features are still good; logits belong to another prediction
            return SessionState(roi=roi, features=features, logits=logits)
        except Exception:  # any fault in a cache means "no cache", never a failed case
            return None

    def save(self, image_hash: str, state: SessionState, segs_hash: str) -> None:
        """Store the state that produced `segs` (written before this is called)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        token = f"{time.time_ns()}-{os.getpid()}"
        meta = {**self._meta(image_hash, state.roi), "segs": segs_hash, "token": token}
        # Features in half precision halve the disk traffic; their rounding error is far
        # below what changes a mask.
        payload = {
            "token": token,
            "features": [f.detach().to("cpu", torch.float16) for f in state.features],
            "logits": {str(k): v.to("cpu", torch.float16) for k, v in state.logits.items()},
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
