"""The network's 3-D convolution: nn.Conv3d with float32 CPU work always sent to oneDNN,
backward pass included."""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import FunctionCtx, once_differentiable


def onednn_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `Conv3d` calls oneDNN itself: float32 on a CPU with oneDNN, outside autocast
    (there PyTorch casts to bf16 and picks its own kernel) and outside torch.compile (whose
    tracing cannot run torch.mkldnn_convolution; the compiled graph picks its own kernels)."""
    return (
        not torch.compiler.is_compiling()
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and not torch.is_autocast_enabled("cpu")
    )


def _onednn_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: tuple[int, ...]
) -> torch.Tensor:
    """A stride-1 convolution in oneDNN (which takes a kernel of any memory layout)."""
    return torch.mkldnn_convolution(x.contiguous(), weight, bias, padding, (1, 1, 1), (1, 1, 1), 1)


def input_gradient(
    grad: torch.Tensor, weight: torch.Tensor, padding: tuple[int, ...]
) -> torch.Tensor:
    """The gradient of a stride-1 convolution with respect to its input: the convolution of
    `grad` with the kernel flipped in space and its in/out channels swapped."""
    flipped = weight.flip(2, 3, 4).transpose(0, 1)
    return _onednn_conv(
        grad,
        flipped,
        None,
        tuple(k - 1 - p for k, p in zip(weight.shape[2:], padding, strict=True)),
    )


def weight_gradient(x: torch.Tensor, grad: torch.Tensor, padding: tuple[int, ...]) -> torch.Tensor:
    """The gradient of a stride-1 convolution with respect to its kernel: batch and channels
    swapped, each input channel is convolved with each output channel's gradient as a
    kernel (the sum over the batch becomes the sum over the new input channels)."""
    per_channel = _onednn_conv(x.transpose(0, 1), grad.transpose(0, 1), None, padding)
    return per_channel.transpose(0, 1).contiguous()


class _OneDnnConv3d(torch.autograd.Function):
    """A stride-1 convolution whose backward pass also runs in oneDNN. PyTorch's own
    backward re-picks its kernel by the input's size and, for the network's batch-of-one
    inputs, often runs its native one: 6-15x slower than the forward pass here. Its
    gradients are not themselves differentiable (no double backward; nothing here needs
    one)."""

    @staticmethod
    def forward(
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        padding: tuple[int, ...],
    ) -> torch.Tensor:
        return _onednn_conv(x, weight, bias, padding)

    @staticmethod
    def setup_context(ctx: FunctionCtx, inputs: tuple, output: torch.Tensor) -> None:
        # kept apart from forward so that torch.func's transforms accept the Function
        x, weight, bias, padding = inputs
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        ctx.has_bias = bias is not None

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: torch.Tensor) -> tuple:
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        wants_x, wants_w, wants_b = ctx.needs_input_grad[:3]
        dx = input_gradient(grad, weight, ctx.padding) if wants_x else None
        dw = weight_gradient(x, grad, ctx.padding) if wants_w else None
        db = grad.sum((0, 2, 3, 4)) if ctx.has_bias and wants_b else None
        return dx, dw, db, None


class Conv3d(nn.Conv3d):
    """nn.Conv3d (same parameters, same checkpoints) whose float32 CPU convolutions always
    run in oneDNN, and whose stride-1 ones are also differentiated there.

    PyTorch picks oneDNN for a 3x3x3 convolution on the CPU only when the batch is larger
    than one or batch x channels x depth x height exceeds 20,480; otherwise it runs its
    native kernel, several times slower: a 16-channel 48 x 24 x 40 input took 73 ms forward
    and 158 ms backward there, a larger 48 x 32 x 48 one 15 ms and 54 ms in oneDNN. Its
    backward pass makes the same choice again, whatever kernel ran forward. Training
    and single-mirror inference run batches of one. The results agree to float32 rounding
    (tests/test_model_conv.py)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        zero_padded = self.padding_mode == "zeros" and not isinstance(self.padding, str)
        if not (zero_padded and onednn_applies(x, self.weight)):
            return super().forward(x)
        if self._own_backward_applies(x):
            return _OneDnnConv3d.apply(x, self.weight, self.bias, self.padding)
        return torch.mkldnn_convolution(
            x.contiguous(),
            self.weight,
            self.bias,
            self.padding,
            self.stride,
            self.dilation,
            self.groups,
        )

    def _own_backward_applies(self, x: torch.Tensor) -> bool:
        """A gradient to take through a stride-1 kernel larger than 1 x 1 x 1 (PyTorch's own
        backward is fast for pointwise ones), no dilation or groups, padding below the
        kernel (the input gradient's own padding is kernel - 1 - padding)."""
        return (
            torch.is_grad_enabled()
            and (x.requires_grad or self.weight.requires_grad)
            and max(self.kernel_size) > 1
            and self.groups == 1
            and all(s == 1 for s in self.stride)
            and all(d == 1 for d in self.dilation)
            and all(p < k for p, k in zip(self.padding, self.kernel_size, strict=True))
        )
