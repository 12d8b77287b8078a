"""The local replay of the organizers' protocol (CVPR25_iter_eval.py): real npz files in,
the step inputs it writes, the outputs it reads, the CSV it produces."""

import csv
import os
import stat
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ensam_infer.__main__ import main as cli_main
from ensam_infer.challenge import write_segs
from ensam_infer.evaluation import runner as runner_mod
from ensam_infer.evaluation.clicks import simulate_click
from ensam_infer.evaluation.runner import (
    docker_command,
    evaluate,
    plot_curves,
    run_case,
    summarize,
)
from ensam_infer.samples import _ellipsoid, challenge_box, write_samples

# The organizers' metric columns, in the order of their OrderedDict.
OFFICIAL = (
    ["CaseName", "TotalRunningTime"]
    + [f"RunningTime_{i}" for i in range(1, 7)]
    + ["DSC_AUC", "NSD_AUC", "DSC_Final", "NSD_Final"]
    + [f"DSC_{i}" for i in range(1, 7)]
    + [f"NSD_{i}" for i in range(1, 7)]
    + ["num_class", "runtime_upperbound"]
)
CLICK_ONLY = "Sample_phantom_clicks_only"
ORGANS = "Sample_phantom_organs"
QUIET = {"log": lambda msg: None}


def trapezoid(values):
    return sum((a + b) / 2 for a, b in zip(values[:-1], values[1:], strict=True))


class Recorder:
    """on_step hook keeping a copy of every step input and output."""

    def __init__(self):
        self.steps = []

    def __call__(self, method, case, step, input_path, output_path):
        with np.load(input_path, allow_pickle=True) as d:
            inp = {k: d[k] for k in d.files}
        segs = np.load(output_path)["segs"] if output_path.is_file() else None
        self.steps.append((method, case, step, inp, segs))

    def of(self, method, case):
        return [(s, i, o) for m, c, s, i, o in self.steps if m == method and c == case]


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    root = tmp_path_factory.mktemp("samples")
    write_samples(root)
    return root


@pytest.fixture(scope="module")
def boxfill_run(samples, tmp_path_factory):
    out = tmp_path_factory.mktemp("boxfill_out")
    rec = Recorder()
    rows = evaluate(samples / "imgs", samples / "gts", out, "boxfill", on_step=rec, **QUIET)
    return out, rows, rec


def small_case(folder: Path, name: str = "CT_small", boxes: bool = True) -> Path:
    """A 12 x 24 x 24 case with one ellipsoid (the model's cost barely depends on it)."""
    shape = (12, 24, 24)
    lab = _ellipsoid(shape, (6, 12, 12), (4, 7, 6)).astype(np.uint8)
    img = (lab * 150 + 40).astype(np.uint8)
    (folder / "imgs").mkdir(parents=True, exist_ok=True)
    (folder / "gts").mkdir(parents=True, exist_ok=True)
    fields = {"imgs": img, "spacing": np.array([1.0, 1.0, 2.0])}
    if boxes:
        fields["boxes"] = np.array([challenge_box(lab == 1)], dtype=object)
    np.savez_compressed(folder / "imgs" / f"{name}.npz", **fields)
    np.savez_compressed(folder / "gts" / f"{name}.npz", gts=lab)
    return folder / "imgs" / f"{name}.npz"


# ----- files and CSV ------------------------------------------------------------------------
def test_reports_are_written(boxfill_run):
    out, rows, _ = boxfill_run
    for name in ("boxfill_per_case.csv", "summary.csv", "summary.md", "curves.png"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "predictions" / "boxfill").iterdir()) == sorted(
        r["CaseName"] for r in rows
    )
    with np.load(out / "predictions" / "boxfill" / f"{ORGANS}.npz") as d:
        assert d["all_segs"].shape[0] == 6 and (d["segs"] == d["all_segs"][-1]).all()
    assert list((out / "work").iterdir()) == []  # per-run folders are removed
    md = (out / "summary.md").read_text()
    assert "| boxfill | all | 3 | 0 |" in md and "| boxfill | Sample | 3 |" in md


def test_csv_has_the_official_columns_in_order(boxfill_run):
    out, rows, _ = boxfill_run
    with open(out / "boxfill_per_case.csv") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == OFFICIAL + ["method", "box_step", "error"]
        csv_rows = list(reader)
    assert [r["CaseName"] for r in csv_rows] == [
        f"{c}.npz" for c in sorted([CLICK_ONLY, ORGANS, "Sample_phantom_vessel"])
    ]
    for r, row in zip(csv_rows, rows, strict=True):
        assert float(r["DSC_AUC"]) == pytest.approx(row["DSC_AUC"])
        assert int(r["num_class"]) == row["num_class"]
        assert int(r["runtime_upperbound"]) == 90 * row["num_class"]


def test_six_steps_and_auc_by_the_trapezoid_rule(boxfill_run):
    _, rows, rec = boxfill_run
    for row in rows:
        dscs = [row[f"DSC_{i}"] for i in range(1, 7)]
        nsds = [row[f"NSD_{i}"] for i in range(1, 7)]
        # The box step is not in the AUC: x = 0..4 over steps 2..6.
        assert row["DSC_AUC"] == pytest.approx(trapezoid(dscs[1:]))
        assert row["NSD_AUC"] == pytest.approx(trapezoid(nsds[1:]))
        assert row["DSC_Final"] == dscs[-1] and row["NSD_Final"] == nsds[-1]
        times = [row[f"RunningTime_{i}"] for i in range(1, 7)]
        assert row["TotalRunningTime"] == pytest.approx(sum(times))
    assert [s for s, _, _ in rec.of("boxfill", ORGANS)] == [1, 2, 3, 4, 5, 6]


def test_clicks_accumulate_in_the_step_inputs(boxfill_run, samples):
    _, _, rec = boxfill_run
    steps = rec.of("boxfill", ORGANS)
    gts = np.load(samples / "gts" / f"{ORGANS}.npz")["gts"]
    original = np.load(samples / "imgs" / f"{ORGANS}.npz", allow_pickle=True)
    # Step 1 sees the original file untouched.
    assert sorted(steps[0][1]) == sorted(original.files)
    prev_out = steps[0][2]
    for n, (_, inp, out) in enumerate(steps[1:], start=1):
        assert list(inp) == ["imgs", "spacing", "clicks", "clicks_order", "prev_pred", "boxes"]
        assert (inp["prev_pred"] == prev_out).all() and inp["prev_pred"].dtype == np.uint8
        order = inp["clicks_order"]
        assert order.shape == (3, n)  # one entry per class and click step so far
        for k in range(3):
            entries = [e for e in order[k] if e is not None]
            clicks = inp["clicks"][k]
            assert len(clicks["fg"]) == entries.count("fg")
            assert len(clicks["bg"]) == entries.count("bg")
            # The newest click is the simulator's answer to the previous output.
            expected = simulate_click(prev_out == k + 1, gts == k + 1)
            if expected is None:
                assert order[k][-1] is None
            else:
                kind = "fg" if expected[1] else "bg"
                assert order[k][-1] == kind
                assert tuple(int(v) for v in clicks[kind][-1]) == expected[0]
        if n > 1:  # earlier clicks are kept
            before = steps[n - 1][1]["clicks"]
            for k in range(3):
                for kind in ("fg", "bg"):
                    assert [list(map(int, p)) for p in before[k][kind]] == [
                        list(map(int, p)) for p in inp["clicks"][k][kind][: len(before[k][kind])]
                    ]
        prev_out = out


def test_the_no_box_case_skips_the_box_step(boxfill_run, samples):
    _, rows, rec = boxfill_run
    row = next(r for r in rows if r["CaseName"] == f"{CLICK_ONLY}.npz")
    assert row["box_step"] == 0
    assert row["RunningTime_1"] == 0 and row["DSC_1"] == 0 and row["NSD_1"] == 0
    steps = rec.of("boxfill", CLICK_ONLY)
    assert [s for s, _, _ in steps] == [2, 3, 4, 5, 6]
    first = steps[0][1]
    assert "boxes" not in first and not first["prev_pred"].any()
    # First clicks are computed on an all-zero prediction: one per class.
    gts = np.load(samples / "gts" / f"{CLICK_ONLY}.npz")["gts"]
    for k in range(2):
        point, fg = simulate_click(np.zeros(gts.shape, bool), gts == k + 1)
        assert fg and [int(v) for v in first["clicks"][k]["fg"][0]] == list(point)
    # The summary's step-1 mean leaves the placeholder out.
    summary = {(e["method"], e["group"]): e for e in summarize(rows)}
    box_rows = [r for r in rows if r["box_step"]]
    assert summary[("boxfill", "all")]["DSC_1"] == pytest.approx(
        np.mean([r["DSC_1"] for r in box_rows])
    )


def test_click_only_removes_the_boxes_and_skips_the_box_step(samples, tmp_path):
    rec = Recorder()
    rows = evaluate(samples / "imgs", samples / "gts", tmp_path, "boxfill", cases=ORGANS,
                    on_step=rec, click_only=True, **QUIET)  # fmt: skip
    (row,) = rows
    assert row["box_step"] == 0 and row["DSC_1"] == 0 and row["RunningTime_1"] == 0
    steps = rec.of("boxfill", ORGANS)
    assert [s for s, _, _ in steps] == [2, 3, 4, 5, 6]
    for _, inp, _ in steps:
        assert "boxes" not in inp and "clicks" in inp
    # the first click is computed on an all-zero prediction: one foreground click per class
    first = steps[0][1]
    assert all(len(c["fg"]) == 1 and not c["bg"] for c in first["clicks"])
    with np.load(samples / "imgs" / f"{ORGANS}.npz", allow_pickle=True) as original:
        assert "boxes" in original.files  # the user's file is never rewritten


# ----- missing and stale outputs, failing cases ---------------------------------------------
class _WritesOnce(runner_mod._Method):
    """Writes a perfect answer at its first call only, then nothing (a crashing container)."""

    name = "once"

    def __init__(self, gts):
        self.gts, self.calls = gts, 0

    def run(self, input_dir, output_dir, case):
        self.calls += 1
        if self.calls == 1:
            write_segs(output_dir / f"{case}.npz", self.gts)
            return 0.5, ""
        return 0.25, "crashed"


def _work(tmp_path):
    work = tmp_path / "work"
    (work / "inputs").mkdir(parents=True)
    (work / "outputs").mkdir()
    return work


def test_stale_output_is_scored_again_and_missing_output_is_zero(tmp_path):
    img = small_case(tmp_path / "data")
    gts = np.load(tmp_path / "data" / "gts" / "CT_small.npz")["gts"]
    row = run_case(_WritesOnce(gts), img, tmp_path / "data" / "gts" / img.name, _work(tmp_path),
                   log=lambda m: None)  # fmt: skip
    # The outputs folder is never cleared: the step-1 answer is read again at every step.
    assert [row[f"DSC_{i}"] for i in range(1, 7)] == [1.0] * 6
    assert row["TotalRunningTime"] == pytest.approx(0.5 + 5 * 0.25)
    assert "step 2: crashed" in row["error"]

    class Never(_WritesOnce):
        def run(self, input_dir, output_dir, case):
            return 0.1, ""

    row = run_case(Never(gts), img, tmp_path / "data" / "gts" / img.name, _work(tmp_path / "b"),
                   log=lambda m: None)  # fmt: skip
    assert [row[f"DSC_{i}"] for i in range(1, 7)] == [0.0] * 6
    assert "step 1: no output" in row["error"]


class _SilentAfterFirst(_WritesOnce):
    """Exits cleanly at every step but writes only at the first (a container that skips
    its work without saying so)."""

    def run(self, input_dir, output_dir, case):
        super().run(input_dir, output_dir, case)
        return 0.1, ""


def test_an_output_not_rewritten_is_reported(tmp_path):
    img = small_case(tmp_path / "data")
    gts_file = tmp_path / "data" / "gts" / img.name
    gts = np.load(gts_file)["gts"]
    row = run_case(_SilentAfterFirst(gts), img, gts_file, _work(tmp_path), log=lambda m: None)
    assert [row[f"DSC_{i}"] for i in range(1, 7)] == [1.0] * 6  # still scored, as theirs
    errors = row["error"].split("; ")
    assert errors == [f"step {i}: output not rewritten (the previous step's output is scored)"
                      for i in range(2, 7)]  # fmt: skip


class _WritesInt16(_WritesOnce):
    def run(self, input_dir, output_dir, case):
        np.savez_compressed(output_dir / f"{case}.npz", segs=self.gts.astype(np.int16))
        return 0.1, ""


def test_a_wrong_dtype_is_scored_and_reported(tmp_path):
    img = small_case(tmp_path / "data")
    gts_file = tmp_path / "data" / "gts" / img.name
    row = run_case(_WritesInt16(np.load(gts_file)["gts"]), img, gts_file, _work(tmp_path),
                   clicks=1, log=lambda m: None)  # fmt: skip
    assert row["DSC_1"] == row["DSC_2"] == 1.0
    assert (
        row["error"] == "step 1: segs dtype int16, not uint8; step 2: segs dtype int16, not uint8"
    )


def test_cli_strict_fails_on_step_errors(tmp_path, monkeypatch, capsys):
    small_case(tmp_path / "data")
    gts = np.load(tmp_path / "data" / "gts" / "CT_small.npz")["gts"]
    monkeypatch.setattr(runner_mod, "make_method", lambda *a, **k: _SilentAfterFirst(gts))
    args = ["evaluate", "--images", str(tmp_path / "data" / "imgs"), "--labels",
            str(tmp_path / "data" / "gts"), "--methods", "boxfill"]  # fmt: skip
    assert cli_main(args + ["--out", str(tmp_path / "lenient")]) == 0
    assert cli_main(args + ["--out", str(tmp_path / "strict"), "--strict", "--keep-work"]) == 1
    assert "error: once CT_small.npz: step 2: output not rewritten" in capsys.readouterr().err
    kept = list((tmp_path / "strict" / "work").glob("*/outputs/CT_small.npz"))
    assert len(kept) == 1 and not list((tmp_path / "lenient" / "work").iterdir())


def test_a_failing_case_does_not_stop_the_run(tmp_path):
    data = tmp_path / "data"
    small_case(data, "CT_a")
    small_case(data, "CT_c")
    (data / "imgs" / "CT_b.npz").write_bytes(b"not an npz")
    np.savez_compressed(data / "gts" / "CT_b.npz", gts=np.zeros((2, 2, 2), np.uint8))
    small_case(data, "CT_d")
    (data / "gts" / "CT_d.npz").unlink()  # no ground truth
    rows = evaluate(data / "imgs", data / "gts", tmp_path / "out", "boxfill", **QUIET)
    by = {r["CaseName"]: r for r in rows}
    assert by["CT_a.npz"]["error"] == "" and by["CT_c.npz"]["DSC_1"] > 0.5
    assert by["CT_b.npz"]["error"].startswith("case failed")
    assert by["CT_d.npz"]["error"].startswith("case failed") and np.isnan(by["CT_d.npz"]["DSC_1"])
    summary = {(e["method"], e["group"]): e for e in summarize(rows)}
    assert summary[("boxfill", "all")]["n_cases"] == 2
    assert summary[("boxfill", "all")]["n_failed"] == 2


def test_cases_filter_and_summary_by_modality(samples, tmp_path):
    data = tmp_path / "data"
    small_case(data, "CT_one")
    small_case(data, "MR_two", boxes=False)
    rows = evaluate(data / "imgs", data / "gts", tmp_path / "out", "otsu",
                    cases="MR_two,CT_one.npz,missing", **QUIET)  # fmt: skip
    assert [r["CaseName"] for r in rows] == ["CT_one.npz", "MR_two.npz"]
    groups = {e["group"]: e for e in summarize(rows)}
    assert set(groups) == {"all", "CT", "MR"}
    assert groups["MR"]["DSC_Final"] == rows[1]["DSC_Final"]
    rows = evaluate(
        data / "imgs", data / "gts", tmp_path / "out2", "otsu", cases=["CT_one"], **QUIET
    )
    assert [r["CaseName"] for r in rows] == ["CT_one.npz"]


def test_plot_is_skipped_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    messages = []
    assert not plot_curves(tmp_path / "curves.png", [], log=messages.append)
    assert "matplotlib" in messages[0] and not (tmp_path / "curves.png").exists()


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown method"):
        evaluate(".", ".", ".", "sam2", **QUIET)
    with pytest.raises(ValueError, match="unknown mode"):
        evaluate(".", ".", ".", "boxfill", mode="kubernetes", **QUIET)


def test_cli_evaluate(samples, tmp_path, capsys):
    rc = cli_main(["evaluate", "--images", str(samples / "imgs"), "--labels",
                   str(samples / "gts"), "--out", str(tmp_path), "--methods", "boxfill",
                   "--cases", ORGANS])  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    assert f"boxfill {ORGANS} step 6/6: DSC" in out and "| boxfill | all | 1 | 0 |" in out
    assert cli_main(["evaluate", "--images", str(tmp_path / "nope"), "--labels", ".",
                     "--out", str(tmp_path)]) == 2  # fmt: skip


# ----- ENSAM ------------------------------------------------------------------------------
def test_ensam_inprocess_protocol(tiny_weights, tmp_path):
    data = tmp_path / "data"
    small_case(data, "CT_box")
    small_case(data, "CT_clicks", boxes=False)
    rec = Recorder()
    caches = []

    def hook(method, case, step, inp, out):
        rec(method, case, step, inp, out)
        caches.append(sorted(p.name for p in (out.parent / ".ensam_cache").iterdir()))

    rows = evaluate(data / "imgs", data / "gts", tmp_path / "out", "ensam",
                    weights=tiny_weights, device="cpu", on_step=hook, **QUIET)  # fmt: skip
    by = {r["CaseName"]: r for r in rows}
    assert all(r["error"] == "" and r["method"] == "ensam" for r in rows)
    assert [s for s, _, _ in rec.of("ensam", "CT_box")] == [1, 2, 3, 4, 5, 6]
    assert [s for s, _, _ in rec.of("ensam", "CT_clicks")] == [2, 3, 4, 5, 6]
    assert by["CT_clicks.npz"]["DSC_1"] == 0 and by["CT_clicks.npz"]["box_step"] == 0
    for row in rows:
        dscs = [row[f"DSC_{i}"] for i in range(1, 7)]
        assert row["DSC_AUC"] == pytest.approx(trapezoid(dscs[1:]))
        assert all(row[f"RunningTime_{i}"] > 0 for i in range(2, 7))
    # The container's encoder cache lives in the outputs folder, which persists.
    assert "CT_box" in caches[0]
    assert caches[-1] == ["CT_box", "CT_clicks"]
    steps = rec.of("ensam", "CT_box")
    assert steps[-1][1]["clicks_order"].shape == (1, 5)
    with open(tmp_path / "out" / "ensam_per_case.csv") as f:
        assert next(csv.reader(f)) == OFFICIAL + ["method", "box_step", "error"]


def test_ensam_script_mode_matches_inprocess(tiny_weights, tmp_path):
    # A fresh interpreter per step, as a container start. Same weights and inputs: the
    # same masks as in-process (both read and write the on-disk cache).
    small_case(tmp_path / "data")
    args = (tmp_path / "data" / "imgs", tmp_path / "data" / "gts")
    kw = {"weights": tiny_weights, "device": "cpu", "clicks": 2, **QUIET}
    t0 = time.perf_counter()
    (script,) = evaluate(*args, tmp_path / "s", "ensam", mode="script", **kw)
    script_seconds = time.perf_counter() - t0
    (inproc,) = evaluate(*args, tmp_path / "i", "ensam", mode="inprocess", **kw)
    assert script["error"] == ""
    for i in (1, 2, 3):
        assert script[f"DSC_{i}"] == pytest.approx(inproc[f"DSC_{i}"], abs=1e-9)
    # clicks=2: the AUC is the trapezoid over the two click steps.
    assert script["DSC_AUC"] == pytest.approx((script["DSC_2"] + script["DSC_3"]) / 2)
    assert script["TotalRunningTime"] <= script_seconds


FAKE_DOCKER = """#!{python}
# Stand-in for `docker container run`: records its arguments, maps the two -v mounts and
# writes an all-ones answer for each input, as a container running predict.sh would.
import sys, json, pathlib, numpy as np
args = sys.argv[1:]
with open({log!r}, "a") as f:
    f.write(json.dumps(args) + "\\n")
vols = [args[i + 1].rstrip("/").rsplit(":", 1) for i, a in enumerate(args) if a == "-v"]
mounts = {{inside: host for host, inside in vols}}
inp, out = pathlib.Path(mounts["/workspace/inputs"]), pathlib.Path(mounts["/workspace/outputs"])
for p in inp.glob("*.npz"):
    imgs = np.load(p, allow_pickle=True)["imgs"]
    np.savez_compressed(out / p.name, segs=np.ones(imgs.shape, np.uint8))
"""


def test_docker_mode_runs_the_organizers_command(tmp_path, monkeypatch):
    import json

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "docker.log"
    fake = bin_dir / "docker"
    fake.write_text(FAKE_DOCKER.format(python=sys.executable, log=str(log)))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(runner_mod, "_gpu_available", lambda: False)
    small_case(tmp_path / "data")
    (row,) = evaluate(tmp_path / "data" / "imgs", tmp_path / "data" / "gts", tmp_path / "out",
                      "ensam", mode="docker", docker_image="team_x:latest", clicks=1,
                      **QUIET)  # fmt: skip
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) == 2 and row["error"] == ""
    args = calls[0]
    assert args[:2] == ["container", "run"] and args[-4:] == [
        "team_x:latest",
        "/bin/bash",
        "-c",
        "sh predict.sh",
    ]
    assert args[args.index("-m") + 1] == "32G" and "--rm" in args and "--gpus" not in args
    assert args[args.index("--network") + 1] == "none"
    assert args[args.index("--name") + 1].startswith("team_")
    gts = np.load(tmp_path / "data" / "gts" / "CT_small.npz")["gts"]
    assert row["DSC_1"] == pytest.approx(2 * gts.sum() / (gts.sum() + gts.size))


def test_docker_command_with_gpu(tmp_path):
    cmd = docker_command("ensam:latest", "ensam", tmp_path / "in", tmp_path / "out", True)
    assert cmd[:5] == ["docker", "container", "run", "--gpus", "device=0"]
    assert f"{(tmp_path / 'in').resolve()}/:/workspace/inputs/" in cmd


def test_click_crop_in_script_mode_matches_inprocess(tiny_weights, tmp_path, monkeypatch):
    # The click_crop rule places a click-only object by the previous answer: a fresh process
    # per step (which has only the previous output and the on-disk cache) must give the same
    # masks as one process. The volume is pooled (a small size cap), so the rule acts.
    import json

    shape = (32, 64, 64)
    lab = _ellipsoid(shape, (8, 44, 44), (3, 5, 5)).astype(np.uint8)
    data = tmp_path / "data"
    for sub in ("imgs", "gts"):
        (data / sub).mkdir(parents=True)
    img = (lab * 150 + 40).astype(np.uint8)
    np.savez_compressed(data / "imgs" / "MR_small.npz", imgs=img, spacing=np.array([1.0] * 3))
    np.savez_compressed(data / "gts" / "MR_small.npz", gts=lab)
    monkeypatch.setenv("ENSAM_RULES", "z_range,debris,clicks,click_grow,click_crop")
    monkeypatch.setenv("ENSAM_CROP", "object")
    monkeypatch.setenv("ENSAM_MAX_VOXELS", "4096")
    rois = {"script": [], "inprocess": []}
    rows = {}
    for mode in rois:

        def hook(method, case, step, inp, out, mode=mode):
            meta = json.loads((out.parent / ".ensam_cache" / case / "meta.json").read_text())
            rois[mode].append(meta["rois"]["1"])

        (rows[mode],) = evaluate(data / "imgs", data / "gts", tmp_path / mode, "ensam",
                                 weights=tiny_weights, device="cpu", clicks=3, click_only=True,
                                 on_step=hook, **QUIET)  # fmt: skip
    assert rows["script"]["error"] == rows["inprocess"]["error"] == ""
    for i in range(2, 5):
        assert rows["script"][f"DSC_{i}"] == pytest.approx(rows["inprocess"][f"DSC_{i}"], abs=1e-9)
    assert rois["script"] == rois["inprocess"]
    whole = [[0, 0, 0], list(shape)]
    assert rois["script"][0][:2] == whole  # the first click step has no answer to crop by
    assert any(r[:2] != whole for r in rois["script"][1:])
