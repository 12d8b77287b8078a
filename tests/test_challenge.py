"""Bad challenge inputs: every case is generated here, put in a folder beside a good case and
run through predict_folder. The good case must always get its `segs`; the bad one gets a
documented repair (a warning, and `segs` of the original shape) or a one-line error naming
the case and no output at all."""

from __future__ import annotations

import io
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from ensam_infer.challenge import CaseError, read_case
from ensam_infer.predict import predict_folder
from ensam_infer.prompts import Box
from ensam_infer.session import EnsamSession

SHAPE = (8, 24, 24)


def box(z=(2, 5), y=(6, 16), x=(6, 16)) -> dict:
    """A challenge box dict: a 2D box on slice z_mid plus the z-range."""
    return {
        "z_min": z[0],
        "z_max": z[1],
        "z_mid": (z[0] + z[1]) // 2,
        "z_mid_y_min": y[0],
        "z_mid_x_min": x[0],
        "z_mid_y_max": y[1],
        "z_mid_x_max": x[1],
    }


def objects(items) -> np.ndarray:
    """A 1-D object array of dicts or lists, as the evaluator writes `boxes` and `clicks`."""
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out


def image(shape=SHAPE, dtype=np.uint8) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 60, shape).astype(np.float64)
    img[tuple(slice(n // 4, max(n // 4 + 1, 3 * n // 4)) for n in shape)] += 150
    return img.astype(dtype)


def click_step(**extra) -> dict:
    """A step-2 input for one class: box, one fg click, prev_pred."""
    base = {
        "imgs": image(),
        "boxes": objects([box()]),
        "clicks": objects([{"fg": [[3, 10, 10]], "bg": []}]),
        "clicks_order": objects([["fg"]]),
        "prev_pred": np.zeros(SHAPE, np.uint8),
    }
    return {**base, **extra}


@dataclass
class Repair:
    warning: str | None  # a substring of one warning; None: no warning expected
    shape: tuple = SHAPE  # the shape `segs` must have
    labels: set | None = None  # the exact non-zero labels of `segs`, where it matters


@dataclass
class Error:
    message: str  # a substring of the one-line error


def with_nan_inf() -> np.ndarray:
    img = image(dtype=np.float32)
    img[0, 0, :5] = np.nan
    img[1, 1, :5] = np.inf
    img[2, 2, :5] = -np.inf
    return img


def boxes_in_0d_list() -> np.ndarray:
    holder = np.empty((), dtype=object)
    holder[()] = [box()]
    return holder


def missing_key_box() -> dict:
    b = box()
    del b["z_max"]
    return b


CASES = {
    # --- the image ---------------------------------------------------------------------
    "missing_imgs": ({"boxes": objects([box()])}, Error("no 'imgs' array")),
    "extra_keys": (
        {
            "imgs": image(),
            "boxes": objects([box()]),
            "unknown": np.arange(3),
            "text_prompts": np.array({"1": "a liver", "instance_label": 0}, dtype=object),
            "gts": np.zeros(SHAPE, np.uint8),
        },
        Repair(None),
    ),
    "float32": (
        {"imgs": image(dtype=np.float32) * 3 - 100, "boxes": objects([box()])},
        Repair("float32, not uint8: windowed"),
    ),
    "int16": (
        {"imgs": image(dtype=np.int16) * 10 - 1000, "boxes": objects([box()])},
        Repair("int16, not uint8: windowed"),
    ),
    "bool": ({"imgs": image() > 100, "boxes": objects([box()])}, Repair("boolean")),
    "nan_inf": ({"imgs": with_nan_inf(), "boxes": objects([box()])}, Repair("windowed")),
    "all_nan": (
        {"imgs": np.full(SHAPE, np.nan, np.float32), "boxes": objects([box()])},
        Repair("windowed"),
    ),
    "object_imgs": (
        {"imgs": image().astype(object), "boxes": objects([box()])},
        Error("object array"),
    ),
    "image_2d": (
        {"imgs": image((24, 24)), "boxes": objects([box(z=(0, 0))])},
        Repair("2-D image", (24, 24)),
    ),
    "image_4d_leading_1": (
        {"imgs": image((1, *SHAPE)), "boxes": objects([box()])},
        Repair("squeezed", (1, *SHAPE)),
    ),
    "image_4d_trailing_1": (
        {"imgs": image((*SHAPE, 1)), "boxes": objects([box()])},
        Repair("squeezed", (*SHAPE, 1)),
    ),
    "image_4d": ({"imgs": image((2, *SHAPE)), "boxes": objects([box()])}, Error("must be 3-D")),
    "empty_axis": (
        {"imgs": image((0, 24, 24)), "boxes": objects([box()])},
        Error("'imgs' is empty"),
    ),
    "single_slice": (
        {"imgs": image((1, 24, 24)), "boxes": objects([box(z=(0, 0))])},
        Repair(None, (1, 24, 24)),
    ),
    # --- boxes ---------------------------------------------------------------------------
    "box_outside": (
        {"imgs": image(), "boxes": objects([box(), box(z=(20, 30), y=(40, 50), x=(40, 50))])},
        Repair("class 2: box unusable (box (20, 40, 40)..(30, 50, 50) lies outside", labels={1}),
    ),
    "box_partly_outside": ({"imgs": image(), "boxes": objects([box(z=(-3, 30))])}, Repair(None)),
    "box_inverted": (
        {"imgs": image(), "boxes": objects([box(z=(5, 2), y=(16, 6))])},
        Repair("corners swapped"),
    ),
    "box_single_voxel": (
        {"imgs": image(), "boxes": objects([box((3, 3), (10, 10), (10, 10))])},
        Repair(None, labels={1}),
    ),
    "box_missing_keys": (
        {"imgs": image(), "boxes": objects([missing_key_box(), box()])},
        Repair("class 1: box unusable (missing keys ['z_max'])"),
    ),
    "box_nan": (
        {"imgs": image(), "boxes": objects([{**box(), "z_min": float("nan")}])},
        Repair("box unusable"),
    ),
    "box_inf": (
        {"imgs": image(), "boxes": objects([{**box(), "z_max": float("inf")}])},
        Repair("box unusable"),
    ),
    "boxes_plain_list": (
        {"imgs": image(), "boxes": [box(), box(z=(0, 1))]},
        Repair(None, labels={1, 2}),
    ),
    "boxes_0d_list": ({"imgs": image(), "boxes": boxes_in_0d_list()}, Repair(None)),
    "box_numpy_ints": (
        {"imgs": image(), "boxes": objects([{k: np.int64(v) for k, v in box().items()}])},
        Repair(None),
    ),
    "boxes_empty": ({"imgs": image(), "boxes": np.array([])}, Error("'boxes' is empty")),
    "boxes_empty_with_clicks": (
        {"imgs": image(), "boxes": np.array([]), "clicks": objects([{"fg": [[3, 10, 10]]}])},
        Repair(None),
    ),
    "no_prompts": ({"imgs": image()}, Error("no 'boxes' and no 'clicks'")),
    "more_boxes_than_clicks": (
        click_step(boxes=objects([box(), box(z=(0, 1))])),
        Repair("1 click entries for 2 classes"),
    ),
    "more_clicks_than_boxes": (
        click_step(clicks=objects([{"fg": [[3, 10, 10]], "bg": []}, {"fg": [[3, 1, 1]]}])),
        Repair("2 click entries for 1 classes", labels={1}),
    ),
    # --- clicks --------------------------------------------------------------------------
    "clicks_out_of_range": (
        click_step(
            clicks=objects([{"fg": [[3, 10, 10], [50, 0, 0]], "bg": [[-1, 0, 0]]}]),
            clicks_order=objects([["fg", "fg", "bg"]]),
        ),
        Repair("class 1: 2 click(s) outside the volume"),
    ),
    "clicks_pairs": (
        click_step(clicks=objects([{"fg": [[3, 10]], "bg": []}])),
        Repair("(z, y, x) triples, got shape (1, 2)"),
    ),
    "clicks_nan": (
        click_step(clicks=objects([{"fg": [[np.nan, 1, 1]]}])),
        Repair("unreadable clicks"),
    ),
    "clicks_not_dicts": (click_step(clicks=np.array(5)), Repair("not a dict")),
    "clicks_only": (
        {
            "imgs": image(),
            "clicks": objects([{"fg": [[3, 10, 10]], "bg": []}, {"fg": [[3, 20, 20]], "bg": []}]),
            "clicks_order": objects([["fg"], ["fg"]]),
            "prev_pred": np.zeros(SHAPE, np.uint8),
        },
        Repair(None, labels={1, 2}),  # K = the number of click dicts
    ),
    "clicks_order_none": (
        click_step(
            boxes=objects([box(), box(z=(0, 1))]),
            clicks=objects([{"fg": [[3, 10, 10]], "bg": []}, {"fg": [], "bg": []}]),
            clicks_order=objects([["fg"], [None]]),
        ),
        Repair(None),
    ),
    "clicks_order_2d_strings": (
        click_step(
            boxes=objects([box(), box(z=(0, 1))]),
            clicks=objects([{"fg": [[3, 10, 10]], "bg": []}, {"fg": [], "bg": [[0, 1, 1]]}]),
            clicks_order=np.array([["fg"], ["bg"]]),
        ),
        Repair(None),
    ),
    "clicks_empty_lists": (
        click_step(clicks=objects([{"fg": [], "bg": []}]), clicks_order=objects([[]])),
        Repair(None),
    ),
    "clicks_duplicated": (
        click_step(
            clicks=objects([{"fg": [[3, 10, 10], [3, 10, 10]], "bg": []}]),
            clicks_order=objects([["fg", "fg"]]),
        ),
        Repair(None),
    ),
    # --- classes and prev_pred ---------------------------------------------------------
    "classes_256": (
        {"imgs": image(), "boxes": objects([box()] * 256)},
        Error("256 classes do not fit the uint8 output"),
    ),
    "prev_pred_wrong_shape": (
        click_step(prev_pred=np.zeros((4, 4, 4), np.uint8)),
        Repair("prev_pred shape (4, 4, 4) != image"),
    ),
    "prev_pred_object": (
        click_step(prev_pred=objects([1, 2])),
        Repair("prev_pred has dtype object"),
    ),
}


@pytest.fixture(scope="module")
def session(tiny_weights: Path) -> EnsamSession:
    return EnsamSession(tiny_weights, device="cpu")


def run_folder(tmp_path: Path, session: EnsamSession, bad: dict) -> tuple[dict, str, Path]:
    inp, out = tmp_path / "inputs", tmp_path / "outputs"
    inp.mkdir()
    out.mkdir()
    np.savez_compressed(inp / "good.npz", imgs=image(), boxes=objects([box()]))
    np.savez_compressed(inp / "bad.npz", **bad)
    log = io.StringIO()
    results = {r.name: r for r in predict_folder(inp, out, session, log=log)}
    return results, log.getvalue(), out


def load_segs(path: Path) -> np.ndarray:
    with np.load(path) as data:
        assert data.files == ["segs"]
        return data["segs"]


def assert_clean(out: Path) -> None:
    """Nothing half-written: no temporary file left in the outputs folder."""
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_case_beside_a_good_one(tmp_path: Path, session: EnsamSession, name: str):
    bad, expected = CASES[name]
    results, log, out = run_folder(tmp_path, session, bad)
    assert set(results) == {"good", "bad"}
    good = load_segs(out / "good.npz")
    assert results["good"].ok and good.shape == SHAPE and good.dtype == np.uint8
    bad_lines = [line for line in log.splitlines() if line.startswith("bad: ")]
    if isinstance(expected, Error):
        assert not results["bad"].ok
        assert expected.message in results["bad"].message
        assert "\n" not in results["bad"].message
        assert bad_lines == [f"bad: ERROR: {results['bad'].message}"]
        assert not (out / "bad.npz").exists()
    else:
        assert results["bad"].ok, results["bad"].message
        segs = load_segs(out / "bad.npz")
        assert segs.shape == expected.shape and segs.dtype == np.uint8
        if expected.labels is not None:
            assert set(np.unique(segs).tolist()) - {0} == expected.labels
        warnings = [line for line in bad_lines if line.startswith("bad: warning:")]
        if expected.warning is not None:
            assert any(expected.warning in w for w in warnings), warnings
        assert not any("ERROR" in line for line in bad_lines)
    assert_clean(out)


def test_255_classes_fill_the_uint8_range(tmp_path: Path, tiny_weights: Path):
    # 255 single-voxel boxes on a 2-voxel grid of one slice: every label must show up.
    shape = (1, 32, 32)
    boxes = [box((0, 0), (2 * (k // 16),) * 2, (2 * (k % 16),) * 2) for k in range(255)]
    session = EnsamSession(tiny_weights, device="cpu", class_chunk=64)
    bad = {"imgs": image(shape), "boxes": objects(boxes)}
    results, log, out = run_folder(tmp_path, session, bad)
    assert results["good"].ok and results["bad"].ok, log
    segs = load_segs(out / "bad.npz")
    assert segs.shape == shape and segs.dtype == np.uint8
    assert segs.max() == 255
    assert len(np.unique(segs)) == 256  # every class won at least its own voxel


# ----- what read_case makes of the repaired prompts (no model needed) ---------------------
def read(tmp_path: Path, **arrays) -> object:
    path = tmp_path / "case.npz"
    np.savez_compressed(path, **arrays)
    return read_case(path)


def test_inverted_box_spans_the_same_region(tmp_path: Path):
    case = read(tmp_path, imgs=image(), boxes=objects([box(z=(5, 2), y=(16, 6), x=(6, 16))]))
    assert case.objects[0].box == Box(2, 6, 6, 5, 16, 16)
    assert any("corners swapped" in w for w in case.warnings)


def test_box_is_clipped_and_numpy_ints_accepted(tmp_path: Path):
    b = {k: np.int32(v) for k, v in box(z=(-3, 30), y=(0, 0), x=(23, 23)).items()}
    case = read(tmp_path, imgs=image(), boxes=objects([b]))
    assert case.objects[0].box == Box(0, 0, 23, 7, 0, 23)


def test_box_outside_leaves_the_class_empty_but_keeps_numbering(tmp_path: Path):
    far = box(z=(20, 30))
    case = read(tmp_path, imgs=image(), boxes=objects([far, box()]))
    assert case.num_classes == 2
    assert case.objects[0].empty and case.objects[1].box is not None
    assert any("class 1 has no usable prompt" in w for w in case.warnings)


def test_clicks_follow_a_2d_string_clicks_order(tmp_path: Path):
    clicks = objects(
        [{"fg": [[1, 1, 1], [2, 2, 2]], "bg": [[3, 3, 3]]}, {"fg": [[4, 4, 4]], "bg": [[5, 5, 5]]}]
    )
    order = np.array([["fg", "bg", "fg"], ["bg", "fg", "fg"]])
    case = read(
        tmp_path, imgs=image(), boxes=objects([box(), box()]), clicks=clicks, clicks_order=order
    )
    # class 2's order lists 3 clicks but it has 2: unusable, so fg first, then bg
    assert case.objects[0].points == [(1, 1, 1), (3, 3, 3), (2, 2, 2)]
    assert case.objects[0].positive == [True, False, True]
    assert case.objects[1].points == [(4, 4, 4), (5, 5, 5)]
    assert case.new_click == [True, True]


def test_none_in_clicks_order_means_no_new_click(tmp_path: Path):
    clicks = objects([{"fg": [[1, 1, 1]], "bg": []}, {"fg": [[2, 2, 2]], "bg": []}])
    order = objects([["fg"], ["fg", None]])  # class 2 was perfect at this step
    case = read(
        tmp_path, imgs=image(), boxes=objects([box(), box()]), clicks=clicks, clicks_order=order
    )
    assert case.new_click == [True, False]
    assert case.objects[1].points == [(2, 2, 2)]


def test_duplicated_and_out_of_range_clicks(tmp_path: Path):
    clicks = objects([{"fg": [[1, 1, 1], [1, 1, 1], [8, 0, 0]], "bg": [[0, -1, 0]]}])
    case = read(
        tmp_path,
        imgs=image(),
        boxes=objects([box()]),
        clicks=clicks,
        clicks_order=objects([["fg", "fg", "fg", "bg"]]),
    )
    assert case.objects[0].points == [(1, 1, 1), (1, 1, 1)]  # repeats kept, outside dropped
    assert any("2 click(s) outside the volume" in w for w in case.warnings)


def test_click_only_case_counts_click_dicts(tmp_path: Path):
    clicks = objects([{"fg": [[1, 1, 1]]}, {"fg": [], "bg": []}, {"bg": [[2, 2, 2]]}])
    case = read(tmp_path, imgs=image(), clicks=clicks)
    assert case.num_classes == 3 and not case.has_boxes
    assert [o.empty for o in case.objects] == [False, True, False]


def test_prev_pred_of_a_squeezed_image_is_reshaped(tmp_path: Path):
    prev = np.zeros((1, *SHAPE), np.uint8)
    prev[0, 3, 10, 10] = 1
    case = read(tmp_path, imgs=image((1, *SHAPE)), boxes=objects([box()]), prev_pred=prev)
    assert case.prev_pred.shape == SHAPE and case.prev_pred[3, 10, 10] == 1


def test_nan_and_inf_are_windowed_to_finite_uint8(tmp_path: Path):
    case = read(tmp_path, imgs=with_nan_inf(), boxes=objects([box()]))
    assert case.image.dtype == np.uint8 and case.image.shape == SHAPE
    assert case.image[0, 0, 0] == 0  # NaN counts as 0, the bottom of this image's window


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty file"),
        (b"just some text, not an archive\n", "not an npz (zip) archive"),
        (b"\x93NUMPY\x01\x00" + bytes(60), "not an npz (zip) archive"),
        (b"PK\x03\x04" + bytes(60), "unreadable npz"),
    ],
    ids=["empty", "text", "npy", "zip_header_only"],
)
def test_unreadable_files_raise_one_line_case_error(tmp_path: Path, content: bytes, message):
    path = tmp_path / "case.npz"
    path.write_bytes(content)
    with pytest.raises(CaseError) as info:
        read_case(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_corrupt_deflate_stream_is_a_case_error(tmp_path: Path):
    # A damaged compressed member fails in zlib itself, before any CRC check.
    path = tmp_path / "case.npz"
    np.savez_compressed(path, imgs=image(), boxes=objects([box()]))
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("boxes.npy")
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack(
        "<HH", data[info.header_offset + 26 : info.header_offset + 30]
    )
    data[info.header_offset + 30 + name_len + extra_len] = 0xFF  # deflate block type 3: invalid
    path.write_bytes(bytes(data))
    with pytest.raises(CaseError, match=r"unreadable npz \(error: .*invalid block type"):
        read_case(path)
