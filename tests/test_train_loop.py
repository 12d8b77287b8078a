"""Training end to end on the CPU with the tiny smoke configuration."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ensam_infer.model import build_model, load_checkpoint, save_checkpoint, set_metadata
from ensam_train.config import load_config
from ensam_train.data.intensity import RealIntensity
from ensam_train.example import make_example
from ensam_train.interaction import run_interaction
from ensam_train.optim import build_optimizers
from ensam_train.train import ExampleStream, train, weights_digest

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


def test_the_config_sets_the_real_images_intensity_changes():
    shapes_only = {"probs": {"shapes": 1.0}}
    plain = ExampleStream(load_config(SMOKE, {"data": shapes_only}))
    assert plain.sampler.real_intensity is None
    cfg = load_config(SMOKE, {"data": {**shapes_only, "real_intensity": {"p_invert": 0.5}}})
    assert ExampleStream(cfg).sampler.real_intensity == RealIntensity(p_invert=0.5)


def test_fine_tuning_cases_get_the_intensity_changes_only_when_configured():
    image = np.random.default_rng(1).integers(1, 256, (8, 12, 12)).astype(np.uint8)
    labels = np.zeros(image.shape, np.uint8)
    labels[2:6, 3:9, 3:9] = 1
    original = image.copy()
    volumes = [(image, labels, np.ones(3))]
    plain = ExampleStream(load_config(SMOKE), volumes=volumes).sampler
    assert plain.real_intensity is None
    assert plain.sample(np.random.default_rng(0))[0] is image
    cfg = load_config(SMOKE, {"data": {"real_intensity": {"p": 1.0}}})
    changed = ExampleStream(cfg, volumes=volumes).sampler
    out, lab, _ = changed.sample(np.random.default_rng(0))
    assert not np.array_equal(out, image) and lab is labels
    assert np.count_nonzero(out) == image.size  # no tissue voxel becomes background
    assert np.array_equal(out, changed.sample(np.random.default_rng(0))[0])
    assert np.array_equal(image, original)  # the user's case is not changed in place


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


def _torchrun(tmp_path: Path, run_dir: Path, steps: int, *extra: str) -> None:
    # --standalone: torchrun finds a free port itself (no race with other processes).
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "ensam_train", "train"]
    cmd += ["--run-dir", str(run_dir), "--config", str(SMOKE), "--steps", str(steps), *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(SMOKE.parents[2]))
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_and_resumes(tmp_path):
    # Two gloo ranks with one sample each per step see samples 2i and 2i+1, exactly what a
    # single process accumulating two samples sees: DDP's gradient average must give the
    # same update, and every rank must hold the same weights. (Not bit for bit: AdamW's
    # first steps move every weight by about lr * sign(grad), so weights whose gradient is
    # float noise may flip. Measured: cosine 0.998 against the accumulating run, 0.64-0.81
    # against a run that sees other samples.)
    ddp = tmp_path / "ddp"
    _torchrun(tmp_path, ddp, 2)
    _torchrun(tmp_path, ddp, 3)  # resumes from rank 0's checkpoint at step 2
    ranks = json.loads((ddp / "ranks.json").read_text())["weights_sha256"]
    assert len(ranks) == 2 and ranks[0] == ranks[1]
    single = tmp_path / "single"
    train(single, SMOKE, overrides={"train": {"accumulate": 2}}, max_steps=3)
    a = torch.load(ddp / "checkpoint.pt", weights_only=False)
    b = torch.load(single / "checkpoint.pt", weights_only=False)
    assert a["state"]["step"] == b["state"]["step"] == 3
    assert a["state"]["sample"] * 2 == b["state"]["sample"] == 6
    assert weights_digest_of(a["model"]) == ranks[0]
    torch.manual_seed(0)  # the smoke config's seed: the weights both runs started from
    init = build_model("ensam_tiny").state_dict()
    keys = [k for k, v in init.items() if v.is_floating_point()]
    update_ddp = torch.cat([(a["model"][k] - init[k]).flatten() for k in keys])
    update_single = torch.cat([(b["model"][k] - init[k]).flatten() for k in keys])
    assert update_single.norm() > 0
    cosine = torch.nn.functional.cosine_similarity(update_ddp, update_single, dim=0)
    assert cosine > 0.99, float(cosine)


def weights_digest_of(state_dict: dict) -> str:
    model = build_model("ensam_tiny")
    model.load_state_dict(state_dict)
    return weights_digest(model)


def _old_weights(tmp_path: Path) -> Path:
    """Weights of the paper's network (no unit-latent dense path)."""
    torch.manual_seed(0)
    path = tmp_path / "old.pt"
    save_checkpoint(build_model("ensam_tiny"), path)
    return path


def test_the_unit_latent_dense_path_starts_at_zero_over_weights_without_it(tmp_path):
    old = _old_weights(tmp_path)
    new_arch = {"model": {"overrides": {"dense_on_unit_latent": True}}}
    train(tmp_path / "switched", SMOKE, overrides=new_arch, init_weights=old, max_steps=0)
    ckpt = torch.load(tmp_path / "switched" / "checkpoint.pt", weights_only=False)["model"]
    assert not ckpt["dense.out.weight"].any() and not ckpt["dense.out.bias"].any()
    assert ckpt["dense.convs.0.weight"].any()
    # weights that already have the path keep what they learned
    has_path = tmp_path / "has_path.pt"
    save_checkpoint(build_model("ensam_tiny", dense_on_unit_latent=True), has_path)
    train(tmp_path / "again", SMOKE, overrides=new_arch, init_weights=has_path, max_steps=0)
    again = torch.load(tmp_path / "again" / "checkpoint.pt", weights_only=False)["model"]
    assert again["dense.out.weight"].any()


def test_click_maps_start_at_zero_over_weights_without_them(tmp_path):
    torch.manual_seed(0)
    old = tmp_path / "unit.pt"
    save_checkpoint(build_model("ensam_tiny", dense_on_unit_latent=True), old)
    maps = {"model": {"overrides": {"dense_on_unit_latent": True, "click_map_radius": 2.0}}}
    train(tmp_path / "maps", SMOKE, overrides=maps, init_weights=old, max_steps=0)
    ckpt = torch.load(tmp_path / "maps" / "checkpoint.pt", weights_only=False)["model"]
    assert not ckpt["click_maps.path.out.weight"].any()
    assert ckpt["click_maps.path.convs.0.weight"].any() and ckpt["dense.out.weight"].any()
    # weights of another architecture are refused rather than half-loaded
    other = tmp_path / "other.pt"
    save_checkpoint(build_model("ensam_light", dense_on_unit_latent=True), other)
    with pytest.raises(RuntimeError):
        train(tmp_path / "bad", SMOKE, overrides=maps, init_weights=other, max_steps=0)


def test_a_run_keeps_its_starting_weights_inference_settings(tmp_path):
    old = _old_weights(tmp_path)
    set_metadata(old, inference_crop="object", inference_max_voxels=40_000)
    train(tmp_path / "settings", SMOKE, init_weights=old, max_steps=0)
    meta = load_checkpoint(tmp_path / "settings" / "model.pt").metadata
    assert meta["inference_crop"] == "object" and meta["inference_max_voxels"] == 40_000
    assert meta["steps"] == 0
    # and the paper's network from old weights keeps its dense path
    paper = torch.load(tmp_path / "settings" / "checkpoint.pt", weights_only=False)["model"]
    assert paper["dense.out.weight"].any()


def _spy_on_dense_prompts(model, monkeypatch) -> list:
    seen = []
    decode = model.decode

    def spy(features, prompts, prev=None, prev_valid=None):
        seen.append(None if prev is None else prev.detach().clone())
        return decode(features, prompts, prev, prev_valid)

    monkeypatch.setattr(model, "decode", spy)
    return seen


def test_mask_prompt_gives_the_previous_answer_as_a_mask(monkeypatch):
    torch.manual_seed(0)
    model = build_model("ensam_tiny")
    seen = _spy_on_dense_prompts(model, monkeypatch)
    loss, dices = run_interaction(model, _fixed_example(), 2, torch.device("cpu"), True)
    assert torch.isfinite(loss) and len(dices) == len(seen) == 3
    assert seen[0] is None  # the box step has no previous answer
    for prev in seen[1:]:
        assert set(prev.unique().tolist()) <= {-5.0, 5.0}


def test_box_prompt_gives_the_box_step_the_box_as_pseudo_logits(monkeypatch):
    torch.manual_seed(0)
    model = build_model("ensam_tiny")
    seen = _spy_on_dense_prompts(model, monkeypatch)
    example = _fixed_example()
    run_interaction(model, example, 1, torch.device("cpu"), box_prompt=True)
    first = seen[0][0, 0]
    z0, y0, x0, z1, y1, x1 = (int(v) for v in example.box)
    inside = first[z0 : z1 + 1, y0 : y1 + 1, x0 : x1 + 1]
    assert bool((inside == 5.0).all())
    assert int((first == 5.0).sum()) == inside.numel()
    assert int((first == -5.0).sum()) == first.numel() - inside.numel()
    # the click step gets the network's own logits, not the box again
    assert not set(seen[1].unique().tolist()) <= {-5.0, 5.0}


def test_a_deeper_encoder_grows_from_shallower_weights_as_the_same_function(tmp_path):
    torch.manual_seed(0)
    shallow = build_model("ensam_tiny", dense_on_unit_latent=True)
    path = tmp_path / "shallow.pt"
    save_checkpoint(shallow, path)
    deeper = {"model": {"overrides": {"dense_on_unit_latent": True, "blocks": [1, 1, 2, 3]}}}
    train(tmp_path / "grown", SMOKE, overrides=deeper, init_weights=path, max_steps=0)
    grown = load_checkpoint(tmp_path / "grown" / "model.pt")
    assert grown.config.blocks == (1, 1, 2, 3)
    state = grown.state_dict()
    for prefix in ("encoder.levels.2.1", "encoder.levels.3.1", "encoder.levels.3.2"):
        assert not state[f"{prefix}.conv2.weight"].any() and state[f"{prefix}.conv1.weight"].any()
    # the added blocks are identities: the encoder's output is the shallow one's (both as
    # stored, since weights files hold half precision)
    shallow = load_checkpoint(path)
    x = torch.rand(1, 1, 16, 16, 16)
    shallow.eval(), grown.eval()
    with torch.no_grad():
        for a, b in zip(shallow.encode(x), grown.encode(x), strict=True):
            torch.testing.assert_close(a, b)
    # other channel widths are still refused
    wider = {"model": {"overrides": {"dense_on_unit_latent": True, "channels": [8, 16, 32, 32]}}}
    with pytest.raises((RuntimeError, ValueError)):
        train(tmp_path / "wider", SMOKE, overrides=wider, init_weights=path, max_steps=0)
