"""Paired comparison of two validation runs: is a candidate's gain larger than the noise?

Both runs score the same held-out cases, so the question is about the per-case differences:
their mean, and its standard error (the spread of the differences over the square root of
the number of cases). On 35 cases a click-only DSC AUC difference has a standard error of
about 0.05, so a gain of 0.03 says nothing; the verdict asks for two standard errors.

Input: the `ensam_per_case.csv` files that `python -m ensam_infer evaluate` writes (one row
per case; `CaseName`, `DSC_AUC`, `NSD_AUC`, `DSC_Final`, `NSD_Final`, `DSC_1`...).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

FIGURES = ("DSC_AUC", "NSD_AUC", "DSC_Final", "NSD_Final")
# a per-case change smaller than this is "unchanged" in the better/worse counts
CHANGE_EPS = 1e-4
# the per-case DSC AUC change issue 9 asks no rule to exceed on any case
CASE_LIMIT = 0.05


@dataclass(frozen=True)
class PairedFigure:
    """One figure over the cases both runs scored."""

    name: str
    base: float
    other: float
    diff: float  # mean of per-case (other - base)
    se: float  # standard error of that mean; nan with fewer than two cases
    better: int
    worse: int

    @property
    def verdict(self) -> str:
        if not math.isfinite(self.se) or self.se == 0:
            return "better" if self.diff > 0 else "worse" if self.diff < 0 else "same"
        z = self.diff / self.se
        return "better" if z >= 2 else "worse" if z <= -2 else "within noise"


def read_per_case(path: str | Path) -> dict[str, dict[str, float]]:
    """Case name (without .npz) -> its numeric figures; cases that failed (no DSC_AUC) are
    left out, so a comparison never mistakes a crash for a score."""
    rows: dict[str, dict[str, float]] = {}
    with Path(path).open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"CaseName", "DSC_AUC"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path} is not a per-case CSV (no {', '.join(sorted(missing))})")
        for row in reader:
            if not row.get("DSC_AUC"):
                continue
            name = row["CaseName"].removesuffix(".npz")
            rows[name] = {k: float(v) for k, v in row.items() if _is_number(v)}
    return rows


def _is_number(value: str | None) -> bool:
    if not value:
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def paired(base: dict, other: dict, figure: str) -> PairedFigure:
    cases = sorted(set(base) & set(other))
    if not cases:
        raise ValueError("the two runs share no scored case")
    diffs = [other[c][figure] - base[c][figure] for c in cases]
    n = len(diffs)
    mean = sum(diffs) / n
    se = math.nan
    if n > 1:
        var = sum((d - mean) ** 2 for d in diffs) / (n - 1)
        se = math.sqrt(var / n)
    return PairedFigure(
        name=figure,
        base=sum(base[c][figure] for c in cases) / n,
        other=sum(other[c][figure] for c in cases) / n,
        diff=mean,
        se=se,
        better=sum(d > CHANGE_EPS for d in diffs),
        worse=sum(d < -CHANGE_EPS for d in diffs),
    )


def largest_changes(base: dict, other: dict, figure: str, k: int) -> list[tuple[str, float]]:
    """The k cases that lose most, then the k that gain most (other - base)."""
    return extremes({c: other[c][figure] - base[c][figure] for c in set(base) & set(other)}, k)


def extremes(changes: dict[str, float], k: int) -> list[tuple[str, float]]:
    """The k most negative (case, change) items, then the k most positive, none twice."""
    ranked = sorted(changes.items(), key=lambda item: (item[1], item[0]))
    losers = ranked[:k]
    return losers + [d for d in ranked[-k:] if d not in losers]


def moves_past_limit(changes: list[float]) -> str:
    """How many changes pass CASE_LIMIT upwards and downwards, as report text."""
    up = sum(d > CASE_LIMIT for d in changes)
    down = sum(d < -CASE_LIMIT for d in changes)
    return f"{up} up, {down} down"


def per_step_means(rows: dict, cases: list[str]) -> list[float]:
    """Mean DSC after each step (DSC_1, DSC_2, ...) over `cases`; steps a run lacks stop it.
    Step 1 counts only the cases that had a box step, as the evaluator's summary does
    (`summarize`): a click-only case's DSC_1 is the organizers' 0 placeholder, not a score;
    with no such case the step-1 mean is nan."""
    means = []
    step = 1
    while all(f"DSC_{step}" in rows[c] for c in cases):
        scored = [c for c in cases if step > 1 or rows[c].get("box_step")]
        values = [rows[c][f"DSC_{step}"] for c in scored]
        means.append(sum(values) / len(values) if values else math.nan)
        step += 1
    return means


def report(base_path: str | Path, other_path: str | Path, show: int = 3) -> str:
    """A plain-text report of `other` against `base`."""
    base, other = read_per_case(base_path), read_per_case(other_path)
    cases = sorted(set(base) & set(other))
    lines = [
        f"base:  {base_path} ({len(base)} cases)",
        f"other: {other_path} ({len(other)} cases)",
        f"paired over {len(cases)} cases; verdict: |diff| >= 2 standard errors",
        f"{'figure':<10} {'base':>7} {'other':>7} {'diff':>7} {'SE':>6}  better/worse  verdict",
    ]
    for figure in FIGURES:
        p = paired(base, other, figure)
        lines.append(
            f"{p.name:<10} {p.base:7.3f} {p.other:7.3f} {p.diff:+7.3f} {p.se:6.3f}"
            f"  {p.better:>5}/{p.worse:<6}  {p.verdict}"
        )
    for label, rows in (("base", base), ("other", other)):
        means = per_step_means(rows, cases)
        steps = " ".join("-" if math.isnan(m) else f"{m:.3f}" for m in means)
        lines.append(f"mean DSC per step, {label}: {steps}")
    diffs = [other[c]["DSC_AUC"] - base[c]["DSC_AUC"] for c in cases]
    lines.append(f"cases whose DSC AUC moves more than {CASE_LIMIT}: {moves_past_limit(diffs)}")
    lines.append("largest DSC AUC changes (other - base):")
    for case, d in largest_changes(base, other, "DSC_AUC", show):
        lines.append(f"  {d:+.3f}  {case}")
    return "\n".join(lines)


def averaged_diffs(
    pairs: list[tuple[dict, dict]], figure: str
) -> dict[str, tuple[float, list[float]]]:
    """Case -> (its mean difference over the pairs, each pair's difference), over the cases
    every pair scored. The pairs are the same comparison in equivalent settings (another
    mirror axis, say): a case's mean is its change with the trajectory noise averaged down."""
    cases = set.intersection(*(set(b) & set(o) for b, o in pairs))
    if not cases:
        raise ValueError("the runs share no scored case")
    out = {}
    for c in sorted(cases):
        each = [o[c][figure] - b[c][figure] for b, o in pairs]
        out[c] = (sum(each) / len(each), each)
    return out


def repeated_report(paths: list[tuple[str | Path, str | Path]], show: int = 3) -> str:
    """The DSC AUC comparison repeated over several (base, other) pairs, per case averaged."""
    pairs = [(read_per_case(b), read_per_case(o)) for b, o in paths]
    diffs = averaged_diffs(pairs, "DSC_AUC")
    means = {c: m for c, (m, _) in diffs.items()}
    p = paired({c: {"d": 0.0} for c in means}, {c: {"d": m} for c, m in means.items()}, "d")
    lines = [
        f"DSC AUC over {len(pairs)} pairs, per case averaged ({len(means)} cases): "
        f"{p.diff:+.3f} ± {p.se:.3f} (SE), {p.better} better / {p.worse} worse, {p.verdict}",
        f"cases whose mean change passes {CASE_LIMIT}: {moves_past_limit(list(means.values()))}",
        "largest mean changes (each pair's in brackets):",
    ]
    for case, m in extremes(means, show):
        each = ", ".join(f"{d:+.3f}" for d in diffs[case][1])
        lines.append(f"  {m:+.3f}  {case}  [{each}]")
    return "\n".join(lines)
