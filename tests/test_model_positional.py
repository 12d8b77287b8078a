import torch

from ensam_infer.model.positional import (
    RotaryEncoding,
    SinusoidalEncoding,
    grid_positions,
)
from ensam_infer.model.transformer import Attention


def test_rope_mixed_closed_form_equals_matrix_exp():
    enc = RotaryEncoding(heads=2, head_dim=8)
    pos = torch.rand(1, 5, 3)
    x = torch.randn(1, 2, 5, 8)
    rot = enc.rotations(pos)  # (1, 5, heads, d, d)
    expected = torch.einsum("bnhij,bhnj->bhni", rot, x)
    # angles reach ~100 pi, where float32 matrix_exp keeps about 1e-4 absolute accuracy
    torch.testing.assert_close(enc(x, pos), expected, atol=1e-3, rtol=1e-3)


def test_generators_are_skew_symmetric():
    for full in (False, True):
        a = RotaryEncoding(heads=2, head_dim=8, full_blocks=full).generators()
        torch.testing.assert_close(a, -a.transpose(-1, -2))


def test_rotations_are_orthogonal():
    for full in (False, True):
        rot = RotaryEncoding(heads=2, head_dim=8, full_blocks=full).rotations(torch.rand(4, 3))
        eye = torch.eye(8).expand_as(rot)
        torch.testing.assert_close(rot @ rot.transpose(-1, -2), eye, atol=1e-4, rtol=1e-4)


def _logits(attn: Attention, q_in, k_in, q_pos, k_pos):
    q, k = attn.logits_inputs(q_in, k_in, q_pos, k_pos)
    return q @ k.transpose(-1, -2)


def test_rope_mixed_attention_depends_only_on_relative_position():
    torch.manual_seed(0)
    attn = Attention(32, 4, RotaryEncoding(4, 8))
    q_in, k_in = torch.randn(1, 6, 32), torch.randn(1, 9, 32)
    q_pos, k_pos = torch.rand(1, 6, 3), torch.rand(1, 9, 3)
    shift = torch.tensor([0.3, -0.7, 1.9])
    before = _logits(attn, q_in, k_in, q_pos, k_pos)
    after = _logits(attn, q_in, k_in, q_pos + shift, k_pos + shift)
    torch.testing.assert_close(before, after, atol=1e-4, rtol=1e-4)
    # ...and it does depend on where the tokens are relative to each other.
    moved = _logits(attn, q_in, k_in, q_pos + shift, k_pos)
    assert (moved - before).abs().max() > 1e-2


def test_liere_is_not_translation_invariant_in_general():
    torch.manual_seed(0)
    enc = RotaryEncoding(4, 8, full_blocks=True)
    with torch.no_grad():
        enc.weight.normal_()
    attn = Attention(32, 4, enc)
    q_in, k_in = torch.randn(1, 3, 32), torch.randn(1, 3, 32)
    q_pos, k_pos = torch.rand(1, 3, 3), torch.rand(1, 3, 3)
    shift = torch.tensor([0.5, 0.5, 0.5])
    before = _logits(attn, q_in, k_in, q_pos, k_pos)
    after = _logits(attn, q_in, k_in, q_pos + shift, k_pos + shift)
    assert (before - after).abs().max() > 1e-3


def test_sinusoidal_encoding_shape_and_distinct_positions():
    enc = SinusoidalEncoding(128)
    out = enc(torch.tensor([[0.1, 0.2, 0.3], [0.1, 0.2, 0.31]]))
    assert out.shape == (2, 128)
    assert (out[0] - out[1]).abs().max() > 1e-3


def test_grid_positions_are_cell_centres():
    pos = grid_positions((2, 1, 1), stride=8, extent=16.0)
    torch.testing.assert_close(pos, torch.tensor([[4.0, 4.0, 4.0], [12.0, 4.0, 4.0]]) / 16)
