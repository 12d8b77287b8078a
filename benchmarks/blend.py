"""What the ``blend`` rule costs in-process, on real cases given by clicks alone: the second
click step of every object (the first that answers it in its click crop, and with
``blend`` in the whole volume too), with and without the rule, in one process, the
variants interleaved so that machine noise falls on both alike.

    python -m benchmarks.blend [--cases MR_BraTS2015_brats_2013_pat0005_1_flair,...]
                               [--repeats 5] [--threads 2]

Each pass: every object gets one positive click at its box's centre (its box is not given),
a predict, a second click one voxel off, and the timed predict. Needs the shared real cases
(ENSAM_DATA or ../shared/data). Prints the medians and the ratio with the rule to without.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from benchmarks.common import REPO_ROOT, interleaved_runs, print_interleaved_report
from ensam_infer.challenge import read_case
from ensam_infer.rules import PromptRules
from ensam_infer.session import EnsamSession

DEFAULT_CASES = ["MR_BraTS2015_brats_2013_pat0005_1_flair", "CT_TS_example_ct_sm"]


def second_click_seconds(session: EnsamSession, case: object) -> tuple[float, int]:
    """(seconds of the second click step, objects then in a click crop)."""
    session.set_image(case.image, case.spacing)
    centres = {}
    for k, obj in enumerate(case.objects, start=1):
        if obj.box is not None:
            centres[k] = tuple((a + b) // 2 for a, b in zip(obj.box.lo, obj.box.hi, strict=True))
            session.add_click(centres[k], True, k)
    session.predict()
    for k, (z, y, x) in centres.items():
        session.add_click((z, y, min(x + 1, case.image.shape[2] - 1)), True, k)
    t0 = time.perf_counter()
    session.predict()
    seconds = time.perf_counter() - t0
    cropped = sum(roi != session.whole_roi() for roi in session.state.rois.values())
    return seconds, cropped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    from ensam_train.splits import shared_data_root

    weights = REPO_ROOT / "weights" / "ensam.pt"
    base = PromptRules(blend=False)
    sessions = {
        on: EnsamSession(weights, device="cpu", rules=dataclasses.replace(base, blend=on))
        for on in (False, True)
    }
    torch.set_num_threads(args.threads)  # the session sets every core; keep the asked count
    rows = []
    for name in args.cases.split(","):
        case = read_case(shared_data_root() / "real" / "imgs" / f"{name}.npz")
        runs = interleaved_runs(
            sessions, lambda s, c=case: second_click_seconds(s, c), args.repeats
        )
        off, on = (statistics.median(t for t, _ in runs[k]) for k in (False, True))
        cropped = runs[True][-1][1]
        rows.append(
            [name, len(case.objects), cropped, f"{off:.2f}", f"{on:.2f}", f"{on / off:.2f}×"]
        )
        print(f"  [blend] {name} done", flush=True)
    headers = ["case", "objects", "in a click crop", "without blend s", "with blend s", "ratio"]
    print_interleaved_report(args.threads, args.repeats, headers, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
