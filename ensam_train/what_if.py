"""What a prompt rule does to each answer itself, with the clicks held fixed.

A rule changes an answer; the organizers' next click goes to the largest error of that
answer, so every later step of the two runs (rule on, rule off) sees other clicks. Past the
first changed step, two validation runs compare two click trajectories, and those differ by
chance as much as by the rule: nothing but a mirror axis moves 13-20 of 35 validation cases
by more than 0.05 DSC AUC (docs/ablations.md). Here one trajectory is run, and at each of its
steps the same input (same image, prompts, cache and previous answer) is also answered with
one rule switched the other way. Each toggled rule gets a per-case CSV in the evaluator's
format, scored on those answers, so `python -m ensam_train compare` pairs it with the
trajectory's own CSV: every difference is then the rule's doing at the step it acted.
"""

from __future__ import annotations

import dataclasses
import io
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ensam_infer.cache import CaseCache
from ensam_infer.challenge import read_case
from ensam_infer.evaluation.metrics import N_CLICK_STEPS, multiclass_scores
from ensam_infer.evaluation.runner import (
    click_auc,
    empty_row,
    list_cases,
    one_line,
    run_case,
    write_per_case_csv,
)
from ensam_infer.predict import predict_file, segment_case
from ensam_infer.rules import RULE_NAMES, PromptRules
from ensam_infer.session import EnsamSession, SessionState


def toggled(rules: PromptRules, name: str) -> PromptRules:
    """`rules` with one rule switched the other way."""
    if name not in RULE_NAMES:
        raise ValueError(f"unknown prompt rule {name!r} (known: {', '.join(RULE_NAMES)})")
    return dataclasses.replace(rules, **{name: not getattr(rules, name)})


class WhatIfEnsam:
    """The in-process ENSAM method of the evaluator (`predict_file`, its cache), which
    first answers each step's input once per toggled rule, writing nothing."""

    name = "ensam"

    def __init__(
        self, weights: str | Path | None, device: str, rules: PromptRules, toggles: list[str]
    ) -> None:
        self.session = EnsamSession(weights, device=device, rules=rules)
        self.alternatives = {
            name: EnsamSession(self.session.model, device=device, rules=toggled(rules, name))
            for name in toggles
        }
        self.answers: dict[str, np.ndarray | None] = {}
        self.failures: dict[str, str] = {}  # why an alternative has no answer at this step

    def run(self, input_dir: Path, output_dir: Path, case: str) -> tuple[float, str]:
        path = input_dir / f"{case}.npz"
        self._answer_alternatives(path, output_dir)
        t0 = time.perf_counter()
        result = predict_file(path, output_dir, self.session, True, io.StringIO())
        return time.perf_counter() - t0, "" if result.ok else result.message

    def _answer_alternatives(self, path: Path, output_dir: Path) -> None:
        """`answers` (None where it failed, the reason in `failures`) for this step's input."""
        self.answers = dict.fromkeys(self.alternatives)
        self.failures = {}
        try:
            parsed = read_case(path)
        except Exception as exc:  # predict_file reports it for the trajectory too
            self.failures = dict.fromkeys(self.alternatives, one_line(exc))
            return
        for name, session in self.alternatives.items():
            # The trajectory's cache, read and never written: the alternative starts from
            # exactly the logits and previous answer the trajectory's step starts from.
            cache = CaseCache(output_dir, parsed.name, session.model_id)
            try:
                labels, _, _ = segment_case(session, parsed, cache)
                self.answers[name] = labels.reshape(parsed.original_shape)
            except Exception as exc:  # scored as missing (NaN), the reason in its row
                self.failures[name] = one_line(exc)
            finally:
                # nothing carries over to the next step (set_image starts afresh), so the
                # features and logits are dropped now rather than held beside the trajectory's
                session.reset()
                session.restore(SessionState())

    def close(self) -> None:
        pass


def alternative_row(
    row: dict, dscs: dict[int, float], nsds: dict[int, float], errors: list[str] | None = None
) -> dict:
    """The trajectory's per-case row with the scores of the steps the alternative answered
    (NaN where it had no answer) and its own `errors`; a click-only case's skipped box step
    stays 0 in both. Its running times are not measured: left empty."""
    alt = dict(row)
    for key in alt:
        if key.startswith(("RunningTime_", "TotalRunningTime")):
            alt[key] = float("nan")
    alt["error"] = "; ".join(errors or [])
    steps = N_CLICK_STEPS + 1
    for step in range(1, steps + 1):
        if step in dscs:
            alt[f"DSC_{step}"], alt[f"NSD_{step}"] = dscs[step], nsds[step]
    dsc = [float(alt[f"DSC_{s}"]) for s in range(1, steps + 1)]
    nsd = [float(alt[f"NSD_{s}"]) for s in range(1, steps + 1)]
    alt["DSC_AUC"], alt["NSD_AUC"] = click_auc(dsc), click_auc(nsd)
    alt["DSC_Final"], alt["NSD_Final"] = dsc[-1], nsd[-1]
    return alt


def what_if_case(
    method: WhatIfEnsam, image_path: Path, gts_path: Path, work: Path, click_only: bool
) -> tuple[dict, dict[str, dict]]:
    """One case: the trajectory's per-case row and each toggled rule's row."""
    with np.load(gts_path) as g:
        gts = np.asarray(g["gts"])
    with np.load(image_path, allow_pickle=True) as data:
        spacing = data["spacing"]
    dscs: dict[str, dict[int, float]] = {t: {} for t in method.alternatives}
    nsds: dict[str, dict[int, float]] = {t: {} for t in method.alternatives}
    errors: dict[str, list[str]] = {t: [] for t in method.alternatives}

    def score(_method: str, _case: str, step: int, _inp: Path, _out: Path) -> None:
        for name, labels in method.answers.items():
            s = {"dsc": np.nan, "nsd": np.nan}
            if labels is None:
                errors[name].append(f"step {step}: {method.failures.get(name, 'no answer')}")
            else:
                try:
                    s = multiclass_scores(labels, gts, spacing)
                except Exception as exc:  # this alternative's step only: NaN and the reason
                    errors[name].append(f"step {step}: {one_line(exc)}")
            dscs[name][step], nsds[name][step] = s["dsc"], s["nsd"]

    row = run_case(method, image_path, gts_path, work, on_step=score, click_only=click_only)
    return row, {t: alternative_row(row, dscs[t], nsds[t], errors[t]) for t in method.alternatives}


def what_if(
    images_dir: str | Path,
    labels_dir: str | Path,
    out_dir: str | Path,
    toggles: list[str],
    rules: PromptRules | None = None,
    weights: str | Path | None = None,
    device: str = "auto",
    cases: list[str] | str | None = None,
    click_only: bool = False,
) -> dict[str, list[dict]]:
    """Run the protocol with `rules` (default: as `evaluate`'s session, ENSAM_RULES if set,
    else the validated set) and write
    ``out_dir/ensam_per_case.csv`` (the trajectory, as `evaluate` writes it) and, for each
    rule in `toggles`, ``out_dir/<rule>_per_case.csv`` (the same steps answered with that
    rule switched). Returns the rows by file stem."""
    rules = rules if rules is not None else PromptRules.from_env()
    images_dir, labels_dir, out_dir = Path(images_dir), Path(labels_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    method = WhatIfEnsam(weights, device, rules, toggles)
    rows: dict[str, list[dict]] = {"ensam": [], **{t: [] for t in toggles}}
    work = Path(tempfile.mkdtemp(prefix="what_if_", dir=out_dir))
    (work / "inputs").mkdir()
    (work / "outputs").mkdir()
    try:
        for path in list_cases(images_dir, cases):
            try:
                row, alternatives = what_if_case(
                    method, path, labels_dir / path.name, work, click_only
                )
            except Exception as exc:  # one bad case never stops the run: a row says why
                row = empty_row(path.name, method.name, N_CLICK_STEPS)
                row["error"] = f"case failed: {one_line(exc)}"
                alternatives = {t: dict(row) for t in toggles}
                print(f"{path.name[:-4]}: {row['error']}", flush=True)
            rows["ensam"].append(row)
            for name, alt in alternatives.items():
                rows[name].append(alt)
            changes = ", ".join(f"{t} switched {a['DSC_AUC']:.4f}" for t, a in alternatives.items())
            print(f"{path.name[:-4]}: DSC AUC {row['DSC_AUC']:.4f}; {changes}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for stem, stem_rows in rows.items():
        write_per_case_csv(out_dir / f"{stem}_per_case.csv", stem_rows)
    return rows
