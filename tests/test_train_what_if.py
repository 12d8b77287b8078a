"""A rule's own effect with the clicks held fixed: real npz in, the evaluator's CSVs out."""

import csv
import math

import numpy as np
import pytest

from ensam_infer.evaluation.runner import evaluate, run_case
from ensam_infer.rules import PromptRules
from ensam_infer.samples import _ellipsoid, challenge_box
from ensam_train import what_if as what_if_mod
from ensam_train.__main__ import main as train_main
from ensam_train.what_if import WhatIfEnsam, alternative_row, toggled, what_if

QUIET = {"log": lambda msg: None}


def two_class_case(folder, name="CT_two", boxes=True):
    shape = (12, 24, 24)
    lab = _ellipsoid(shape, (6, 8, 8), (4, 5, 5)).astype(np.uint8)
    lab[_ellipsoid(shape, (6, 16, 16), (3, 4, 4))] = 2
    img = (lab * 70 + 40).astype(np.uint8)
    (folder / "imgs").mkdir(parents=True, exist_ok=True)
    (folder / "gts").mkdir(parents=True, exist_ok=True)
    fields = {"imgs": img, "spacing": np.array([1.0, 1.0, 2.0])}
    if boxes:
        fields["boxes"] = np.array([challenge_box(lab == k) for k in (1, 2)], dtype=object)
    np.savez_compressed(folder / "imgs" / f"{name}.npz", **fields)
    np.savez_compressed(folder / "gts" / f"{name}.npz", gts=lab)
    return folder


def read_csv(path):
    with open(path, newline="") as f:
        return {r["CaseName"]: r for r in csv.DictReader(f)}


def test_toggled_switches_one_rule():
    rules = PromptRules()
    assert toggled(rules, "click_grow").click_grow is False
    assert toggled(rules, "recrop").recrop is True
    assert toggled(rules, "clicks").z_range is rules.z_range
    with pytest.raises(ValueError, match="unknown prompt rule"):
        toggled(rules, "nonsense")


def test_alternative_row_rescores_the_steps_it_answered():
    row = {f"DSC_{s}": 0.5 for s in range(1, 7)} | {f"NSD_{s}": 0.4 for s in range(1, 7)}
    row["DSC_1"] = row["NSD_1"] = 0.0  # a click-only case's skipped box step
    alt = alternative_row(row, {3: 0.9, 6: 0.1}, {3: 0.8, 6: 0.0})
    # click steps 2..6: 0.5, 0.9, 0.5, 0.5, 0.1 -> trapezoid 0.7 + 0.7 + 0.5 + 0.3
    assert alt["DSC_AUC"] == pytest.approx(2.2)
    assert alt["DSC_Final"] == 0.1 and alt["NSD_Final"] == 0.0
    assert alt["NSD_AUC"] == pytest.approx(0.6 + 0.6 + 0.4 + 0.2)
    assert alt["DSC_1"] == 0.0 and row["DSC_3"] == 0.5  # the trajectory's row is untouched
    missing = alternative_row(row, {3: float("nan")}, {3: float("nan")}, ["step 3: failed"])
    assert math.isnan(missing["DSC_AUC"]) and missing["error"] == "step 3: failed"
    assert missing["DSC_Final"] == 0.5


def test_trajectory_is_the_evaluators_run_and_an_idle_rule_changes_nothing(tiny_weights, tmp_path):
    data = two_class_case(tmp_path / "data")
    evaluate(data / "imgs", data / "gts", tmp_path / "ev", "ensam", weights=tiny_weights,
             device="cpu", **QUIET)  # fmt: skip
    # click_grow and click_crop act only on objects without a box
    what_if(data / "imgs", data / "gts", tmp_path / "wi", ["click_grow", "click_crop"],
            weights=tiny_weights, device="cpu")  # fmt: skip
    scores = [f"{k}_{s}" for k in ("DSC", "NSD") for s in range(1, 7)] + ["DSC_AUC", "NSD_AUC"]
    evaluated = read_csv(tmp_path / "ev" / "ensam_per_case.csv")["CT_two.npz"]
    for stem in ("ensam", "click_grow", "click_crop"):
        row = read_csv(tmp_path / "wi" / f"{stem}_per_case.csv")["CT_two.npz"]
        assert [row[k] for k in scores] == [evaluated[k] for k in scores], stem
    assert not any(p.name.startswith("what_if_") for p in (tmp_path / "wi").iterdir())


def test_each_step_is_also_answered_with_the_rule_switched(tiny_weights, tmp_path):
    """Trajectory without rules, alternative with the clicks rule: at every step the
    alternative's answer, made from that step's input file, holds each positive click's
    voxel (the rule's promise)."""
    data = two_class_case(tmp_path / "data", boxes=False)
    work = tmp_path / "work"
    (work / "inputs").mkdir(parents=True)
    (work / "outputs").mkdir()
    method = WhatIfEnsam(tiny_weights, "cpu", PromptRules.none(), ["clicks"])
    seen = []

    def check(_method, _case, step, inp, out):
        with np.load(inp, allow_pickle=True) as d:
            clicks = list(d["clicks"])
        answer = method.answers["clicks"]
        for k, c in enumerate(clicks, start=1):
            for z, y, x in c["fg"]:
                assert answer[z, y, x] == k
        seen.append(step)

    path = data / "imgs" / "CT_two.npz"
    row = run_case(method, path, data / "gts" / "CT_two.npz", work, log=lambda m: None,
                   on_step=check, click_only=True)  # fmt: skip
    assert seen == [2, 3, 4, 5, 6]
    assert row["error"] == "" and row["box_step"] == 0


def test_cli_writes_one_csv_per_rule(tiny_weights, tmp_path, capsys):
    data = two_class_case(tmp_path / "data", boxes=False)
    code = train_main(["what-if", "--images", str(data / "imgs"), "--labels", str(data / "gts"),
                       "--out", str(tmp_path / "wi"), "--toggle", "clicks,debris",
                       "--rules", "none", "--weights", str(tiny_weights), "--device", "cpu",
                       "--click-only"])  # fmt: skip
    assert code == 0
    for stem in ("ensam", "clicks", "debris"):
        row = read_csv(tmp_path / "wi" / f"{stem}_per_case.csv")["CT_two.npz"]
        assert row["DSC_1"] == "0" and not math.isnan(float(row["DSC_AUC"]))
    assert "CT_two: DSC AUC" in capsys.readouterr().out
    bad = train_main(["what-if", "--images", str(data / "imgs"), "--labels", str(data / "gts"),
                      "--out", str(tmp_path / "x"), "--toggle", "nonsense"])  # fmt: skip
    assert bad == 2
    rest = ["--out", str(tmp_path / "x"), "--toggle", "clicks"]
    labels = ["--labels", str(data / "gts")]
    missing = train_main(["what-if", "--images", str(tmp_path / "nowhere"), *labels, *rest])
    weights = ["--weights", str(tmp_path / "none.pt")]
    no_weights = train_main(["what-if", "--images", str(data / "imgs"), *labels, *rest, *weights])
    assert missing == 2 and no_weights == 2
    err = capsys.readouterr().err
    assert "is not a folder" in err and "no ENSAM weights" in err


def test_a_corrupt_case_is_reported_and_the_others_still_run(tiny_weights, tmp_path, capsys):
    data = two_class_case(tmp_path / "data", boxes=False)
    (data / "imgs" / "CT_bad.npz").write_bytes(b"not an npz")
    (data / "gts" / "CT_bad.npz").write_bytes(b"not an npz")
    rows = what_if(data / "imgs", data / "gts", tmp_path / "wi", ["clicks"], weights=tiny_weights,
                   device="cpu", click_only=True)  # fmt: skip
    for stem in ("ensam", "clicks"):
        by = {r["CaseName"]: r for r in rows[stem]}
        assert by["CT_bad.npz"]["error"].startswith("case failed")
        assert math.isnan(by["CT_bad.npz"]["DSC_AUC"]) and by["CT_two.npz"]["error"] == ""
        on_disk = read_csv(tmp_path / "wi" / f"{stem}_per_case.csv")
        assert on_disk["CT_bad.npz"]["DSC_AUC"] == ""  # `compare` leaves it out
    assert "CT_bad: case failed" in capsys.readouterr().out


def test_the_alternatives_write_nothing_and_say_why_they_failed(
    tiny_weights, tmp_path, monkeypatch
):
    data = two_class_case(tmp_path / "data", boxes=False)
    real = what_if_mod.segment_case
    seen = []

    def snapshot(root):
        return sorted((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*"))

    def checked(session, case, cache):
        before = snapshot(cache.root.parent)
        if session.rules.clicks:  # the alternative that switches `clicks` on fails
            raise RuntimeError("out of memory")
        out = real(session, case, cache)
        assert snapshot(cache.root.parent) == before
        # the trajectory's cache of the step before, under the trajectory's model id
        seen.append((cache.dir / "meta.json").is_file())
        return out

    monkeypatch.setattr(what_if_mod, "segment_case", checked)
    rows = what_if(data / "imgs", data / "gts", tmp_path / "wi", ["clicks", "debris"],
                   rules=PromptRules.none(), weights=tiny_weights, device="cpu",
                   click_only=True)  # fmt: skip
    assert seen == [False, True, True, True, True]  # debris's alternative, every click step
    (failed,) = rows["clicks"]
    assert failed["error"].startswith("step 2: RuntimeError: out of memory")
    assert failed["error"].count("step ") == 5 and math.isnan(failed["DSC_AUC"])
    assert rows["ensam"][0]["error"] == "" and not math.isnan(rows["ensam"][0]["DSC_AUC"])
    assert math.isnan(rows["debris"][0]["RunningTime_2"])  # not measured, not copied


def test_the_trajectory_takes_its_rules_from_the_environment_as_evaluate_does(
    tiny_weights, tmp_path, monkeypatch
):
    data = two_class_case(tmp_path / "data")
    made = []
    real_init = WhatIfEnsam.__init__

    def spy(self, weights, device, rules, toggles):
        made.append(rules)
        real_init(self, weights, device, rules, toggles)

    monkeypatch.setattr(WhatIfEnsam, "__init__", spy)
    monkeypatch.setenv("ENSAM_RULES", "z_range")
    what_if(data / "imgs", data / "gts", tmp_path / "wi", ["clicks"], weights=tiny_weights,
            device="cpu", cases="CT_two")  # fmt: skip
    assert made == [PromptRules.parse("z_range")]
