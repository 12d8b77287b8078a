"""Box step against click step at process level, on real cases, as the organizers run them.

Each repeat runs the project's evaluator in script mode (`python -m ensam_infer evaluate
--mode script`: a fresh interpreter per step, the on-disk cache between steps, exactly the
container's work minus docker) on one real case and reads the step times it records
(`RunningTime_1` is the box step, `RunningTime_2..6` the click steps). Beside them, the floor
every step pays before any model work: a bare interpreter, the imports of the predict path,
and those imports plus the weights load.

    python -m benchmarks.process_steps [--cases MR_BraTS2015_brats_2013_pat0005_1_flair,...]
        [--repeats 3] [--threads 2] [--variants fp32,bf16,fp32-tta4]
        [--weights weights/ensam.pt]

Variants: `fp32` (float32 arithmetic) and `bf16` (ENSAM_CPU_BF16=1; skipped where the
CPU has no AVX512-BF16/AMX), each with one network input per region; `fp32-tta2`,
`fp32-tta4` and `bf16-tta4` with 2 or 4 test-time mirrors (ENSAM_TTA). Needs the shared
real cases (ENSAM_DATA or ../shared/data).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import REPO_ROOT, machine_info, md_table, thread_env, timed_command

DEFAULT_CASES = ["MR_BraTS2015_brats_2013_pat0005_1_flair", "CT_TS_example_ct_sm"]
VARIANTS = {
    "fp32": {"ENSAM_CPU_BF16": "0", "ENSAM_TTA": "1"},
    "bf16": {"ENSAM_CPU_BF16": "1", "ENSAM_TTA": "1"},
    # test-time mirrors (ensam_infer.tta): k mirrored copies of every network input
    "fp32-tta2": {"ENSAM_CPU_BF16": "0", "ENSAM_TTA": "2"},
    "fp32-tta4": {"ENSAM_CPU_BF16": "0", "ENSAM_TTA": "4"},
    "bf16-tta4": {"ENSAM_CPU_BF16": "1", "ENSAM_TTA": "4"},
}
LOAD_WEIGHTS = (
    "import sys; from ensam_infer.model import load_checkpoint; load_checkpoint(sys.argv[1])"
)


def real_data_root() -> Path:
    from ensam_train.splits import shared_data_root

    return shared_data_root() / "real"


def one_sequence(case: str, weights: Path, env: dict[str, str], out: Path) -> list[float]:
    """The 6 step times of one evaluator run of `case` (box step first)."""
    root = real_data_root()
    cmd = [sys.executable, "-m", "ensam_infer", "evaluate", "--mode", "script"]
    cmd += ["--methods", "ensam", "--cases", case, "--weights", str(weights)]
    cmd += ["--images", str(root / "imgs"), "--labels", str(root / "gts"), "--out", str(out)]
    subprocess.run(cmd, cwd=REPO_ROOT, env=env, check=True, capture_output=True)
    with open(out / "ensam_per_case.csv") as f:
        row = next(csv.DictReader(f))
    if row.get("error"):
        raise RuntimeError(f"{case}: {row['error']}")
    return [float(row[f"RunningTime_{i}"]) for i in range(1, 7)]


def measure_case(case: str, weights: Path, env: dict[str, str], repeats: int) -> dict:
    boxes, clicks = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="ensam_bench_steps_") as tmp:
            steps = one_sequence(case, weights, env, Path(tmp))
        boxes.append(steps[0])
        clicks.append(statistics.median(steps[1:]))
    box, click = statistics.median(boxes), statistics.median(clicks)
    return {"box_s": box, "click_s": click, "ratio": box / click, "boxes": boxes, "clicks": clicks}


def measure_floor(weights: Path, env: dict[str, str], repeats: int) -> dict[str, float]:
    py = sys.executable
    commands = {
        "python start": [py, "-c", "pass"],
        "imports (predict path)": [py, "-c", "import ensam_infer.predict"],
        "imports + weights load": [py, "-c", LOAD_WEIGHTS, str(weights)],
    }
    return {name: timed_command(cmd, env, repeats).median for name, cmd in commands.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", default="fp32,bf16")
    parser.add_argument("--weights", type=Path, default=REPO_ROOT / "weights" / "ensam.pt")
    args = parser.parse_args()
    from ensam_infer.device import cpu_has_fast_bf16

    variants = [
        v for v in args.variants.split(",") if not v.startswith("bf16") or cpu_has_fast_bf16()
    ]
    base_env = thread_env(args.threads)
    floor = measure_floor(args.weights, base_env, max(3, args.repeats))
    rows = []
    for case in args.cases.split(","):
        for variant in variants:
            env = {**base_env, **VARIANTS[variant]}
            print(f"  [process_steps] {case} {variant} ...", file=sys.stderr, flush=True)
            r = measure_case(case, args.weights, env, args.repeats)
            rows.append([case, variant, f"{r['box_s']:.2f}", f"{r['click_s']:.2f}"])
            rows[-1].append(f"{r['ratio']:.2f}×")
            # each row as it comes: a long run cut short still leaves its figures
            print(f"  [process_steps] {' | '.join(rows[-1])}", file=sys.stderr, flush=True)
    print("\n".join(machine_info(args.threads, ["cpu"])))
    print(f"\nrepeats: {args.repeats} evaluator runs per row (medians; click = median of 5)\n")
    print(md_table(["case", "variant", "box step s", "click step s", "box / click"], rows))
    print()
    print(md_table(["floor per process", "s"], [[k, f"{v:.2f}"] for k, v in floor.items()]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
