import numpy as np
import pytest
import torch

from ensam_infer.model import ClassPrompt
from ensam_infer.session import EnsamSession
from ensam_infer.tta import FLIP_ORDER, Flip, flips, flips_requested


def test_flip_mirrors_the_content_and_leaves_the_padding_at_the_end():
    t = torch.arange(6.0).reshape(1, 1, 1, 1, 6)  # content 4 voxels, then 2 of padding
    out = Flip((2,), (1, 1, 4)).tensor(t)
    assert out.flatten().tolist() == [3, 2, 1, 0, 4, 5]


def test_every_flip_is_its_own_inverse():
    t = torch.randn(2, 1, 8, 16, 8)
    for f in flips(len(FLIP_ORDER), (5, 13, 8)):
        torch.testing.assert_close(f.tensor(f.tensor(t)), t)


def test_a_mirrored_prompt_points_at_the_mirrored_voxels():
    extent = (6, 10, 12)
    volume = torch.zeros(1, 1, 8, 16, 16)
    prompt = ClassPrompt(
        box=(1, 2, 3, 4, 7, 9),
        points=np.array([[2, 5, 0], [1, 1, 11]], np.float32),
        positive=np.array([True, False]),
    )
    for z, y, x in prompt.points.astype(int):
        volume[0, 0, z, y, x] = 1
    volume[0, 0, 1:5, 2:8, 3:10] += 10  # the box, inclusive corners
    for f in flips(8, extent):
        moved, image = f.prompt(prompt), f.tensor(volume)[0, 0]
        for z, y, x in moved.points.astype(int):
            assert image[z, y, x] in (1, 11)
        z0, y0, x0, z1, y1, x1 = (int(v) for v in moved.box)
        assert z0 <= z1 and y0 <= y1 and x0 <= x1
        assert image[z0 : z1 + 1, y0 : y1 + 1, x0 : x1 + 1].min() >= 10
        assert (image >= 10).sum() == (z1 - z0 + 1) * (y1 - y0 + 1) * (x1 - x0 + 1)
        assert moved.positive.tolist() == [True, False]


def test_flip_count_is_checked(monkeypatch):
    with pytest.raises(ValueError, match="1..8"):
        flips(0, (1, 1, 1))
    monkeypatch.setenv("ENSAM_TTA", "9")
    with pytest.raises(ValueError, match="1..8"):
        flips_requested()
    monkeypatch.setenv("ENSAM_TTA", "x")
    with pytest.raises(ValueError, match="whole number"):
        flips_requested()
    monkeypatch.setenv("ENSAM_TTA", "4")
    assert flips_requested() == 4
    monkeypatch.delenv("ENSAM_TTA")
    assert flips_requested(2) == 2


def _volume():
    rng = np.random.default_rng(1)
    vol = rng.integers(0, 60, (16, 24, 24)).astype(np.uint8)
    vol[5:11, 6:15, 8:17] = 200
    return vol


def _box_step(model, volume, box, tta):
    """The box step's logits, the union crop over the whole volume with no pooling or
    padding (every axis a multiple of 8): the network input is the volume itself."""
    s = EnsamSession(model, device="cpu", crop="union", max_voxels=10**6, tta=tta)
    s.set_image(volume)
    s.add_box(box, 1)
    s.predict()
    roi = s.state.rois[1]
    assert roi.start == (0, 0, 0) and roi.padded == volume.shape
    return s, s.state.logits[1][0, 0]


def test_a_two_mirror_session_averages_the_answers_on_both_mirrors(tiny_model):
    volume, box = _volume(), (5, 6, 8, 10, 14, 16)
    _, plain = _box_step(tiny_model, volume, box, 1)
    mirrored_box = (5, 6, 23 - 16, 10, 14, 23 - 8)
    _, mirrored = _box_step(tiny_model, volume[:, :, ::-1].copy(), mirrored_box, 1)
    session, both = _box_step(tiny_model, volume, box, 2)
    assert not torch.allclose(plain, mirrored.flip(-1))  # the mirrors do answer differently
    torch.testing.assert_close(both, (plain + mirrored.flip(-1)) / 2)
    # a click step decodes both mirrors again from the averaged logits, features reused
    session.add_click((7, 9, 10), False, 1)
    assert session.predict().shape == volume.shape
    assert session.state.features[session.state.rois[1]][0].shape[0] == 2


def test_mirrors_keep_the_session_model_id_apart(tiny_model):
    one = EnsamSession(tiny_model, device="cpu", tta=1)
    two = EnsamSession(tiny_model, device="cpu", tta=2)
    assert one.model_id != two.model_id and two.model_id.startswith(one.model_id)
    with pytest.raises(ValueError, match="1..8"):
        EnsamSession(tiny_model, device="cpu", tta=9)


def test_objects_decoded_together_get_what_they_get_one_at_a_time(tiny_model):
    # several objects of one region share a batch (object * mirrors + mirror): each must get
    # the answer it gets alone
    logits = []
    for chunk in (1, 3):
        s = EnsamSession(tiny_model, device="cpu", crop="union", tta=2, class_chunk=chunk)
        s.set_image(_volume())
        s.add_box((5, 6, 8, 10, 14, 16), 1)
        s.add_box((2, 2, 2, 6, 10, 10), 2)
        s.add_click((12, 18, 18), True, 3)
        s.predict()
        logits.append(s.state.logits)
    for i in (1, 2, 3):
        torch.testing.assert_close(logits[0][i], logits[1][i], atol=1e-4, rtol=1e-4)


def test_the_first_mirror_axis_can_be_chosen(monkeypatch):
    assert [f.axes for f in flips(2, (4, 4, 4))] == [(), (2,)]
    monkeypatch.setenv("ENSAM_TTA_FIRST_AXIS", "y")
    assert [f.axes for f in flips(2, (4, 4, 4))] == [(), (1,)]
    eight = [f.axes for f in flips(8, (4, 4, 4))]
    assert eight[:3] == [(), (1,), (2,)] and sorted(eight) == sorted(FLIP_ORDER)
    monkeypatch.setenv("ENSAM_TTA_FIRST_AXIS", "Z")
    assert [f.axes for f in flips(2, (4, 4, 4))] == [(), (0,)]
    monkeypatch.setenv("ENSAM_TTA_FIRST_AXIS", "w")
    with pytest.raises(ValueError, match="x, y or z"):
        flips(2, (4, 4, 4))
