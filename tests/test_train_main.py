from ensam_infer.model import build_model, read_metadata, save_checkpoint
from ensam_train.__main__ import main


def _run_with_weights(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    model = build_model("ensam_tiny")
    model.config.trained = True
    save_checkpoint(model, run / "model.pt", metadata={"steps": 7})
    return run


def test_export_keeps_the_validated_inference_settings(tmp_path, capsys):
    run = _run_with_weights(tmp_path)
    out = tmp_path / "ensam.pt"
    assert main(["export", "--run-dir", str(run), "--out", str(out), "--crop", "object"]) == 0
    assert read_metadata(out)["inference_crop"] == "object"
    # a later export without settings keeps those of the weights it replaces
    assert main(["export", "--run-dir", str(run), "--out", str(out), "--max-voxels", "4096"]) == 0
    meta = read_metadata(out)
    assert meta["steps"] == 7
    assert meta["inference_crop"] == "object" and meta["inference_max_voxels"] == 4096
    assert "inference_crop=object" in capsys.readouterr().out


def test_export_to_a_new_file_keeps_the_runs_own_inference_settings(tmp_path, capsys):
    # a run started with --init carries its starting weights' settings in model.pt
    run = tmp_path / "run"
    run.mkdir()
    model = build_model("ensam_tiny")
    model.config.trained = True
    settings = {"inference_crop": "object", "inference_max_voxels": 4096, "inference_tta": 2}
    save_checkpoint(model, run / "model.pt", metadata={"steps": 7, **settings})
    out = tmp_path / "candidate.pt"
    assert main(["export", "--run-dir", str(run), "--out", str(out)]) == 0
    meta = read_metadata(out)
    assert {k: meta.get(k) for k in settings} == settings
    assert "inference_tta=2" in capsys.readouterr().out


def test_export_refuses_untrained_weights(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(build_model("ensam_tiny"), run / "model.pt")
    out = tmp_path / "ensam.pt"
    assert main(["export", "--run-dir", str(run), "--out", str(out)]) == 1
    assert not out.exists()
