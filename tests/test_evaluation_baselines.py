"""The boxfill and otsu baselines: real npz files in (read by challenge.read_case, as the
container reads them), masks and scores out, checked against hand-computed values."""

from pathlib import Path

import numpy as np
import pytest

from ensam_infer.challenge import read_case
from ensam_infer.evaluation.baselines import (
    BALL_VOLUME,
    BoxFillBaseline,
    OtsuBaseline,
    get_baseline,
    merge_classes,
    otsu_threshold,
)
from ensam_infer.evaluation.metrics import dice
from ensam_infer.evaluation.runner import evaluate
from ensam_infer.samples import _ellipsoid, challenge_box, write_samples

SPACING = np.array([1.0, 1.0, 2.0])


def write_case(folder: Path, name: str, image, labels, boxes=True, clicks=None) -> Path:
    """imgs/<name>.npz and gts/<name>.npz in the challenge layout."""
    (folder / "imgs").mkdir(parents=True, exist_ok=True)
    (folder / "gts").mkdir(parents=True, exist_ok=True)
    fields = {"imgs": image.astype(np.uint8), "spacing": SPACING}
    if boxes:
        k = int(labels.max())
        fields["boxes"] = np.array([challenge_box(labels == i) for i in range(1, k + 1)], object)
    if clicks is not None:
        fields["clicks"] = np.array(clicks, dtype=object)
        fields["clicks_order"] = np.array(
            [["fg"] * len(c["fg"]) + ["bg"] * len(c["bg"]) for c in clicks], dtype=object
        )
    np.savez_compressed(folder / "imgs" / f"{name}.npz", **fields)
    np.savez_compressed(folder / "gts" / f"{name}.npz", gts=labels.astype(np.uint8))
    return folder / "imgs" / f"{name}.npz"


def noisy(labels, values, seed=0, background=40.0, sigma=6.0):
    rng = np.random.default_rng(seed)
    img = np.full(labels.shape, background)
    for k, v in values.items():
        img[labels == k] = v
    return np.clip(img + rng.normal(0, sigma, labels.shape), 0, 255)


# ----- Otsu ---------------------------------------------------------------------------------
def test_otsu_threshold_splits_two_modes():
    values = np.concatenate([np.full(300, 50), np.full(100, 200)]).astype(np.uint8)
    t = otsu_threshold(values)
    assert 50 <= t < 200
    assert ((values > t) == (values == 200)).all()


def test_otsu_threshold_constant_has_no_split():
    assert otsu_threshold(np.full(10, 7, np.uint8)) is None
    assert otsu_threshold(np.zeros(0, np.uint8)) is None


# ----- boxfill ------------------------------------------------------------------------------
def test_boxfill_cuboid_is_perfect_from_the_box_step(tmp_path):
    # An axis-aligned cuboid is exactly its challenge box extruded over its z-range: DSC 1
    # at the box step, no error so no click (None), and every later step stays at 1.
    labels = np.zeros((10, 20, 22), np.uint8)
    labels[2:8, 4:15, 5:17] = 1
    write_case(tmp_path, "CT_cuboid", noisy(labels, {1: 150}), labels)
    inputs = []
    rows = evaluate(
        tmp_path / "imgs",
        tmp_path / "gts",
        tmp_path / "out",
        "boxfill",
        on_step=lambda m, c, s, i, o: inputs.append(dict(np.load(i, allow_pickle=True))),
        log=lambda msg: None,
    )
    (row,) = rows
    assert [row[f"DSC_{i}"] for i in range(1, 7)] == [1.0] * 6
    assert [row[f"NSD_{i}"] for i in range(1, 7)] == [1.0] * 6
    assert row["DSC_AUC"] == row["NSD_AUC"] == 4.0
    assert row["error"] == ""
    assert inputs[-1]["clicks_order"].tolist() == [[None] * 5]
    assert inputs[-1]["clicks"][0] == {"fg": [], "bg": []}


def test_boxfill_ellipsoid_box_step_is_bounded(tmp_path):
    # An axis-aligned ellipsoid's challenge box (the middle slice's 2D box over the
    # z-range) is its bounding cuboid. In voxels that cuboid spans 2r + 1 per axis, so the
    # ellipsoid fills rho = (4/3 pi r0 r1 r2) / prod(2 r + 1) of it and
    # DSC = 2 rho / (1 + rho): 0.628 here, below the continuum limit 2 (pi/6) / (1 + pi/6).
    shape = (21, 41, 41)
    labels = _ellipsoid(shape, (10, 20, 20), (8, 15, 12)).astype(np.uint8)
    write_case(tmp_path, "CT_ellipsoid", noisy(labels, {1: 150}), labels)
    (row,) = evaluate(
        tmp_path / "imgs", tmp_path / "gts", tmp_path / "out", "boxfill", log=lambda m: None
    )
    box = np.zeros(shape, bool)
    b = challenge_box(labels == 1)
    box[b["z_min"] : b["z_max"] + 1, b["z_mid_y_min"] : b["z_mid_y_max"] + 1,
        b["z_mid_x_min"] : b["z_mid_x_max"] + 1] = True  # fmt: skip
    assert row["DSC_1"] == pytest.approx(dice(box, labels == 1))
    rho = (4 / 3 * np.pi * 8 * 15 * 12) / (17 * 31 * 25)
    assert abs(row["DSC_1"] - 2 * rho / (1 + rho)) < 0.01
    assert row["DSC_1"] < 2 * (np.pi / 6) / (1 + np.pi / 6)
    # The clicks are background clicks in the box's corners: each removes a ball that lies
    # (mostly) outside the ellipsoid, so the score never falls below the box step's.
    dscs = [row[f"DSC_{i}"] for i in range(1, 7)]
    assert min(dscs) >= row["DSC_1"] - 1e-9
    assert max(dscs) < 0.8


def test_boxfill_clicks_add_and_remove_balls(tmp_path):
    labels = np.zeros((16, 16, 16), np.uint8)
    labels[4:12, 4:12, 4:12] = 1
    clicks = [{"fg": [[8, 8, 8]], "bg": [[8, 8, 13]]}]
    path = write_case(tmp_path, "CT_balls", noisy(labels, {1: 150}), labels, False, clicks)
    case = read_case(path)
    mask = BoxFillBaseline().predict(case)
    assert mask.dtype == np.uint8 and mask.shape == labels.shape
    # A radius-3 ball has 123 voxels (offsets with dz^2 + dy^2 + dx^2 <= 9); the bg ball 5
    # voxels away removes the fg ball's voxels within 3 of it (those with dx >= 2).
    offsets = [
        (a, b, c)
        for a in range(-3, 4)
        for b in range(-3, 4)
        for c in range(-3, 4)
        if a * a + b * b + c * c <= 9
    ]
    assert BALL_VOLUME == len(offsets) == 123
    overlap = sum(1 for a, b, c in offsets if a * a + b * b + (c - 5) ** 2 <= 9)
    assert int(mask.sum()) == 123 - overlap
    assert mask[8, 8, 8] == 1 and mask[8, 8, 10] == 0 and mask[8, 8, 9] == 1
    only_fg = [{"fg": [[8, 8, 8]], "bg": []}]
    path = write_case(tmp_path, "CT_ball", noisy(labels, {1: 150}), labels, False, only_fg)
    assert int(BoxFillBaseline().predict(read_case(path)).sum()) == 123


def test_merge_earlier_class_wins():
    a = np.zeros((4, 4, 4), bool)
    b = np.zeros((4, 4, 4), bool)
    a[:2] = True
    b[1:3] = True
    labels = merge_classes([a, None, b], a.shape)
    assert (labels[0] == 1).all() and (labels[1] == 1).all() and (labels[2] == 3).all()
    assert (labels[3] == 0).all()


# ----- otsu ---------------------------------------------------------------------------------
@pytest.mark.parametrize("bright", [True, False])
def test_otsu_finds_bright_or_dark_object(tmp_path, bright):
    shape = (20, 40, 40)
    labels = _ellipsoid(shape, (10, 20, 20), (7, 12, 10)).astype(np.uint8)
    image = noisy(labels, {1: 180 if bright else 30}, background=110, sigma=8)
    path = write_case(tmp_path, "MR_blob", image, labels)
    mask = OtsuBaseline().predict(read_case(path))
    assert dice(mask == 1, labels == 1) > 0.95


def test_otsu_clicks_add_and_remove_components(tmp_path):
    # One object; a second bright blob inside the (widened) box that the largest-component
    # rule drops; and a bright rod outside the box.
    shape = (20, 48, 48)
    main = _ellipsoid(shape, (10, 24, 20), (6, 10, 8))
    side = _ellipsoid(shape, (10, 24, 34), (3, 3, 3))
    rod = np.zeros(shape, bool)
    rod[9:12, 4:7, 2:20] = True  # 3 x 3 x 18 = 162 voxels, more than a ball
    labels = main.astype(np.uint8)
    image = noisy((main | side | rod).astype(np.uint8), {1: 190}, sigma=3)
    write_case(tmp_path, "CT_blobs", image, labels)
    data = dict(np.load(tmp_path / "imgs" / "CT_blobs.npz", allow_pickle=True))
    box = data["boxes"][0]
    box["z_mid_x_max"] = 38  # widen the box so that it holds the side blob
    data["boxes"] = np.array([box], dtype=object)

    def predict(*clicks):
        """Clicks given in order as (point, is_fg)."""
        entry = {
            "fg": [list(p) for p, fg in clicks if fg],
            "bg": [list(p) for p, fg in clicks if not fg],
        }
        order = [["fg" if fg else "bg" for _, fg in clicks]]
        np.savez_compressed(tmp_path / "c.npz", **data, clicks=np.array([entry], object),
                            clicks_order=np.array(order, object))  # fmt: skip
        return OtsuBaseline().predict(read_case(tmp_path / "c.npz")) == 1

    base = predict()
    assert base[main].mean() > 0.95 and not base[side].any() and not base[rod].any()
    # fg click on the side blob (in the box, on the kept side): its component is added.
    added = predict(((10, 24, 34), True))
    assert added[side].all() and (added & ~side).sum() == base.sum()
    # fg click on the rod (outside the box): local Otsu, the rod is added, nothing else.
    with_rod = predict(((10, 5, 10), True))
    assert with_rod[rod].all() and with_rod.sum() == base.sum() + rod.sum()
    # bg click in the rod, which holds a fg click: only a ball is carved; it cuts the rod.
    cut = predict(((10, 5, 10), True), ((10, 5, 14), False))
    assert cut[10, 5, 10] and not cut[10, 5, 14] and cut[10, 5, 19]
    assert with_rod.sum() - cut.sum() < BALL_VOLUME
    # bg click on the cut-off end (no fg click in it, not the largest): removed whole.
    trimmed = predict(((10, 5, 10), True), ((10, 5, 14), False), ((10, 5, 19), False))
    assert not trimmed[:, :, 17:20][rod[:, :, 17:20]].any()
    assert (trimmed == (cut & ~(rod & (np.arange(48) >= 17)))).all()
    # bg click inside the main object (the largest component): only a ball is carved.
    carved = predict(((10, 24, 20), False))
    assert not carved[10, 24, 20] and base.sum() - carved.sum() == BALL_VOLUME


def test_get_baseline_names():
    assert get_baseline("boxfill").name == "boxfill"
    assert get_baseline("otsu").name == "otsu"
    with pytest.raises(ValueError, match="unknown baseline"):
        get_baseline("nnunet")


def test_baselines_on_the_sample_cases(tmp_path):
    write_samples(tmp_path / "data")
    rows = evaluate(
        tmp_path / "data" / "imgs",
        tmp_path / "data" / "gts",
        tmp_path / "out",
        "boxfill,otsu",
        log=lambda m: None,
    )
    by = {(r["method"], r["CaseName"]): r for r in rows}
    assert len(by) == 6 and all(r["error"] == "" for r in rows)
    for r in rows:
        for i in range(1, 7):
            assert 0.0 <= r[f"DSC_{i}"] <= 1.0 and 0.0 <= r[f"NSD_{i}"] <= 1.0
    organs = "Sample_phantom_organs.npz"
    # Boxes over-fill ellipsoids (about pi/6 of the box is object); thresholding the
    # phantom's distinct contrasts does much better.
    assert 0.45 < by[("boxfill", organs)]["DSC_1"] < 0.75
    assert by[("otsu", organs)]["DSC_1"] > 0.8
    assert by[("otsu", organs)]["DSC_AUC"] > by[("boxfill", organs)]["DSC_AUC"]
