import cc3d
import numpy as np
import pytest
import torch

from ensam_infer.prompts import Box
from ensam_infer.rules import (
    PromptRules,
    box_prior_logits,
    challenge_box,
    click_region,
    enforce_clicks,
    grow_empty_answer,
    outside_box_slices,
    remove_debris,
)


def test_parse_names_all_and_none():
    assert PromptRules.parse("default") == PromptRules()
    assert PromptRules.parse("none") == PromptRules.none()
    every = PromptRules.parse("all")
    assert every.z_range and every.debris and every.clicks and every.box_prior
    assert every.click_crop and PromptRules().click_crop  # on by default
    crop = PromptRules.parse("clicks,click_crop")
    assert crop.click_crop and crop.clicks and not crop.debris
    assert crop.describe() == "clicks,click_crop"
    only = PromptRules.parse("z_range, clicks")
    assert (only.z_range, only.debris, only.clicks) == (True, False, True)
    assert only.describe() == "z_range,clicks"
    with pytest.raises(ValueError, match="unknown prompt rules"):
        PromptRules.parse("z_range,magic")


def test_from_env(monkeypatch):
    monkeypatch.setenv("ENSAM_RULES", "debris")
    assert PromptRules.from_env() == PromptRules(
        z_range=False,
        debris=True,
        clicks=False,
        click_grow=False,
        box_prior=False,
        click_crop=False,
    )
    monkeypatch.setenv("ENSAM_RULES", "z_range,debris,clicks,click_grow")
    assert PromptRules.from_env() == PromptRules(click_crop=False)
    monkeypatch.delenv("ENSAM_RULES")
    assert PromptRules.from_env() == PromptRules()


def test_outside_box_slices_only_keeps_the_box_z_range():
    logits = torch.zeros((10, 4, 4))
    # crop starts at z=5 of the volume; the box covers volume slices 7..9 = crop 2..4
    out = outside_box_slices(logits, Box(7, 0, 0, 9, 3, 3), start=(5, 0, 0))
    finite = torch.isfinite(out).all(dim=(1, 2))
    assert finite.tolist() == [False, False, True, True, True] + [False] * 5
    assert torch.equal(logits, torch.zeros((10, 4, 4)))  # the input is not changed


def test_outside_box_slices_box_starting_before_the_crop():
    out = outside_box_slices(torch.zeros((6, 2, 2)), Box(0, 0, 0, 3, 1, 1), start=(2, 0, 0))
    assert torch.isfinite(out).all(dim=(1, 2)).tolist() == [True, True, False, False, False, False]


def _two_blobs() -> np.ndarray:
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[1:3, 1:3, 1:3] = 1  # 8 voxels, inside the box below
    labels[7:9, 7:9, 7:9] = 1  # 8 voxels, far from it
    labels[5, 5, 0] = 2  # another class is never touched
    return labels


def test_debris_keeps_what_touches_the_box():
    labels = _two_blobs()
    box = (slice(0, 2), slice(0, 2), slice(0, 2))
    assert remove_debris(labels, 1, box, seeds=[]) == 8
    assert labels[1:3, 1:3, 1:3].all() and not labels[7:9, 7:9, 7:9].any()
    assert labels[5, 5, 0] == 2


def test_debris_keeps_what_holds_a_positive_click():
    labels = _two_blobs()
    box = (slice(0, 2), slice(0, 2), slice(0, 2))
    assert remove_debris(labels, 1, box, seeds=[(8, 8, 8)]) == 0
    assert (labels == 1).sum() == 16
    # click-only: the seed decides alone
    assert remove_debris(labels, 1, None, seeds=[(8, 8, 8)]) == 8
    assert labels[7:9, 7:9, 7:9].all() and not labels[1:3, 1:3, 1:3].any()


def test_debris_without_box_or_seed_changes_nothing():
    labels = _two_blobs()
    assert remove_debris(labels, 1, None, seeds=[]) == 0
    assert (labels == 1).sum() == 16


def test_diagonal_neighbours_are_one_component():
    labels = np.zeros((5, 5, 5), np.uint8)
    labels[1, 1, 1] = labels[2, 2, 2] = 1  # 26-connected, not 6-connected
    assert remove_debris(labels, 1, None, seeds=[(1, 1, 1)]) == 0
    assert (labels == 1).sum() == 2


def test_clicks_paint_and_clear_a_ball_in_order():
    labels = np.zeros((7, 7, 7), np.uint8)
    labels[0, 0, 0] = 2
    enforce_clicks(labels, 1, [(3, 3, 3)], [True], radius=1)
    assert (labels == 1).sum() == 7  # centre and its 6 face neighbours
    assert labels[3, 3, 3] == 1 and labels[2, 3, 3] == 1 and labels[2, 2, 3] == 0
    enforce_clicks(labels, 1, [(3, 3, 3), (3, 3, 3)], [True, False], radius=0)
    assert labels[3, 3, 3] == 0  # the later negative click wins
    labels[1, 1, 1] = 2
    enforce_clicks(labels, 1, [(1, 1, 1)], [False], radius=1)
    assert labels[1, 1, 1] == 2  # a negative click of class 1 leaves class 2 alone


def test_clicks_at_the_border_and_outside_are_safe():
    labels = np.zeros((3, 3, 3), np.uint8)
    enforce_clicks(labels, 4, [(0, 0, 0), (5, 5, 5)], [True, True], radius=2)
    assert labels[0, 0, 0] == 4 and labels[2, 2, 2] == 0
    # the ball of radius 2 clipped to its corner octant: 1 + 3 + 3 + 3 + 1 voxels
    assert (labels == 4).sum() == 11


def test_box_prior_is_the_network_space_box():
    logits = box_prior_logits((1, 2, 3, 2, 4, 5), (4, 8, 8))
    assert logits.shape == (1, 1, 4, 8, 8)
    inside = logits[0, 0] > 0
    assert inside.sum() == 2 * 3 * 3
    assert inside[1:3, 2:5, 3:6].all()
    assert set(logits.unique().tolist()) == {-5.0, 5.0}


def _bright_blob() -> np.ndarray:
    image = np.full((20, 20, 20), 40, np.uint8)
    image[5:11, 5:11, 5:11] = 200  # the object: 216 voxels
    image[14:18, 14:18, 14:18] = 200  # something alike, not connected to it
    return image


def test_click_region_is_the_clicked_side_and_connected():
    slices, region = click_region(_bright_blob(), (8, 8, 8), radius=10)
    full = np.zeros((20, 20, 20), bool)
    full[slices] = region
    assert full[5:11, 5:11, 5:11].all() and full.sum() == 216


def test_grow_fills_an_empty_answer_from_the_click():
    image = _bright_blob()
    labels = np.zeros(image.shape, np.uint8)
    enforce_clicks(labels, 1, [(8, 8, 8)], [True], radius=1)  # what the click rule left
    assert grow_empty_answer(labels, image, 1, [(8, 8, 8)], [True])
    assert (labels == 1).sum() == 216


def test_grow_leaves_a_real_answer_and_other_classes_alone():
    image = _bright_blob()
    labels = np.zeros(image.shape, np.uint8)
    labels[5:11, 5:8, 5:11] = 1  # the network found half of it: not empty
    before = labels.copy()
    assert not grow_empty_answer(labels, image, 1, [(8, 8, 8)], [True])
    assert np.array_equal(labels, before)
    labels[:] = 0
    labels[5:11, 5:11, 5:7] = 2
    assert grow_empty_answer(labels, image, 1, [(8, 8, 8)], [True])
    assert (labels == 2).sum() == 72  # never painted over
    assert not grow_empty_answer(labels, image, 3, [(8, 8, 8)], [False])  # no positive click


def test_challenge_box_is_the_mid_slice_box():
    mask = np.zeros((10, 20, 20), bool)
    mask[2:9, 4:8, 5:15] = True
    mask[5, 3, 3] = True  # the middle slice (z=5) reaches further
    box = challenge_box(mask)
    assert (box["z_min"], box["z_max"], box["z_mid"]) == (2, 8, 5)
    assert (box["z_mid_y_min"], box["z_mid_x_min"]) == (3, 3)
    assert (box["z_mid_y_max"], box["z_mid_x_max"]) == (7, 14)


def _debris_by_unique(labels, label, box, seeds):
    """The debris rule written the plain way (np.unique over the box), as a reference."""
    mask = labels == label
    components = cc3d.connected_components(mask, connectivity=26)
    keep = set(np.unique(components[box]).tolist()) if box is not None else set()
    keep |= {int(components[p]) for p in seeds}
    keep.discard(0)
    out = labels.copy()
    out[mask & ~np.isin(components, list(keep))] = 0
    return out


@pytest.mark.parametrize("seed", range(6))
def test_debris_matches_the_plain_reference_on_random_masks(seed):
    # random blobs, many of them straddling the box's sides or wrapping round its corner
    rng = np.random.default_rng(seed)
    labels = (rng.random((18, 20, 22)) < 0.08).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.03] = 2
    box = (slice(4, 12), slice(3, 15), slice(6, 16))
    seeds = [tuple(int(rng.integers(0, n)) for n in labels.shape) for _ in range(3)]
    for b, s in ((box, []), (box, seeds), (None, seeds)):
        expected = _debris_by_unique(labels, 1, b, s)
        got = labels.copy()
        cleared = remove_debris(got, 1, b, s)
        np.testing.assert_array_equal(got, expected)
        assert cleared == int(((labels == 1) & (expected == 0)).sum())


def test_debris_drops_a_component_that_wraps_round_the_box_corner_without_entering():
    labels = np.zeros((3, 12, 12), np.uint8)
    labels[1, 8, 2:11] = 1  # an L round the box's corner: its bounding box overlaps the box
    labels[1, 2:9, 10] = 1
    labels[1, 3, 3] = 1  # inside the box
    box = (slice(0, 3), slice(0, 7), slice(0, 8))
    assert remove_debris(labels, 1, box, seeds=[]) == 15
    assert labels.sum() == 1 and labels[1, 3, 3] == 1
