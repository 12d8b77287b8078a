import numpy as np
import pytest
import torch

from ensam_infer.merge import LabelMerger, present_labels


def _logit(p):
    return torch.logit(torch.tensor(p))


def test_background_wins_below_half_and_highest_probability_wins_above():
    merger = LabelMerger((1, 1, 3))
    merger.add(1, torch.stack([_logit(0.4), _logit(0.7), _logit(0.9)]).view(1, 1, 3))
    merger.add(2, torch.stack([_logit(0.45), _logit(0.8), _logit(0.6)]).view(1, 1, 3))
    assert merger.numpy().ravel().tolist() == [0, 2, 1]


def test_ties_keep_the_earlier_class():
    merger = LabelMerger((1, 1, 1))
    merger.add(1, _logit(0.8).view(1, 1, 1))
    merger.add(2, _logit(0.8).view(1, 1, 1))
    assert merger.numpy().item() == 1


def test_ensure_present_raises_a_vanished_class_inside_its_region_only():
    merger = LabelMerger((1, 4, 4))
    weak = torch.full((1, 4, 4), -3.0)
    weak[0, 1, 1] = -2.0  # the least unlikely voxel of class 1, inside its box
    weak[0, 3, 3] = -1.0  # more likely, but outside the box
    merger.add(1, weak)
    assert not merger.present(1)
    region = (slice(0, 1), slice(0, 3), slice(0, 3))
    assert merger.ensure_present(1, weak[region], region)
    labels = merger.numpy()
    assert labels[0, 1, 1] == 1
    assert labels[0, 3, 3] == 0


def test_ensure_present_gives_up_after_the_step_limit():
    merger = LabelMerger((1, 1, 2))
    merger.add(1, torch.full((1, 1, 2), -100.0))
    assert not merger.ensure_present(1, torch.full((1, 1, 2), -100.0), None)
    assert not merger.present(1)


def test_a_class_covering_part_of_the_crop_competes_only_there():
    merger = LabelMerger((1, 1, 4))
    merger.add(1, torch.full((1, 1, 4), 1.0))  # p = 0.73 everywhere
    merger.add(2, torch.full((1, 1, 2), 3.0), (slice(0, 1), slice(0, 1), slice(1, 3)))
    assert merger.numpy().tolist() == [[[1, 2, 2, 1]]]
    assert torch.allclose(merger.best[0, 0, 1], torch.sigmoid(torch.tensor(3.0)))


def test_present_labels_lists_every_label_with_a_voxel_numpy_or_torch():
    labels = np.zeros((4, 5, 6), np.uint8)
    labels[0, 0, 0] = 3
    labels[3, 4, 5] = 255
    labels[1, 2, 3] = 7
    assert present_labels(labels) == {0, 3, 7, 255}
    assert present_labels(torch.from_numpy(labels)) == {0, 3, 7, 255}
    # a non-contiguous view counts its own voxels only
    assert present_labels(labels[1:3]) == {0, 7}
    assert present_labels(np.full((2, 2, 2), 9, np.uint8)) == {9}


def test_present_labels_refuses_other_dtypes():
    with pytest.raises(TypeError, match="uint8"):
        present_labels(np.zeros((2, 2, 2), np.int32))
