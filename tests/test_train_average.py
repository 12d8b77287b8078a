from pathlib import Path

import pytest
import torch

from ensam_infer.model import build_model, load_checkpoint, save_checkpoint
from ensam_train.__main__ import main
from ensam_train.average import average_weights
from ensam_train.train import train

SMOKE = Path(__file__).resolve().parents[1] / "ensam_train" / "configs" / "smoke.json"


def _saved(tmp_path, name, seed, **metadata):
    torch.manual_seed(seed)
    model = build_model("ensam_tiny")
    model.config.trained = True
    path = tmp_path / name
    save_checkpoint(model, path, half=False, metadata=metadata)
    return path, model


def test_average_is_the_mean_then_renormalized(tmp_path):
    (pa, a), (pb, b) = _saved(tmp_path, "a.pt", 0), _saved(tmp_path, "b.pt", 1, steps=9)
    avg = average_weights([pa, pb])
    sa, sb, s = a.state_dict(), b.state_dict(), avg.state_dict()
    # a convolution kernel (outside the transformer) is the plain mean
    key = next(k for k in s if k.startswith("encoder.") and k.endswith("weight"))
    torch.testing.assert_close(s[key], (sa[key] + sb[key]) / 2)
    # a transformer matrix is the mean's direction, back on unit-norm rows
    key = next(k for k in s if k.startswith("transformer.") and s[k].dim() == 2)
    mean = (sa[key] + sb[key]) / 2
    assert mean.norm(dim=1).max() < 0.999  # the mean of unit rows is shorter than one
    torch.testing.assert_close(s[key], mean / mean.norm(dim=1, keepdim=True))
    assert avg.metadata["steps"] == 9  # the last checkpoint's metadata


def test_average_refuses_different_networks(tmp_path):
    pa, _ = _saved(tmp_path, "a.pt", 0)
    other = build_model("ensam_light")
    save_checkpoint(other, tmp_path / "b.pt")
    with pytest.raises(ValueError, match="another network config"):
        average_weights([pa, tmp_path / "b.pt"])
    with pytest.raises(ValueError, match="no checkpoints"):
        average_weights([])


def test_run_snapshots_average_from_the_command_line(tmp_path, capsys):
    run = tmp_path / "run"
    train(run, SMOKE, overrides={"train": {"snapshot_every": 2}}, max_steps=6)
    snaps = sorted(p.name for p in (run / "snapshots").iterdir())
    assert snaps == ["step_000002.pt", "step_000004.pt", "step_000006.pt"]
    last = load_checkpoint(run / "snapshots" / "step_000006.pt")
    final = torch.load(run / "checkpoint.pt", weights_only=False)["model"]
    for key, value in last.state_dict().items():  # full precision, the run's own weights
        torch.testing.assert_close(value, final[key], msg=key)
    out = tmp_path / "avg.pt"
    assert main(["average", str(run / "snapshots"), "--out", str(out), "--first", "4"]) == 0
    assert "mean of 2 snapshots" in capsys.readouterr().out
    avg = load_checkpoint(out)
    assert avg.config.trained
    assert [p.rsplit("/", 1)[1] for p in avg.metadata["averaged"]] == snaps[1:]
    assert main(["average", str(tmp_path), "--out", str(out)]) == 1
