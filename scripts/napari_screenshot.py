"""Open the ENSAM widget on a sample phantom, draw a box and click as a user would, save a
screenshot of the whole window (docs/napari_widget.png) and print what each step took.

    .venv/bin/python scripts/napari_screenshot.py [--clicks 4] [--out docs/napari_widget.png]

Without a display it starts its own Xvfb (PyVirtualDisplay, which pytest-xvfb brings; the
system needs `xvfb`, see scripts/test.sh). Clicks are placed by the challenge's click
simulator (largest error, deepest voxel) on the widget's current answer, on the slice in
view. The model runs on ENSAM_THREADS CPU threads (default: every core) with the shipped
weights unless --weights.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
STALLS: list[float] = []  # how long each round of the UI thread's event loop took


def _wait(widget: object, app: object, t0: float | None = None, timeout: float = 300) -> float:
    """Let Qt run until the widget's worker is done (and its redraw of the prompt layers);
    the seconds from t0 (the prompt) until the Labels layer had the answer."""
    t0 = time.perf_counter() if t0 is None else t0
    while widget.busy:
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("the model did not answer in time")
        tick = time.perf_counter()
        app.processEvents()  # what the UI thread has to do meanwhile: it must stay short
        STALLS.append(time.perf_counter() - tick)
        time.sleep(0.005)
    seconds = time.perf_counter() - t0
    for _ in range(20):
        app.processEvents()
        time.sleep(0.01)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "napari_widget.png")
    parser.add_argument("--clicks", type=int, default=1, help="simulated clicks after the box")
    parser.add_argument("--weights", default=None, help="checkpoint (default: shipped weights)")
    parser.add_argument("--size", type=int, nargs=2, default=(1400, 860), metavar=("W", "H"))
    args = parser.parse_args(argv)

    display = None
    if not os.environ.get("DISPLAY"):
        from pyvirtualdisplay import Display

        display = Display(visible=False, size=(args.size[0] + 100, args.size[1] + 100))
        display.start()
    try:
        return _run(args)
    finally:
        if display is not None:
            display.stop()


def _run(args: argparse.Namespace) -> int:
    import napari
    import numpy as np
    import torch
    from qtpy.QtWidgets import QApplication

    from ensam_infer.evaluation.clicks import simulate_click
    from ensam_infer.prompts import Box
    from ensam_infer.samples import SAMPLES, make_phantom
    from ensam_infer.session import EnsamSession
    from ensam_napari.controller import box_outline
    from ensam_napari.widget import EnsamWidget

    shape, kinds, _ = SAMPLES["Sample_phantom_organs"]
    image, truth = make_phantom(shape, np.random.default_rng(0), kinds)
    viewer = napari.Viewer(show=True, title="ENSAM in napari")
    viewer.window.resize(*args.size)
    app = QApplication.instance()
    layer = viewer.add_image(image, name="phantom", scale=(2.5, 1.0, 1.0))
    t0 = time.perf_counter()
    session = EnsamSession(args.weights, device="cpu")
    load = time.perf_counter() - t0
    widget = EnsamWidget(viewer, session=session)
    viewer.window.add_dock_widget(widget, name="ENSAM segmentation", area="right")
    widget.set_image_layer(layer)

    target = truth == 1
    idx = np.nonzero(target)
    lo = [int(v.min()) for v in idx]
    hi = [int(v.max()) for v in idx]
    z_mid = (lo[0] + hi[0]) // 2
    viewer.dims.set_point(0, z_mid * 2.5)
    widget.z_lock.setChecked(True)
    widget.z_from.setValue(lo[0])
    widget.z_to.setValue(hi[0])
    _wait(widget, app)  # the window's first paint, before anything is timed
    STALLS.clear()
    t0 = time.perf_counter()
    widget.draw_box(box_outline(Box(*lo, *hi), z_mid))
    shown = _wait(widget, app, t0)
    print(f"threads: {torch.get_num_threads()}; model loaded in {load:.2f} s")
    print(f"box step: {widget.status.text()}; labels shown after {shown:.2f} s")
    for k in range(args.clicks):
        # the simulator's click, on the slice in view (where a user corrects)
        view = slice(z_mid, z_mid + 1)
        click = simulate_click(widget.labels_layer.data[view] == 1, target[view])
        if click is None:
            break
        point, positive = (z_mid, *click[0][1:]), click[1]
        t0 = time.perf_counter()
        widget.click(point, positive=positive)
        shown = _wait(widget, app, t0)
        sign = "+" if positive else "-"
        dice = (
            2
            * np.sum((widget.labels_layer.data == 1) & target)
            / (np.sum(widget.labels_layer.data == 1) + target.sum())
        )
        print(
            f"click {k + 1} ({sign}{point}): {widget.status.text()}; labels shown after "
            f"{shown:.2f} s (DSC {dice:.3f})"
        )
    if STALLS:
        print(f"UI event loop while the model ran: longest round {max(STALLS) * 1000:.0f} ms")
    viewer.dims.set_point(0, z_mid * 2.5)
    viewer.layers.selection.active = widget.points_layer
    viewer.reset_view()
    _wait(widget, app)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.out), canvas_only=False)
    print(f"screenshot: {args.out}")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
