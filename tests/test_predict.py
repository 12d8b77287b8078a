"""Faults around the files rather than their content: broken archives, unusable folders,
crashes mid-case, and the exit status of `python -m ensam_infer predict`.

The rule under test: one bad case costs only itself; an output is either the old file or the
complete new one, never a half; the exit status is 1 when some case failed, 0 otherwise."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ensam_infer import predict as predict_mod
from ensam_infer.__main__ import main
from ensam_infer.predict import predict_folder
from ensam_infer.session import EnsamSession

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (8, 24, 24)


def good_case(path: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, SHAPE).astype(np.uint8)
    img[2:6, 6:18, 6:18] += 150
    boxes = np.empty(1, dtype=object)
    boxes[0] = {
        "z_min": 2, "z_max": 5, "z_mid": 3,
        "z_mid_y_min": 6, "z_mid_x_min": 6, "z_mid_y_max": 17, "z_mid_x_max": 17,
    }  # fmt: skip
    np.savez_compressed(path, imgs=img, boxes=boxes, spacing=np.array([1.0, 1.0, 2.5]))


def load_segs(path: Path) -> np.ndarray:
    with np.load(path) as data:
        return data["segs"]


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.tmp"))


@pytest.fixture(scope="module")
def session(tiny_weights: Path) -> EnsamSession:
    return EnsamSession(tiny_weights, device="cpu")


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path]:
    inp, out = tmp_path / "inputs", tmp_path / "outputs"
    inp.mkdir()
    out.mkdir()
    good_case(inp / "good.npz")
    return inp, out


def truncated(path: Path) -> None:
    good_case(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def corrupt_middle(path: Path) -> None:
    good_case(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 3 : len(data) // 3 + 64] = bytes(64)
    path.write_bytes(bytes(data))


def npy_named_npz(path: Path) -> None:
    with open(path, "wb") as f:
        np.save(f, np.zeros(SHAPE, np.uint8))


FILE_FAULTS = {
    "truncated": (truncated, "unreadable npz (BadZipFile"),
    "corrupt_middle": (corrupt_middle, "unreadable npz"),
    "not_a_zip": (lambda p: p.write_bytes(bytes(range(256)) * 4), "not an npz (zip) archive"),
    "text": (lambda p: p.write_text("imgs = 3\n"), "not an npz (zip) archive"),
    "empty": (lambda p: p.write_bytes(b""), "empty file"),
    "npy_named_npz": (npy_named_npz, "not an npz (zip) archive"),
}


@pytest.mark.parametrize("fault", list(FILE_FAULTS))
def test_unreadable_file_beside_a_good_case(folders, session: EnsamSession, fault: str):
    inp, out = folders
    make, message = FILE_FAULTS[fault]
    make(inp / "bad.npz")
    log = io.StringIO()
    results = {r.name: r for r in predict_folder(inp, out, session, log=log)}
    assert results["good"].ok and load_segs(out / "good.npz").shape == SHAPE
    assert not results["bad"].ok and message in results["bad"].message
    bad_lines = [line for line in log.getvalue().splitlines() if line.startswith("bad:")]
    assert bad_lines == [f"bad: ERROR: {results['bad'].message}"]
    assert not (out / "bad.npz").exists() and not temp_files(out)


def test_a_folder_named_like_a_case_is_skipped(folders, session: EnsamSession):
    inp, out = folders
    (inp / "dir.npz").mkdir()
    results = predict_folder(inp, out, session, log=io.StringIO())
    assert [r.name for r in results] == ["good"]


def test_an_unexpected_exception_costs_only_its_case(folders, session, monkeypatch):
    inp, out = folders
    good_case(inp / "bad.npz", seed=1)
    real = predict_mod.segment_case

    def flaky(session, case, cache):
        if case.name == "bad":
            raise RuntimeError("CUDA out of memory\nsecond line")
        return real(session, case, cache)

    monkeypatch.setattr(predict_mod, "segment_case", flaky)
    log = io.StringIO()
    results = {r.name: r for r in predict_folder(inp, out, session, log=log)}
    assert results["good"].ok and (out / "good.npz").exists()
    assert results["bad"].message == "RuntimeError: CUDA out of memory"
    assert "bad: ERROR: RuntimeError: CUDA out of memory\n" in log.getvalue()


# ----- folders ------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["under_a_file", "is_a_file"])
def test_unwritable_output_folder(tmp_path: Path, tiny_weights: Path, capsys, where: str):
    inp = tmp_path / "inputs"
    inp.mkdir()
    good_case(inp / "good.npz")
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file")
    out = blocker / "outputs" if where == "under_a_file" else blocker
    code = main(["predict", "--input", str(inp), "--output", str(out), "--weights",
                 str(tiny_weights), "--device", "cpu"])  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0
    assert err.startswith("error: ") and str(blocker) in err and len(err.splitlines()) == 1
    assert blocker.read_text() == "a regular file"


def test_output_folder_gone_fails_each_case_clearly(folders, session: EnsamSession):
    inp, out = folders
    out.rmdir()
    out.write_text("not a folder")
    results = predict_folder(inp, out, session, log=io.StringIO())
    assert not results[0].ok
    assert results[0].message.startswith(f"cannot write {out / 'good.npz'} (Not a directory")


def test_read_only_input_folder(folders, tiny_weights: Path):
    inp, out = folders
    os.chmod(inp / "good.npz", 0o444)
    os.chmod(inp, 0o555)
    try:
        code = main(["predict", "--input", str(inp), "--output", str(out), "--weights",
                     str(tiny_weights), "--device", "cpu"])  # fmt: skip
    finally:
        os.chmod(inp, 0o755)
    assert code == 0 and load_segs(out / "good.npz").shape == SHAPE


# ----- exit status --------------------------------------------------------------------------
def cli(inp: Path, out: Path, weights: Path) -> int:
    return main(["predict", "--input", str(inp), "--output", str(out), "--weights",
                 str(weights), "--device", "cpu"])  # fmt: skip


def test_exit_status_0_when_every_case_succeeds(folders, tiny_weights: Path):
    inp, out = folders
    good_case(inp / "second.npz", seed=1)
    assert cli(inp, out, tiny_weights) == 0


def test_exit_status_0_when_a_case_is_only_repaired(folders, tiny_weights: Path, capsys):
    inp, out = folders
    with np.load(inp / "good.npz", allow_pickle=True) as data:
        arrays = dict(data)
    np.savez_compressed(inp / "repaired.npz", **{**arrays, "imgs": arrays["imgs"] * 1.5})
    assert cli(inp, out, tiny_weights) == 0
    assert "repaired: warning: 'imgs' is float64" in capsys.readouterr().err


def test_exit_status_1_when_some_case_fails(folders, tiny_weights: Path, capsys):
    inp, out = folders
    (inp / "broken.npz").write_bytes(b"")
    assert cli(inp, out, tiny_weights) == 1
    assert "broken: ERROR: empty file" in capsys.readouterr().err
    assert (out / "good.npz").exists()


def test_exit_status_2_without_an_input_folder(tmp_path: Path, tiny_weights: Path):
    assert cli(tmp_path / "missing", tmp_path / "out", tiny_weights) == 2


def test_cli_subprocess_exit_status_and_log(folders, tiny_weights: Path):
    inp, out = folders
    (inp / "broken.npz").write_text("not an npz")
    proc = subprocess.run(
        [sys.executable, "-m", "ensam_infer", "predict", "--input", str(inp), "--output",
         str(out), "--weights", str(tiny_weights), "--device", "cpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "broken: ERROR: not an npz (zip) archive" in proc.stderr
    assert load_segs(out / "good.npz").shape == SHAPE


# ----- atomic writes ------------------------------------------------------------------------
def half_write_then(action):
    """A stand-in for np.savez_compressed that writes part of a file, then `action()`."""

    def fake(file, **arrays):
        file.write(b"PK\x03\x04" + bytes(4096))
        file.flush()
        action()

    return fake


def test_failed_write_keeps_the_old_output(folders, session: EnsamSession, monkeypatch):
    inp, out = folders
    assert predict_folder(inp, out, session, log=io.StringIO())[0].ok
    before = (out / "good.npz").read_bytes()

    def disk_full():
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", half_write_then(disk_full))
    result = predict_folder(inp, out, session, log=io.StringIO())[0]
    assert not result.ok
    assert result.message == f"cannot write {out / 'good.npz'} (No space left on device)"
    assert (out / "good.npz").read_bytes() == before
    assert not temp_files(out)
    monkeypatch.undo()
    assert predict_folder(inp, out, session, log=io.StringIO())[0].ok
    assert load_segs(out / "good.npz").shape == SHAPE


def test_process_killed_mid_write_then_rerun(folders, tiny_weights: Path):
    """SIGKILL runs no clean-up: the old output must survive untouched, and the next run
    must succeed and sweep the dead temporary file away."""
    inp, out = folders
    assert cli(inp, out, tiny_weights) == 0
    before = (out / "good.npz").read_bytes()
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        import numpy as np
        def fake(file, **arrays):
            file.write(b"PK\\x03\\x04" + bytes(4096))
            file.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        np.savez_compressed = fake
        from ensam_infer.__main__ import main
        sys.exit(main(["predict", "--input", {str(inp)!r}, "--output", {str(out)!r},
                       "--weights", {str(tiny_weights)!r}, "--device", "cpu"]))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert (out / "good.npz").read_bytes() == before
    assert [n.startswith(".good.npz.") for n in temp_files(out)] == [True]
    assert cli(inp, out, tiny_weights) == 0
    assert load_segs(out / "good.npz").shape == SHAPE
    assert not temp_files(out)
