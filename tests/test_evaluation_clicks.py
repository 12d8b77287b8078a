"""The organizers' click simulator, on small volumes whose clicks are known by hand."""

import numpy as np
import pytest

from ensam_infer.evaluation import clicks as clicks_mod
from ensam_infer.evaluation.clicks import ClickRecorder, simulate_click, write_step_input

SHAPE = (16, 16, 16)


def box(lo, hi, shape=SHAPE):
    m = np.zeros(shape, bool)
    m[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    return m


def test_no_error_no_click():
    gt = box((2, 2, 2), (6, 6, 6))
    assert simulate_click(gt.copy(), gt) is None
    assert simulate_click(np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)) is None


def test_single_voxel_error_fg_and_bg():
    gt = box((2, 2, 2), (6, 6, 6))
    pred = gt.copy()
    pred[3, 4, 5] = False  # missed voxel: foreground click there
    assert simulate_click(pred, gt) == ((3, 4, 5), True)
    pred = gt.copy()
    pred[10, 0, 15] = True  # extra voxel (at the volume edge): background click
    assert simulate_click(pred, gt) == ((10, 0, 15), False)


def test_cube_error_clicks_its_centre():
    # A missed 5^3 cube: the distance to the outside peaks (3 voxels) only at its centre.
    gt = box((4, 5, 6), (9, 10, 11))
    assert simulate_click(np.zeros(SHAPE, bool), gt) == ((6, 7, 8), True)
    # The same cube predicted where gt is empty: background click at the centre.
    assert simulate_click(gt, np.zeros(SHAPE, bool)) == ((6, 7, 8), False)


def test_largest_component_wins():
    gt = box((1, 1, 1), (6, 6, 6))  # 125 voxels missed -> fg error
    pred = box((10, 10, 10), (13, 13, 13))  # 27 extra voxels -> bg error
    assert simulate_click(pred, gt) == ((3, 3, 3), True)
    gt = box((1, 1, 1), (4, 4, 4))  # now the bg error is the larger one
    pred = box((9, 9, 9), (14, 14, 14))
    assert simulate_click(pred, gt) == ((11, 11, 11), False)


def test_components_touching_by_a_corner_are_one_component():
    # 26-connectivity: two 3^3 cubes sharing only a corner form one 54-voxel error, which
    # beats a separate 3x3x5 = 45-voxel box (each cube alone, 27, would not).
    pred = np.zeros(SHAPE, bool)
    gt = box((0, 0, 0), (3, 3, 3)) | box((3, 3, 3), (6, 6, 6)) | box((10, 10, 0), (13, 13, 5))
    z, y, x = simulate_click(pred, gt)[0]
    assert max(z, y, x) < 6  # the click is in the corner-joined pair, not the 45-voxel box


def test_equal_components_first_in_c_order():
    # Equal sizes: the organizers take the lowest cc3d label, i.e. the component whose
    # first voxel comes first in C (z, y, x) order, here the one with the smaller z.
    gt = box((10, 0, 0), (13, 3, 3)) | box((0, 0, 10), (3, 3, 13))
    assert simulate_click(np.zeros(SHAPE, bool), gt) == ((1, 1, 11), True)


def test_ties_broken_by_seed_42():
    # A 3x3x6 missed box: distance 2 on its central line at x = 1..4 (relative), 1 at the
    # ends. np.random.seed(42); np.random.choice(4) == 2 picks the third one: x = 3.
    gt = box((5, 6, 2), (8, 9, 8))
    assert simulate_click(np.zeros(SHAPE, bool), gt) == ((6, 7, 5), True)


def test_global_random_state_untouched():
    np.random.seed(7)
    expected = np.random.random()
    np.random.seed(7)
    simulate_click(np.zeros(SHAPE, bool), box((5, 6, 2), (8, 9, 8)))
    assert np.random.random() == expected


def test_large_error_box_uses_the_downsampled_edt(monkeypatch):
    # An 8^3 missed cube. Normal path: distance 4 on {3,4}^3 (8 ties); choice(8) == 6 ->
    # (1,1,0) of that 2x2x2 block -> (4, 4, 3) relative.
    gt = box((4, 4, 4), (12, 12, 12), shape=(20, 20, 20))
    empty = np.zeros((20, 20, 20), bool)
    assert simulate_click(empty, gt) == ((8, 8, 7), True)
    # Padded box 12^3 = 1728 voxels; above the threshold the organizers max-pool by 2:
    # the cube covers pooled voxels 1..4 of 6, distance 2 on pooled {2,3}^3, i.e. on
    # relative {2..5}^3 after repetition: 64 ties; choice(64) == 38 -> (2,1,2) -> (4,3,4).
    monkeypatch.setattr(clicks_mod, "LARGE_ROI_VOXELS", 1000)
    assert simulate_click(empty, gt) == ((8, 7, 8), True)


def test_shape_mismatch_rejected():
    with pytest.raises(ValueError):
        simulate_click(np.zeros((4, 4, 4), bool), np.zeros((4, 4, 5), bool))


# ---------------------------------------------------------------- ClickRecorder


def two_class_case():
    gt = np.zeros(SHAPE, np.uint8)
    gt[box((1, 1, 1), (6, 6, 6))] = 1
    gt[box((9, 9, 9), (12, 12, 12))] = 2
    return gt


def test_recorder_none_for_a_perfect_class():
    gt = two_class_case()
    pred = gt.copy()
    pred[pred == 1] = 0  # class 1 missed entirely, class 2 perfect
    rec = ClickRecorder(2)
    rec.update(pred, gt)
    f = rec.npz_fields()
    assert f["clicks"].dtype == object and f["clicks"].shape == (2,)
    assert f["clicks"][0] == {"fg": [[3, 3, 3]], "bg": []}
    assert all(type(v) is np.int64 for v in f["clicks"][0]["fg"][0])
    assert f["clicks"][1] == {"fg": [], "bg": []}
    assert f["clicks_order"].dtype == object and f["clicks_order"].shape == (2, 1)
    assert f["clicks_order"].tolist() == [["fg"], [None]]


def test_recorder_string_array_when_every_class_clicked():
    gt = two_class_case()
    rec = ClickRecorder(2)
    rec.update(np.zeros_like(gt), gt)
    pred = gt.copy()
    pred[box((13, 13, 13), (16, 16, 16))] = 2  # class 1 right now, class 2 over-segmented
    pred[3, 3, 3] = 0  # except the voxel already clicked: a single missed voxel
    rec.update(pred, gt)
    assert rec.num_steps == 2
    f = rec.npz_fields()
    assert f["clicks_order"].dtype == np.dtype("<U2")
    assert f["clicks_order"].shape == (2, 2)
    assert f["clicks_order"].tolist() == [["fg", "fg"], ["fg", "bg"]]
    assert f["clicks"][0]["fg"] == [[3, 3, 3], [3, 3, 3]]  # the same click can repeat
    assert f["clicks"][1] == {"fg": [[10, 10, 10]], "bg": [[14, 14, 14]]}


def test_recorder_fields_survive_the_npz_round_trip(tmp_path):
    gt = two_class_case()
    pred = gt.copy()
    pred[pred == 2] = 0
    rec = ClickRecorder(2)
    rec.update(pred, gt)
    rec.update(np.zeros_like(gt), gt)
    fields = rec.npz_fields()
    np.savez_compressed(tmp_path / "x.npz", **fields)
    with np.load(tmp_path / "x.npz", allow_pickle=True) as back:
        for key in ("clicks", "clicks_order"):
            assert back[key].dtype == fields[key].dtype
            assert back[key].shape == fields[key].shape
            assert back[key].tolist() == fields[key].tolist()
        assert type(back["clicks"][1]["fg"][0][0]) is np.int64
        assert back["clicks_order"].tolist() == [[None, "fg"], ["fg", "fg"]]


def test_recorder_fields_are_copies():
    gt = two_class_case()
    rec = ClickRecorder(2)
    rec.update(np.zeros_like(gt), gt)
    fields = rec.npz_fields()
    fields["clicks"][0]["fg"].append([0, 0, 0])
    assert len(rec.npz_fields()["clicks"][0]["fg"]) == 1


def test_recorder_labels_must_match_num_classes():
    with pytest.raises(ValueError):
        ClickRecorder(2, labels=[1])


def test_write_step_input(tmp_path):
    gt = two_class_case()
    imgs = np.arange(np.prod(SHAPE), dtype=np.uint8).reshape(SHAPE)
    spacing = np.array([0.8, 0.8, 2.5])
    boxes = np.array([{"z_min": 1, "z_max": 5}, {"z_min": 9, "z_max": 11}], dtype=object)
    rec = ClickRecorder(2)
    prev = np.zeros(SHAPE, np.int64)
    rec.update(prev, gt)
    path = tmp_path / "case.npz"
    write_step_input(path, imgs, spacing, boxes, rec, prev)
    with np.load(path, allow_pickle=True) as f:
        assert list(f.keys()) == ["imgs", "spacing", "clicks", "clicks_order", "prev_pred", "boxes"]
        assert f["prev_pred"].dtype == np.uint8
        assert np.array_equal(f["imgs"], imgs) and np.array_equal(f["spacing"], spacing)
        assert f["boxes"][1] == {"z_min": 9, "z_max": 11}
        assert f["clicks_order"].tolist() == [["fg"], ["fg"]]
    write_step_input(path, imgs, spacing, None, rec, prev, gts=gt)
    with np.load(path, allow_pickle=True) as f:
        assert list(f.keys()) == ["imgs", "gts", "spacing", "clicks", "clicks_order", "prev_pred"]
    assert [p.name for p in tmp_path.iterdir()] == ["case.npz"]  # no temporary left behind
