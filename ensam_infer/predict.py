"""The challenge container's job: every npz in the inputs folder → `segs` in the outputs
folder, one case at a time, each case isolated so one bad file never takes others down."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cache import CaseCache, array_hash
from .challenge import CaseError, ChallengeCase, read_case, write_segs
from .merge import present_labels
from .prompts import PromptError
from .session import EnsamSession, SessionState

SECONDS_PER_CLASS = 90.0  # the organizers' limit, summed over a case's six steps


@dataclass
class CaseResult:
    name: str
    ok: bool
    seconds: float
    message: str = ""


def segment_case(
    session: EnsamSession, case: ChallengeCase, cache: CaseCache | None
) -> tuple[np.ndarray, SessionState | None, str]:
    """The label map for one case, the state to cache, and the image hash."""
    session.set_image(case.image, case.spacing)
    for k, obj in enumerate(case.objects, start=1):
        if obj.empty:
            continue
        if obj.box is not None:
            session.add_box(obj.box, k)
        for p, positive in zip(obj.points, obj.positive, strict=True):
            session.add_click(p, positive, k)
    ids = sorted(session.objects)
    if not ids:
        return np.zeros(case.image.shape, np.uint8), None, ""
    image_hash = array_hash(case.image)
    if case.prev_pred is not None and case.prev_pred.any():
        # Objects with no cached logits (lost cache, another prediction) get the previous
        # mask as their dense prompt, so the clicks still refine the earlier answer. An
        # all-empty previous mask is how click-only cases start; the model then gets no
        # dense prompt, as in training. Set before the regions are asked for: the
        # click_crop rule places box-less objects by the previous answer, and the cache
        # must be looked up for the regions predict() will use.
        session.set_previous_labels(case.prev_pred)
    rois = session.regions()
    prev_hash = array_hash(case.prev_pred) if case.prev_pred is not None else None
    # Whole-volume logits (blend) are looked up whenever some object uses the whole volume,
    # blended or as its own region: an object back from its crop resumes from them there.
    whole = session.whole_roi()
    whole = whole if whole in session.feature_regions(rois) else None
    cached = cache.load(image_hash, rois, prev_hash, whole) if cache is not None else None
    if cached is not None:
        # Objects without a new click keep their cached logits and are not decoded again.
        session.restore(cached, stale={k for k in ids if case.new_click[k - 1]})
    labels = session.predict()
    return labels, session.state, image_hash


def predict_folder(
    input_dir: str | Path,
    output_dir: str | Path,
    session: EnsamSession,
    use_cache: bool = True,
    log: object | None = None,
) -> list[CaseResult]:
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    log = sys.stderr if log is None else log  # looked up now: callers may redirect stderr
    files = sorted(p for p in input_dir.glob("*.npz") if p.is_file())
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # every case will then say it cannot write; say why once
        print(f"error: output folder {output_dir}: {exc}", file=log)
    results = []
    for path in files:
        results.append(predict_file(path, output_dir, session, use_cache, log))
    return results


def predict_file(
    path: Path,
    output_dir: Path,
    session: EnsamSession,
    use_cache: bool = True,
    log: object | None = None,
) -> CaseResult:
    name = path.name[: -len(".npz")]
    log = sys.stderr if log is None else log
    t0 = time.perf_counter()
    try:
        case = read_case(path)
        cache = CaseCache(output_dir, case.name, session.model_id) if use_cache else None
        labels, state, image_hash = segment_case(session, case, cache)
        segs = labels.reshape(case.original_shape)
        write_segs(output_dir / f"{case.name}.npz", segs)
        if cache is not None and state is not None and state.logits:
            try:
                cache.save(image_hash, state, array_hash(labels), session.whole_roi())
            except Exception as exc:  # a cache that cannot be written costs time, not results
                print(f"{name}: warning: cache not written ({exc})", file=log)
        seconds = time.perf_counter() - t0
        present = len(present_labels(segs) - {0})
        for w in case.warnings:
            print(f"{name}: warning: {w}", file=log)
        budget = SECONDS_PER_CLASS * case.num_classes / 6
        slow = (
            f" (over the {budget:.0f} s per-step share of the time limit)"
            if seconds > budget
            else ""
        )
        print(
            f"{name}: {case.step} step, {case.num_classes} classes, {present} present, "
            f"{seconds:.2f} s{slow}",
            file=log,
        )
        return CaseResult(name, True, seconds)
    except Exception as exc:
        # Anything else (a TypeError from a malformed file, CUDA out of memory, a bug) must
        # still cost only this case: the next ones get their outputs.
        seconds = time.perf_counter() - t0
        message = _one_line(exc)
        print(f"{name}: ERROR: {message}", file=log)
        return CaseResult(name, False, seconds, message)


def _one_line(exc: Exception) -> str:
    """The error as one log line; unexpected kinds keep their type name as a clue."""
    text = str(exc).splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, (CaseError, PromptError, OSError, MemoryError)):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
