"""The between-steps cache in the outputs folder: used when it is valid (the encoder does not
run again), ignored when anything about it is off (another image, another model, a
truncated file, a prev_pred it did not produce), and never able to fail a case.

The model here is the tiny preset with a zero logit bias, so its (meaningless) masks cover
a good part of the image and label comparisons are not trivially all background."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BLEND_CAP, BLEND_LARGE, blend_image

from ensam_infer import session as session_mod
from ensam_infer.cache import CACHE_DIRNAME, CaseCache, array_hash
from ensam_infer.model import build_model
from ensam_infer.predict import predict_file
from ensam_infer.prompts import Box, ObjectPrompts
from ensam_infer.roi import mask_to_network_logits, roi_for_prompts
from ensam_infer.session import EnsamSession

SHAPE = (16, 32, 32)
BOXES = [Box(4, 8, 8, 11, 23, 23), Box(2, 2, 2, 6, 12, 12)]
CLICKS = [((7, 15, 15), True), ((4, 5, 5), False)]  # one per class, inside the boxes


def image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, SHAPE).astype(np.uint8)
    img[4:12, 8:24, 8:24] += 150
    return img


def box_dicts() -> np.ndarray:
    out = np.empty(len(BOXES), dtype=object)
    for i, b in enumerate(BOXES):
        out[i] = {
            "z_min": b.z0, "z_max": b.z1, "z_mid": (b.z0 + b.z1) // 2,
            "z_mid_y_min": b.y0, "z_mid_x_min": b.x0, "z_mid_y_max": b.y1, "z_mid_x_max": b.x1,
        }  # fmt: skip
    return out


def click_arrays() -> tuple[np.ndarray, np.ndarray]:
    clicks = np.empty(len(CLICKS), dtype=object)
    for i, (p, positive) in enumerate(CLICKS):
        clicks[i] = {"fg": [list(p)] if positive else [], "bg": [] if positive else [list(p)]}
    order = np.array([["fg" if positive else "bg"] for _, positive in CLICKS])
    return clicks, order


class Spy:
    """Counts encoder and decoder runs of a session's model."""

    def __init__(self, session: EnsamSession, monkeypatch: pytest.MonkeyPatch) -> None:
        self.encode = self.decode = 0
        model = session.model
        real_encode, real_decode = model.encode, model.decode

        def encode(*args, **kwargs):
            self.encode += 1
            return real_encode(*args, **kwargs)

        def decode(*args, **kwargs):
            self.decode += 1
            return real_decode(*args, **kwargs)

        monkeypatch.setattr(model, "encode", encode)
        monkeypatch.setattr(model, "decode", decode)


@pytest.fixture(scope="module")
def session() -> EnsamSession:
    torch.manual_seed(0)
    return EnsamSession(build_model("ensam_tiny", logit_bias=0.0).eval(), device="cpu")


class Steps:
    """One case run step by step the way the evaluator does: one input file, rewritten with
    the clicks and the previous output, and one outputs folder that persists."""

    def __init__(self, root: Path, session: EnsamSession) -> None:
        self.inp, self.out = root / "inputs", root / "outputs"
        self.inp.mkdir()
        self.out.mkdir()
        self.session = session
        self.file = self.inp / "case.npz"
        self.log = io.StringIO()

    @property
    def cache_dir(self) -> Path:
        return self.out / CACHE_DIRNAME / "case"

    def run(self, use_cache: bool = True) -> np.ndarray:
        result = predict_file(self.file, self.out, self.session, use_cache, self.log)
        assert result.ok, result.message
        with np.load(self.out / "case.npz") as data:
            return data["segs"]

    def box_step(self, img: np.ndarray | None = None) -> np.ndarray:
        np.savez_compressed(self.file, imgs=image() if img is None else img, boxes=box_dicts())
        return self.run()

    def write_click_step(self, prev: np.ndarray, img: np.ndarray | None = None) -> None:
        clicks, order = click_arrays()
        np.savez_compressed(
            self.file,
            imgs=image() if img is None else img,
            boxes=box_dicts(),
            clicks=clicks,
            clicks_order=order,
            prev_pred=prev,
        )


def test_valid_cache_skips_the_encoder(tmp_path: Path, session: EnsamSession, monkeypatch):
    steps = Steps(tmp_path, session)
    spy = Spy(session, monkeypatch)
    prev = steps.box_step()
    assert spy.encode == 1 and (steps.cache_dir / "meta.json").is_file()
    steps.write_click_step(prev)
    spy.encode = spy.decode = 0
    steps.run()
    assert spy.encode == 0 and spy.decode >= 1


def test_cached_step_equals_the_in_process_session(tmp_path: Path, session: EnsamSession):
    # Reference: one session that never restarts, so it holds its real logits in memory.
    ref = EnsamSession(session.model, device="cpu")
    ref.set_image(image())
    for k, b in enumerate(BOXES, start=1):
        ref.add_box(b, k)
    ref_box = ref.predict()
    for k, (p, positive) in enumerate(CLICKS, start=1):
        ref.add_click(p, positive, k)
    ref_click = ref.predict()
    ref_logits = {k: v.clone() for k, v in ref.state.logits.items()}

    steps = Steps(tmp_path, session)
    prev = steps.box_step()
    assert np.array_equal(prev, ref_box)
    steps.write_click_step(prev)
    cached = steps.run()
    assert 0.2 < (ref_click > 0).mean() < 0.8  # a real comparison, not all background
    assert (cached == ref_click).mean() >= 0.99
    for k, logits in ref_logits.items():  # only the fp16 rounding of the cache differs
        assert torch.allclose(session.state.logits[k], logits, atol=0.1)


def test_cache_of_another_image_is_not_used(tmp_path: Path, session: EnsamSession, monkeypatch):
    steps = Steps(tmp_path, session)
    prev = steps.box_step()
    steps.write_click_step(prev, img=image(seed=1))  # same case name, other content
    spy = Spy(session, monkeypatch)
    steps.run()
    assert spy.encode == 1


def test_truncated_state_is_recomputed(tmp_path: Path, session: EnsamSession, monkeypatch):
    steps = Steps(tmp_path, session)
    prev = steps.box_step()
    state = steps.cache_dir / "state.pt"
    data = state.read_bytes()
    state.write_bytes(data[: len(data) // 2])
    steps.write_click_step(prev)
    spy = Spy(session, monkeypatch)
    steps.run()
    assert spy.encode == 1
    assert len(state.read_bytes()) > len(data) // 2  # rewritten whole by this step


def test_meta_of_another_model_is_not_used(tmp_path: Path, session: EnsamSession, monkeypatch):
    steps = Steps(tmp_path, session)
    prev = steps.box_step()
    meta_path = steps.cache_dir / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["model"] = "0123456789abcdef"
    meta_path.write_text(json.dumps(meta))
    steps.write_click_step(prev)
    spy = Spy(session, monkeypatch)
    steps.run()
    assert spy.encode == 1


def test_another_models_session_does_not_use_the_cache(tmp_path: Path, session, monkeypatch):
    steps = Steps(tmp_path, session)
    prev = steps.box_step()
    torch.manual_seed(1)
    steps.session = EnsamSession(build_model("ensam_tiny", logit_bias=0.0).eval(), "cpu")
    assert steps.session.model_id != session.model_id
    steps.write_click_step(prev)
    spy = Spy(steps.session, monkeypatch)
    steps.run()
    assert spy.encode == 1


def test_meta_and_state_of_different_saves(tmp_path: Path, session, monkeypatch):
    steps = Steps(tmp_path, session)
    prev = steps.box_step()
    old_meta = (steps.cache_dir / "meta.json").read_text()
    steps.write_click_step(prev)
    prev = steps.run()  # saves a new state.pt with a new token
    (steps.cache_dir / "meta.json").write_text(old_meta)
    steps.write_click_step(prev)
    spy = Spy(session, monkeypatch)
    steps.run()
    assert spy.encode == 1


def test_prev_pred_it_did_not_produce(tmp_path: Path, session: EnsamSession, monkeypatch):
    """Features are still those of this image; the logits belong to another answer, so the
    dense prompt is rebuilt from the prev_pred the evaluator handed back."""
    steps = Steps(tmp_path, session)
    prev = steps.box_step()
    other = prev.copy()
    other[0, 0, 0] = 2 if other[0, 0, 0] != 2 else 0
    cache = CaseCache(steps.out, "case", session.model_id)
    roi = roi_for_prompts(SHAPE, [ObjectPrompts(box=b) for b in BOXES])
    rois = dict.fromkeys([1, 2], roi)
    state = cache.load(array_hash(image()), rois, array_hash(other))
    assert state is not None and state.features is not None and state.logits == {}
    assert sorted(cache.load(array_hash(image()), rois, array_hash(prev)).logits) == [1, 2]

    steps.write_click_step(other)
    spy = Spy(session, monkeypatch)
    rebuilt = []
    real = session_mod.mask_to_network_logits
    monkeypatch.setattr(
        session_mod, "mask_to_network_logits", lambda m, r: rebuilt.append(1) or real(m, r)
    )
    steps.run()
    assert spy.encode == 0 and len(rebuilt) == len(BOXES)


def test_unwritable_cache_costs_only_time(tmp_path: Path, session: EnsamSession):
    steps = Steps(tmp_path, session)
    (steps.out / CACHE_DIRNAME).write_text("a file where the cache folder goes")
    segs = steps.box_step()
    assert segs.shape == SHAPE
    assert "case: warning: cache not written" in steps.log.getvalue()


@pytest.mark.parametrize("content", [b"", b"{not json", b"[1, 2]", b'{"version": 1}'])
def test_unreadable_meta_means_no_cache(
    tmp_path: Path, session: EnsamSession, content, monkeypatch
):
    steps = Steps(tmp_path, session)
    prev = steps.box_step()
    (steps.cache_dir / "meta.json").write_bytes(content)
    steps.write_click_step(prev)
    spy = Spy(session, monkeypatch)
    steps.run()
    assert spy.encode == 1


def test_dead_temporary_files_are_swept(tmp_path: Path, session: EnsamSession):
    steps = Steps(tmp_path, session)
    steps.cache_dir.mkdir(parents=True)
    for name in (".state.pt.dead.tmp", ".meta.dead.tmp"):
        (steps.cache_dir / name).write_bytes(b"half a file")
    steps.box_step()
    assert sorted(p.name for p in steps.cache_dir.iterdir()) == ["meta.json", "state.pt"]


def test_only_the_newest_cases_are_kept(tmp_path: Path, session: EnsamSession):
    steps = Steps(tmp_path, session)
    for name in ("a", "b", "c"):
        np.savez_compressed(steps.inp / f"{name}.npz", imgs=image(), boxes=box_dicts())
        assert predict_file(steps.inp / f"{name}.npz", steps.out, session, True, steps.log).ok
    assert len(list((steps.out / CACHE_DIRNAME).iterdir())) == 2


def test_object_crops_cache_each_object_in_its_own_region(tmp_path: Path, monkeypatch):
    torch.manual_seed(0)
    model = build_model("ensam_tiny", logit_bias=0.0).eval()
    session = EnsamSession(model, device="cpu", crop="object")
    steps = Steps(tmp_path, session)
    spy = Spy(session, monkeypatch)
    prev = steps.box_step()
    assert spy.encode == 2  # one region per object
    meta = json.loads((steps.cache_dir / "meta.json").read_text())
    assert meta["rois"]["1"] != meta["rois"]["2"]
    # The click of class 2 lies inside its region: class 1 keeps its cached logits, class 2
    # is decoded again on its cached features; nothing is encoded.
    clicks = np.empty(2, dtype=object)
    clicks[0] = {"fg": [], "bg": []}
    clicks[1] = {"fg": [], "bg": [[4, 5, 5]]}
    order = np.empty(2, dtype=object)
    order[0], order[1] = [None], ["bg"]
    np.savez_compressed(
        steps.file, imgs=image(), boxes=box_dicts(), clicks=clicks, clicks_order=order,
        prev_pred=prev,
    )  # fmt: skip
    spy.encode = spy.decode = 0
    steps.run()
    assert spy.encode == 0 and spy.decode == 1


def test_click_crop_looks_the_cache_up_for_the_regions_it_predicts_in(tmp_path, monkeypatch):
    # The click_crop rule places a box-less object by the previous answer: the container
    # must ask the cache for the regions predict() will then use, or it never finds them.
    from ensam_infer.rules import PromptRules

    torch.manual_seed(0)
    model = build_model("ensam_tiny", logit_bias=0.0).eval()
    rules = PromptRules(click_crop=True)
    session = EnsamSession(model, device="cpu", crop="object", max_voxels=4096, rules=rules)
    steps = Steps(tmp_path, session)
    looked_up = []
    real_load = CaseCache.load

    def load(self, image_hash, rois, prev_pred_hash, whole=None):
        looked_up.append(dict(rois))
        return real_load(self, image_hash, rois, prev_pred_hash, whole)

    monkeypatch.setattr(CaseCache, "load", load)
    img = np.full((32, 64, 64), 30, np.uint8)
    img[6:10, 40:48, 40:48] = 220

    def decode(features, prompts, *args, **kwargs):  # a network that finds the object
        roi = next(r for r, f in session.state.features.items() if f is features)
        return mask_to_network_logits(img > 100, roi).repeat(len(prompts), 1, 1, 1, 1)

    monkeypatch.setattr(model, "decode", decode)
    prev = np.zeros(img.shape, np.uint8)  # a click-only case starts from an empty answer
    fg = [[8, 44, 44]]
    for new in ([8, 42, 46], [7, 46, 42]):
        clicks = np.empty(1, dtype=object)
        clicks[0] = {"fg": [list(p) for p in fg], "bg": []}
        order = np.empty(1, dtype=object)
        order[0] = ["fg"] * len(fg)
        np.savez_compressed(steps.file, imgs=img, clicks=clicks, clicks_order=order,
                            prev_pred=prev, spacing=np.ones(3))  # fmt: skip
        prev = steps.run()
        assert looked_up[-1] == session.state.rois
        fg.append(new)
    whole = ((0, 0, 0), img.shape)
    assert (looked_up[0][1].start, looked_up[0][1].stop) == whole
    assert (looked_up[1][1].start, looked_up[1][1].stop) != whole


def blend_container_vs_session(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fg: list[list[int]],
    check: Callable[[int, EnsamSession, EnsamSession], None],
) -> None:
    """One click-only case with the blend rule, clicked `fg` one positive click at a time,
    run both as the container does (a new session per click: the cache carries the state)
    and as one session that never restarts; the answers must agree at every step (only the
    cache's fp16 rounding differs). `check(step, in_process, container)` runs after each step."""
    from ensam_infer.rules import PromptRules

    torch.manual_seed(0)
    model = build_model("ensam_tiny", logit_bias=0.0).eval()
    rules = PromptRules(click_crop=True, blend=True)

    def new_session() -> EnsamSession:
        return EnsamSession(model, device="cpu", crop="object", max_voxels=BLEND_CAP, rules=rules)

    img = blend_image(BLEND_LARGE)

    def decode(features, prompts, prev_logits=None, prev_valid=None):
        # finds the object, and remembers its dense prompt: logits carried from the last step
        # and logits rebuilt from the last answer give different answers
        roi = next(r for s in sessions for r, f in s.state.features.items() if f is features)
        out = mask_to_network_logits(img > 100, roi).repeat(len(prompts), 1, 1, 1, 1)
        return out if prev_logits is None else out + 0.5 * prev_logits

    monkeypatch.setattr(model, "decode", decode)
    ref = new_session()
    ref.set_image(img)
    steps = Steps(tmp_path, new_session())
    sessions = [ref, steps.session]
    prev = np.zeros(img.shape, np.uint8)  # a click-only case starts from an empty answer
    for n in range(1, len(fg) + 1):
        ref.add_click(tuple(fg[n - 1]), positive=True)
        expected = ref.predict()
        clicks = np.empty(1, dtype=object)
        clicks[0] = {"fg": fg[:n], "bg": []}
        order = np.empty(1, dtype=object)
        order[0] = ["fg"] * n
        np.savez_compressed(steps.file, imgs=img, clicks=clicks, clicks_order=order,
                            prev_pred=prev, spacing=np.ones(3))  # fmt: skip
        steps.session = sessions[1] = new_session()  # a new process: the cache carries state
        prev = steps.run()
        assert (prev == expected).mean() >= 0.999
        check(n, ref, steps.session)


def test_blend_carries_the_whole_volume_logits_from_step_to_step(tmp_path, monkeypatch):
    # With the blend rule a click-crop object is answered in the whole volume too: the
    # container must carry its whole-volume logits as one session would.
    blended_steps = []

    def check(step: int, ref: EnsamSession, container: EnsamSession) -> None:
        if 1 in ref.state.whole_logits:
            blended_steps.append(step)
            got = container.state.whole_logits[1]
            assert torch.allclose(got, ref.state.whole_logits[1], atol=0.05)

    fg = [[16, 52, 52], [18, 45, 60], [12, 66, 40]]
    blend_container_vs_session(tmp_path, monkeypatch, fg, check)
    assert blended_steps == [2, 3]  # the object moved to its crop and stayed there


def test_object_back_from_its_crop_resumes_from_its_whole_volume_logits(tmp_path, monkeypatch):
    # A far click makes the crop as coarse as the whole volume, so the object goes back to
    # the whole volume: there it resumes from the whole-volume logits the cache kept while it
    # was blended, in the container as in one session.
    seen = []

    def check(step: int, ref: EnsamSession, container: EnsamSession) -> None:
        whole = ref.whole_roi()
        in_whole = ref.state.rois[1] == whole
        assert (container.state.rois[1] == whole) == in_whole
        seen.append((in_whole, 1 in ref.state.whole_logits))
        if step == 3:
            assert not container.state.whole_logits
            assert torch.allclose(container.state.logits[1], ref.state.logits[1], atol=0.05)

    fg = [[16, 52, 52], [18, 45, 60], [47, 127, 127]]
    blend_container_vs_session(tmp_path, monkeypatch, fg, check)
    assert seen == [(True, False), (False, True), (True, False)]
