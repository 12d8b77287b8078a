"""Peak memory of the container's code path on the largest realistic input: a
1000x512x512 CT-like volume with many boxes, box step then one click step, each in a fresh
process, against the organizers' 32 GB limit. Peak memory should not grow with the class
count (classes are decoded in chunks and merged one at a time)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, sys, time, resource
from pathlib import Path
import numpy as np
from ensam_infer.predict import predict_file
from ensam_infer.session import EnsamSession
from ensam_infer.evaluation.clicks import ClickRecorder, write_step_input

shape, classes, weights, work = json.loads(sys.argv[1])
rng = np.random.default_rng(0)
work = Path(work)
inp, out = work / "in", work / "out"
inp.mkdir(); out.mkdir()
img = rng.integers(0, 60, shape, dtype=np.uint8)
gts = np.zeros(shape, np.uint8)
boxes = []
for k in range(1, classes + 1):
    c = [int(rng.integers(s // 8, s - s // 8)) for s in shape]
    r = [max(2, s // 16) for s in shape]
    sl = tuple(slice(a - b, a + b) for a, b in zip(c, r))
    gts[sl] = k
    img[sl] = 100 + (k * 7) % 150
    boxes.append({"z_min": c[0] - r[0], "z_max": c[0] + r[0] - 1, "z_mid": c[0],
                  "z_mid_y_min": c[1] - r[1], "z_mid_x_min": c[2] - r[2],
                  "z_mid_y_max": c[1] + r[1] - 1, "z_mid_x_max": c[2] + r[2] - 1})
spacing = np.array([0.8, 0.8, 1.0])
np.savez_compressed(inp / "big.npz", imgs=img, spacing=spacing, boxes=np.array(boxes, dtype=object))
session = EnsamSession(weights, device="cpu")
times = []
def step():
    t = time.perf_counter()
    r = predict_file(inp / "big.npz", out, session)
    times.append(time.perf_counter() - t)
    assert r.ok, r.message
step()
pred = np.load(out / "big.npz")["segs"]
rec = ClickRecorder(classes); rec.update(pred, gts)
write_step_input(inp / "big.npz", img, spacing, np.array(boxes, dtype=object), rec, pred)
step()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
print(json.dumps({"box_s": times[0], "click_s": times[1], "peak_gb": peak}))
"""


def measure(shape: list[int], classes: int, weights: str) -> dict:
    with tempfile.TemporaryDirectory() as work:
        arg = json.dumps([shape, classes, weights, work])
        proc = subprocess.run([sys.executable, "-c", CHILD, arg], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-2000:])
        return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", type=int, nargs=3, default=[1000, 512, 512])
    parser.add_argument("--classes", type=int, nargs="+", default=[2, 10])
    parser.add_argument("--weights", default="weights/ensam.pt")
    args = parser.parse_args()
    print(f"volume {tuple(args.shape)}, CPU, weights {args.weights}")
    print("| classes | box step (s) | click step (s) | peak RSS (GB) | limit (GB) |")
    print("|---|---|---|---|---|")
    for n in args.classes:
        t0 = time.time()
        r = measure(args.shape, n, args.weights)
        print(
            f"| {n} | {r['box_s']:.1f} | {r['click_s']:.1f} | {r['peak_gb']:.2f} | 32 |", flush=True
        )
        _ = t0
    return 0


if __name__ == "__main__":
    sys.exit(main())
