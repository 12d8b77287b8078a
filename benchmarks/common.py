"""Shared benchmark plumbing: timing, per-configuration memory, child processes, tables and
the machine description.

Every measured configuration runs in a fresh child process (`python -m benchmarks.<script>
--child '<json spec>'`): its peak RSS then belongs to that configuration alone, and no
warm cache, allocator pool or thread pool leaks from one configuration into the next.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULT_MARKER = "@@BENCH-RESULT@@ "
DOCKER_START_S = 0.25  # container start, measured by hand (docs/challenge_protocol.md)
SECONDS_PER_CLASS = 90.0  # the organizers' limit, summed over the 6 runs of a case


# ----- timing ------------------------------------------------------------------------------
@dataclass
class Stats:
    """Timed runs of one quantity. `first` is the first call in the process (warm-up
    included): a container pays that cold cost on every step, medians do not show it."""

    runs: list[float]
    first: float
    warmup: int
    calls: int  # warm-up calls included

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def spread(self) -> float:
        """Half the min-max range relative to the median: a quick noise figure."""
        if len(self.runs) < 2 or self.median <= 0:
            return 0.0
        return (max(self.runs) - min(self.runs)) / 2 / self.median

    def to_dict(self) -> dict:
        return {**asdict(self), "median": self.median, "spread": self.spread}


def time_runs(
    fn: Callable[[], float | None],
    repeats: int,
    warmup: int = 1,
    budget_s: float | None = None,
) -> Stats:
    """Median of `repeats` timed calls after `warmup` untimed ones.

    `fn` may time itself (return seconds) when it has untimed preparation to do; otherwise
    its wall time is used. Timed calls stop early once they have used `budget_s` (at least
    one always runs) so that minute-long configurations do not take an hour; a warm-up that
    alone exceeds the budget counts as the single timed run's warm-up and no more."""

    def call() -> float:
        t0 = time.perf_counter()
        out = fn()
        return float(out) if out is not None else time.perf_counter() - t0

    first = None
    calls = 0
    for _ in range(warmup):
        t = call()
        calls += 1
        first = t if first is None else first
        if budget_s is not None and t > budget_s:
            break
    runs: list[float] = []
    spent = 0.0
    for _ in range(max(1, repeats)):
        t = call()
        calls += 1
        first = t if first is None else first
        runs.append(t)
        spent += t
        if budget_s is not None and spent >= budget_s:
            break
    return Stats(runs=runs, first=float(first), warmup=warmup, calls=calls)


# ----- memory ------------------------------------------------------------------------------
def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def current_rss_mb() -> float | None:
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else None


def peak_rss_mb() -> float:
    """This process's high-water RSS (VmHWM; ru_maxrss where /proc is missing)."""
    kb = _status_kb("VmHWM")
    if kb is None:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024


def reset_peak_rss() -> bool:
    """Restart VmHWM from the current RSS (Linux clear_refs), so the peak measures the steps
    and not the set-up; False where the kernel refuses (the peak then includes set-up)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def reset_cuda_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def cuda_peak_mb() -> float | None:
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


# ----- child processes ---------------------------------------------------------------------
def thread_env(threads: int) -> dict[str, str]:
    """The environment of a child limited to `threads` CPU threads (torch, OpenMP, MKL and
    ENSAM's own configure_threads all read one of these)."""
    env = dict(os.environ)
    for key in ("ENSAM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[key] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def run_child(module: str, spec: dict, threads: int, timeout_s: float) -> dict:
    """Run one configuration in a fresh interpreter; its result dict, or {"error": ...}."""
    cmd = [sys.executable, "-m", module, "--child", json.dumps(spec)]
    label = " ".join(f"{k}={v}" for k, v in spec.items() if k not in ("weights",))
    print(f"  [{module.rsplit('.', 1)[-1]}] {label} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd,
            cwd=REPO_ROOT,
            env=thread_env(threads),
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        print(f"    timed out after {timeout_s:.0f} s", file=sys.stderr)
        return {"error": f"timed out after {timeout_s:.0f} s"}
    print(f"    done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER) :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    message = " | ".join(tail) or f"exit status {proc.returncode}"
    print(f"    failed: {message}", file=sys.stderr)
    return {"error": message}


def child_main(worker: Callable[[dict], dict]) -> int:
    """Entry point of a child: run `worker(spec)` and print its result with the peak RSS."""
    spec = json.loads(sys.argv[2])
    warnings.filterwarnings("ignore", message=".*UNTRAINED.*")
    result = worker(spec)
    result.setdefault("peak_rss_mb", peak_rss_mb())
    print(RESULT_MARKER + json.dumps(result), flush=True)
    return 0


def is_child() -> bool:
    return len(sys.argv) > 2 and sys.argv[1] == "--child"


def timed_command(cmd: Sequence[str], env: dict[str, str], repeats: int) -> Stats:
    """Wall time of a whole process (interpreter start included), median of `repeats`."""

    def once() -> float:
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=REPO_ROOT, env=env, check=True, capture_output=True)
        return time.perf_counter() - t0

    # One untimed run first: the page cache then holds the libraries, as it does for the
    # 2nd..6th container run of a case (the 1st may be slower still).
    return time_runs(once, repeats, warmup=1)


# ----- weights -----------------------------------------------------------------------------
def resolve_weights(arg: str | None, preset: str, tmp_dir: Path) -> tuple[Path, str]:
    """The checkpoint to time and how to describe it. Speed does not depend on weight
    values, so an untrained checkpoint of the right architecture times the same network."""
    if arg:
        path = Path(arg).resolve()  # children run from the repository root
        if not path.is_file():
            raise SystemExit(f"error: no checkpoint at {path}")
        return path, f"`{path}` (given)"
    shipped = REPO_ROOT / "weights" / "ensam.pt"
    if shipped.is_file():
        return shipped, f"`{shipped.relative_to(REPO_ROOT)}` (shipped weights)"
    import torch

    from ensam_infer.model import build_model, save_checkpoint

    torch.manual_seed(0)
    path = tmp_dir / f"untrained_{preset}.pt"
    save_checkpoint(build_model(preset), path)
    return path, (
        f"UNTRAINED `{preset}` checkpoint (no weights/ensam.pt; speed does not depend on "
        "weight values, masks do)"
    )


# ----- arguments ---------------------------------------------------------------------------
def parse_shape(text: str) -> tuple[int, int, int]:
    """'128x256x256' or '64' (a cube) → (z, y, x)."""
    parts = [int(p) for p in text.lower().replace("×", "x").split("x")]
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"not a 3D shape: {text!r}")
    return tuple(parts)


def shape_text(shape: Sequence[int]) -> str:
    return "×".join(str(int(n)) for n in shape)


def default_devices() -> str:
    import torch

    return "cpu,cuda" if torch.cuda.is_available() else "cpu"


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 repeat (smoke)")
    parser.add_argument("--weights", default=None, help="checkpoint (default weights/ensam.pt)")
    parser.add_argument(
        "--preset",
        default="ensam_light",
        help="architecture of the untrained stand-in when there are no weights",
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument(
        "--devices", default=None, help="comma-separated: cpu,cuda (default: cuda if present)"
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per figure")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs first")
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds of timed runs per figure before stopping early (default 60)",
    )
    parser.add_argument("--child-timeout", type=float, default=3 * 3600)
    parser.add_argument("--json", default=None, help="also write the raw results here")


@dataclass
class Options:
    """The common options after --quick defaults are applied."""

    quick: bool
    weights: Path
    weights_note: str
    threads: int
    devices: list[str]
    repeats: int
    warmup: int
    budget: float
    child_timeout: float
    extra: dict = field(default_factory=dict)

    def spec(self, **kw: object) -> dict:
        """A child spec carrying the common settings."""
        return {
            "weights": str(self.weights),
            "repeats": self.repeats,
            "warmup": self.warmup,
            "budget": self.budget,
            **kw,
        }


def options_from(args: argparse.Namespace, tmp_dir: Path) -> Options:
    weights, note = resolve_weights(args.weights, args.preset, tmp_dir)
    devices = [d.strip() for d in (args.devices or default_devices()).split(",") if d.strip()]
    for d in devices:
        if d not in ("cpu", "cuda") and not d.startswith("cuda:"):
            raise SystemExit(f"error: unknown device {d!r}")
    return Options(
        quick=args.quick,
        weights=weights,
        weights_note=note,
        threads=args.threads,
        devices=devices,
        repeats=args.repeats if args.repeats is not None else (1 if args.quick else 5),
        warmup=args.warmup if args.warmup is not None else 1,
        budget=args.budget if args.budget is not None else (10.0 if args.quick else 60.0),
        child_timeout=args.child_timeout,
    )


def temp_dir(prefix: str) -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix=prefix)


# ----- output ------------------------------------------------------------------------------
def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 100:
        return f"{seconds:.2f} s"
    return f"{seconds:.0f} s"


def fmt_stats(stats: dict | None) -> str:
    """Median with its noise ('±' = half the min-max range) when there were several runs."""
    if not stats:
        return "—"
    text = fmt_s(stats["median"])
    if len(stats["runs"]) > 1:
        text += f" ±{stats['spread'] * 100:.0f}%"
    return text


def fmt_ratio(num: float | None, den: float | None) -> str:
    if num is None or den is None or den <= 0:
        return "—"
    return f"{num / den:.2f}×"


def fmt_mb(mb: float | None) -> str:
    if mb is None:
        return "—"
    return f"{mb / 1024:.2f} GiB" if mb >= 1024 else f"{mb:.0f} MiB"


def encoder_runs(stats: dict | None) -> str:
    """Encoder runs per call of a step: 1 for a box step, 0 for a cached click step."""
    if not stats or "encoder_runs_per_call" not in stats:
        return "—"
    return f"{stats['encoder_runs_per_call']:g}"


def median_of(result: dict, key: str) -> float | None:
    stats = result.get(key)
    return stats["median"] if stats else None


def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; numbers and text are right- and left-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [
        all(r[i][:1].isdigit() or r[i] in ("—", "") for r in cells) and bool(cells)
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "| " + " | ".join(parts) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if n else ("-" * (w + 2))
            for w, n in zip(widths, numeric, strict=True)
        )
        + "|"
    )
    return "\n".join([line(headers), rule, *(line(r) for r in cells)])


@dataclass
class Section:
    title: str
    table: str
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        notes = "\n".join(f"- {n}" for n in self.notes)
        return f"### {self.title}\n\n{self.table}\n" + (f"\n{notes}\n" if notes else "")


def render(sections: Sequence[Section]) -> str:
    return "\n".join(s.markdown() for s in sections)


# ----- machine -----------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _cgroup_cpus() -> str | None:
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        return None if quota == "max" else f"{int(quota) / int(period):g}"
    except (OSError, ValueError):
        return None


def machine_info(threads: int, devices: Sequence[str]) -> list[str]:
    """Markdown bullets: enough to tell whether two result files are comparable."""
    import numpy as np
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    lines = [
        f"CPU: {_cpu_model()}; {os.cpu_count()} logical CPUs, {usable} usable"
        + (f", cgroup quota {_cgroup_cpus()} CPUs" if _cgroup_cpus() else ""),
        f"CPU threads used per process: {threads} (ENSAM_THREADS / torch.set_num_threads)",
        f"RAM: {_mem_total_gib():.1f} GiB" if _mem_total_gib() else "RAM: ?",
        f"Load average when started (1, 5, 15 min): {load} — other jobs on the machine slow "
        "every figure",
        f"Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
        f"{platform.platform()}",
        f"Devices measured: {', '.join(devices)}",
    ]
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        lines.append(
            f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
        )
    else:
        lines.append("GPU: none visible to torch")
    return lines


def interleaved_runs(
    variants: dict[object, object], run: Callable[[object], object], repeats: int
) -> dict[object, list[object]]:
    """`run(variant)` once per variant to warm up, then `repeats` rounds of every variant in
    turn, so that machine noise falls on all alike: each variant's results, in order."""
    for v in variants.values():
        run(v)
    results: dict[object, list[object]] = {k: [] for k in variants}
    for _ in range(repeats):
        for k, v in variants.items():
            results[k].append(run(v))
    return results


def print_interleaved_report(
    threads: int, repeats: int, headers: Sequence[str], rows: Sequence[Sequence[object]]
) -> None:
    """The report of an in-process comparison whose variants ran interleaved: the machine,
    how the medians were taken, and the table."""
    print("\n".join(machine_info(threads, ["cpu"])))
    print(f"\nmedians of {repeats} in-process passes per row, variants interleaved\n")
    print(md_table(headers, rows))


def write_json(path: str | Path | None, data: object) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=1, default=str))
