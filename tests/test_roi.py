import numpy as np
import pytest
import torch

from ensam_infer.prompts import Box, ObjectPrompts
from ensam_infer.roi import (
    MARGIN,
    MAX_VOXELS,
    Roi,
    click_crop_roi,
    label_extents,
    logits_to_roi,
    logits_to_subregion,
    mask_to_network_logits,
    object_regions,
    prepare_input,
    roi_for_prompts,
    scale_intensity,
    size_cap,
)


def test_scale_intensity_maps_positive_voxels_to_0_1():
    vol = np.array([0, 10, 20, 30], np.uint8).reshape(1, 1, 4)
    out = scale_intensity(vol)[0, 0]
    assert out[0] == 0.0
    assert out[1] == pytest.approx(1 / 256)
    assert out[3] == pytest.approx(1.0)
    assert out[2] == pytest.approx(1 / 256 + 0.5 * (1 - 1 / 256))


def test_scale_intensity_constant_and_empty():
    assert (scale_intensity(np.full((2, 2, 2), 7, np.uint8)) == 1.0).all()
    assert (scale_intensity(np.zeros((2, 2, 2), np.uint8)) == 0.0).all()


def test_size_cap_pools_the_two_largest_axes_until_it_fits():
    assert size_cap((100, 100, 100)) == (1, 1, 1)
    pool = size_cap((300, 512, 512))
    # (300, 512, 512) -> (300, 256, 256) -> (150, 256, 128) -> (75, 128, 128): each time the
    # two largest axes (ties broken towards the later axis) are halved.
    assert pool == (4, 4, 4)
    shape = [-(-n // f) for n, f in zip((300, 512, 512), pool, strict=True)]
    assert np.prod(shape) <= MAX_VOXELS
    # (1000, 300, 200) -> (500, 150, 200) -> (250, 150, 100): z and y, then z and x.
    assert size_cap((1000, 300, 200)) == (4, 2, 2)


def test_roi_is_box_union_plus_margin_clipped():
    objs = [
        ObjectPrompts(box=Box(10, 20, 30, 12, 40, 50)),
        ObjectPrompts(box=Box(5, 5, 5, 6, 6, 6)),
    ]
    roi = roi_for_prompts((64, 64, 64), objs, margin=16)
    assert roi.start == (0, 0, 0)
    assert roi.stop == (29, 57, 64)
    assert roi.pool == (1, 1, 1)


def test_object_regions_one_crop_per_object_or_the_union():
    objs = {
        3: ObjectPrompts(box=Box(10, 20, 30, 12, 40, 50)),
        7: ObjectPrompts(box=Box(5, 5, 5, 6, 6, 6)),
    }
    shape = (64, 64, 64)
    own = object_regions(shape, objs, "object")
    assert own[3].start == (0, 4, 14) and own[3].stop == (29, 57, 64)
    assert own[7].start == (0, 0, 0) and own[7].stop == (23, 23, 23)
    union = object_regions(shape, objs, "union")
    assert union[3] == union[7] == roi_for_prompts(shape, list(objs.values()))
    capped = object_regions(shape, objs, "object", max_voxels=8**3)
    assert all(np.prod(r.pooled) <= 8**3 for r in capped.values())


def test_roi_without_boxes_is_the_whole_volume():
    obj = ObjectPrompts()
    obj.add_click((3, 4, 5), True)
    roi = roi_for_prompts((20, 30, 40), [obj])
    assert roi.start == (0, 0, 0) and roi.stop == (20, 30, 40)


def test_roi_grows_to_include_clicks_outside_the_boxes():
    obj = ObjectPrompts(box=Box(30, 30, 30, 34, 34, 34))
    obj.add_click((2, 60, 31), True)
    roi = roi_for_prompts((64, 100, 64), [obj], margin=4)
    assert roi.start == (0, 26, 26) and roi.stop == (39, 65, 39)


def test_prepare_input_crops_pools_and_pads():
    vol = np.zeros((4, 6, 10), np.uint8)
    vol[1, 2, 3] = 200
    vol[0, 0, 0] = 100
    roi = Roi((0, 0, 0), (4, 6, 10), (1, 2, 2))
    x = prepare_input(vol, roi)
    assert x.shape == (1, 1, 8, 8, 8)  # pooled (4, 3, 5) padded to multiples of 8
    assert x[0, 0, 1, 1, 1] == pytest.approx(1.0)  # voxel (1, 2, 3) falls in cell (1, 1, 1)
    assert x[0, 0, 0, 0, 0] == pytest.approx(1 / 256)
    assert float(x[0, 0, 4:].abs().sum()) == 0.0  # padding is zero


def test_points_and_boxes_map_to_the_pooled_cell_that_contains_them():
    roi = Roi((2, 4, 4), (20, 40, 40), (1, 2, 4))
    assert roi.point_to_network((2, 4, 4)) == (0, 0, 0)
    assert roi.point_to_network((7, 9, 11)) == (5, 2, 1)
    assert roi.box_to_network(Box(2, 4, 4, 19, 39, 39)) == (0, 0, 0, 17, 17, 8)
    # Outside the crop, points are clamped to the nearest cell.
    assert roi.point_to_network((0, 100, 0)) == (0, 17, 0)


def test_logits_go_back_to_the_crop_exactly_when_not_pooled():
    roi = Roi((1, 2, 3), (9, 12, 11), (1, 1, 1))
    logits = torch.randn(2, 1, *roi.padded)
    back = logits_to_roi(logits, roi)
    assert back.shape == (2, 8, 10, 8)
    torch.testing.assert_close(back, logits[:, 0, :8, :10, :8])


def test_pooled_mask_survives_the_round_trip():
    """A mask made of whole pooling cells → network logits → crop again gives the mask."""
    roi = Roi((0, 0, 0), (8, 16, 16), (1, 2, 2))
    mask = np.zeros((8, 16, 16), bool)
    mask[2:6, 4:12, 6:14] = True
    net = mask_to_network_logits(mask, roi)
    assert net.shape == (1, 1, *roi.padded)
    back = logits_to_roi(net, roi)[0].numpy() > 0
    # trilinear up-sampling blurs cell borders by half a cell; the interior must agree
    assert back[3:5, 5:11, 7:13].all()
    assert not back[:, :, :4].any() and not back[7:].any()
    assert (back == mask).mean() > 0.9


# ----- click_crop ---------------------------------------------------------------------------
def test_label_extents_are_each_labels_bounding_box():
    labels = np.zeros((10, 12, 14), np.uint8)
    labels[2:4, 3:9, 5] = 1
    labels[7, 0, 13] = 3
    labels[9, 11, 0] = 3
    assert label_extents(labels, [1, 2, 3, 7]) == {
        1: ((2, 3, 5), (3, 8, 5)),
        3: ((7, 0, 0), (9, 11, 13)),
    }
    assert label_extents(labels, []) == {}


def test_label_extents_leave_out_labels_absent_from_a_large_map():
    # cc3d gives absent labels a placeholder box instead of None on maps this large
    labels = np.zeros((100, 64, 64), np.uint8)
    labels[40:45, 10:20, 30:31] = 7
    labels[99, 63, 63] = 255
    assert label_extents(labels, [3, 7, 255]) == {
        7: ((40, 10, 30), (44, 19, 30)),
        255: ((99, 63, 63), (99, 63, 63)),
    }


def test_click_crop_holds_the_answer_and_every_click_with_a_generous_margin():
    shape = (100, 200, 200)
    extent = ((40, 90, 100), (49, 149, 109))  # 10 x 60 x 10 voxels
    points = [(45, 95, 105), (60, 100, 104)]  # the second lies outside the answer
    roi = click_crop_roi(shape, extent, points, max_voxels=4096)
    # known: z 40..60 (21), y 90..149 (60), x 100..109 (10); margin max(16, ceil(n / 2))
    assert roi.start == (40 - MARGIN, 90 - 30, 100 - MARGIN)
    assert roi.stop == (61 + MARGIN, 150 + 30, 110 + MARGIN)
    assert np.prod(roi.pool) < np.prod(size_cap(shape, 4096))
    assert np.prod(roi.pooled) <= 4096


def test_click_crop_is_clipped_to_the_volume():
    roi = click_crop_roi((60, 200, 200), ((0, 0, 0), (3, 3, 3)), [(2, 2, 2)], max_voxels=4096)
    assert roi.start == (0, 0, 0) and roi.stop == (4 + MARGIN, 4 + MARGIN, 4 + MARGIN)


def test_click_crop_is_refused_when_it_is_not_finer_than_the_whole_volume():
    # a small volume is never pooled: the whole volume already shows everything at full scale
    assert click_crop_roi((24, 40, 40), ((10, 10, 10), (12, 12, 12)), [], MAX_VOXELS) is None
    # an object spanning most of a pooled volume: its crop is pooled as much as the volume
    extent = ((5, 10, 10), (90, 180, 180))
    assert click_crop_roi((100, 200, 200), extent, [], max_voxels=4096) is None


def test_object_regions_use_the_click_crop_for_box_less_objects_only():
    shape = (100, 200, 200)
    boxed = ObjectPrompts(box=Box(40, 40, 40, 50, 60, 60))
    boxed.add_click((45, 50, 50), True)
    clicked = ObjectPrompts()
    clicked.add_click((20, 150, 150), True)
    objects = {1: boxed, 2: clicked}
    known = {1: ((0, 0, 0), (99, 199, 199)), 2: ((15, 140, 140), (25, 160, 160))}
    plain = object_regions(shape, objects, "object", 4096)
    crops = object_regions(shape, objects, "object", 4096, known)
    assert crops[1] == plain[1]  # a boxed object's region never depends on the answer
    assert plain[2].start == (0, 0, 0) and plain[2].stop == shape
    assert crops[2] == click_crop_roi(shape, known[2], clicked.points, 4096)
    assert object_regions(shape, objects, "object", 4096, {1: known[1]})[2] == plain[2]
    # union mode: one region for all, so only when no object has a box
    assert object_regions(shape, objects, "union", 4096, known) == object_regions(
        shape, objects, "union", 4096
    )
    only = {2: clicked}
    assert object_regions(shape, only, "union", 4096, known)[2] == crops[2]


@pytest.mark.parametrize("pool", [(1, 1, 1), (1, 2, 2), (2, 4, 8), (4, 8, 8)])
def test_logits_of_a_subregion_equal_that_part_of_the_whole_regions(pool):
    torch.manual_seed(0)
    roi = Roi((3, 0, 5), (40, 91, 75), pool)
    logits = torch.randn(1, 1, *roi.padded)
    full = logits_to_roi(logits, roi)
    subs = [
        tuple(slice(0, n) for n in roi.shape),
        (slice(3, 20), slice(17, 60), slice(1, 69)),
        (slice(36, 37), slice(90, 91), slice(69, 70)),  # the last voxel
        (slice(5, 6), slice(7, 9), slice(0, 3)),
    ]
    for sub in subs:
        part = logits_to_subregion(logits, roi, sub)
        assert part.shape == full[(slice(None), *sub)].shape
        assert torch.equal(part, full[(slice(None), *sub)])
