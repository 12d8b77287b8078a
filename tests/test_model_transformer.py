import torch

from ensam_infer.model.positional import RotaryEncoding
from ensam_infer.model.transformer import TwoWayTransformer


def _transformer():
    torch.manual_seed(0)
    return TwoWayTransformer(32, 4, 2, 64, RotaryEncoding(4, 8))


def test_tokens_stay_on_the_unit_sphere():
    t = _transformer()
    prompt, image = torch.randn(2, 3, 32), torch.randn(2, 10, 32)
    valid = torch.tensor([[True, True, False], [True, False, False]])
    p, i = t(prompt, image, torch.rand(2, 3, 3), torch.rand(1, 10, 3), valid)
    torch.testing.assert_close(i.norm(dim=-1), torch.ones(2, 10), atol=1e-5, rtol=0)
    torch.testing.assert_close(p.norm(dim=-1), torch.ones(2, 3), atol=1e-5, rtol=0)


def test_padded_prompt_tokens_do_not_change_the_image():
    t = _transformer()
    prompt, image = torch.randn(1, 2, 32), torch.randn(1, 10, 32)
    pos, ipos = torch.rand(1, 2, 3), torch.rand(1, 10, 3)
    _, ref = t(prompt, image, pos, ipos, torch.tensor([[True, True]]))
    padded = torch.cat([prompt, torch.randn(1, 2, 32)], dim=1)
    ppos = torch.cat([pos, torch.rand(1, 2, 3)], dim=1)
    _, out = t(padded, image, ppos, ipos, torch.tensor([[True, True, False, False]]))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_renormalize_restores_unit_rows_after_an_update():
    t = _transformer()
    linears = [m for m in t.modules() if isinstance(m, torch.nn.Linear)]
    for m in linears:
        torch.testing.assert_close(m.weight.norm(dim=1), torch.ones(m.weight.shape[0]))
    with torch.no_grad():
        for m in linears:
            m.weight.mul_(3.0).add_(0.1)
    assert abs(float(linears[0].weight.detach().norm(dim=1).mean()) - 1.0) > 0.5
    t.renormalize_()
    for m in linears:
        torch.testing.assert_close(m.weight.norm(dim=1), torch.ones(m.weight.shape[0]))
