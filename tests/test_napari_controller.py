"""The napari plugin's plain logic (no Qt, no napari): coordinates, prompt bookkeeping, undo
and the reader. The controller's answers must be the session's own for the same prompts."""

from __future__ import annotations

import copy
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import mask_bbox

from ensam_infer.prompts import Box, PromptError
from ensam_infer.samples import SAMPLES
from ensam_infer.session import EnsamSession
from ensam_napari.controller import (
    GEOMETRY_KEY,
    EnsamController,
    Geometry,
    LayerTransform,
    Prompts,
    Step,
    box_outline,
    corners_to_box,
    default_depth,
    get_reader,
    read_layers,
    rectangle_to_box,
    sample_phantom,
    slice_index,
    to_voxels,
)

SCALE = (2.5, 1.0, 1.0)
IMAGE = LayerTransform(scale=(2.0, 0.5, 0.5), translate=(10.0, -5.0, 0.0))


# ----- coordinates --------------------------------------------------------------------------
def test_layer_transform_reads_scale_and_translate_and_refuses_rotations():
    layer = SimpleNamespace(scale=(2.0, 0.5, 0.5), translate=(10.0, -5.0, 0.0), name="ct")
    tf = LayerTransform.of(layer)
    assert tf == IMAGE
    assert np.allclose(tf.to_data(tf.to_world([[1, 2, 3]])), [[1, 2, 3]])
    four_d = SimpleNamespace(scale=(1, 2.0, 0.5, 0.5), translate=(7, 10.0, -5.0, 0.0))
    assert LayerTransform.of(four_d) == IMAGE  # the last three axes
    rotated = SimpleNamespace(**vars(layer), rotate=np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]]))
    with pytest.raises(ValueError, match="rotate"):
        LayerTransform.of(rotated)
    sheared = SimpleNamespace(**vars(layer), shear=np.array([0.2, 0, 0]))
    with pytest.raises(ValueError, match="sheared"):
        LayerTransform.of(sheared)


def test_points_of_another_layer_map_to_image_voxels_through_world_coordinates():
    same = to_voxels([[3, 4, 5]], IMAGE, IMAGE)
    assert same.tolist() == [[3, 4, 5]]
    # a layer in plain world units (scale 1, translate 0): world (16, -3, 2.4) is voxel
    # ((16-10)/2, (-3+5)/0.5, 2.4/0.5) = (3, 4, 4.8) -> (3, 4, 5)
    world = LayerTransform()
    assert to_voxels([16.0, -3.0, 2.4], world, IMAGE).tolist() == [[3, 4, 5]]
    assert to_voxels([[0, 16.0, -3.0, 2.4]], world, IMAGE).tolist() == [[3, 4, 5]]  # 4-D data
    with pytest.raises(PromptError):
        to_voxels([[1.0, 2.0]], world, IMAGE)


def test_rectangle_and_z_range_give_the_voxel_box():
    shape = (20, 40, 40)
    rect = [[7, 10, 12], [7, 10, 30], [7, 25, 30], [7, 25, 12]]
    box = rectangle_to_box(rect, shape, IMAGE, IMAGE, depth=(4, 10))
    assert box == Box(4, 10, 12, 10, 25, 30)
    assert rectangle_to_box(rect, shape, IMAGE, IMAGE) == Box(7, 10, 12, 7, 25, 30)
    # voxels count when their centres are inside; a sliver still gets one voxel
    assert rectangle_to_box([[7, 9.6, 3.2], [7, 20.4, 3.4]], shape, IMAGE, IMAGE) == Box(
        7, 10, 3, 7, 20, 3
    )
    # the range runs along the axis the rectangle is flat in (rolled dims: x)
    flat_x = [[2, 10, 5], [2, 25, 5], [9, 25, 5], [9, 10, 5]]
    assert rectangle_to_box(flat_x, shape, IMAGE, IMAGE, depth=(3, 8)) == Box(2, 10, 3, 9, 25, 8)
    # 2-D vertices (y, x) from a 2-D Shapes layer, with the z-range
    assert rectangle_to_box([[10, 12], [25, 30]], shape, IMAGE, IMAGE, depth=(5, 6)) == Box(
        5, 10, 12, 6, 25, 30
    )
    # a rectangle in world units on another layer
    world = LayerTransform()
    world_rect = IMAGE.to_world(np.array(rect, float))
    assert rectangle_to_box(world_rect, shape, world, IMAGE, depth=(4, 10)) == box
    # clipped to the image; wholly outside is an error
    assert rectangle_to_box(rect, shape, IMAGE, IMAGE, depth=(15, 30)).hi[0] == 19
    with pytest.raises(PromptError, match="outside"):
        rectangle_to_box([[7, 50, 50], [7, 60, 60]], shape, IMAGE, IMAGE)
    with pytest.raises(PromptError, match="z-range"):
        rectangle_to_box([[10, 12], [25, 30]], shape, IMAGE, IMAGE)


def test_corners_outline_and_slice_helpers():
    shape = (20, 40, 40)
    assert corners_to_box([9, 30, 5], [2, 10, 25], shape, IMAGE, IMAGE) == Box(2, 10, 5, 9, 30, 25)
    box = Box(2, 10, 5, 9, 30, 25)
    outline = box_outline(box, 4)
    assert outline.shape == (4, 3) and set(outline[:, 0]) == {4}
    assert rectangle_to_box(outline, shape, IMAGE, IMAGE, depth=(2, 9)) == box
    assert set(box_outline(box)[:, 0]) == {5}  # the middle slice by default
    # world z 10 + 2*6 = 22 is slice 6
    assert slice_index([22.0, 0.0, 0.0], IMAGE) == 6
    assert slice_index([99, 22.0, 0.0, 0.0], IMAGE) == 6  # extra world axes in front
    assert default_depth(6, 20) == (3, 9)
    assert default_depth(1, 20) == (0, 4) and default_depth(19, 20, margin=2) == (17, 19)


# ----- prompts bookkeeping ------------------------------------------------------------------
def test_prompts_extend_only_with_the_same_box_and_earlier_clicks_first():
    box = Box(1, 1, 1, 5, 5, 5)
    a = Prompts(box, (((2, 2, 2), True),))
    b = Prompts(box, (((2, 2, 2), True), ((3, 3, 3), False)))
    assert b.extends(a) and a.extends(a) and not a.extends(b)
    assert not Prompts(Box(0, 0, 0, 5, 5, 5), b.clicks).extends(a)
    assert Prompts().empty and not a.empty


def test_bookkeeping_validates_prompts_and_hands_out_object_ids():
    c = EnsamController(session=lambda: pytest.fail("no model needed for bookkeeping"))
    with pytest.raises(RuntimeError, match="image"):
        c.add_click((1, 1, 1))
    with pytest.raises(ValueError, match="3-D"):
        c.set_image(np.zeros((4, 4)))
    c.set_image(np.zeros((10, 20, 20), np.uint8), spacing=(2.0, 1.0, 1.0))
    assert c.pending and c.labels.shape == (10, 20, 20) and not c.labels.any()
    assert c.new_object() == 1  # the current object is still unused
    assert c.set_box((-3, 2, 2, 4, 30, 8)) == Box(0, 2, 2, 4, 19, 8)  # clipped
    with pytest.raises(PromptError, match="outside"):
        c.add_click((10, 0, 0))
    with pytest.raises(PromptError):
        c.select(0)
    c.add_click((1, 3, 3))
    version = c.version
    assert c.new_object() == 2 and c.current == 2
    c.add_click((5, 5, 5), positive=False)
    assert c.object_ids() == [1, 2] and c.version > version
    assert c.undo_click(1)  # object 1 had a click: taken back
    assert c.prompts(1).clicks == () and c.prompts(1).box is not None
    assert not c.undo_click(1)  # nothing left to undo
    c.set_box((2, 2, 2, 6, 6, 6), object_id=2)  # a new box starts the object over
    assert c.prompts(2).clicks == ()
    c.add_click((4, 4, 4), object_id=2)
    c.set_box((1, 2, 2, 7, 6, 6), object_id=2, keep_clicks=True)  # only the z-range changed
    assert len(c.prompts(2).clicks) == 1
    c.reset_object(2)
    assert c.object_ids() == [1]
    c.reset()
    assert c.object_ids() == [] and c.current == 1
    assert c.geometry.spacing == (1.0, 1.0, 2.0)


# ----- against the session ------------------------------------------------------------------
def _centre(mask):
    return tuple(int(v) for v in np.argwhere(mask).mean(axis=0))


@pytest.fixture
def case(request, tiny_model, phantom):
    crop = getattr(request, "param", "union")  # the session's crop mode
    image, labels = phantom
    calls = {"encode": 0, "decode": 0}

    def session():
        # its own copy of the weights: the spies must not reach the shared tiny_model
        s = EnsamSession(copy.deepcopy(tiny_model), device="cpu", crop=crop)
        for name in calls:
            original = getattr(s.model, name)

            def spy(*args, _name=name, _original=original, **kwargs):
                calls[_name] += 1
                return _original(*args, **kwargs)

            setattr(s.model, name, spy)
        return s

    controller = EnsamController(session)
    controller.set_image(image, spacing=SCALE)
    ref = EnsamSession(tiny_model, device="cpu", crop=crop)
    ref.set_image(image, spacing=SCALE)
    box = mask_bbox(labels == 1)
    inside = _centre(labels == 1)
    outside = (inside[0], box[1] + 1, box[2] + 1)
    return SimpleNamespace(c=controller, ref=ref, calls=calls, labels=labels, box=box,
                           clicks=[(inside, True), (outside, False)])  # fmt: skip


def test_runs_answer_as_the_session_does_and_the_encoder_runs_once(case):
    c, ref = case.c, case.ref
    c.set_box(case.box)
    step = c.run()
    ref.add_box(case.box)
    assert np.array_equal(step.labels, ref.predict())
    assert step.encoded and step.decoded == (1,) and step.load_seconds > 0
    assert step.message.startswith("encoded + decoded in ") and "model loaded" in step.message
    assert not c.pending
    for point, positive in case.clicks:
        c.add_click(point, positive)
        step = c.run()
        ref.add_click(point, positive)
        assert np.array_equal(step.labels, ref.predict())
        assert not step.encoded and step.message.startswith("decoded in ")
    assert case.calls == {"encode": 1, "decode": 3}
    assert np.array_equal(c.labels, step.labels)


@pytest.mark.parametrize("case", ["union", "object"], indirect=True)
def test_undo_and_reset_give_back_earlier_answers_without_the_network(case):
    c, ref = case.c, case.ref
    ref.add_box(case.box)
    c.set_box(case.box)
    answers = [c.run().labels]
    assert np.array_equal(answers[0], ref.predict())
    for point, positive in case.clicks:
        c.add_click(point, positive)
        answers.append(c.run().labels)
    assert not np.array_equal(answers[1], answers[2])
    decodes = case.calls["decode"]
    assert c.undo_click()
    step = c.run()
    assert np.array_equal(step.labels, answers[1])
    assert step.decoded == () and step.message.startswith("updated in ")
    assert c.undo_click()
    assert np.array_equal(c.run().labels, answers[0])
    assert case.calls["decode"] == decodes  # exact earlier answers, no network run

    # a second object (with crop="union" it changes the shared region); resetting it gives
    # object 1 its answer back exactly
    c.new_object()
    c.set_box(mask_bbox(case.labels == 2))
    step = c.run()
    assert set(np.unique(step.labels)) == {0, 1, 2} and step.encoded
    c.reset_object(2)
    step = c.run()
    assert np.array_equal(step.labels, answers[0]) and not step.encoded and step.decoded == ()


def test_clicks_taken_together_and_undone_decode_from_the_longest_earlier_answer(case):
    c, ref = case.c, case.ref
    c.set_box(case.box)
    c.run()
    for point, positive in case.clicks:  # both before the next run (the user was quick)
        c.add_click(point, positive)
    both = c.run()
    ref.add_box(case.box)
    ref.predict()
    ref.add_click(*case.clicks[0])
    one = ref.predict()
    assert both.decoded == (1,) and len(c.prompts().clicks) == 2  # one decode, two clicks
    c.undo_click()
    step = c.run()  # box answer + first click, decoded once: what the session gives
    assert step.decoded == (1,) and np.array_equal(step.labels, one)


def test_a_failed_run_raises_and_the_next_one_starts_from_the_prompts(case, monkeypatch):
    c = case.c
    c.set_box(case.box)
    session = c.session()

    def broken():
        raise RuntimeError("boom")

    monkeypatch.setattr(session, "predict", broken)
    with pytest.raises(RuntimeError, match="boom"):
        c.run()
    assert c.pending
    monkeypatch.undo()
    c.add_click(*case.clicks[0])
    step = c.run()
    case.ref.add_box(case.box)
    case.ref.add_click(*case.clicks[0])
    assert np.array_equal(step.labels, case.ref.predict())


def test_prompts_may_change_while_a_run_is_going(case):
    c = case.c
    c.set_box(case.box)
    started, release = threading.Event(), threading.Event()
    session = c.session()
    original = session.predict

    def slow():
        started.set()
        release.wait(30)
        return original()

    session.predict = slow
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("step", c.run()))
    worker.start()
    assert started.wait(30)
    c.add_click(*case.clicks[0])  # the UI thread goes on meanwhile
    release.set()
    worker.join(30)
    assert result["step"].version < c.version and c.pending
    session.predict = original
    assert len(c.run().labels.shape) == 3 and not c.pending


def test_new_image_clears_everything(case):
    c = case.c
    c.set_box(case.box)
    c.run()
    c.set_image(np.zeros((8, 16, 16), np.uint8))
    assert c.object_ids() == [] and c.labels.shape == (8, 16, 16) and c.pending
    c.add_click((4, 8, 8))
    assert c.run().labels.shape == (8, 16, 16)


def test_step_messages():
    labels = np.zeros((1, 1, 1), np.uint8)
    assert Step(labels, 0.4213, False, decoded=(1,)).message == "decoded in 0.42 s"
    assert Step(labels, 1.5, True, 2.04, decoded=(1,)).message == (
        "encoded + decoded in 1.50 s; model loaded in 2.0 s"
    )
    assert Step(labels, 0.1, False).message == "updated in 0.10 s (no network run)"


# ----- saving, reader, sample ---------------------------------------------------------------
@pytest.fixture
def nifti(tmp_path):
    arr = np.zeros((10, 20, 30), np.int16)
    arr[3:6, 5:10, 10:20] = 500
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.5, 0.8, 2.0))
    img.SetOrigin((10.0, -20.0, 5.0))
    img.SetDirection((1, 0, 0, 0, -1, 0, 0, 0, 1))
    path = tmp_path / "scan.nii.gz"
    sitk.WriteImage(img, str(path))
    return path


def test_reader_keeps_spacing_as_scale_and_save_keeps_the_geometry(nifti, tmp_path):
    assert get_reader(str(nifti)) is read_layers
    assert get_reader([str(nifti), str(nifti)]) is read_layers
    assert get_reader("photo.png") is None and get_reader([]) is None
    ((data, attrs, kind),) = read_layers(str(nifti))
    assert kind == "image" and data.shape == (10, 20, 30) and attrs["name"] == "scan"
    assert attrs["scale"] == pytest.approx((2.0, 0.8, 0.5))
    geometry = Geometry.from_dict(attrs["metadata"][GEOMETRY_KEY])
    assert geometry.origin == (10.0, -20.0, 5.0) and geometry.direction[4] == -1

    c = EnsamController(session=lambda: pytest.fail("no model needed to save"))
    c.set_image(data, spacing=attrs["scale"], geometry=geometry)
    out = tmp_path / "mask.nrrd"
    assert c.save(out) == out
    back = sitk.ReadImage(str(out))
    assert back.GetSpacing() == pytest.approx((0.5, 0.8, 2.0))
    assert back.GetOrigin() == pytest.approx((10.0, -20.0, 5.0))
    assert back.GetDirection()[4] == pytest.approx(-1)
    assert back.GetSize() == (30, 20, 10) and not sitk.GetArrayFromImage(back).any()
    with pytest.raises(ValueError, match="save as"):
        c.save(tmp_path / "mask.png")


def test_geometry_of_a_plain_layer_and_the_sample_phantom():
    g = Geometry.of_transform(LayerTransform(scale=(3.0, 0.5, -0.7), translate=(1, 2, 3)))
    assert g.spacing == (0.7, 0.5, 3.0) and g.origin == (3, 2, 1)
    assert Geometry.from_dict(g.to_dict()) == g
    ((data, attrs, kind),) = sample_phantom()
    assert kind == "image" and data.shape == SAMPLES["Sample_phantom_organs"][0]
    assert attrs["scale"] == SCALE and data.dtype == np.uint8
