import math
from pathlib import Path

import pytest

from ensam_train.__main__ import main
from ensam_train.compare import (
    averaged_diffs,
    largest_changes,
    paired,
    per_step_means,
    read_per_case,
    repeated_report,
    report,
)

HEADER = "CaseName,DSC_AUC,NSD_AUC,DSC_Final,NSD_Final,DSC_1,DSC_2,method,box_step,error\n"


def _write(path: Path, rows: list[str]) -> Path:
    path.write_text(HEADER + "".join(r + "\n" for r in rows))
    return path


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    base = _write(
        tmp_path / "base.csv",
        [
            "a.npz,2.0,1.0,0.5,0.4,0.3,0.5,ensam,1,",
            "b.npz,3.0,2.0,0.8,0.6,0.7,0.8,ensam,1,",
            "c.npz,1.0,1.0,0.2,0.2,0.1,0.2,ensam,1,",
            "failed.npz,,,,,,,ensam,1,boom",
        ],
    )
    other = _write(
        tmp_path / "other.csv",
        [
            "a.npz,2.5,1.0,0.6,0.4,0.4,0.6,ensam,1,",
            "b.npz,3.1,2.0,0.8,0.6,0.7,0.8,ensam,1,",
            "c.npz,0.9,1.0,0.2,0.2,0.1,0.2,ensam,1,",
            "only_here.npz,4.0,4.0,1.0,1.0,1.0,1.0,ensam,1,",
        ],
    )
    return base, other


def test_failed_rows_are_left_out(runs: tuple[Path, Path]) -> None:
    base = read_per_case(runs[0])
    assert sorted(base) == ["a", "b", "c"]
    assert base["a"]["DSC_AUC"] == 2.0


def test_paired_mean_and_standard_error_by_hand(runs: tuple[Path, Path]) -> None:
    base, other = (read_per_case(p) for p in runs)
    p = paired(base, other, "DSC_AUC")
    # differences over the shared cases a, b, c: +0.5, +0.1, -0.1
    assert p.diff == pytest.approx(0.5 / 3)
    var = ((0.5 - 0.5 / 3) ** 2 + (0.1 - 0.5 / 3) ** 2 + (-0.1 - 0.5 / 3) ** 2) / 2
    assert p.se == pytest.approx(math.sqrt(var / 3))
    assert (p.better, p.worse) == (2, 1)
    assert p.base == pytest.approx(2.0) and p.other == pytest.approx(6.5 / 3)
    assert p.verdict == "within noise"  # 0.167 against an SE of 0.176


def test_verdict_needs_two_standard_errors() -> None:
    base = {c: {"x": 0.0} for c in "abcd"}
    other = {"a": {"x": 1.0}, "b": {"x": 1.1}, "c": {"x": 0.9}, "d": {"x": 1.0}}
    assert paired(base, other, "x").verdict == "better"
    assert paired(other, base, "x").verdict == "worse"
    same = paired(base, base, "x")
    assert (same.diff, same.se, same.verdict) == (0.0, 0.0, "same")


def test_no_shared_case_is_an_error() -> None:
    with pytest.raises(ValueError, match="no scored case"):
        paired({"a": {"x": 1.0}}, {"b": {"x": 1.0}}, "x")


def test_largest_changes_lists_losers_then_gainers(runs: tuple[Path, Path]) -> None:
    base, other = (read_per_case(p) for p in runs)
    changes = largest_changes(base, other, "DSC_AUC", 1)
    assert [c for c, _ in changes] == ["c", "a"]
    assert changes[0][1] == pytest.approx(-0.1) and changes[1][1] == pytest.approx(0.5)


def test_per_step_means(runs: tuple[Path, Path]) -> None:
    base = read_per_case(runs[0])
    assert per_step_means(base, ["a", "b"]) == pytest.approx([0.5, 0.65])
    # a click-only case's DSC_1 is the organizers' 0 placeholder: left out of step 1
    base["a"]["box_step"], base["a"]["DSC_1"] = 0.0, 0.0
    assert per_step_means(base, ["a", "b"]) == pytest.approx([0.7, 0.65])
    base["b"]["box_step"] = 0.0
    step1, step2 = per_step_means(base, ["a", "b"])
    assert math.isnan(step1) and step2 == pytest.approx(0.65)


def test_report_and_command(runs: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    text = report(*runs)
    assert "paired over 3 cases" in text
    assert "DSC_AUC      2.000   2.167  +0.167" in text
    assert main(["compare", str(runs[0]), str(runs[1]), "--show", "1"]) == 0
    out = capsys.readouterr().out
    assert "+0.500  a" in out and "-0.100  c" in out


def test_report_counts_the_cases_that_move_more_than_the_limit(runs: tuple[Path, Path]) -> None:
    # a +0.5, b +0.1, c -0.1: two move more than 0.05 up, one down
    assert "moves more than 0.05: 2 up, 1 down" in report(*runs)


def test_repeated_pairs_average_each_case(runs: tuple[Path, Path], tmp_path: Path) -> None:
    base2 = _write(
        tmp_path / "base2.csv",
        [
            "a.npz,2.0,1,1,1,1,1,ensam,1,",
            "b.npz,3.0,1,1,1,1,1,ensam,1,",
            "c.npz,1.0,1,1,1,1,1,ensam,1,",
        ],
    )
    other2 = _write(
        tmp_path / "other2.csv",
        [
            "a.npz,1.9,1,1,1,1,1,ensam,1,",
            "b.npz,3.1,1,1,1,1,1,ensam,1,",
            "c.npz,1.06,1,1,1,1,1,ensam,1,",
        ],
    )
    pairs = [(read_per_case(b), read_per_case(o)) for b, o in (runs, (base2, other2))]
    diffs = averaged_diffs(pairs, "DSC_AUC")
    # first pair a +0.5, b +0.1, c -0.1; second a -0.1, b +0.1, c +0.06
    assert sorted(diffs) == ["a", "b", "c"]
    assert diffs["a"][0] == pytest.approx(0.2) and diffs["a"][1] == pytest.approx([0.5, -0.1])
    assert diffs["c"][0] == pytest.approx(-0.02)
    text = repeated_report([runs, (base2, other2)], show=1)
    mean = (0.2 + 0.1 - 0.02) / 3
    assert f"{mean:+.3f}" in text and "2 better / 1 worse" in text
    assert "passes 0.05: 2 up, 0 down" in text
    assert "-0.020  c  [-0.100, +0.060]" in text


def test_compare_command_with_a_repeat(
    runs: tuple[Path, Path], capsys: pytest.CaptureFixture
) -> None:
    args = ["compare", str(runs[0]), str(runs[1]), "--repeat", str(runs[0]), str(runs[1])]
    assert main(args) == 0
    assert "over 2 pairs, per case averaged (3 cases)" in capsys.readouterr().out


def test_compare_command_says_in_one_line_what_it_cannot_read(
    runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    missing = tmp_path / "nothing.csv"
    assert (
        main(["compare", str(runs[0]), str(runs[1]), "--repeat", str(runs[0]), str(missing)]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "nothing.csv" in err and "\n" not in err
    other = tmp_path / "summary.csv"
    other.write_text("method,group,DSC_AUC\nensam,all,2.0\n")
    assert main(["compare", str(runs[0]), str(other)]) == 2
    assert "is not a per-case CSV (no CaseName)" in capsys.readouterr().err
