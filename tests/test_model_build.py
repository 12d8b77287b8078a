import numpy as np
import pytest
import torch

from ensam_infer.model import (
    ClassPrompt,
    ModelConfig,
    build_model,
    load_checkpoint,
    save_checkpoint,
)


def _param_count(model):
    return sum(p.numel() for p in model.parameters())


def test_presets_build_with_the_documented_sizes():
    full, light = build_model("ensam"), build_model("ensam_light")
    print(
        f"ensam: {_param_count(full) / 1e6:.2f} M, ensam_light: {_param_count(light) / 1e6:.2f} M"
    )
    assert 3e6 <= _param_count(full) <= 6.5e6
    assert _param_count(light) < _param_count(full)


def test_encoder_levels_and_decoder_output_shapes(tiny_model):
    x = torch.rand(1, 1, 16, 24, 32)
    feats = tiny_model.encode(x)
    assert [tuple(f.shape[2:]) for f in feats] == [(16, 24, 32), (8, 12, 16), (4, 6, 8), (2, 3, 4)]
    prompts = [
        ClassPrompt(box=(1, 2, 3, 10, 12, 20)),
        ClassPrompt(points=np.array([[5, 5, 5]]), positive=np.array([True])),
        ClassPrompt(
            box=(0, 0, 0, 4, 4, 4),
            points=np.array([[1, 1, 1], [2, 2, 2]]),
            positive=np.array([True, False]),
        ),
    ]
    logits = tiny_model.decode(feats, prompts)
    assert logits.shape == (3, 1, 16, 24, 32)
    with_prev = tiny_model.decode(feats, prompts, logits, torch.tensor([True, False, True]))
    assert with_prev.shape == logits.shape
    assert not torch.allclose(with_prev[0], logits[0])  # the dense prompt matters
    torch.testing.assert_close(with_prev[1], logits[1])  # ...only where it is marked valid


def test_input_must_be_a_multiple_of_the_stride(tiny_model):
    with pytest.raises(ValueError, match="multiple"):
        tiny_model.encode(torch.rand(1, 1, 10, 16, 16))


@pytest.mark.parametrize("positional", ["rope_mixed", "liere", "sinusoidal"])
def test_every_positional_variant_runs(positional):
    model = build_model("ensam_tiny", positional=positional)
    out = model(torch.rand(1, 1, 16, 16, 16), [ClassPrompt(box=(2, 2, 2, 9, 9, 9))])
    assert out.shape == (1, 1, 16, 16, 16) and torch.isfinite(out).all()


def test_checkpoint_round_trip_carries_the_config(tmp_path):
    model = build_model("ensam_tiny", positional="liere")
    model.config.trained = True
    save_checkpoint(model, tmp_path / "m.pt", half=False)
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.config.positional == "liere" and loaded.config.trained
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=k)


def test_untrained_checkpoint_warns(tmp_path):
    save_checkpoint(build_model("ensam_tiny"), tmp_path / "u.pt")
    with pytest.warns(UserWarning, match="UNTRAINED"):
        load_checkpoint(tmp_path / "u.pt")


def test_bad_checkpoint_and_config_are_refused(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="unknown"):
        ModelConfig.from_dict({"colour": "blue"})


def test_metadata_update_keeps_the_weights(tmp_path):
    from ensam_infer.model import read_metadata, set_metadata

    model = build_model("ensam_tiny")
    path = tmp_path / "w.pt"
    save_checkpoint(model, path, metadata={"steps": 3})
    before = load_checkpoint(path).state_dict()
    meta = set_metadata(path, inference_crop="object", inference_max_voxels=4096)
    assert meta == {"steps": 3, "inference_crop": "object", "inference_max_voxels": 4096}
    assert read_metadata(path) == meta
    after = load_checkpoint(path)
    assert all(torch.equal(before[k], v) for k, v in after.state_dict().items())
    assert set_metadata(path, inference_crop=None) == {"steps": 3, "inference_max_voxels": 4096}
