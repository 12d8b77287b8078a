"""The network's 3-D convolution: nn.Conv3d with float32 CPU work always sent to oneDNN."""

from __future__ import annotations

import torch
from torch import nn


def onednn_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `Conv3d` calls oneDNN itself: float32 on a CPU with oneDNN, outside autocast
    (there PyTorch casts to bf16 and picks its own kernel)."""
    return (
        x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and not torch.is_autocast_enabled("cpu")
    )


class Conv3d(nn.Conv3d):
    """nn.Conv3d (same parameters, same checkpoints) whose float32 CPU convolutions always
    run in oneDNN.

    PyTorch picks oneDNN for a 3x3x3 convolution on the CPU only when the batch is larger
    than one or batch x channels x depth x height exceeds 20,480; otherwise it runs its
    native kernel, several times slower: a 16-channel 48 x 24 x 40 input took 73 ms forward
    and 158 ms backward there, a larger 48 x 32 x 48 one 15 ms and 54 ms in oneDNN. Training
    and single-mirror inference run batches of one. The results agree to float32 rounding
    (tests/test_model_conv.py)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode == "zeros" and onednn_applies(x, self.weight):
            return torch.mkldnn_convolution(
                x.contiguous(),
                self.weight,
                self.bias,
                self.padding,
                self.stride,
                self.dilation,
                self.groups,
            )
        return super().forward(x)
