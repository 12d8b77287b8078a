"""The assembled network: how the dense prompt (previous logits) enters the latent."""

import numpy as np
import pytest
import torch

from ensam_infer.model import ClassPrompt, build_model

PROMPT = ClassPrompt(
    box=np.array([2, 4, 4, 12, 20, 20], np.float32),
    points=np.array([[6, 10, 10]], np.float32),
    positive=np.array([True]),
)


def _model(unit_latent: bool):
    torch.manual_seed(0)
    return build_model("ensam_tiny", dense_on_unit_latent=unit_latent).eval()


def _prompt_effect(model, features, prev):
    """Mean absolute change of the logits that the dense prompt causes."""
    with torch.no_grad():
        without = model.decode(features, [PROMPT], None)
        with_prev = model.decode(features, [PROMPT], prev)
    return float((with_prev - without).abs().mean())


@pytest.fixture(scope="module")
def inputs():
    torch.manual_seed(1)
    image = torch.rand(1, 1, 16, 24, 24)
    prev = torch.randn(1, 1, 16, 24, 24) * 5
    return image, prev


def test_a_large_latent_drowns_the_dense_prompt_unless_it_is_normalized_first(inputs):
    image, prev = inputs
    for unit_latent, expect_kept in ((False, False), (True, True)):
        model = _model(unit_latent)
        with torch.no_grad():
            features = model.encode(image)
        big = features[:-1] + [features[-1] * 1000]  # an encoder whose output has grown
        small_effect = _prompt_effect(model, features, prev)
        big_effect = _prompt_effect(model, big, prev)
        assert small_effect > 1e-3
        if expect_kept:
            assert big_effect == pytest.approx(small_effect, rel=1e-3)
        else:
            assert big_effect < 0.05 * small_effect


def test_unit_latent_without_a_dense_prompt_is_the_papers_network(inputs):
    image, prev = inputs
    paper, ours = _model(False), _model(True)
    ours.load_state_dict(paper.state_dict())
    with torch.no_grad():
        features = paper.encode(image)
        torch.testing.assert_close(
            ours.decode(features, [PROMPT], None), paper.decode(features, [PROMPT], None)
        )
        # a zeroed output conv adds nothing: the starting point of a fine-tune with it
        torch.nn.init.zeros_(ours.dense.out.weight)
        torch.nn.init.zeros_(ours.dense.out.bias)
        torch.testing.assert_close(
            ours.decode(features, [PROMPT], prev),
            paper.decode(features, [PROMPT], None),
            rtol=1e-4,
            atol=1e-4,
        )


def test_click_maps_start_as_a_no_op_then_make_the_clicks_matter(inputs):
    image, prev = inputs
    plain = _model(True)
    torch.manual_seed(0)
    mapped = build_model("ensam_tiny", dense_on_unit_latent=True, click_map_radius=2.0).eval()
    missing, unexpected = mapped.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("click_maps.") for k in missing)
    with torch.no_grad():
        features = plain.encode(image)
        # untrained and non-zero, the click path changes the answer...
        changed = mapped.decode(features, [PROMPT], prev) - plain.decode(features, [PROMPT], prev)
        assert float(changed.abs().mean()) > 1e-3
        # ...and with its output conv at zero (a fine-tune's start) it adds nothing,
        # with and without previous logits
        torch.nn.init.zeros_(mapped.click_maps.path.out.weight)
        torch.nn.init.zeros_(mapped.click_maps.path.out.bias)
        for dense in (prev, None):
            torch.testing.assert_close(
                mapped.decode(features, [PROMPT], dense),
                plain.decode(features, [PROMPT], dense),
                rtol=1e-4,
                atol=1e-4,
            )


def test_click_maps_draw_a_ball_per_click_on_its_own_channel():
    from ensam_infer.model.prompts import click_maps

    prompt = ClassPrompt(
        points=np.array([[5, 5, 5], [0, 0, 9]], np.float32), positive=np.array([True, False])
    )
    maps = click_maps(prompt, (10, 10, 10), radius=1.0)
    # radius 1: the voxel and its 6 face neighbours; the corner click is clipped to 4 voxels
    assert int(maps[0].sum()) == 7 and int(maps[1].sum()) == 4
    assert maps[0, 5, 5, 5] == 1 and maps[0, 5, 5, 7] == 0 and maps[1, 0, 0, 9] == 1
    assert not (maps[0] * maps[1]).any()


def test_click_maps_need_the_unit_latent_and_rotary_positions():
    with pytest.raises(ValueError, match="unit_latent"):
        build_model("ensam_tiny", click_map_radius=2.0)
    with pytest.raises(ValueError, match="rotary"):
        build_model(
            "ensam_tiny", click_map_radius=2.0, dense_on_unit_latent=True, positional="sinusoidal"
        )


def test_an_object_without_clicks_decodes_alike_alone_and_beside_one_with_clicks(inputs):
    image, _ = inputs
    torch.manual_seed(0)
    model = build_model("ensam_tiny", dense_on_unit_latent=True, click_map_radius=2.0).eval()
    boxed = ClassPrompt(box=PROMPT.box)
    with torch.no_grad():
        features = model.encode(image)
        alone = model.decode(features, [boxed])
        beside = model.decode(features, [boxed, PROMPT])
    torch.testing.assert_close(beside[:1], alone, rtol=1e-4, atol=1e-4)
