import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from ensam_infer.model.conv import Conv3d

# (in, out, kernel, stride, padding, bias): the network's convolutions
SHAPES = [(16, 16, 3, 1, 1, False), (16, 32, 3, 2, 1, False), (8, 1, 1, 1, 0, True),
          (1, 8, 2, 2, 0, True)]  # fmt: skip
# (batch, in, out, kernel, padding, bias): stride-1 convolutions our own backward pass takes
OWN_BACKWARD = [(1, 16, 16, 3, 1, False), (2, 4, 8, 3, 1, True), (1, 3, 5, 3, 0, True),
                (1, 4, 4, (3, 1, 3), (1, 0, 1), False), (2, 2, 3, 5, 2, False)]  # fmt: skip


def _ops(fn) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages()}


@pytest.mark.parametrize("spec", SHAPES)
def test_conv3d_gives_pytorchs_answer_and_gradients(spec):
    cin, cout, k, stride, pad, bias = spec
    torch.manual_seed(0)
    conv = Conv3d(cin, cout, k, stride=stride, padding=pad, bias=bias)
    x = torch.randn(1, cin, 12, 10, 14, requires_grad=True)
    ours = conv(x)
    ref = F.conv3d(x, conv.weight, conv.bias, stride, pad)
    assert ours.shape == ref.shape
    assert torch.allclose(ours, ref, atol=1e-4, rtol=1e-4)
    g = torch.randn_like(ref)
    params = [x, conv.weight] + ([conv.bias] if bias else [])
    grads = zip(
        torch.autograd.grad(ours, params, g), torch.autograd.grad(ref, params, g), strict=True
    )
    for a, b in grads:
        assert torch.allclose(a, b, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("spec", OWN_BACKWARD)
def test_own_backward_gives_pytorchs_gradients(spec):
    batch, cin, cout, k, pad, bias = spec
    torch.manual_seed(1)
    conv = Conv3d(cin, cout, k, padding=pad, bias=bias)
    x = torch.randn(batch, cin, 9, 11, 7, requires_grad=True)
    ours = conv(x)
    ref = F.conv3d(x, conv.weight, conv.bias, 1, pad)
    assert ours.grad_fn.name() == "_OneDnnConv3dBackward"  # the path under test ran
    g = torch.randn_like(ref)
    params = [x, conv.weight] + ([conv.bias] if bias else [])
    for a, b in zip(
        torch.autograd.grad(ours, params, g), torch.autograd.grad(ref, params, g), strict=True
    ):
        assert a.shape == b.shape and a.is_contiguous()
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_own_backward_works_under_torch_func():
    torch.manual_seed(2)
    conv = Conv3d(3, 4, 3, padding=1)
    x = torch.randn(1, 3, 6, 7, 5)
    ours = torch.func.grad(lambda t: conv(t).square().sum())(x)
    ref = torch.func.grad(lambda t: F.conv3d(t, conv.weight, conv.bias, 1, 1).square().sum())(x)
    assert torch.allclose(ours, ref, atol=1e-4, rtol=1e-4)


def test_own_backward_takes_only_the_gradients_asked_for():
    conv = Conv3d(2, 2, 3, padding=1)
    conv.weight.requires_grad_(False)
    x = torch.randn(1, 2, 6, 6, 6, requires_grad=True)
    conv(x).sum().backward()
    assert x.grad is not None and conv.weight.grad is None and conv.bias.grad is not None


def test_backward_of_a_batch_of_one_stays_in_onednn():
    torch.manual_seed(0)
    conv = Conv3d(16, 16, 3, padding=1, bias=False)
    x = torch.randn(1, 16, 24, 24, 40, requires_grad=True)
    # PyTorch differentiates even its own oneDNN forward pass with its native kernel here
    native = torch.mkldnn_convolution(x, conv.weight, None, (1, 1, 1), (1, 1, 1), (1, 1, 1), 1)
    assert "aten::convolution_backward" in _ops(lambda: native.sum().backward())
    ops = _ops(lambda: conv(x).sum().backward())
    assert "aten::convolution_backward" not in ops and "aten::mkldnn_convolution" in ops


def test_a_batch_of_one_runs_in_onednn_where_pytorch_would_use_its_native_kernel():
    torch.manual_seed(0)
    conv = Conv3d(16, 16, 3, padding=1, bias=False)
    x = torch.randn(1, 16, 24, 24, 40)  # 1 x 16 x 24 x 24 = 9,216: below PyTorch's threshold
    with torch.no_grad():
        assert "aten::slow_conv3d_forward" in _ops(lambda: F.conv3d(x, conv.weight, padding=1))
        ops = _ops(lambda: conv(x))
    assert "aten::mkldnn_convolution" in ops and "aten::slow_conv3d_forward" not in ops


def test_autocast_keeps_pytorchs_own_choice():
    conv = Conv3d(4, 4, 3, padding=1)
    x = torch.randn(1, 4, 8, 8, 8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x)
    assert out.dtype == torch.bfloat16


def test_torch_compile_traces_it():
    torch.manual_seed(3)
    conv = Conv3d(2, 3, 3, padding=1)
    x = torch.randn(1, 2, 6, 6, 6)
    compiled = torch.compile(conv, backend="eager")  # tracing alone is what failed
    assert torch.allclose(compiled(x), conv(x), atol=1e-5)


def test_checkpoints_are_nn_conv3ds():
    ours = Conv3d(4, 8, 3, padding=1)
    plain = torch.nn.Conv3d(4, 8, 3, padding=1)
    plain.load_state_dict(ours.state_dict())
    ours.load_state_dict(plain.state_dict())
    assert isinstance(ours, torch.nn.Conv3d)  # Muon takes its kernel like any convolution's
