"""Training end to end on the CPU with the tiny smoke configuration."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ensam_infer.model import build_model, load_checkpoint
from ensam_train.example import make_example
from ensam_train.interaction import run_interaction
from ensam_train.optim import build_optimizers
from ensam_train.train import train

SMOKE = Path(__file__).resolve().parents[1] / "ensam_train" / "configs" / "smoke.json"


def _fixed_example():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 40, (16, 24, 24)).astype(np.uint8)
    mask = np.zeros(image.shape, bool)
    mask[5:11, 7:17, 8:15] = True
    image[mask] = 200
    return make_example(image, mask, rng, max_voxels=16 * 24 * 24, augment=False)


def test_loss_goes_down_on_a_fixed_example():
    torch.manual_seed(0)
    model = build_model("ensam_tiny")
    opts = build_optimizers(model, "muon", 2e-3, 0.0)
    example = _fixed_example()
    losses = []
    for _ in range(20):
        for opt in opts:
            opt.zero_grad()
        loss, dices = run_interaction(model, example, 1, torch.device("cpu"))
        loss.backward()
        for opt in opts:
            opt.step()
        model.renormalize_()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses
    assert dices[-1] > 0.5


def test_run_resumes_exactly(tmp_path):
    straight = tmp_path / "straight"
    split = tmp_path / "split"
    warm = {"train": {"warmup": 10}}  # the schedule must continue, not restart, on resume
    train(straight, SMOKE, overrides=warm, max_steps=4)
    train(split, SMOKE, overrides=warm, max_steps=2)
    train(split, SMOKE, max_steps=4)  # resumes from the checkpoint written at step 2
    a = torch.load(straight / "checkpoint.pt", weights_only=False)
    b = torch.load(split / "checkpoint.pt", weights_only=False)
    assert a["state"]["step"] == b["state"]["step"] == 4
    assert a["state"]["sample"] == b["state"]["sample"]
    for key, value in a["model"].items():
        torch.testing.assert_close(value, b["model"][key], msg=key)
    records = [json.loads(x) for x in (split / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train_records] == [1, 2, 3, 4]
    assert [r["lr"] for r in train_records] == pytest.approx([2e-4, 4e-4, 6e-4, 8e-4])
    assert (split / "plot.png").stat().st_size > 0
    exported = load_checkpoint(split / "model.pt")
    assert exported.config.trained
    assert exported.metadata["steps"] == 4


def test_plot_before_the_first_log_line_is_skipped(tmp_path):
    # the first checkpoint can come before the first metrics line on a slow machine
    from ensam_train.train import write_plot

    assert write_plot(tmp_path) is None
