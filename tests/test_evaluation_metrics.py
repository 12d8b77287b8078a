"""Challenge metrics against values worked out by hand on small volumes."""

import math

import numpy as np
import pytest

from ensam_infer.evaluation.metrics import (
    auc,
    dice,
    multiclass_scores,
    normalized_surface_dice,
    surfel_area_table,
)


def box(shape, lo, hi):
    m = np.zeros(shape, bool)
    m[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    return m


# ---------------------------------------------------------------- DSC


def test_dice_identical_and_disjoint():
    a = box((10, 10, 10), (2, 2, 2), (6, 6, 6))
    b = box((10, 10, 10), (7, 7, 7), (9, 9, 9))
    assert dice(a, a) == 1.0
    assert dice(a, b) == 0.0


def test_dice_cube_shifted_by_one_voxel():
    # 4^3 cube vs the same cube one slice further: overlap 3*4*4 = 48 of 64 + 64.
    a = box((10, 10, 10), (2, 2, 2), (6, 6, 6))
    b = box((10, 10, 10), (3, 2, 2), (7, 6, 6))
    assert dice(b, a) == pytest.approx(2 * 48 / 128)  # 0.75


def test_dice_empty_masks():
    e = np.zeros((4, 4, 4), bool)
    f = box((4, 4, 4), (1, 1, 1), (2, 2, 2))
    assert math.isnan(dice(e, e))  # DeepMind/organizers: NaN when both are empty
    assert dice(e, f) == 0.0
    assert dice(f, e) == 0.0


# ---------------------------------------------------------------- NSD


def test_surfel_areas_by_hand():
    # Spacing (3, 1, 1): a face normal to axis 0 is 1x1 mm, the others 3x1 mm.
    areas = surfel_area_table((3.0, 1.0, 1.0))
    assert areas[0] == 0.0 and areas[255] == 0.0
    assert areas[15] == pytest.approx(1.0)  # voxels a=1 inside: plane normal to axis 0
    assert areas[51] == pytest.approx(3.0)  # b=1 inside: normal to axis 1
    assert areas[85] == pytest.approx(3.0)  # c=1 inside: normal to axis 2
    # one voxel inside: triangle with normal (1/8)(s1*s2, s0*s2, s0*s1) = (1, 3, 3)/8
    assert areas[1] == pytest.approx(math.sqrt(19) / 8)
    assert areas[254] == pytest.approx(math.sqrt(19) / 8)  # the complement, same surface
    # two voxels along axis 2 inside (edge along axis 2): 2 triangles (1, 3, 0)/4
    assert areas[3] == pytest.approx(math.sqrt(10) / 2)
    # two voxels along axis 0 inside (edge along axis 0): 2 triangles (0, 3, 3)/4
    assert areas[17] == pytest.approx(math.sqrt(18) / 2)


def test_nsd_identical_and_disjoint():
    a = box((12, 12, 12), (2, 2, 2), (6, 7, 5))
    far = box((12, 12, 12), (8, 9, 8), (11, 11, 11))
    assert normalized_surface_dice(a, a, (0.8, 0.8, 2.5)) == pytest.approx(1.0)
    assert normalized_surface_dice(far, a, (1.0, 1.0, 1.0)) == 0.0


def test_nsd_empty_masks():
    e = np.zeros((5, 5, 5), bool)
    f = box((5, 5, 5), (1, 1, 1), (3, 3, 3))
    assert math.isnan(normalized_surface_dice(e, e, (1, 1, 1)))  # their 0/0
    assert normalized_surface_dice(f, e, (1, 1, 1)) == 0.0
    assert normalized_surface_dice(e, f, (1, 1, 1)) == 0.0


# A 3x4x4 box (axis 0 first) and the same box shifted by one slice along axis 0.
# The surfels sit on voxel corners; corner q0 of gt runs 0..3, of pred 1..4 (relative).
# * Side surfels of gt (on the q1 or q2 boundary) with q0 in 1..3 are pred surfels: 0 mm.
# * Top-face surfels of gt (q0 = 3, inside pred) are at most 2 corners from pred's sides
#   (q1, q2 in 1..3 of 0..4): within 2 mm at 1 mm in-plane spacing.
# * Bottom-plane surfels of gt (q0 = 0) are one slice, s0 mm, from anything of pred.
# The same holds for pred's top plane by symmetry, so NSD = 1 - A_bottom / A_total, with
# 0 excluded when s0 <= 2 mm (the tolerance is inclusive).
# Surfel areas at spacing (3, 1, 1) (see test_surfel_areas_by_hand):
#   8 box corners              sqrt(19)/8 each
#   24 edges across axis 0     sqrt(10)/2 each (12 along axis 1, 12 along axis 2)
#   8 edges along axis 0       sqrt(18)/2 each
#   18 faces normal to axis 0  1 each (two 3x3 face interiors)
#   24 faces normal to 1 or 2  3 each (four 2x3 face interiors)
#   bottom plane: 4 corners + 12 edges across axis 0 + 9 faces normal to axis 0.
CORNER, EDGE_X, EDGE_ALONG, FACE0, FACE12 = (
    math.sqrt(19) / 8,
    math.sqrt(10) / 2,
    math.sqrt(18) / 2,
    1.0,
    3.0,
)
TOTAL = 8 * CORNER + 24 * EDGE_X + 8 * EDGE_ALONG + 18 * FACE0 + 24 * FACE12
BOTTOM = 4 * CORNER + 12 * EDGE_X + 9 * FACE0


@pytest.mark.parametrize(
    ("spacing", "expected"),
    [
        ((1.0, 1.0, 1.0), 1.0),
        ((2.0, 1.0, 1.0), 1.0),  # shifted face exactly 2 mm away: included
        ((3.0, 1.0, 1.0), 1 - BOTTOM / TOTAL),  # 3 mm: the two end planes drop out
    ],
)
def test_nsd_shifted_box_anisotropic(spacing, expected):
    gt = box((9, 8, 8), (2, 2, 2), (5, 6, 6))
    pred = box((9, 8, 8), (3, 2, 2), (6, 6, 6))
    assert normalized_surface_dice(pred, gt, spacing) == pytest.approx(expected, rel=1e-12)
    assert normalized_surface_dice(gt, pred, spacing) == pytest.approx(expected, rel=1e-12)
    assert dice(pred, gt) == pytest.approx(2 * 32 / 96)  # overlap 2*4*4 of 48 + 48


def test_nsd_expected_value_is_about_0_798():
    # The hand formula above, evaluated: guards against a typo in both test and code.
    assert 1 - BOTTOM / TOTAL == pytest.approx(0.79801, abs=1e-5)


def test_nsd_mask_touching_the_volume_border_is_closed():
    # A mask filling the whole array still has a surface (the array edge).
    full = np.ones((3, 3, 3), bool)
    inner = box((3, 3, 3), (0, 0, 0), (3, 3, 2))
    assert normalized_surface_dice(full, full, (1, 1, 1)) == pytest.approx(1.0)
    assert 0.0 < normalized_surface_dice(inner, full, (1, 1, 5)) < 1.0


# ---------------------------------------------------------------- per step


def two_class_gt():
    gt = np.zeros((12, 12, 12), np.uint8)
    gt[1:5, 1:5, 1:5] = 1
    gt[7:11, 7:11, 7:11] = 2
    return gt


def test_multiclass_perfect_and_one_class_missing():
    gt = two_class_gt()
    s = multiclass_scores(gt, gt, (1.0, 1.0, 1.0))
    assert s["dsc"] == 1.0 and s["nsd"] == pytest.approx(1.0)
    assert s["per_class"] == {1: (1.0, pytest.approx(1.0)), 2: (1.0, pytest.approx(1.0))}
    pred = gt.copy()
    pred[pred == 2] = 0
    s = multiclass_scores(pred, gt, (1.0, 1.0, 1.0))
    assert s["dsc"] == 0.5  # mean of 1 and 0
    assert s["nsd"] == pytest.approx(0.5)
    assert s["per_class"][2] == (0.0, 0.0)
    assert all(type(k) is int for k in s["per_class"])


def test_multiclass_nsd_zero_when_dsc_at_most_0_2():
    gt = np.zeros((10, 10, 10), np.uint8)
    gt[2:4, 2:4, 2] = 1  # 4 voxels
    gt[6:8, 6:8, 6:8] = 2
    pred = np.zeros_like(gt)
    pred[2, 2, 2] = 1  # class 1: 2*1/(1+4) = 0.4; class 2 missed: 0 -> mean exactly 0.2
    s = multiclass_scores(pred, gt, (1.0, 1.0, 1.0))
    assert s["dsc"] == pytest.approx(0.2)
    assert normalized_surface_dice(pred == 1, gt == 1, (1, 1, 1)) > 0.5
    assert s["nsd"] == 0.0
    assert s["per_class"][1] == (pytest.approx(0.4), 0.0)
    pred[6, 6, 6] = 2  # class 2: 2/9 -> mean above 0.2: NSD now computed
    assert multiclass_scores(pred, gt, (1.0, 1.0, 1.0))["nsd"] > 0.0


def test_multiclass_scores_only_labels_present_in_gt():
    gt = two_class_gt()
    pred = gt.copy()
    pred[0, 0, 0] = 3  # a label absent from gt: never scored
    pred[11, 0, 0] = 7
    s = multiclass_scores(pred, gt, (1.0, 1.0, 1.0))
    assert set(s["per_class"]) == {1, 2}
    assert s["dsc"] == 1.0


def test_multiclass_empty_gt():
    gt = np.zeros((6, 6, 6), np.uint8)
    pred = gt.copy()
    pred[1:3, 1:3, 1:3] = 1
    s = multiclass_scores(pred, gt, (1.0, 1.0, 1.0))
    assert math.isnan(s["dsc"])  # their np.mean([])
    assert s["nsd"] == 0.0 and s["per_class"] == {}


def test_multiclass_drops_smallest_label_even_if_not_background():
    # The organizers skip the first sorted label, assuming it is 0.
    gt = np.ones((6, 6, 6), np.uint8)
    gt[3:] = 2
    s = multiclass_scores(np.zeros_like(gt), gt, (1.0, 1.0, 1.0))
    assert set(s["per_class"]) == {2}


def test_multiclass_accepts_wide_label_types():
    gt = two_class_gt()
    a = multiclass_scores(gt.astype(np.int64), gt.astype(np.int16), (1.0, 1.0, 2.0))
    assert a["dsc"] == 1.0 and set(a["per_class"]) == {1, 2}


# ---------------------------------------------------------------- AUC


def test_auc_known_sequences():
    assert auc([1, 1, 1, 1, 1]) == 4.0
    assert auc([0, 0.25, 0.5, 0.75, 1.0]) == 2.0  # 0.125 + 0.375 + 0.625 + 0.875
    assert auc([0, 0, 0, 0, 1]) == 0.5


def test_auc_drops_the_box_step():
    # Six steps: only the last five (the click steps) count.
    assert auc([0.9, 0, 0, 0, 0, 0]) == 0.0
    assert auc([0.0, 1, 1, 1, 1, 1]) == 4.0


def test_auc_needs_five_steps():
    with pytest.raises(ValueError):
        auc([1, 1, 1, 1])
