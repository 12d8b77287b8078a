"""The napari dock widget: wires `EnsamController` to an image layer and three prompt layers.

For the chosen image layer the widget adds a Shapes layer (draw a rectangle: the current
object's box, over the slice range in the widget), a Points layer (a click: positive, or
negative with the toggle or Ctrl/Alt held) and a Labels layer (the answer, one label per
object). Each prompt starts the model on a napari thread_worker; prompts that arrive while it
runs are taken together by the next run. Errors become napari notifications.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels, Points, Shapes
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .controller import (
    GEOMETRY_KEY,
    EnsamController,
    Geometry,
    LayerTransform,
    Step,
    box_outline,
    corners_to_box,
    default_depth,
    rectangle_to_box,
    slice_index,
    to_voxels,
)

if TYPE_CHECKING:
    import napari

    from ensam_infer.session import EnsamSession

NEGATIVE_MODIFIERS = ("Control", "Alt", "Meta")
POSITIVE_COLOR = "lime"
NEGATIVE_COLOR = "red"


def _usable(layer: Any) -> bool:
    return isinstance(layer, Image) and layer.ndim == 3 and not layer.rgb


class EnsamWidget(QWidget):
    """ENSAM segmentation: choose an image, draw a box, click, save."""

    def __init__(
        self,
        napari_viewer: napari.viewer.Viewer,
        session: EnsamSession | Callable[[], EnsamSession] | None = None,
        depth_margin: int = 3,
    ) -> None:
        """session: an EnsamSession, a function making one, or None for the shipped weights
        (ENSAM_WEIGHTS overrides them), loaded at the first prompt off the UI thread."""
        super().__init__()
        self.viewer = napari_viewer
        self.controller = EnsamController(session)
        self.depth_margin = int(depth_margin)
        self.image_layer: Image | None = None
        self.labels_layer: Labels | None = None
        self.points_layer: Points | None = None
        self.shapes_layer: Shapes | None = None
        self.steps: list[Step] = []  # every answer, for the status line and measurements
        self._worker: Any = None
        self._started_version = -1
        self._quiet_depth = 0
        self._negative_held = False
        self._corners: list[np.ndarray] = []
        self._shown_points: list = []  # what the prompt layers show (see _sync_prompt_layers)
        self._shown_boxes: list = []
        self._build_ui()
        connections = [
            (self.viewer.layers.events.inserted, self._refresh_images),
            (self.viewer.layers.events.removed, self._on_layer_removed),
            (self.viewer.dims.events.current_step, self._follow_slice),
        ]
        for emitter, callback in connections:
            emitter.connect(callback)

        def disconnect(*_: Any) -> None:  # the widget was closed: the viewer lives on
            for emitter, callback in connections:
                emitter.disconnect(callback)

        self.destroyed.connect(disconnect)
        self._refresh_images()

    # ----- UI -----------------------------------------------------------------------------
    def _build_ui(self) -> None:
        self.image_combo = QComboBox()
        self.image_combo.currentIndexChanged.connect(self._on_image_chosen)
        self.object_spin = QSpinBox()
        self.object_spin.setRange(1, 255)
        self.object_spin.valueChanged.connect(self._on_object_chosen)
        self.new_button = QPushButton("New object")
        self.new_button.clicked.connect(self.new_object)
        self.negative_check = QCheckBox("Negative clicks (or hold Ctrl/Alt)")
        self.corners_check = QCheckBox("Next 2 points: 3D box corners")
        self.corners_check.toggled.connect(lambda _on: self._corners.clear())
        self.z_from = QSpinBox()
        self.z_to = QSpinBox()
        self.z_lock = QCheckBox("keep")
        self.z_lock.setToolTip("keep this range when the slice changes")
        self.z_apply = QPushButton("Apply to box")
        self.z_apply.clicked.connect(self.apply_depth)
        self.box_button = QPushButton("Draw box")
        self.box_button.clicked.connect(lambda: self._activate(self.shapes_layer, "add_rectangle"))
        self.click_button = QPushButton("Click")
        self.click_button.clicked.connect(lambda: self._activate(self.points_layer, "add"))
        self.undo_button = QPushButton("Undo click")
        self.undo_button.clicked.connect(self.undo_click)
        self.reset_button = QPushButton("Reset object")
        self.reset_button.clicked.connect(self.reset_object)
        self.save_button = QPushButton("Save labels...")
        self.save_button.clicked.connect(self._ask_save)
        self.busy_bar = QProgressBar()
        self.busy_bar.setRange(0, 0)  # indeterminate: the model is running
        self.busy_bar.setMaximumHeight(8)
        self.busy_bar.setTextVisible(False)
        self.busy_bar.setVisible(False)
        self.status = QLabel("choose an image layer")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        obj_row = QHBoxLayout()
        obj_row.addWidget(self.object_spin)
        obj_row.addWidget(self.new_button)
        form.addRow("Object", obj_row)
        z_row = QHBoxLayout()
        for w in (self.z_from, QLabel("to"), self.z_to, self.z_lock, self.z_apply):
            z_row.addWidget(w)
        form.addRow("Box slices", z_row)
        buttons = QGridLayout()
        for k, b in enumerate(
            (self.box_button, self.click_button, self.undo_button, self.reset_button)
        ):
            buttons.addWidget(b, k // 2, k % 2)
        buttons.addWidget(self.save_button, 2, 0, 1, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.negative_check)
        layout.addWidget(self.corners_check)
        layout.addLayout(buttons)
        layout.addWidget(self.busy_bar)
        layout.addWidget(self.status)
        layout.addStretch(1)

    def _refresh_images(self, event: Any = None) -> None:
        current = self.image_layer
        images = [layer for layer in self.viewer.layers if _usable(layer)]
        with self._blocked(self.image_combo):
            self.image_combo.clear()
            for layer in images:
                self.image_combo.addItem(layer.name, layer)
            if current in images:
                self.image_combo.setCurrentIndex(images.index(current))
        if current not in images and images:
            # not inside the layer list's own event: the new layers would nest in it
            choice = images[-1] if current is None else images[0]
            QTimer.singleShot(0, lambda: self._adopt(choice))

    def _adopt(self, layer: Image) -> None:
        if self.image_layer is None and layer in self.viewer.layers:
            self.set_image_layer(layer)

    def _on_layer_removed(self, event: Any) -> None:
        removed = event.value
        if removed is self.image_layer:
            self.image_layer = None
        for name in ("labels_layer", "points_layer", "shapes_layer"):
            if getattr(self, name) is removed:
                setattr(self, name, None)
        self._refresh_images()

    @contextmanager
    def _blocked(self, widget: QWidget) -> Any:
        old = widget.blockSignals(True)
        try:
            yield
        finally:
            widget.blockSignals(old)

    @contextmanager
    def _quiet(self) -> Any:
        """Layer changes made by the widget itself are not prompts."""
        self._quiet_depth += 1
        try:
            yield
        finally:
            self._quiet_depth -= 1

    def _activate(self, layer: Any, mode: str) -> None:
        if layer is None:
            show_error("ENSAM: choose an image layer first")
            return
        self.viewer.layers.selection.active = layer
        layer.mode = mode

    # ----- image --------------------------------------------------------------------------
    def _on_image_chosen(self, index: int) -> None:
        layer = self.image_combo.itemData(index)
        if layer is not None and layer is not self.image_layer:
            self.set_image_layer(layer)

    def set_image_layer(self, layer: Image) -> None:
        """Segment this image layer: new prompt and Labels layers, prompts cleared."""
        try:
            transform = LayerTransform.of(layer)
            meta = layer.metadata.get(GEOMETRY_KEY) if layer.metadata else None
            geometry = Geometry.from_dict(meta) if meta else Geometry.of_transform(transform)
            spacing = tuple(abs(s) for s in transform.scale)
            self.controller.set_image(layer.data, spacing=spacing, geometry=geometry)
        except Exception as exc:  # any failure is the user's to see, never a crash
            show_error(f"ENSAM: cannot use {layer.name!r}: {exc}")
            return
        self.image_layer = layer
        with self._blocked(self.image_combo):
            index = self.image_combo.findData(layer)
            if index >= 0:
                self.image_combo.setCurrentIndex(index)
        self._make_layers(layer)
        shape = self.controller.shape
        for spin in (self.z_from, self.z_to):
            spin.setRange(0, shape[0] - 1)
        with self._blocked(self.object_spin):
            self.object_spin.setValue(self.controller.current)
        self.z_lock.setChecked(False)
        self._follow_slice()
        self.status.setText(f"{layer.name}: {shape[0]}x{shape[1]}x{shape[2]}; draw a box or click")

    def _make_layers(self, image: Image) -> None:
        for name in ("points_layer", "shapes_layer"):
            old = getattr(self, name)
            if old is not None and old in self.viewer.layers:
                with self._quiet():
                    self.viewer.layers.remove(old)
            setattr(self, name, None)
        self._shown_points, self._shown_boxes = [], []
        kw = {"scale": image.scale, "translate": image.translate}
        shape = self.controller.shape
        with self._quiet():
            self.labels_layer = self.viewer.add_labels(
                np.zeros(shape, np.uint8), name=f"ENSAM labels ({image.name})", opacity=0.5, **kw
            )
            self.shapes_layer = self.viewer.add_shapes(
                ndim=3,
                name="ENSAM box",
                edge_width=max(0.5, min(shape[1:]) / 150),
                edge_color="yellow",
                face_color="transparent",
                **kw,
            )
            self.points_layer = self.viewer.add_points(
                ndim=3,
                name="ENSAM clicks",
                size=max(3.0, min(shape[1:]) / 25),
                face_color=POSITIVE_COLOR,
                **kw,
            )
        self.labels_layer.selected_label = self.controller.current
        self.shapes_layer.events.data.connect(self._on_shapes_data)
        self.points_layer.events.data.connect(self._on_points_data)
        self.points_layer.mouse_drag_callbacks.insert(0, self._remember_modifiers)
        self._activate(self.shapes_layer, "add_rectangle")

    # ----- geometry helpers ---------------------------------------------------------------
    def _slice_axis(self) -> int:
        """The image axis the 2-D view slices through (0, z, unless the dims were rolled)."""
        n = self.viewer.dims.ndim
        hidden = [a - (n - 3) for a in self.viewer.dims.not_displayed if a >= n - 3]
        return hidden[-1] if len(hidden) >= 1 and self.viewer.dims.ndisplay == 2 else 0

    def current_slice(self) -> int:
        """The image slice shown now (along the sliced axis)."""
        if self.image_layer is None:
            return 0
        axis = self._slice_axis()
        index = slice_index(self.viewer.dims.point, LayerTransform.of(self.image_layer), axis)
        return min(max(index, 0), self.controller.shape[axis] - 1)

    def _follow_slice(self, event: Any = None) -> None:
        if self.image_layer is None or self.z_lock.isChecked():
            return
        if self.image_layer not in self.viewer.layers or self.viewer.dims.ndim < 3:
            return  # the viewer is closing or the image was removed
        axis = self._slice_axis()
        size = self.controller.shape[axis]
        for spin in (self.z_from, self.z_to):
            spin.setRange(0, size - 1)
        a, b = default_depth(self.current_slice(), size, self.depth_margin)
        self.z_from.setValue(a)
        self.z_to.setValue(b)

    def depth(self) -> tuple[int, int]:
        """The slice range new boxes get (the spin boxes)."""
        a, b = self.z_from.value(), self.z_to.value()
        return (a, b) if a <= b else (b, a)

    # ----- prompts from the layers ----------------------------------------------------------
    def _remember_modifiers(self, layer: Any, event: Any) -> None:
        mods = [str(getattr(m, "name", m)) for m in getattr(event, "modifiers", ())]
        self._negative_held = any(m in NEGATIVE_MODIFIERS for m in mods)

    def _on_shapes_data(self, event: Any) -> None:
        if self._quiet_depth or str(getattr(event, "action", "")) != "added":
            return
        layer = self.shapes_layer
        try:
            vertices = np.asarray(layer.data[-1])
            axis = self._slice_axis()
            box = rectangle_to_box(
                vertices,
                self.controller.shape,
                LayerTransform.of(layer),
                LayerTransform.of(self.image_layer),
                depth=self.depth(),
                axis=axis,
            )
            drawn_on = int(np.floor(np.mean(vertices[:, -3 + axis]) + 0.5))
            self.controller.set_box(box, drawn_on=drawn_on)
        except Exception as exc:
            show_error(f"ENSAM: box not used: {exc}")
        self._prompts_changed()

    def _on_points_data(self, event: Any) -> None:
        if self._quiet_depth:
            return
        action = str(getattr(event, "action", ""))
        if action == "removed":
            show_info("ENSAM: use 'Undo click' or 'Reset object' to take clicks back")
            self._prompts_changed(run=False)
            return
        if action != "added":
            return
        n = len(event.data_indices) if getattr(event, "data_indices", None) else 1
        new = np.asarray(self.points_layer.data)[-n:]
        negative = self.negative_check.isChecked() or self._negative_held
        self._negative_held = False
        try:
            source = LayerTransform.of(self.points_layer)
            image = LayerTransform.of(self.image_layer)
            for point in new:
                if self.corners_check.isChecked():
                    self._corners.append(point)
                    if len(self._corners) == 2:
                        box = corners_to_box(*self._corners, self.controller.shape, source, image)
                        self._corners.clear()
                        self.corners_check.setChecked(False)
                        self.controller.set_box(box)
                    continue
                (voxel,) = to_voxels(point, source, image)
                self.controller.add_click(tuple(voxel.tolist()), positive=not negative)
        except Exception as exc:
            show_error(f"ENSAM: click not used: {exc}")
        self._prompts_changed(run=not self._corners)

    # ----- programmatic API (what the buttons and layers do) --------------------------------
    def draw_box(self, vertices: np.ndarray | Sequence) -> None:
        """Add a rectangle (4 vertices, Shapes layer data coordinates) as a user would."""
        self.shapes_layer.add_rectangles(np.asarray(vertices, float))

    def click(self, point: Sequence[float], positive: bool = True) -> None:
        """Add a click (Points layer data coordinates) as a user would."""
        old = self.negative_check.isChecked()
        self.negative_check.setChecked(not positive)
        try:
            self.points_layer.add(np.asarray(point, float))
        finally:
            self.negative_check.setChecked(old)

    def new_object(self) -> int:
        oid = self.controller.new_object()
        with self._blocked(self.object_spin):
            self.object_spin.setValue(oid)
        self._on_object_chosen(oid)
        return oid

    def _on_object_chosen(self, value: int) -> None:
        self.controller.select(value)
        if self.labels_layer is not None:
            self.labels_layer.selected_label = value
        self._corners.clear()

    def apply_depth(self) -> None:
        """Give the current object's box the slice range of the spin boxes (clicks kept)."""
        box = self.controller.prompts().box
        if box is None:
            show_error("ENSAM: the current object has no box yet")
            return
        a, b = self.depth()
        lo, hi = list(box.lo), list(box.hi)
        axis = self._slice_axis()
        lo[axis], hi[axis] = a, b
        try:
            self.controller.set_box((*lo, *hi), keep_clicks=True)
        except Exception as exc:
            show_error(f"ENSAM: {exc}")
        self._prompts_changed()

    def undo_click(self) -> None:
        if not self.controller.undo_click():
            show_info("ENSAM: the current object has no click to undo")
            return
        self._prompts_changed()

    def reset_object(self) -> None:
        self.controller.reset_object()
        self._prompts_changed()

    def save(self, path: str | Path) -> None:
        """Write the label map with the image's geometry, off the UI thread."""

        def done(saved: Path) -> None:
            show_info(f"ENSAM: saved {saved}")
            self.status.setText(f"saved {Path(saved).name}")

        worker = thread_worker(self.controller.save, ignore_errors=True)(path)
        worker.returned.connect(done)
        worker.errored.connect(lambda exc: show_error(f"ENSAM: not saved: {exc}"))
        worker.start()
        self._save_worker = worker

    def _ask_save(self) -> None:
        if self.image_layer is None:
            show_error("ENSAM: choose an image layer first")
            return
        default = str(Path.cwd() / f"{self.image_layer.name}_labels.nii.gz")
        path, _ = QFileDialog.getSaveFileName(
            self, "Save label map", default, "Images (*.nii.gz *.nii *.nrrd *.mha)"
        )
        if path:
            self.save(path)

    # ----- running the model ----------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """Whether the model is running (a run for newer prompts follows on its own)."""
        return self._worker is not None

    def _prompts_changed(self, run: bool = True) -> None:
        # Redraw the prompt layers from the controller after the current layer event is done
        # (changing a layer's data inside its own data event confuses napari).
        QTimer.singleShot(0, self._sync_prompt_layers)
        if run:
            self._schedule()

    def _sync_prompt_layers(self) -> None:
        """Show the controller's prompts: every object's clicks (green positive, red negative,
        rimmed in the object's colour) and its box on the slice it was drawn on. A layer is
        redrawn only when its prompts changed or it holds something else (a rejected click)."""
        if self.points_layer is None or self.shapes_layer is None:
            return
        points, faces, borders, outlines, edges = [], [], [], [], []
        point_sig, box_sig = [], []
        axis = self._slice_axis()
        for oid in self.controller.object_ids():
            prompts = self.controller.prompts(oid)
            color = self.labels_layer.get_color(oid) if self.labels_layer is not None else None
            color = "white" if color is None else color
            for point, positive in prompts.clicks:
                points.append(point)
                faces.append(POSITIVE_COLOR if positive else NEGATIVE_COLOR)
                borders.append(color)
                point_sig.append((oid, point, positive))
            if prompts.box is not None:
                drawn_on = self.controller.box_slice(oid)
                outlines.append(box_outline(prompts.box, drawn_on, axis))
                edges.append(color)
                box_sig.append((oid, prompts.box, drawn_on, axis))
        negative = self.negative_check.isChecked()
        with self._quiet():
            layer = self.points_layer
            if point_sig != self._shown_points or len(layer.data) != len(points):
                layer.data = np.asarray(points, float).reshape(-1, 3)
                if points:
                    layer.face_color = faces
                    layer.border_color = borders
                layer.selected_data = set()
                self._shown_points = point_sig
            layer.current_face_color = NEGATIVE_COLOR if negative else POSITIVE_COLOR
            layer = self.shapes_layer
            if box_sig != self._shown_boxes or len(layer.data) != len(outlines):
                layer.selected_data = set(range(len(layer.data)))
                layer.remove_selected()
                if outlines:
                    layer.add_rectangles(outlines, edge_color=edges)
                layer.selected_data = set()
                self._shown_boxes = box_sig

    def _schedule(self) -> None:
        if self._worker is not None or not self.controller.pending:
            return  # a run is going; _on_finished starts the next if the prompts changed
        self._started_version = self.controller.version
        self._started_image = self.image_layer
        worker = thread_worker(self.controller.run, ignore_errors=True)()
        worker.returned.connect(self._on_step)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.busy_bar.setVisible(True)
        self.status.setText("running...")
        worker.start()

    def _on_step(self, step: Step) -> None:
        self.steps.append(step)
        if (
            self.labels_layer is not None
            and self._started_image is self.image_layer
            and step.labels.shape == self.labels_layer.data.shape
        ):
            self.labels_layer.data = step.labels
            self.labels_layer.selected_label = self.controller.current
        self.status.setText(step.message)

    def _on_error(self, exc: Exception) -> None:
        self.status.setText(f"error: {exc}")
        show_error(f"ENSAM: {type(exc).__name__}: {exc}")

    def _on_finished(self) -> None:
        self._worker = None
        self.busy_bar.setVisible(False)
        if self.controller.version != self._started_version:
            self._schedule()
