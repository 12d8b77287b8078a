"""The training interaction loop's click_crop: a box-less sample's region follows its answer
as inference's click_crop rule moves it."""

import numpy as np
import torch

from ensam_infer.model import build_model
from ensam_infer.roi import Roi, mask_to_network
from ensam_train.example import make_example
from ensam_train.interaction import Region, click_crop_region, click_to_volume, run_interaction

CAP = 16**3  # a 128^3 volume is pooled by 8 per axis


def _volume_with_a_cube() -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros((128, 128, 128), bool)
    mask[56:80, 64:88, 64:88] = True  # whole cells at a pooling of 8
    image = np.where(mask, 200, 40).astype(np.uint8)
    return image, mask


def test_a_network_click_lands_in_the_middle_of_its_pooled_cell():
    roi = Roi((10, 0, 0), (40, 20, 9), (2, 2, 1))
    assert click_to_volume(np.array([3, 4, 5]), roi) == (17, 9, 5)
    # clipped to the region at its far side
    assert click_to_volume(np.array([14, 9, 8]), roi) == (39, 19, 8)


def test_the_region_moves_to_the_answer_at_a_finer_scale():
    image, mask = _volume_with_a_cube()
    whole = Roi((0, 0, 0), (128, 128, 128), (8, 8, 8))
    answer = mask_to_network(mask, whole)[0] * 20 - 10  # the answer is the cube
    region = Region(whole, [(68, 76, 76)])
    roi, prompt = click_crop_region(answer, region, (image, mask, whole), CAP)
    # the cube and the click, seen at a finer scale
    assert all(a <= lo for a, lo in zip(roi.start, (56, 64, 64), strict=True))
    assert all(b >= hi for b, hi in zip(roi.stop, (80, 88, 88), strict=True))
    assert np.prod(roi.pool) * 8 <= 8**3
    # the answer as pseudo-logits in the new region: positive at the click (the cube's
    # centre), negative at the region's corners
    z, y, x = roi.point_to_network((68, 76, 76))
    assert prompt.shape == (1, 1, *roi.padded) and prompt[0, 0, z, y, x] > 0
    assert prompt[0, 0, 0, 0, 0] < 0 and prompt[0, 0, -1, -1, -1] < 0
    # an empty answer says nothing of where the object is: the region stays
    empty = torch.full_like(answer, -10.0)
    assert click_crop_region(empty, region, (image, mask, whole), CAP) is None


def test_a_box_less_sample_is_encoded_again_where_its_region_moved(monkeypatch):
    image, mask = _volume_with_a_cube()
    example = make_example(image, mask, np.random.default_rng(0), CAP, p_no_box=1.0, augment=False)
    whole = example.source[2]
    assert example.box is None and whole.shape == mask.shape and np.prod(whole.pool) >= 8**3
    torch.manual_seed(0)
    model = build_model("ensam_tiny")
    inputs, targets = [], []
    encode, decode = model.encode, model.decode

    def spy_encode(x):
        inputs.append(tuple(x.shape[2:]))
        return encode(x)

    def nearly_right(features, prompts, prev=None, prev_valid=None):
        # the true object (of the current region) but for one voxel: a click always follows
        out = decode(features, prompts, prev, prev_valid)
        target = targets[-1]
        logits = (target > 0.5).float() * 20 - 10
        logits.view(-1)[int(torch.nonzero(target.view(-1) > 0.5)[0])] = -10
        return out * 0 + logits[None]

    monkeypatch.setattr(model, "encode", spy_encode)
    monkeypatch.setattr(model, "decode", nearly_right)
    import ensam_train.interaction as interaction

    real_target = interaction.mask_to_network

    def spy_target(m, roi):
        out = real_target(m, roi)
        if m is mask:
            targets.append(out[0])
        return out

    monkeypatch.setattr(interaction, "mask_to_network", spy_target)
    targets.append(example.target)
    loss, dices = run_interaction(model, example, 3, torch.device("cpu"), click_crop_voxels=CAP)
    assert torch.isfinite(loss) and len(dices) == 4
    assert len(inputs) >= 2 and inputs[0] == whole.padded and inputs[1] != inputs[0]
    assert dices[-1] > 0.9  # each step's answer is scored against its own region's target
    # without click_crop the sample keeps its whole-volume region
    inputs.clear()
    targets[:] = [example.target]
    run_interaction(model, example, 3, torch.device("cpu"))
    assert inputs == [whole.padded]
