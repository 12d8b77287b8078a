"""What test-time mirrors cost in-process, on real cases: the box step (encoder and
decoder of every object) and a click step (decoder only, features kept), for 1, 2 and 4
mirrors, in one process, the variants interleaved so that machine noise falls on all alike.

    python -m benchmarks.mirrors [--cases CT_TS_example_ct_sm,...] [--repeats 5] [--threads 2]

Needs the shared real cases (ENSAM_DATA or ../shared/data). Prints the medians and the ratio
of each to no mirrors.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.common import REPO_ROOT, interleaved_runs, print_interleaved_report
from ensam_infer.challenge import read_case
from ensam_infer.session import EnsamSession

DEFAULT_CASES = ["MR_BraTS2015_brats_2013_pat0005_1_flair", "CT_TS_example_ct_sm"]


def one_pass(session: EnsamSession, case: object) -> tuple[float, float]:
    """(box step s, click step s): every object's box, then one positive click each at its
    box's centre."""
    session.set_image(case.image, case.spacing)
    for k, obj in enumerate(case.objects, start=1):
        if obj.box is not None:
            session.add_box(obj.box, k)
    t0 = time.perf_counter()
    session.predict()
    box_s = time.perf_counter() - t0
    for k, obj in enumerate(case.objects, start=1):
        if obj.box is not None:
            centre = tuple((a + b) // 2 for a, b in zip(obj.box.lo, obj.box.hi, strict=True))
            session.add_click(centre, True, k)
    t0 = time.perf_counter()
    session.predict()
    return box_s, time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES))
    parser.add_argument("--mirrors", default="1,2,4")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from ensam_train.splits import shared_data_root

    counts = [int(k) for k in args.mirrors.split(",")]
    weights = REPO_ROOT / "weights" / "ensam.pt"
    sessions = {k: EnsamSession(weights, device="cpu", tta=k) for k in counts}
    torch.set_num_threads(args.threads)  # the session sets every core; keep the asked count
    rows = []
    for name in args.cases.split(","):
        case = read_case(shared_data_root() / "real" / "imgs" / f"{name}.npz")
        runs = interleaved_runs(sessions, lambda s, c=case: one_pass(s, c), args.repeats)
        times = {k: ([b for b, _ in runs[k]], [c for _, c in runs[k]]) for k in counts}
        base = [statistics.median(t) for t in times[counts[0]]]
        for k in counts:
            box_s, click_s = (statistics.median(t) for t in times[k])
            rows.append([name, k, f"{box_s:.2f}", f"{box_s / base[0]:.2f}×"])
            rows[-1] += [f"{click_s:.2f}", f"{click_s / base[1]:.2f}×"]
        print(f"  [mirrors] {name} done", flush=True)
    headers = ["case", "mirrors", "box step s", "vs 1", "click step s", "vs 1"]
    print_interleaved_report(args.threads, args.repeats, headers, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
