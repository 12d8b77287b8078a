"""Run the latency and scaling benchmarks and write benchmarks/RESULTS.md (tables, machine,
date, command) plus the raw figures as RESULTS.json beside it.

    python -m benchmarks.run_all            # full run (long: see benchmarks/README.md)
    python -m benchmarks.run_all --quick    # tiny sizes, 1 repeat; writes RESULTS_quick.md
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import latency, scaling
from benchmarks.common import (
    REPO_ROOT,
    SECONDS_PER_CLASS,
    Options,
    Section,
    add_common_arguments,
    machine_info,
    median_of,
    options_from,
    render,
    shape_text,
    write_json,
)

HERE = Path(__file__).resolve().parent


def git_revision() -> str:
    """The commit measured (read-only git), marked dirty when the tree has local changes."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return rev + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def headline(lat: dict, sca: dict) -> list[str]:
    """The few figures a reader wants first, each pointing at its table."""
    lines = []
    for r in lat.get("runs", []):
        if "error" in r:
            continue
        box, click = median_of(r, "box"), median_of(r, "click")
        cache = median_of(r, "container_click_cache")
        plain = median_of(r, "container_click_nocache")
        if not (box and click and cache and plain):
            continue
        lines.append(
            f"{r['device']}: box step {box:.2f} s vs click step {click:.2f} s in-process "
            f"({box / click:.2f}×); container click step {cache:.2f} s with the cache vs "
            f"{plain:.2f} s without ({plain / cache:.2f}×)."
        )
    worst = None
    configs = [
        (
            device,
            r,
            r.get("classes", 1),
            f"{r['classes']} class(es)"
            if "classes" in r
            else f"1 box over {shape_text(r['shape'])}",
        )
        for group in ("classes", "sizes")
        for device, results in sca.get(group, {}).items()
        for r in results
        if "error" not in r
    ]
    for device, r, classes, label in configs:
        over = scaling.overhead_per_run(sca, device)
        box, click = median_of(r, "container_box"), median_of(r, "container_click")
        if over is None or box is None or click is None:
            continue
        per_class = (6 * over + box + scaling.CLICK_STEPS * click) / classes
        if worst is None or per_class > worst[0]:
            worst = (per_class, device, label)
    if worst:
        lines.append(
            f"Largest estimated time per class: {worst[0]:.1f} s "
            f"({worst[0] / SECONDS_PER_CLASS:.0%} of the 90 s limit): {worst[2]} on {worst[1]}."
        )
    for device, r in sca.get("real", {}).items():
        if "error" not in r:
            total = r["total"] + 6 * scaling.DOCKER_START_S
            lines.append(
                f"Real 6-process run, 1 class, {device}: {total:.1f} s "
                f"({total / SECONDS_PER_CLASS:.0%} of the limit)."
            )
    return lines


def document(
    opts: Options,
    machine_lines: list[str],
    command: str,
    started: datetime.datetime,
    seconds: float,
    sections: list[Section],
    lines: list[str],
) -> str:
    title = "ENSAM inference benchmarks" + (" (QUICK: tiny sizes, not representative)" * opts.quick)
    machine = "\n".join(f"- {m}" for m in machine_lines)
    head = "\n".join(f"- {h}" for h in lines) or "- (no figures: every configuration failed)"
    return (
        f"# {title}\n\n"
        f"- Date: {started.isoformat(timespec='seconds')} (took {seconds / 60:.1f} min)\n"
        f"- Command: `{command}`\n"
        f"- Code: {git_revision()}\n"
        f"- Weights: {opts.weights_note}\n\n"
        f"## Machine\n\n{machine}\n\n"
        f"## Headline\n\n{head}\n\n"
        f"## Tables\n\n{render(sections)}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_common_arguments(parser)
    latency.add_arguments(parser)
    scaling.add_arguments(parser)
    parser.add_argument("--out", default=None, help="markdown file (default benchmarks/RESULTS.md)")
    args = parser.parse_args()
    out = Path(args.out or HERE / ("RESULTS_quick.md" if args.quick else "RESULTS.md"))
    command = shlex.join(["python", "-m", "benchmarks.run_all", *sys.argv[1:]])
    started = datetime.datetime.now().astimezone()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ensam_bench_") as tmp:
        opts = options_from(args, Path(tmp))
        machine_lines = machine_info(opts.threads, opts.devices)  # load average now, not later
        print(f"weights: {opts.weights_note}", file=sys.stderr)
        print("latency:", file=sys.stderr)
        lat_sections, lat_raw = latency.run(opts, args)
        print("scaling:", file=sys.stderr)
        sca_sections, sca_raw = scaling.run(opts, args)
    text = document(
        opts,
        machine_lines,
        command,
        started,
        time.perf_counter() - t0,
        lat_sections + sca_sections,
        headline(lat_raw, sca_raw),
    )
    out.write_text(text)
    write_json(args.json or out.with_suffix(".json"), {"latency": lat_raw, "scaling": sca_raw})
    print(text)
    print(f"written: {out} and {Path(args.json or out.with_suffix('.json'))}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
