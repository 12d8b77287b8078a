import numpy as np
import pytest
import torch
from conftest import BLEND_CAP, BLEND_LARGE, BLEND_THIN, blend_image

from ensam_infer.prompts import PromptError
from ensam_infer.roi import mask_to_network_logits, size_cap
from ensam_infer.session import EnsamSession, to_uint8


def _volume():
    rng = np.random.default_rng(0)
    vol = rng.integers(0, 60, (24, 40, 40)).astype(np.uint8)
    vol[8:16, 10:20, 10:20] = 200
    return vol


@pytest.fixture
def session(tiny_model):
    s = EnsamSession(tiny_model, device="cpu")
    s.set_image(_volume(), spacing=(2.0, 1.0, 1.0))
    return s


def _count_calls(monkeypatch, session, name):
    calls = {"n": 0}
    original = getattr(session.model, name)

    def spy(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(session.model, name, spy)
    return calls


def test_predict_returns_a_label_map_of_the_image_shape(session):
    session.add_box((8, 10, 10, 15, 19, 19), object_id=1)
    session.add_box((0, 25, 25, 5, 35, 35), object_id=3)
    labels = session.predict()
    assert labels.shape == (24, 40, 40) and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1, 3}
    # ensure-present: every prompted object appears, even from untrained weights
    assert (labels == 1).any() and (labels == 3).any()
    # nothing is predicted outside the crop (union of boxes + 16 voxel margin)
    assert not labels[22:, :, :].any()


def test_encoder_runs_once_for_a_sequence_of_clicks(session, monkeypatch):
    encode = _count_calls(monkeypatch, session, "encode")
    decode = _count_calls(monkeypatch, session, "decode")
    session.add_box((8, 10, 10, 15, 19, 19))
    session.predict()
    for point in [(10, 12, 12), (14, 18, 18), (9, 11, 17)]:
        session.add_click(point, positive=True)
        session.predict()
    assert encode["n"] == 1
    assert decode["n"] == 4


def test_unchanged_objects_are_not_decoded_again(session, monkeypatch):
    session.add_box((8, 10, 10, 15, 19, 19), object_id=1)
    session.add_box((2, 2, 2, 6, 6, 6), object_id=2)
    first = session.predict()
    decode = _count_calls(monkeypatch, session, "decode")
    session.add_click((12, 15, 15), positive=False, object_id=2)
    second = session.predict()
    assert decode["n"] == 1
    assert ((first == 1) == (second == 1)).mean() > 0.99


def test_click_outside_the_crop_recomputes_features_and_keeps_objects(session, monkeypatch):
    session.add_box((2, 2, 2, 5, 5, 5))
    session.predict()
    encode = _count_calls(monkeypatch, session, "encode")
    session.add_click((23, 39, 39), positive=True)
    labels = session.predict()
    assert encode["n"] == 1
    assert labels.shape == (24, 40, 40)


def test_reset_forgets_prompts_but_keeps_features(session, monkeypatch):
    session.add_box((8, 10, 10, 15, 19, 19))
    session.predict()
    encode = _count_calls(monkeypatch, session, "encode")
    session.reset()
    assert not session.predict().any()
    session.add_box((8, 10, 10, 15, 19, 19))
    session.predict()
    assert encode["n"] == 0


def test_remove_object(session):
    session.add_box((8, 10, 10, 15, 19, 19), object_id=1)
    session.add_box((2, 2, 2, 6, 6, 6), object_id=2)
    session.remove_object(2)
    assert 2 not in np.unique(session.predict())


def test_bad_prompts_are_refused_with_a_clear_error(session):
    with pytest.raises(PromptError, match="outside"):
        session.add_click((24, 0, 0))
    with pytest.raises(PromptError, match="outside"):
        session.add_box((30, 50, 50, 40, 60, 60))
    with pytest.raises(PromptError, match="inverted"):
        session.add_box((10, 10, 10, 5, 5, 5))
    with pytest.raises(PromptError, match="6 numbers"):
        session.add_box((1, 2, 3))
    with pytest.raises(PromptError, match="object id"):
        session.add_click((1, 1, 1), object_id=256)


def test_prompts_before_an_image_are_refused(tiny_model):
    s = EnsamSession(tiny_model, device="cpu")
    with pytest.raises(RuntimeError, match="set_image"):
        s.add_click((0, 0, 0))
    with pytest.raises(ValueError, match="3D"):
        s.set_image(np.zeros((4, 4)))


def test_box_partly_outside_is_clipped(session):
    session.add_box((-5, 30, 30, 5, 60, 60))
    assert session.objects[1].box.hi == (5, 39, 39)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no ENSAM weights"):
        EnsamSession(tmp_path / "absent.pt", device="cpu")


def test_session_loads_a_checkpoint_file(tiny_weights):
    s = EnsamSession(tiny_weights, device="cpu")
    s.set_image(_volume())
    s.add_box((8, 10, 10, 15, 19, 19))
    assert s.predict().shape == (24, 40, 40)


def test_to_uint8_windows_real_valued_volumes():
    vol = np.linspace(-1000, 1000, 1000, dtype=np.float32).reshape(10, 10, 10)
    out = to_uint8(vol, window=(-100.0, 100.0))
    assert out.dtype == np.uint8
    assert out.min() == 0 and out.max() == 255
    assert out[vol <= -100].max() == 0 and out[vol >= 100].min() == 255
    nan = vol.copy()
    nan[0, 0, 0] = np.nan
    assert to_uint8(nan).dtype == np.uint8
    assert to_uint8(np.full((2, 2, 2), 5, np.uint8))[0, 0, 0] == 5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU here")
def test_cuda_and_cpu_agree(tiny_model):
    vol = _volume()
    out = {}
    for device in ("cpu", "cuda"):
        s = EnsamSession(tiny_model, device=device)
        s.set_image(vol)
        s.add_box((8, 10, 10, 15, 19, 19))
        out[device] = s.predict()
    assert (out["cpu"] == out["cuda"]).mean() > 0.99


def test_size_cap_comes_from_argument_environment_or_checkpoint(tiny_model, monkeypatch):
    monkeypatch.delenv("ENSAM_MAX_VOXELS", raising=False)
    assert EnsamSession(tiny_model, device="cpu").max_voxels == 256 * 128 * 128
    tiny_model.metadata = {"inference_max_voxels": 4096}
    try:
        s = EnsamSession(tiny_model, device="cpu")
        assert s.max_voxels == 4096
        s.set_image(_volume())
        s.add_box((0, 0, 0, 23, 39, 39))
        roi = s.regions()[1]
        assert np.prod(roi.pooled) <= 4096 and roi.pool != (1, 1, 1)
        monkeypatch.setenv("ENSAM_MAX_VOXELS", "8192")
        assert EnsamSession(tiny_model, device="cpu").max_voxels == 8192
        assert EnsamSession(tiny_model, device="cpu", max_voxels=100).max_voxels == 100
    finally:
        tiny_model.metadata = {}


def _decode_everywhere(monkeypatch, session, value=10.0):
    """The network answers `value` logits on every voxel of every object."""

    def decode(features, prompts, *args, **kwargs):
        roi = next(iter(session.state.rois.values()))
        return torch.full((len(prompts), 1, *roi.padded), value)

    monkeypatch.setattr(session.model, "decode", decode)


def test_rules_keep_an_object_on_its_box_slices_and_obey_clicks(tiny_model, monkeypatch):
    session = EnsamSession(tiny_model, device="cpu")
    session.set_image(_volume())
    _decode_everywhere(monkeypatch, session)
    session.add_box((8, 10, 10, 15, 19, 19))
    labels = session.predict()
    rows = np.flatnonzero(labels.any(axis=(1, 2)))
    assert rows.min() == 8 and rows.max() == 15  # exactly the box's slices
    session.add_click((12, 30, 30), positive=False)
    labels = session.predict()
    assert labels[12, 30, 30] == 0 and labels[12, 29, 30] == 0 and labels[12, 28, 30] == 1


def test_rules_off_give_the_network_answer(tiny_model, monkeypatch):
    from ensam_infer.rules import PromptRules

    session = EnsamSession(tiny_model, device="cpu", rules=PromptRules.none())
    session.set_image(_volume())
    _decode_everywhere(monkeypatch, session)
    session.add_box((8, 10, 10, 15, 19, 19))
    labels = session.predict()
    assert labels[:8].any() and labels[16:].any()  # the crop's margin slices too


def test_positive_click_is_part_of_the_answer_even_when_the_network_says_no(
    tiny_model, monkeypatch
):
    from ensam_infer.rules import PromptRules

    session = EnsamSession(tiny_model, device="cpu", rules=PromptRules(click_grow=False))
    session.set_image(_volume())
    _decode_everywhere(monkeypatch, session, value=-10.0)
    session.add_click((5, 30, 30), positive=True)
    labels = session.predict()
    assert labels[5, 30, 30] == 1 and labels[5, 31, 30] == 1
    assert (labels == 1).sum() == 7  # the click's ball of radius 1, nothing else


@pytest.mark.parametrize("box_prior", [False, True])
def test_box_prior_is_the_first_dense_prompt(tiny_model, monkeypatch, box_prior):
    from ensam_infer.rules import PromptRules

    session = EnsamSession(tiny_model, device="cpu", rules=PromptRules(box_prior=box_prior))
    session.set_image(_volume())
    seen = []
    original = session.model.decode

    def spy(features, prompts, prev_logits=None, prev_valid=None):
        seen.append(prev_logits)
        return original(features, prompts, prev_logits, prev_valid)

    monkeypatch.setattr(session.model, "decode", spy)
    session.add_box((8, 10, 10, 15, 19, 19))
    session.predict()
    if not box_prior:
        assert seen[0] is None
    else:
        inside = seen[0][0, 0] > 0
        roi = session.state.rois[1]
        z0, y0, x0, z1, y1, x1 = roi.box_to_network(session.objects[1].box)
        assert inside.sum() == (z1 - z0 + 1) * (y1 - y0 + 1) * (x1 - x0 + 1)
        assert inside[z0, y0, x0] and inside[z1, y1, x1]


def test_object_crops_give_each_object_its_own_region(tiny_model, monkeypatch):
    monkeypatch.delenv("ENSAM_CROP", raising=False)
    boxes = {1: (8, 10, 10, 15, 19, 19), 2: (0, 30, 30, 3, 37, 37)}
    regions = {}
    for crop in ("union", "object"):
        s = EnsamSession(tiny_model, device="cpu", crop=crop)
        s.set_image(_volume())
        for i, b in boxes.items():
            s.add_box(b, i)
        labels = s.predict()
        assert (labels == 1).any() and (labels == 2).any()
        regions[crop] = s.regions()
    assert regions["union"][1] == regions["union"][2]
    one, two = regions["object"][1], regions["object"][2]
    assert one != two
    for roi, (z0, y0, x0, z1, y1, x1) in ((one, boxes[1]), (two, boxes[2])):
        assert all(a <= v for a, v in zip(roi.start, (z0, y0, x0), strict=True))
        assert all(v < b for b, v in zip(roi.stop, (z1, y1, x1), strict=True))
    assert np.prod(one.shape) < np.prod(regions["union"][1].shape)


def test_crop_mode_from_environment_and_checked(tiny_model, monkeypatch):
    monkeypatch.setenv("ENSAM_CROP", "object")
    assert EnsamSession(tiny_model, device="cpu").crop == "object"
    monkeypatch.setenv("ENSAM_CROP", "tiles")
    with pytest.raises(ValueError, match="unknown crop mode"):
        EnsamSession(tiny_model, device="cpu")


def test_a_mask_that_misses_the_clicked_voxel_is_not_debris(tiny_model, monkeypatch):
    session = EnsamSession(tiny_model, device="cpu")
    session.set_image(_volume())
    click = (5, 30, 30)

    def decode(features, prompts, *args, **kwargs):
        roi = session.state.rois[1]
        out = torch.full((len(prompts), 1, *roi.padded), -10.0)
        z, y, x = roi.point_to_network(click)
        out[..., z - 2 : z + 3, y - 4 : y + 5, x - 4 : x + 5] = 10.0  # a blob around the click
        out[..., z, y, x] = -10.0  # ... that misses the clicked voxel itself
        return out

    monkeypatch.setattr(session.model, "decode", decode)
    session.add_click(click, positive=True)
    labels = session.predict()
    assert labels[click] == 1
    assert (labels == 1).sum() > 100  # the blob is kept, not just the click's ball


def test_click_grow_fills_what_debris_left_empty(tiny_model, monkeypatch):
    from ensam_infer.rules import PromptRules

    image = np.full((24, 40, 40), 30, np.uint8)
    image[3:9, 26:34, 26:34] = 220  # the clicked object: 6 * 8 * 8 voxels
    session = EnsamSession(tiny_model, device="cpu", rules=PromptRules(click_grow=True))
    session.set_image(image)

    def decode(features, prompts, *args, **kwargs):
        roi = session.state.rois[1]
        out = torch.full((len(prompts), 1, *roi.padded), -10.0)
        out[..., 16:20, 2:8, 2:8] = 10.0  # the network answers far from the click
        return out

    monkeypatch.setattr(session.model, "decode", decode)
    session.add_click((5, 30, 30), positive=True)
    labels = session.predict()
    assert not labels[16:20, 2:8, 2:8].any()  # debris
    assert (labels == 1).sum() == 6 * 8 * 8 and labels[3:9, 26:34, 26:34].all()


def test_cpu_bf16_session_agrees_with_float32(tiny_model, monkeypatch):
    from ensam_infer import device as device_mod

    monkeypatch.setattr(device_mod, "cpu_has_fast_bf16", lambda: True)
    answers = []
    for bf16 in (False, True):
        s = EnsamSession(tiny_model, device="cpu", cpu_bf16=bf16)
        s.set_image(_volume(), spacing=(2.0, 1.0, 1.0))
        s.add_box((8, 10, 10, 15, 19, 19))
        answers.append(s.predict())
        assert s.state.features[next(iter(s.state.features))][0].dtype == (
            torch.bfloat16 if bf16 else torch.float32
        )
    assert (answers[0] == answers[1]).mean() > 0.99


# ----- click_crop ---------------------------------------------------------------------------
CLICKED = (slice(4, 10), slice(40, 50), slice(40, 50))  # the click-only object: 6 x 10 x 10
BOXED = (slice(20, 28), slice(8, 20), slice(8, 20))  # the boxed one, its box drawn tight


def _two_objects() -> tuple[np.ndarray, np.ndarray]:
    image = np.full((32, 64, 64), 30, np.uint8)
    truth = np.zeros(image.shape, np.uint8)
    truth[CLICKED], truth[BOXED] = 1, 2
    image[truth > 0] = 220
    return image, truth


def _network_that_finds(monkeypatch, session, truth):
    """A decoder that answers the true object in whatever region it is given (the boxed
    prompt is object 2, the box-less one object 1): the regions, not the network, are what
    these tests look at."""

    def decode(features, prompts, *args, **kwargs):
        roi = next(r for r, f in session.state.features.items() if f is features)
        masks = [truth == (2 if p.box is not None else 1) for p in prompts]
        return torch.cat([mask_to_network_logits(m, roi) * 2 for m in masks])

    monkeypatch.setattr(session.model, "decode", decode)


def _click_crop_session(tiny_model, on: bool, recrop: bool = False) -> EnsamSession:
    from ensam_infer.rules import PromptRules

    rules = PromptRules(click_crop=on, recrop=recrop)
    s = EnsamSession(tiny_model, device="cpu", max_voxels=4096, crop="object", rules=rules)
    s.set_image(_two_objects()[0])
    return s


def _holds(roi, points) -> bool:
    return all(
        all(a <= c < b for a, c, b in zip(roi.start, p, roi.stop, strict=True)) for p in points
    )


@pytest.mark.parametrize("on", [False, True])
def test_click_crop_moves_a_click_only_object_to_a_crop_around_its_answer(
    tiny_model, monkeypatch, on
):
    session = _click_crop_session(tiny_model, on)
    truth = _two_objects()[1]
    _network_that_finds(monkeypatch, session, truth)
    whole = ((0, 0, 0), session.image.shape)
    session.add_click((6, 44, 44), positive=True)
    first = _dice(session.predict() == 1, truth == 1)
    assert (session.state.rois[1].start, session.state.rois[1].stop) == whole
    session.add_click((9, 48, 41), positive=True)
    second = _dice(session.predict() == 1, truth == 1)
    roi = session.state.rois[1]
    if not on:
        assert (roi.start, roi.stop) == whole and second == pytest.approx(first, abs=0.02)
        return
    assert second > first + 0.05  # the same network, a finer view: a better answer
    assert np.prod(roi.shape) < np.prod(session.image.shape)
    assert np.prod(roi.pool) < np.prod(size_cap(session.image.shape, 4096))  # a finer scale
    corners = [(4, 40, 40), (9, 49, 49)]  # the object's bounding box
    assert _holds(roi, corners + session.objects[1].points)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_click_crop_leaves_boxed_objects_alone(tiny_model, monkeypatch):
    regions = {}
    for on in (False, True):
        session = _click_crop_session(tiny_model, on)
        _network_that_finds(monkeypatch, session, _two_objects()[1])
        session.add_box((20, 8, 8, 27, 19, 19), object_id=2)
        session.add_click((6, 44, 44), positive=True, object_id=1)
        session.predict()
        steps = [dict(session.state.rois)]
        session.add_click((9, 48, 41), positive=True, object_id=1)
        session.add_click((24, 14, 14), positive=True, object_id=2)
        session.predict()
        steps.append(dict(session.state.rois))
        regions[on] = steps
    assert [r[2] for r in regions[False]] == [r[2] for r in regions[True]]
    assert regions[False][1][1] != regions[True][1][1]  # while the click-only object moved


def test_click_crop_from_the_previous_labels_of_a_fresh_process(tiny_model, monkeypatch):
    # the container's path: a new session that only has the previous answer on disk gets the
    # same region, the same dense prompt and so the same answer as the session that made it
    a = _click_crop_session(tiny_model, True)
    real_decode = a.model.decode
    _network_that_finds(monkeypatch, a, _two_objects()[1])
    a.add_click((6, 44, 44), positive=True)
    first = a.predict()
    monkeypatch.setattr(a.model, "decode", real_decode)
    a.add_click((9, 48, 41), positive=True)
    second = a.predict()
    b = _click_crop_session(tiny_model, True)
    for p in a.objects[1].points:
        b.add_click(p, positive=True)
    b.set_previous_labels(first)
    assert b.regions() == {1: a.state.rois[1]}
    assert a.state.rois[1].stop != a.image.shape
    assert (b.predict() == second).all()


# ----- recrop ------------------------------------------------------------------------------
def test_recrop_answers_a_lone_click_again_in_the_region_its_answer_implies(
    tiny_model, monkeypatch
):
    truth = _two_objects()[1]
    answers, encodes = {}, {}
    for recrop in (False, True):
        session = _click_crop_session(tiny_model, True, recrop)
        _network_that_finds(monkeypatch, session, truth)
        calls = []
        real_encode = session.model.encode
        monkeypatch.setattr(
            session.model, "encode", lambda x, e=real_encode, c=calls: c.append(1) or e(x)
        )
        session.add_click((6, 44, 44), positive=True)
        answers[recrop] = _dice(session.predict() == 1, truth == 1)
        encodes[recrop] = len(calls)
        roi = session.state.rois[1]
        whole = (roi.start, roi.stop) == ((0, 0, 0), session.image.shape)
        assert whole != recrop  # with the rule the first step ends in the finer region
    # the same network at the finer scale, in the first step: the answer the plain
    # click_crop rule gives only at the second click
    assert answers[True] > answers[False] + 0.05
    assert encodes == {False: 1, True: 2}


def test_recrop_leaves_boxed_objects_to_one_pass(tiny_model, monkeypatch):
    session = _click_crop_session(tiny_model, True, True)
    _network_that_finds(monkeypatch, session, _two_objects()[1])
    calls = []
    real_decode = session.model.decode
    monkeypatch.setattr(
        session.model, "decode", lambda *a, **k: calls.append(1) or real_decode(*a, **k)
    )
    session.add_box((20, 8, 8, 27, 19, 19), object_id=2)
    session.predict()
    session.add_click((24, 14, 14), positive=True, object_id=2)
    session.predict()
    assert len(calls) == 2  # one decode per step: a box fixes the region


# ----- blend -------------------------------------------------------------------------------
BOXED_FAR = (slice(30, 40), slice(90, 110), slice(90, 110))


def _blend_scene(box_less: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray]:
    truth = np.zeros((48, 128, 128), np.uint8)
    truth[box_less], truth[BOXED_FAR] = 1, 2
    return blend_image(box_less, BOXED_FAR), truth


def _blend_session(tiny_model, blend: bool, image: np.ndarray) -> EnsamSession:
    from ensam_infer.rules import PromptRules

    rules = PromptRules(click_crop=True, blend=blend)
    s = EnsamSession(tiny_model, device="cpu", max_voxels=BLEND_CAP, crop="object", rules=rules)
    s.set_image(image)
    return s


def _network_that_finds_it_only_in_the_whole_volume(monkeypatch, session, truth):
    """The box-less object 1: strongly found (+-10) in the whole volume, weakly missed (-1)
    in any crop; the boxed object 2 found wherever it is asked for."""

    def decode(features, prompts, *args, **kwargs):
        roi = next(r for r, f in session.state.features.items() if f is features)
        out = []
        for p in prompts:
            if p.box is not None:
                out.append(mask_to_network_logits(truth == 2, roi) * 2)
            elif roi == session.whole_roi():
                out.append(mask_to_network_logits(truth == 1, roi) * 2)
            else:
                out.append(torch.full((1, 1, *roi.padded), -1.0))
        return torch.cat(out)

    monkeypatch.setattr(session.model, "decode", decode)


@pytest.mark.parametrize("blend", [False, True])
def test_blend_answers_a_crop_object_with_the_mean_of_crop_and_whole_volume(
    tiny_model, monkeypatch, blend
):
    image, truth = _blend_scene(BLEND_LARGE)
    session = _blend_session(tiny_model, blend, image)
    _network_that_finds_it_only_in_the_whole_volume(monkeypatch, session, truth)
    session.add_click((16, 52, 52), positive=True)
    first = _dice(session.predict() == 1, truth == 1)
    assert first > 0.8 and 1 not in session.state.whole_logits  # still in the whole volume
    session.add_click((18, 45, 60), positive=True)
    second = _dice(session.predict() == 1, truth == 1)
    assert session.state.rois[1] != session.whole_roi()  # now in its click crop
    if not blend:  # the crop alone says -1 everywhere: only the click balls are left
        assert second < 0.5 and not session.state.whole_logits
        return
    # the mean is above 0 where the whole volume is above 1: the object stays as it was
    assert second > 0.8
    assert set(session.state.whole_logits) == {1}
    assert session.whole_roi() in session.state.features  # kept for the next click
    encodes = _count_calls(monkeypatch, session, "encode")
    session.add_click((12, 66, 40), positive=True)
    assert _dice(session.predict() == 1, truth == 1) > 0.8
    assert encodes["n"] <= 1  # the crop at most; the whole volume is not encoded again


def test_blend_leaves_an_object_the_whole_volume_cannot_resolve_to_its_crop(
    tiny_model, monkeypatch
):
    image, truth = _blend_scene(BLEND_THIN)
    answers = {}
    for blend in (False, True):
        session = _blend_session(tiny_model, blend, image)
        _network_that_finds_it_only_in_the_whole_volume(monkeypatch, session, truth)
        session.add_click((20, 63, 63), positive=True)
        session.predict()
        session.add_click((15, 62, 64), positive=True)
        answers[blend] = session.predict()
        assert session.state.rois[1] != session.whole_roi()  # in its click crop
        assert not session.state.whole_logits
    assert (answers[False] == answers[True]).all()


def test_blend_leaves_boxed_objects_to_their_own_answer(tiny_model, monkeypatch):
    image, truth = _blend_scene(BLEND_LARGE)
    answers = {}
    for blend in (False, True):
        session = _blend_session(tiny_model, blend, image)
        _network_that_finds_it_only_in_the_whole_volume(monkeypatch, session, truth)
        session.add_box((30, 90, 90, 39, 109, 109), object_id=2)
        session.add_click((16, 52, 52), positive=True, object_id=1)
        session.predict()
        session.add_click((18, 45, 60), positive=True, object_id=1)
        answers[blend] = session.predict()
        assert 2 not in session.state.whole_logits
    assert ((answers[False] == 2) == (answers[True] == 2)).all()
    assert (answers[True] == 1).sum() > (answers[False] == 1).sum()


def test_blend_from_the_previous_labels_of_a_fresh_process(tiny_model, monkeypatch):
    # a process that only has the previous answer: the whole volume's dense prompt is that
    # answer, and the object keeps the extent the whole volume gave it
    image, truth = _blend_scene(BLEND_LARGE)
    a = _blend_session(tiny_model, True, image)
    _network_that_finds_it_only_in_the_whole_volume(monkeypatch, a, truth)
    a.add_click((16, 52, 52), positive=True)
    first = a.predict()
    b = _blend_session(tiny_model, True, image)
    _network_that_finds_it_only_in_the_whole_volume(monkeypatch, b, truth)
    for p in [(16, 52, 52), (18, 45, 60)]:
        b.add_click(p, positive=True)
    b.set_previous_labels(first)
    assert _dice(b.predict() == 1, truth == 1) > 0.8
    assert set(b.state.whole_logits) == {1}
