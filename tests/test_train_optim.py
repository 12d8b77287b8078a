import pytest
import torch

from ensam_infer.model import build_model
from ensam_train.optim import (
    ReshapedMuon,
    build_optimizers,
    lr_factor,
    muon_parameters,
    orthogonalized,
)


def test_muon_gets_the_matrices_and_adamw_the_rest():
    model = build_model("ensam_tiny")
    muon, other = muon_parameters(model)
    assert all(p.ndim >= 2 for p in muon)
    assert any(p.ndim == 5 for p in muon)  # convolution kernels are included
    names = {id(p): n for n, p in model.named_parameters()}
    other_names = [names[id(p)] for p in other]
    assert any("click" in n for n in other_names)  # embedding tables are not hidden layers
    assert any("theta" in n for n in other_names)  # nor are the rotary generators
    assert len(muon) + len(other) == len([p for p in model.parameters() if p.requires_grad])


def test_reshaped_muon_updates_conv_kernels_in_place_with_an_orthogonal_step():
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(4, 8, 3)
    opt = ReshapedMuon([conv.weight], lr=0.1, weight_decay=0.0, momentum=0.0, nesterov=False)
    before = conv.weight.detach().clone()
    conv.weight.grad = torch.randn_like(conv.weight)
    opt.step()
    step = (before - conv.weight.detach()).view(8, -1) / 0.1
    # Newton-Schulz makes the update's singular values close to one (roughly 0.7 to 1.2)
    s = torch.linalg.svdvals(step)
    assert s.min() > 0.5 and s.max() < 1.5
    opt.zero_grad()
    assert conv.weight.grad is None


def test_adamw_ablation_has_one_optimizer_for_everything():
    model = build_model("ensam_tiny")
    (opt,) = build_optimizers(model, "adamw", 1e-3, 0.0)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_lr_schedule_warms_up_then_decays_at_milestones():
    assert lr_factor(0, 10, [], 0.5) == 0.1
    assert lr_factor(9, 10, [], 0.5) == 1.0
    assert lr_factor(100, 10, [50, 80], 0.5) == 0.25


@pytest.mark.parametrize("shape", [(8, 108), (40, 12)])  # wide, and tall (transposed inside)
@pytest.mark.parametrize("adjust", [None, "match_rms_adamw"])
def test_reshaped_muon_takes_torch_muons_steps_with_a_float32_newton_schulz(shape, adjust):
    # The same three steps as torch.optim.Muon from the same start: the momentum state is
    # identical, the parameters differ only by the bf16 rounding of torch's iteration.
    torch.manual_seed(0)
    ours = torch.nn.Parameter(torch.randn(shape))
    ref = torch.nn.Parameter(ours.detach().clone())
    kw = {"lr": 0.05, "weight_decay": 0.01, "momentum": 0.95, "adjust_lr_fn": adjust}
    opts = [ReshapedMuon([ours], **kw), torch.optim.Muon([ref], **kw)]
    start = ours.detach().clone()
    for _ in range(3):
        grad = torch.randn(shape)
        ours.grad, ref.grad = grad.clone(), grad.clone()
        for opt in opts:
            opt.step()
    moved = (ref.detach() - start).norm()
    assert (ours.detach() - ref.detach()).norm() < 0.02 * moved
    (buf,) = [s["momentum_buffer"] for s in opts[0].state.values()]
    assert torch.equal(buf, opts[1].state[ref]["momentum_buffer"])
    # and its state loads into torch's optimizer as it is: the checkpoints are one format
    opts[1].load_state_dict(opts[0].state_dict())


def test_orthogonalized_is_exact_float32_newton_schulz():
    torch.manual_seed(0)
    g = torch.randn(16, 64, dtype=torch.float64)
    x = g / g.norm()
    a, b, c = 3.4445, -4.7750, 2.0315
    for _ in range(5):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    got = orthogonalized(g.float(), (a, b, c), 5, 1e-7)
    assert got.dtype == torch.float32
    assert torch.allclose(got.double(), x, atol=1e-5)
    assert torch.allclose(orthogonalized(g.T.float(), (a, b, c), 5, 1e-7).double(), x.T, atol=1e-5)
