"""`ensam finetune` on a labelled NIfTI folder made by our own phantom code: the held-out
split, resume after an interruption, the before/after evaluations, the exported weights,
and the one-line errors for unusable folders."""

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from ensam_infer.__main__ import main
from ensam_infer.model import load_checkpoint, set_metadata
from ensam_infer.samples import make_phantom
from ensam_infer.session import EnsamSession
from ensam_train import finetune as ft
from ensam_train import train as train_module

NAMES = [f"case{i}" for i in range(5)]
SHAPE = (12, 16, 16)
# tiny crops, one click step, AdamW (Muon imports torch._dynamo, seconds on a small CPU)
FAST = {
    "train": {
        "optimizer": "adamw",
        "max_voxels": 16 * 16 * 16,
        "click_steps": [1, 1],
        "accumulate": 1,
        "workers": 0,
        "log_every": 1,
        "checkpoint_minutes": 0.0,  # a checkpoint after every step
    }
}


def _write(path, array, spacing=(0.8, 0.8, 2.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))


def _nifti_folder(root, names=NAMES, shape=SHAPE, nnunet=True):
    images = root / ("imagesTr" if nnunet else "images")
    labels = root / ("labelsTr" if nnunet else "labels")
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for i, name in enumerate(names):
        image, gts = make_phantom(shape, np.random.default_rng(i), ["ellipsoid"])
        ct = image.astype(np.int16) * 4 - 1000  # CT-like values: windowed to uint8 on reading
        _write(images / (f"{name}_0000.nii.gz" if nnunet else f"{name}.nii.gz"), ct)
        _write(labels / f"{name}.nii.gz", gts)
    return root


def test_finetune_resumes_and_evaluates(tmp_path, tiny_weights, monkeypatch, capsys):
    data = _nifti_folder(tmp_path / "data")
    run = tmp_path / "run"
    # starting weights that recommend inference settings, as the shipped ones do
    weights = tmp_path / "start.pt"
    shutil.copyfile(tiny_weights, weights)
    set_metadata(weights, inference_crop="object", inference_max_voxels=40_000)
    # a checkpoint every step, without the plot every step (test_train_loop covers plots)
    monkeypatch.setattr(train_module, "write_plot", lambda run_dir: None)
    _, expected_heldout = ft.split_cases(NAMES, 0.2, seed=0)
    assert len(expected_heldout) == 1

    # Interrupt the first run during step 3: the checkpoint of step 2 must survive.
    real = train_module.run_interaction
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "run_interaction", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ft.finetune(data, run, weights=weights, steps=4, overrides=FAST)
    monkeypatch.setattr(train_module, "run_interaction", real)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    assert ckpt["state"]["step"] == 2
    before_mtime = (run / "eval_before" / "summary.csv").stat().st_mtime

    result = ft.finetune(data, run, weights=weights, steps=4, overrides=FAST)
    out = capsys.readouterr().out

    info = json.loads((run / "finetune.json").read_text())
    assert info["heldout"] == result["heldout"] == expected_heldout
    assert sorted(info["train"] + info["heldout"]) == NAMES
    assert sorted(p.stem for p in (run / "heldout" / "imgs").iterdir()) == expected_heldout
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    assert ckpt["state"]["step"] == result["step"] == 4
    assert "resumed" in out and "step 4/4  loss " in out and "left ~" in out
    assert "held-out (1 case): DSC AUC " in out
    # the starting weights were scored once, before training
    assert (run / "eval_before" / "summary.csv").stat().st_mtime == before_mtime
    for name in ("eval_before", "eval_after"):
        summary = ft.read_summary(run / name)
        assert np.isfinite(summary["DSC_Final"]) and np.isfinite(summary["DSC_AUC"])
        assert (run / name / "ensam_per_case.csv").is_file()

    model = load_checkpoint(run / "model.pt")
    assert model.config.trained and model.metadata["steps"] == 4
    assert model.metadata["finetuned_from"] == str(weights.resolve())
    assert model.metadata["inference_crop"] == "object"
    assert model.metadata["inference_max_voxels"] == 40_000
    session = EnsamSession(run / "model.pt", device="cpu")
    assert session.crop == "object" and session.max_voxels == 40_000
    image = np.random.default_rng(0).integers(0, 255, SHAPE).astype(np.uint8)
    session.set_image(image, spacing=(2.0, 0.8, 0.8))
    session.add_box((3, 4, 4, 8, 11, 11), object_id=1)
    mask = session.predict()
    assert mask.shape == SHAPE and mask.dtype == np.uint8


def test_layouts_and_names(tmp_path, capsys):
    plain = _nifti_folder(tmp_path / "plain", names=["a", "b"], nnunet=False)
    (plain / "images" / "orphan.nii.gz").write_bytes(b"")
    pairs = ft.find_pairs(plain)
    assert [p.name for p in pairs] == ["a", "b"]
    assert "orphan.nii.gz: no label file" in capsys.readouterr().err

    npz = tmp_path / "npz"
    (npz / "imgs").mkdir(parents=True)
    (npz / "gts").mkdir()
    image, gts = make_phantom(SHAPE, np.random.default_rng(0), ["ellipsoid"])
    np.savez(npz / "imgs" / "CT_x.npz", imgs=image, spacing=np.array([0.8, 0.8, 2.0]))
    np.savez(npz / "gts" / "CT_x.npz", gts=gts * 7)
    (case,) = ft.load_cases(ft.find_pairs(npz))
    assert case.name == "CT_x" and case.image.dtype == np.uint8
    assert set(np.unique(case.labels)) == {0, 1}  # renumbered 1..K
    np.testing.assert_allclose(case.spacing, [2.0, 0.8, 0.8])  # (z, y, x)


def test_split_is_deterministic_and_keeps_a_training_case():
    names = [f"c{i}" for i in range(10)]
    a = ft.split_cases(names, 0.2, seed=3)
    assert a == ft.split_cases(list(reversed(names)), 0.2, seed=3)
    assert len(a[1]) == 2 and not set(a[0]) & set(a[1])
    assert len(ft.split_cases(["x", "y"], 0.9, seed=0)[1]) == 1
    assert len(ft.split_cases(["x", "y", "z"], 0.01, seed=0)[1]) == 1


def _cli_error(capsys, *args):
    code = main(["finetune", *map(str, args)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    return err


def test_empty_folder_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    err = _cli_error(capsys, "--data", tmp_path / "empty", "--run-dir", tmp_path / "run")
    assert len(err) == 1 and err[0].startswith("error: no image/label pairs in ")
    (tmp_path / "empty" / "imagesTr").mkdir()
    (tmp_path / "empty" / "labelsTr").mkdir()
    err = _cli_error(capsys, "--data", tmp_path / "empty", "--run-dir", tmp_path / "run")
    assert len(err) == 1 and err[0].startswith("error: no image/label pairs in ")


def test_mismatched_shapes_are_skipped(tmp_path, capsys, tiny_weights):
    data = _nifti_folder(tmp_path / "data", names=["good", "bad"])
    _write(data / "labelsTr" / "bad.nii.gz", np.zeros((5, 6, 7), np.uint8))
    cases = ft.load_cases(ft.find_pairs(data))
    assert [c.name for c in cases] == ["good"]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "warning: bad: image shape (12, 16, 16) and label shape (5, 6, 7) differ; skipped"
    ]
    # one case left cannot be split: a one-line error, after the warning
    err = _cli_error(
        capsys, "--data", data, "--run-dir", tmp_path / "run", "--weights", tiny_weights
    )
    assert (
        err[-1] == "error: need at least 2 usable cases (one is held out for evaluation), found 1"
    )
