"""The napari widget in a real viewer (needs napari, Qt and a display: Xvfb through
pytest-xvfb; skipped when napari is not installed). Prompts go through the widget's layers
as a user's would; the Labels layer must equal what a plain EnsamSession answers."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

napari = pytest.importorskip("napari")


def _qt_problem() -> str | None:
    """Why Qt cannot open windows here, if it cannot: a missing system library makes Qt abort
    the whole process, so this is tried in a child process first."""
    if not os.environ.get("DISPLAY"):
        return "no X display (install xvfb: pytest-xvfb then starts one)"
    probe = subprocess.run(
        [sys.executable, "-c", "from qtpy.QtWidgets import QApplication; QApplication([])"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if probe.returncode:
        lines = (probe.stderr or probe.stdout).strip().splitlines() or ["?"]
        return f"Qt cannot start (see scripts/test.sh for the system packages): {lines[-1]}"
    return None


if (_why := _qt_problem()) is not None:
    pytest.skip(_why, allow_module_level=True)

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from conftest import mask_bbox  # noqa: E402

from ensam_infer.samples import SAMPLES  # noqa: E402
from ensam_infer.session import EnsamSession  # noqa: E402
from ensam_napari import widget as widget_module  # noqa: E402
from ensam_napari.widget import EnsamWidget  # noqa: E402

SCALE = (2.5, 1.0, 1.0)
TIMEOUT_MS = 60_000


def _rectangle(box, z):
    _, y0, x0, _, y1, x1 = box
    return [[z, y0, x0], [z, y0, x1], [z, y1, x1], [z, y1, x0]]


@pytest.fixture
def errors(monkeypatch):
    shown = []
    monkeypatch.setattr(widget_module, "show_error", shown.append)
    monkeypatch.setattr(widget_module, "show_info", lambda message: None)
    return shown


@pytest.fixture
def setup(make_napari_viewer, qtbot, tiny_model, phantom, errors):
    image, labels = phantom
    viewer = make_napari_viewer()
    layer = viewer.add_image(image, name="phantom", scale=SCALE)
    session = EnsamSession(tiny_model, device="cpu")
    widget = EnsamWidget(viewer, session=session)
    viewer.window.add_dock_widget(widget)
    qtbot.waitUntil(lambda: widget.image_layer is layer, timeout=5000)

    def wait():
        qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)
        qtbot.wait(10)  # the deferred redraw of the prompt layers

    return SimpleNamespace(
        viewer=viewer, widget=widget, layer=layer, labels=labels, image=image, wait=wait
    )


def _reference(tiny_model, image):
    ref = EnsamSession(tiny_model, device="cpu")
    ref.set_image(image, spacing=SCALE)
    return ref


def test_box_and_clicks_give_the_sessions_answer_and_undo_reset_work(setup, tiny_model, errors):
    w, wait = setup.widget, setup.wait
    box = mask_bbox(setup.labels == 1)
    z_mid = (box[0] + box[3]) // 2
    setup.viewer.dims.set_point(0, z_mid * SCALE[0])
    assert w.depth() == (z_mid - 3, z_mid + 3)  # the spin boxes follow the slice
    w.z_lock.setChecked(True)
    w.z_from.setValue(box[0])
    w.z_to.setValue(box[3])
    w.draw_box(_rectangle(box, z_mid))
    assert w.busy  # the model runs on a worker: the call returned at once
    wait()
    assert tuple(w.controller.prompts().box.lo + w.controller.prompts().box.hi) == box

    ref = _reference(tiny_model, setup.image)
    ref.add_box(box)
    answers = [ref.predict()]
    assert np.array_equal(w.labels_layer.data, answers[-1])
    assert w.status.text().startswith("encoded + decoded in ")

    centre = tuple(int(v) for v in np.argwhere(setup.labels == 1).mean(axis=0))
    clicks = [(centre, True), ((centre[0], box[1] + 1, box[2] + 1), False)]
    for point, positive in clicks:
        w.click(point, positive=positive)
        wait()
        ref.add_click(point, positive)
        answers.append(ref.predict())
        assert np.array_equal(w.labels_layer.data, answers[-1])
        assert w.status.text().startswith("decoded in ")
    assert not np.array_equal(answers[0], answers[1])
    assert len(w.points_layer.data) == 2
    assert [tuple(c) for c in w.points_layer.face_color[:, :3]] == [(0, 1, 0), (1, 0, 0)]

    w.undo_click()
    wait()
    assert np.array_equal(w.labels_layer.data, answers[1])
    assert len(w.points_layer.data) == 1
    assert w.status.text().startswith("updated in ")  # the earlier answer, no network run

    w.reset_object()
    wait()
    assert not w.labels_layer.data.any()
    assert len(w.points_layer.data) == 0 and len(w.shapes_layer.data) == 0
    assert not errors


def test_encoder_runs_once_and_the_model_runs_off_the_ui_thread(setup, monkeypatch):
    w, wait = setup.widget, setup.wait
    session = w.controller.session()
    calls = {"encode": 0, "threads": set()}
    original = session.model.encode

    def encode(*args, **kwargs):
        calls["encode"] += 1
        calls["threads"].add(threading.get_ident())
        return original(*args, **kwargs)

    monkeypatch.setattr(session.model, "encode", encode)
    box = mask_bbox(setup.labels == 1)
    z_mid = (box[0] + box[3]) // 2
    w.draw_box(_rectangle(box, z_mid))
    centre = tuple(int(v) for v in np.argwhere(setup.labels == 1).mean(axis=0))
    w.click(centre)  # arrives while the box runs: taken by the next run
    wait()
    for dy in (1, 2):
        w.click((centre[0], centre[1] + dy, centre[2]))
        wait()
    assert calls["encode"] == 1
    assert threading.get_ident() not in calls["threads"]
    assert len(w.controller.prompts().clicks) == 3


def test_negative_modifier_corners_box_and_second_object(setup):
    w, wait = setup.widget, setup.wait
    box = mask_bbox(setup.labels == 2)
    w.corners_check.setChecked(True)
    w.points_layer.add(np.array(box[:3], float))
    assert not w.busy  # one corner is not a box yet
    w.points_layer.add(np.array(box[3:], float))
    wait()
    assert tuple(w.controller.prompts().box.lo + w.controller.prompts().box.hi) == box
    assert not w.corners_check.isChecked()
    assert len(w.shapes_layer.data) == 1 and len(w.points_layer.data) == 0

    # Ctrl held at the press: the point becomes a negative click
    w._remember_modifiers(w.points_layer, SimpleNamespace(modifiers=("Control",)))
    w.points_layer.add(np.array(box[:3], float) + 1)
    wait()
    assert w.controller.prompts().clicks[-1][1] is False

    assert w.new_object() == 2
    other = mask_bbox(setup.labels == 1)
    w.z_lock.setChecked(True)
    w.z_from.setValue(other[0])
    w.z_to.setValue(other[3])
    w.draw_box(_rectangle(other, (other[0] + other[3]) // 2))
    wait()
    assert set(np.unique(w.labels_layer.data)) == {0, 1, 2}
    assert w.labels_layer.selected_label == 2
    assert len(w.shapes_layer.data) == 2


def test_bad_prompts_and_model_errors_are_notifications(setup, errors, monkeypatch):
    w, wait = setup.widget, setup.wait
    w.click((500, 5, 5))  # outside the image
    wait()
    assert errors and "click not used" in errors[-1]
    assert len(w.points_layer.data) == 0

    def broken():
        raise RuntimeError("out of memory")

    monkeypatch.setattr(w.controller.session(), "predict", broken)
    box = mask_bbox(setup.labels == 1)
    w.draw_box(_rectangle(box, (box[0] + box[3]) // 2))
    wait()
    assert "out of memory" in errors[-1] and w.status.text().startswith("error")
    monkeypatch.undo()
    monkeypatch.setattr(widget_module, "show_error", errors.append)
    w.click(tuple(int(v) for v in np.argwhere(setup.labels == 1).mean(axis=0)))
    wait()  # the next prompt works again
    assert w.labels_layer.data.any() and w.status.text().startswith("encoded + decoded")


def test_save_writes_the_labels_with_the_image_geometry(setup, qtbot, tmp_path):
    w, wait = setup.widget, setup.wait
    box = mask_bbox(setup.labels == 1)
    w.draw_box(_rectangle(box, (box[0] + box[3]) // 2))
    wait()
    out = tmp_path / "mask.nii.gz"
    w.save(out)
    qtbot.waitUntil(out.is_file, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: w.status.text().startswith("saved"), timeout=TIMEOUT_MS)
    back = sitk.ReadImage(str(out))
    assert back.GetSpacing() == pytest.approx((1.0, 1.0, 2.5))
    assert np.array_equal(sitk.GetArrayFromImage(back), w.labels_layer.data)


def test_reader_opens_nifti_with_its_spacing_and_the_manifest_is_valid(
    npe2pm, make_napari_viewer, tmp_path
):
    # npe2pm: napari's test plugin manager (no discovery), holding only this manifest
    manifest_path = Path(widget_module.__file__).with_name("napari.yaml")
    arr = np.zeros((6, 10, 12), np.int16)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.7, 0.8, 3.0))
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(img, str(path))
    viewer = make_napari_viewer()
    with npe2pm.tmp_plugin(manifest=str(manifest_path)) as plugin:
        commands = plugin.manifest.contributions.commands
        assert {c.id for c in commands} == {
            "ensam.get_reader",
            "ensam.widget",
            "ensam.sample_phantom",
        }
        for command in commands:
            assert callable(_resolve(command.python_name))
        (layer,) = viewer.open(str(path), plugin="ensam")
        assert layer.name == "ct" and layer.data.shape == (6, 10, 12)
        assert tuple(layer.scale) == pytest.approx((3.0, 0.8, 0.7))
        (sample,) = viewer.open_sample("ensam", "phantom")
        assert sample.data.shape == SAMPLES["Sample_phantom_organs"][0]
        _, widget = viewer.window.add_plugin_dock_widget("ensam", "ENSAM segmentation")
        assert isinstance(widget, EnsamWidget)


def _resolve(python_name):
    import importlib

    module, attr = python_name.split(":")
    return getattr(importlib.import_module(module), attr)


def test_closing_the_widget_leaves_a_working_viewer(setup, qtbot):
    viewer, w = setup.viewer, setup.widget
    viewer.window.remove_dock_widget(w)
    w.deleteLater()

    def ours():
        emitters = (viewer.dims.events.current_step, viewer.layers.events.inserted)
        refs = [cb[0]() for e in emitters for cb in e.callbacks if isinstance(cb, tuple)]
        return [r for r in refs if isinstance(r, EnsamWidget)]

    qtbot.waitUntil(lambda: not ours(), timeout=5000)  # disconnected when Qt deleted it
    viewer.dims.set_point(0, 10.0)
    viewer.add_image(np.zeros((4, 8, 8)), name="another")
    qtbot.wait(50)
