"""The command line, run as a user (and the container) runs it: a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]


def _cli(*args, check=True, env=None):
    proc = subprocess.run(
        [sys.executable, "-m", "ensam_infer", *map(str, args)],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr}")
    return proc


def test_predict_on_the_sample_cases(tmp_path, tiny_weights):
    _cli("samples", "--out", tmp_path / "samples")
    out = tmp_path / "out"
    proc = _cli(
        "predict",
        "--input", tmp_path / "samples" / "imgs",
        "--output", out,
        "--weights", tiny_weights,
    )  # fmt: skip
    inputs = sorted((tmp_path / "samples" / "imgs").glob("*.npz"))
    for path in inputs:
        segs = np.load(out / path.name)["segs"]
        imgs = np.load(path, allow_pickle=True)["imgs"]
        assert segs.dtype == np.uint8 and segs.shape == imgs.shape
        assert segs.any()
        # one progress line per case, with its time
        assert any(
            line.startswith(path.stem + ":") and " s" in line for line in proc.stderr.splitlines()
        )


def test_predict_exit_status_reports_failed_cases(tmp_path, tiny_weights):
    _cli("samples", "--out", tmp_path / "samples")
    (tmp_path / "samples" / "imgs" / "Broken.npz").write_bytes(b"not an npz")
    proc = _cli(
        "predict",
        "--input", tmp_path / "samples" / "imgs",
        "--output", tmp_path / "out",
        "--weights", tiny_weights,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "Broken: ERROR: " in proc.stderr
    assert (tmp_path / "out" / "Sample_phantom_organs.npz").is_file()


def test_predict_with_mirrors_and_a_bad_mirror_count(tmp_path, tiny_weights):
    _cli("samples", "--out", tmp_path / "samples")
    imgs = tmp_path / "samples" / "imgs"
    _cli("predict", "--input", imgs, "--output", tmp_path / "o4", "--weights", tiny_weights,
         "--tta", "4")  # fmt: skip
    for path in imgs.glob("*.npz"):
        segs = np.load(tmp_path / "o4" / path.name)["segs"]
        assert segs.shape == np.load(path, allow_pickle=True)["imgs"].shape and segs.any()
    proc = _cli("predict", "--input", imgs, "--output", tmp_path / "o9", "--tta", "9", check=False)
    assert proc.returncode == 2 and "--tta" in proc.stderr
    proc = _cli(
        "predict", "--input", imgs, "--output", tmp_path / "ox", "--weights", tiny_weights,
        check=False, env={"ENSAM_TTA": "many"},
    )  # fmt: skip
    assert proc.returncode == 2 and "ENSAM_TTA must be a whole number" in proc.stderr


def test_predict_without_weights_or_input_is_a_clear_error(tmp_path):
    proc = _cli("predict", "--input", tmp_path / "nope", "--output", tmp_path, check=False)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    (tmp_path / "in").mkdir()
    proc = _cli(
        "predict", "--input", tmp_path / "in", "--output", tmp_path / "o",
        "--weights", tmp_path / "none.pt", check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "no ENSAM weights" in proc.stderr


def test_segment_a_nifti_image_from_a_prompt_file(tmp_path, tiny_weights):
    arr = np.zeros((12, 24, 24), np.float32)
    arr[4:8, 8:16, 8:16] = 300.0
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.7, 0.7, 3.0))
    sitk.WriteImage(img, str(tmp_path / "ct.nrrd"))
    prompts = {
        "objects": [{"id": 5, "box": [4, 8, 8, 7, 15, 15], "clicks": [{"point": [5, 10, 10]}]}]
    }
    (tmp_path / "p.json").write_text(json.dumps(prompts))
    out = tmp_path / "mask.nii.gz"
    proc = _cli(
        "segment", "--image", tmp_path / "ct.nrrd", "--prompts", tmp_path / "p.json",
        "--output", out, "--weights", tiny_weights,
    )  # fmt: skip
    assert "1 objects" in proc.stdout
    mask = sitk.ReadImage(str(out))
    assert np.allclose(mask.GetSpacing(), (0.7, 0.7, 3.0))
    values = set(np.unique(sitk.GetArrayFromImage(mask)))
    assert values <= {0, 5} and 5 in values


def test_init_weights_writes_an_untrained_checkpoint(tmp_path):
    _cli("init-weights", "--out", tmp_path / "w.pt")
    from ensam_infer.model import load_checkpoint

    assert load_checkpoint(tmp_path / "w.pt").config.trained is False


def test_rules_help_names_every_rule():
    # the help text is a literal (the CLI does not import torch to print it): keep it whole
    from ensam_infer.__main__ import RULES_HELP
    from ensam_infer.rules import RULE_NAMES

    assert all(name in RULES_HELP for name in RULE_NAMES)
