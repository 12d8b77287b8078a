import torch

from ensam_infer.model import build_model
from ensam_train.optim import ReshapedMuon, build_optimizers, lr_factor, muon_parameters


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
