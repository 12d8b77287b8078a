"""Run the challenge's interactive protocol locally and score it as the organizers do.

This replays ``CVPR25_iter_eval.py`` (JunMa11/CVPR-MedSegFMCompetition) step by step, so a
local number means what a leaderboard number means:

* For each case the original input npz is copied into an inputs folder that holds only
  that case; the ground truth comes from ``labels_dir/<case>.npz`` (key ``gts``).
* Step 1 is the box step: the method sees the original file. A case whose input has no
  ``boxes`` skips it: the organizers record 0 for its time, DSC and NSD, and the first
  click is then computed on an all-zero prediction (no output exists yet).
* Each click step reads the previous output (a missing ``<case>.npz`` counts as all
  zeros), adds one simulated click per class (``ClickRecorder``) and rewrites the input
  npz as the organizers do (``write_step_input``).
* The outputs folder persists over all steps and cases of a run (one per method and run),
  so the container's on-disk cache is exercised exactly as in the challenge, including a
  stale output being scored again when a step writes nothing.
* Every step is scored with ``multiclass_scores`` (DSC, NSD at 2 mm with the npz spacing,
  NSD = 0 when DSC <= 0.2); the AUCs are the trapezoid over the click steps.

ENSAM runs in-process (one session, ``predict_file``: the container's code path and
cache), as a fresh ``python -m ensam_infer predict`` process per step (``script``: the
start-up cost of a container without docker), or through the organizers' docker command.
The baselines always run in-process (they are not what is being timed).

Outputs in ``out_dir``: ``<method>_per_case.csv`` (the organizers' columns and order, then
``method``, ``box_step``, ``error``), ``summary.csv`` / ``summary.md`` (means per method,
overall and per modality) and ``curves.png`` (mean DSC / NSD per step).
"""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from ..challenge import read_case, write_segs
from .clicks import ClickRecorder, write_step_input
from .metrics import N_CLICK_STEPS, auc, multiclass_scores

METHODS = ("ensam", "boxfill", "otsu")
MODES = ("inprocess", "script", "docker")
SECONDS_PER_CLASS = 90  # the organizers' runtime_upperbound per class
DEFAULT_DOCKER_IMAGE = "ensam:latest"

StepHook = Callable[[str, str, int, Path, Path], None]


# ----- the methods ------------------------------------------------------------------------
class _Method:
    """One step of one method: read inputs/<case>.npz, write outputs/<case>.npz.

    ``run`` returns the step's wall time and an error message ('' when it went well). The
    time is what the organizers would time: for a subprocess the whole process, for an
    in-process method reading, predicting and writing.
    """

    name = ""

    def run(self, input_dir: Path, output_dir: Path, case: str) -> tuple[float, str]:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the method holds (processes, models)."""


class _BaselineMethod(_Method):
    def __init__(self, name: str) -> None:
        from .baselines import get_baseline

        self.name = name
        self.baseline = get_baseline(name)

    def run(self, input_dir: Path, output_dir: Path, case: str) -> tuple[float, str]:
        t0 = time.perf_counter()
        try:
            c = read_case(input_dir / f"{case}.npz")
            labels = self.baseline.predict(c)
            write_segs(output_dir / f"{case}.npz", labels.reshape(c.original_shape))
            error = ""
        except Exception as exc:  # a failing step is scored, not fatal
            error = one_line(exc)
        return time.perf_counter() - t0, error


class _EnsamInProcess(_Method):
    name = "ensam"

    def __init__(self, weights: str | Path | None, device: str) -> None:
        from ..session import EnsamSession

        self.session = EnsamSession(weights, device=device)

    def run(self, input_dir: Path, output_dir: Path, case: str) -> tuple[float, str]:
        from ..predict import predict_file

        log = io.StringIO()
        t0 = time.perf_counter()
        try:
            result = predict_file(input_dir / f"{case}.npz", output_dir, self.session, True, log)
            error = "" if result.ok else result.message
        except Exception as exc:
            error = one_line(exc)
        return time.perf_counter() - t0, error


def _subprocess_error(proc: subprocess.CompletedProcess) -> str:
    if proc.returncode == 0:
        return ""
    tail = [line for line in (proc.stderr or "").splitlines() if line.strip()][-3:]
    return f"exit code {proc.returncode}: " + " | ".join(tail)


class _EnsamScript(_Method):
    """A fresh interpreter per step, as a container start without docker."""

    name = "ensam"

    def __init__(self, weights: str | Path | None, device: str, timeout: float | None) -> None:
        self.cmd = [sys.executable, "-m", "ensam_infer", "predict", "--device", device]
        if weights is not None:
            self.cmd += ["--weights", str(Path(weights).resolve())]
        root = str(Path(__file__).resolve().parents[2])
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH", "")) if p
        )
        self.timeout = timeout

    def run(self, input_dir: Path, output_dir: Path, case: str) -> tuple[float, str]:
        cmd = self.cmd + ["--input", str(input_dir), "--output", str(output_dir)]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, env=self.env, capture_output=True, text=True, timeout=self.timeout
            )
            error = _subprocess_error(proc)
        except subprocess.TimeoutExpired:
            error = f"timed out after {self.timeout} s"
        return time.perf_counter() - t0, error


def _gpu_available() -> bool:
    """As the organizers decide whether to pass --gpus: does the host have a working GPU?"""
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        return subprocess.run(["nvidia-smi"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def docker_command(
    image: str, name: str, input_dir: Path, output_dir: Path, gpu: bool
) -> list[str]:
    """The organizers' command, plus ``--network none`` (the test machines are offline)."""
    cmd = ["docker", "container", "run"]
    if gpu:
        cmd += ["--gpus", "device=0"]
    cmd += ["-m", "32G", "--name", name, "--rm", "--network", "none"]
    cmd += ["-v", f"{input_dir.resolve()}/:/workspace/inputs/"]
    cmd += ["-v", f"{output_dir.resolve()}/:/workspace/outputs/"]
    cmd += [image, "/bin/bash", "-c", "sh predict.sh"]
    return cmd


class _EnsamDocker(_Method):
    name = "ensam"

    def __init__(self, image: str, timeout: float | None) -> None:
        self.image = image
        team = image.rsplit("/", 1)[-1].split(":")[0].split("_")[0].lower() or "ensam"
        # The organizers name the container after the team; a pid suffix keeps two local
        # runs from colliding on the name.
        self.container = f"{team}_eval{os.getpid()}"
        self.gpu = _gpu_available()
        self.timeout = timeout

    def run(self, input_dir: Path, output_dir: Path, case: str) -> tuple[float, str]:
        cmd = docker_command(self.image, self.container, input_dir, output_dir, self.gpu)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout)
            error = _subprocess_error(proc)
        except subprocess.TimeoutExpired:
            subprocess.run(["docker", "kill", self.container], capture_output=True, check=False)
            error = f"timed out after {self.timeout} s"
        except OSError as exc:
            error = one_line(exc)
        return time.perf_counter() - t0, error


def make_method(
    method: str,
    mode: str = "inprocess",
    weights: str | Path | None = None,
    device: str = "auto",
    docker_image: str = DEFAULT_DOCKER_IMAGE,
    step_timeout: float | None = None,
) -> _Method:
    """The runner of one method; baselines ignore `mode` (they always run in-process)."""
    if method in ("boxfill", "otsu"):
        return _BaselineMethod(method)
    if method != "ensam":
        raise ValueError(f"unknown method {method!r} (known: {', '.join(METHODS)})")
    if mode == "inprocess":
        return _EnsamInProcess(weights, device)
    if mode == "script":
        return _EnsamScript(weights, device, step_timeout)
    if mode == "docker":
        return _EnsamDocker(docker_image, step_timeout)
    raise ValueError(f"unknown mode {mode!r} (known: {', '.join(MODES)})")


# ----- the protocol -----------------------------------------------------------------------
def one_line(exc: BaseException) -> str:
    """An exception as one line of a report: its type, then the first line of its text."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def columns(clicks: int = N_CLICK_STEPS) -> list[str]:
    """The organizers' CSV columns, in their order, for 1 + `clicks` steps."""
    steps = range(1, clicks + 2)
    return (
        ["CaseName", "TotalRunningTime"]
        + [f"RunningTime_{i}" for i in steps]
        + ["DSC_AUC", "NSD_AUC", "DSC_Final", "NSD_Final"]
        + [f"DSC_{i}" for i in steps]
        + [f"NSD_{i}" for i in steps]
        + ["num_class", "runtime_upperbound"]
    )


EXTRA_COLUMNS = ["method", "box_step", "error"]


def click_auc(values: Sequence[float], clicks: int = N_CLICK_STEPS) -> float:
    """The organizers' AUC: trapezoid over the last `clicks` steps with x = 0, 1, ...

    With the official 5 clicks this is ``metrics.auc``; other counts (quick local runs) use
    the same rule over their own click steps, and fewer than 2 click steps give NaN.
    """
    if clicks == N_CLICK_STEPS:
        return auc(values)
    y = np.asarray(values[-clicks:] if clicks > 0 else [], dtype=np.float64)
    if y.size < 2:
        return float("nan")
    return float(np.sum((y[1:] + y[:-1]) / 2.0))


def empty_row(case_file: str, method: str, clicks: int) -> dict:
    """A per-case row with no scores (NaN), for a case that could not be run."""
    row: dict = dict.fromkeys(columns(clicks), float("nan"))
    row.update(CaseName=case_file, num_class=0, runtime_upperbound=0)
    row.update(method=method, box_step=0, error="")
    return row


def _load_segs(path: Path, shape: tuple[int, ...]) -> tuple[np.ndarray, str]:
    """The organizers' read of an output: ``segs`` as uint8, all zeros when missing."""
    if not path.is_file():
        return np.zeros(shape, np.uint8), "no output"
    try:
        with np.load(path, allow_pickle=True) as data:
            segs = np.asarray(data["segs"])
    except Exception as exc:  # the organizers' script would crash here
        return np.zeros(shape, np.uint8), f"unreadable output ({one_line(exc)})"
    if segs.shape != shape:
        # Their scoring would fail on the shape mismatch; we score zeros and say so.
        return np.zeros(shape, np.uint8), f"output shape {segs.shape} != {shape}"
    if segs.dtype != np.uint8:
        # They cast and score it; the contract asks for uint8, so it is reported.
        return segs.astype(np.uint8), f"segs dtype {segs.dtype}, not uint8"
    return segs, ""


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is rewritten (atomically or in place); None when absent."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def run_case(
    runner: _Method,
    image_path: Path,
    gts_path: Path,
    work: Path,
    clicks: int = N_CLICK_STEPS,
    log: Callable[[str], None] = print,
    on_step: StepHook | None = None,
    predictions_dir: Path | None = None,
    click_only: bool = False,
) -> dict:
    """All steps of one case for one method; returns the per-case CSV row.

    `click_only`: the input is given without its ``boxes`` (as the challenge gives most MR
    cases), so the box step is skipped and the five clicks are all the method gets.

    `work` holds ``inputs/`` (emptied first: it holds only this case) and ``outputs/``
    (kept: the cache and any stale output live there, as in the challenge).
    """
    case_file = image_path.name
    case = case_file[: -len(".npz")]
    row = empty_row(case_file, runner.name, clicks)
    inputs, outputs = work / "inputs", work / "outputs"
    for p in inputs.iterdir():
        if p.is_file() or p.is_symlink():
            p.unlink()
        else:
            shutil.rmtree(p, ignore_errors=True)
    with np.load(gts_path, allow_pickle=True) as g:
        gts = np.asarray(g["gts"])
    labels = [int(v) for v in np.unique(gts)[1:]]
    row["num_class"] = len(labels)
    row["runtime_upperbound"] = len(labels) * SECONDS_PER_CLASS
    step_input = inputs / case_file
    if not click_only:
        # Without boxes there is no box step: the first input the method sees is the click
        # step's, which write_step_input writes from scratch.
        shutil.copy(image_path, step_input)
    with np.load(image_path, allow_pickle=True) as data:
        has_boxes = "boxes" in data.files and not click_only
        boxes = data["boxes"] if has_boxes else None
        imgs, spacing = data["imgs"], data["spacing"]
    row["box_step"] = int(has_boxes)
    recorder = ClickRecorder(len(labels), labels=labels)
    dscs: list[float] = []
    nsds: list[float] = []
    all_segs: list[np.ndarray] = []  # the scored mask of each step that ran
    errors: list[str] = []
    total = 0.0
    out_path = outputs / case_file
    for it in range(clicks + 1):
        step = it + 1
        if it == 0 and not has_boxes:
            row["RunningTime_1"] = row["DSC_1"] = row["NSD_1"] = 0
            dscs.append(0.0)
            nsds.append(0.0)
            log(f"{runner.name} {case} step 1/{clicks + 1}: no boxes, box step skipped")
            continue
        if it > 0:
            prev, _ = _load_segs(out_path, gts.shape)
            recorder.update(prev, gts)
            write_step_input(step_input, imgs, spacing, boxes, recorder, prev)
        before = _file_stamp(out_path)
        seconds, error = runner.run(inputs, outputs, case)
        total += seconds
        segs, read_error = _load_segs(out_path, gts.shape)
        if not (error or read_error) and before is not None and _file_stamp(out_path) == before:
            # The organizers score the stale file again; a run should know it happened.
            read_error = "output not rewritten (the previous step's output is scored)"
        if error or read_error:
            errors.append(f"step {step}: {error or read_error}")
        all_segs.append(segs)
        scores = multiclass_scores(segs, gts, spacing)
        dscs.append(scores["dsc"])
        nsds.append(scores["nsd"])
        row[f"RunningTime_{step}"] = seconds
        row[f"DSC_{step}"] = scores["dsc"]
        row[f"NSD_{step}"] = scores["nsd"]
        note = f" [{error or read_error}]" if error or read_error else ""
        log(
            f"{runner.name} {case} step {step}/{clicks + 1}: DSC {scores['dsc']:.4f} "
            f"NSD {scores['nsd']:.4f} {seconds:.2f} s{note}"
        )
        if on_step is not None:
            on_step(runner.name, case, step, step_input, out_path)
    row["TotalRunningTime"] = total
    row["DSC_AUC"] = click_auc(dscs, clicks)
    row["NSD_AUC"] = click_auc(nsds, clicks)
    row["DSC_Final"], row["NSD_Final"] = dscs[-1], nsds[-1]
    row["error"] = "; ".join(errors)
    if predictions_dir is not None and all_segs:
        predictions_dir.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            predictions_dir / case_file, segs=all_segs[-1], all_segs=np.stack(all_segs)
        )
    step_input.unlink(missing_ok=True)
    return row


def list_cases(images_dir: Path, cases: Iterable[str] | str | None = None) -> list[Path]:
    """The input files to run, sorted by name; `cases` (names, with or without .npz, or a
    comma-separated string) filters them. Unknown names are reported, not fatal."""
    files = sorted(p for p in images_dir.glob("*.npz") if p.is_file())
    if cases is None:
        return files
    if isinstance(cases, str):
        cases = cases.split(",")
    wanted = {c.strip().removesuffix(".npz") for c in cases if c.strip()}
    found = [p for p in files if p.name[: -len(".npz")] in wanted]
    missing = wanted - {p.name[: -len(".npz")] for p in found}
    if missing:
        print(f"warning: no input for cases {sorted(missing)} in {images_dir}", file=sys.stderr)
    return found


def evaluate(
    images_dir: str | Path,
    labels_dir: str | Path,
    out_dir: str | Path,
    method: str | Sequence[str],
    mode: str = "inprocess",
    weights: str | Path | None = None,
    device: str = "auto",
    cases: Iterable[str] | str | None = None,
    clicks: int = N_CLICK_STEPS,
    docker_image: str = DEFAULT_DOCKER_IMAGE,
    *,
    step_timeout: float | None = None,
    save_predictions: bool = True,
    keep_work: bool = False,
    on_step: StepHook | None = None,
    log: Callable[[str], None] | None = None,
    click_only: bool = False,
) -> list[dict]:
    """Run the challenge protocol for one or more methods and write the reports.

    `method`: a name, a comma-separated string or a list (ensam, boxfill, otsu). Returns
    one row per method and case: the per-case CSV columns (NaN scores and a message in
    ``error`` for a case that could not be run). `on_step(method, case, step, input_path,
    output_path)` is called after every step that ran (for tests and inspection: the input
    file is rewritten at the next step). `save_predictions` keeps each case's final and
    per-step masks in ``out_dir/predictions/<method>/`` as the organizers do; the per-run
    inputs/outputs folders under ``out_dir/work`` are removed unless `keep_work`.
    `click_only` removes every case's ``boxes`` (see `run_case`).
    """
    log = log or (lambda msg: print(msg, flush=True))
    images_dir, labels_dir, out_dir = Path(images_dir), Path(labels_dir), Path(out_dir)
    methods = [m.strip() for m in method.split(",")] if isinstance(method, str) else list(method)
    methods = [m for m in methods if m]
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r} (known: {', '.join(METHODS)})")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} (known: {', '.join(MODES)})")
    if clicks < 0:
        raise ValueError(f"clicks must be >= 0, got {clicks}")
    files = list_cases(images_dir, cases)
    if mode == "docker" and "ensam" in methods and (weights is not None or device != "auto"):
        log("note: --weights and --device are ignored in docker mode (the image decides)")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "work").mkdir(exist_ok=True)
    all_rows: list[dict] = []
    for m in methods:
        rows: list[dict] = []
        label = m if m != "ensam" else f"ensam ({mode})"
        log(f"== {label}: {len(files)} cases, {clicks + 1} steps each")
        work = Path(
            tempfile.mkdtemp(
                prefix=f"{m}_{mode if m == 'ensam' else 'inprocess'}_", dir=out_dir / "work"
            )
        )
        (work / "inputs").mkdir()
        (work / "outputs").mkdir()
        try:
            runner = make_method(m, mode, weights, device, docker_image, step_timeout)
            setup_error = ""
        except Exception as exc:  # reported on every case of this method
            runner, setup_error = None, one_line(exc)
            log(f"{m}: cannot start: {setup_error}")
        for path in files:
            case_file = path.name
            if runner is None:
                row = empty_row(case_file, m, clicks)
                row["error"] = f"setup: {setup_error}"
            else:
                try:
                    row = run_case(
                        runner,
                        path,
                        labels_dir / case_file,
                        work,
                        clicks,
                        log,
                        on_step,
                        out_dir / "predictions" / m if save_predictions else None,
                        click_only,
                    )
                except Exception as exc:  # one bad case never stops the run
                    row = empty_row(case_file, m, clicks)
                    row["error"] = f"case failed: {one_line(exc)}"
                    log(f"{m} {case_file[:-4]}: ERROR {row['error']}")
            log(
                f"{m} {case_file[:-4]}: DSC_AUC {_fmt(row['DSC_AUC'])} NSD_AUC "
                f"{_fmt(row['NSD_AUC'])} DSC_Final {_fmt(row['DSC_Final'])} NSD_Final "
                f"{_fmt(row['NSD_Final'])} {_fmt(row['TotalRunningTime'], 2)} s"
            )
            rows.append(row)
        if runner is not None:
            runner.close()
        if not keep_work:
            shutil.rmtree(work, ignore_errors=True)
        write_per_case_csv(out_dir / f"{m}_per_case.csv", rows, clicks)
        all_rows.extend(rows)
    summary = summarize(all_rows, clicks)
    write_summary(out_dir, summary, clicks)
    plot_curves(out_dir / "curves.png", summary, clicks, log)
    return all_rows


def _fmt(value: float, digits: int = 4) -> str:
    return "nan" if value is None or _isnan(value) else f"{value:.{digits}f}"


def _isnan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


# ----- reports ----------------------------------------------------------------------------
def write_per_case_csv(path: Path, rows: list[dict], clicks: int = N_CLICK_STEPS) -> None:
    """The organizers' per-case columns in their order, then ours (method, box_step, error)."""
    fields = columns(clicks) + EXTRA_COLUMNS
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if _isnan(row.get(k)) else row.get(k)) for k in fields})


def modality(case_file: str) -> str:
    """The modality of a case: its name up to the first '_' (CT, MR, Microscopy ...)."""
    return case_file.split("_", 1)[0]


SUMMARY_METRICS = ["DSC_AUC", "NSD_AUC", "DSC_Final", "NSD_Final", "TotalRunningTime"]


def _mean(values: Iterable[float]) -> float:
    vals = [float(v) for v in values if v is not None and not _isnan(float(v))]
    return float(np.mean(vals)) if vals else float("nan")


def summarize(rows: list[dict], clicks: int = N_CLICK_STEPS) -> list[dict]:
    """Mean scores per method, over all cases and per modality.

    Cases that failed as a whole (no scores) are counted in ``n_failed`` and left out of
    the means. The step-1 means (``DSC_1``, ``NSD_1``) are over the cases that have a box
    step only: the organizers' 0 placeholder of a click-only case is not a score.
    """
    out = []
    methods = list(dict.fromkeys(r["method"] for r in rows))
    steps = range(1, clicks + 2)
    for m in methods:
        mrows = [r for r in rows if r["method"] == m]
        groups = {"all": mrows}
        for mod in sorted({modality(r["CaseName"]) for r in mrows}):
            groups[mod] = [r for r in mrows if modality(r["CaseName"]) == mod]
        for group, grows in groups.items():
            ok = [r for r in grows if not _isnan(r["DSC_Final"])]
            entry: dict = {
                "method": m,
                "group": group,
                "n_cases": len(ok),
                "n_failed": len(grows) - len(ok),
                "n_with_errors": sum(1 for r in grows if r.get("error")),
            }
            for key in SUMMARY_METRICS:
                entry[key] = _mean(r[key] for r in ok)
            for i in steps:
                srows = [r for r in ok if i > 1 or r.get("box_step")]
                entry[f"DSC_{i}"] = _mean(r[f"DSC_{i}"] for r in srows)
                entry[f"NSD_{i}"] = _mean(r[f"NSD_{i}"] for r in srows)
            out.append(entry)
    return out


def write_summary(out_dir: Path, summary: list[dict], clicks: int = N_CLICK_STEPS) -> None:
    """summary.csv (every mean) and summary.md (the headline table)."""
    steps = range(1, clicks + 2)
    fields = ["method", "group", "n_cases", "n_failed", "n_with_errors"] + SUMMARY_METRICS
    fields += [f"DSC_{i}" for i in steps] + [f"NSD_{i}" for i in steps]
    with open(out_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for entry in summary:
            writer.writerow({k: ("" if _isnan(entry[k]) else entry[k]) for k in fields})
    lines = [
        "# Interactive segmentation: local evaluation",
        "",
        f"{clicks + 1} steps per case (box step + {clicks} clicks), scored as "
        "CVPR25_iter_eval.py; AUC over the click steps "
        f"(maximum {max(clicks - 1, 0)}). Means over the cases that ran.",
        "",
        "| method | group | cases | failed | DSC AUC | NSD AUC | DSC final | NSD final "
        "| time / case (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in summary:
        lines.append(
            f"| {e['method']} | {e['group']} | {e['n_cases']} | {e['n_failed']} "
            f"| {_fmt(e['DSC_AUC'], 3)} | {_fmt(e['NSD_AUC'], 3)} | {_fmt(e['DSC_Final'], 3)} "
            f"| {_fmt(e['NSD_Final'], 3)} | {_fmt(e['TotalRunningTime'], 2)} |"
        )
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")


def plot_curves(
    path: Path,
    summary: list[dict],
    clicks: int = N_CLICK_STEPS,
    log: Callable[[str], None] = print,
) -> bool:
    """Mean DSC and NSD per step, one line per method (overall means). Returns False and
    says so when matplotlib is not installed (it is not a runtime dependency)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log(f"matplotlib is not installed: {path.name} not written")
        return False
    steps = list(range(1, clicks + 2))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for entry in (e for e in summary if e["group"] == "all"):
        for ax, metric in zip(axes, ("DSC", "NSD"), strict=True):
            ax.plot(
                steps, [entry[f"{metric}_{i}"] for i in steps], marker="o", label=entry["method"]
            )
    for ax, metric in zip(axes, ("DSC", "NSD"), strict=True):
        ax.set_xlabel("interaction step (1 = box)")
        ax.set_ylabel(f"mean {metric}")
        ax.set_xticks(steps)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main_evaluate(args: object) -> int:
    """The ``evaluate`` command: 0 when every case ran, 1 when some failed (with `strict`:
    when any step reported an error), 2 on bad input."""
    images, labels = Path(args.images), Path(args.labels)
    for p in (images, labels):
        if not p.is_dir():
            print(f"error: {p} is not a folder", file=sys.stderr)
            return 2
    try:
        rows = evaluate(
            images,
            labels,
            args.out,
            args.methods,
            mode=args.mode,
            weights=args.weights,
            device=args.device,
            cases=args.cases,
            clicks=args.clicks,
            docker_image=args.image,
            click_only=args.click_only,
            keep_work=args.keep_work,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((Path(args.out) / "summary.md").read_text())
    if not rows:
        print("warning: no cases were evaluated", file=sys.stderr)
        return 1
    if args.strict:
        for r in rows:
            if r["error"]:
                print(f"error: {r['method']} {r['CaseName']}: {r['error']}", file=sys.stderr)
        if any(r["error"] for r in rows):
            return 1
    return 1 if any(_isnan(r["DSC_Final"]) for r in rows) else 0
