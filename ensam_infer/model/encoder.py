"""SegResNet-style image encoder (the MONAI SegResNetDS layout): a stem, then levels of
pre-activation residual blocks joined by bias-free strided convolutions."""

from __future__ import annotations

import torch
from torch import nn

from .conv import Conv3d


def make_norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    raise ValueError(f"unknown norm {kind!r}")


class ResBlock(nn.Module):
    """norm → ReLU → conv, twice, with an identity skip."""

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        self.norm1 = make_norm(norm, channels)
        self.conv1 = Conv3d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = make_norm(norm, channels)
        self.conv2 = Conv3d(channels, channels, 3, padding=1, bias=False)
        self.act = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(self.act(self.norm1(x)))
        y = self.conv2(self.act(self.norm2(y)))
        return x + y


class ImageEncoder(nn.Module):
    """Returns every level's output, finest first, for the decoder's skips."""

    def __init__(
        self, in_channels: int, channels: tuple[int, ...], blocks: tuple[int, ...], norm: str
    ) -> None:
        super().__init__()
        self.stem = Conv3d(in_channels, channels[0], 3, padding=1, bias=False)
        self.downs = nn.ModuleList()
        self.levels = nn.ModuleList()
        for i, (ch, n) in enumerate(zip(channels, blocks, strict=True)):
            if i == 0:
                self.downs.append(nn.Identity())
            else:
                self.downs.append(Conv3d(channels[i - 1], ch, 3, stride=2, padding=1, bias=False))
            self.levels.append(nn.Sequential(*[ResBlock(ch, norm) for _ in range(n)]))

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(image - 0.5)  # inputs are in [0, 1]; centre them as the authors do
        features = []
        for down, level in zip(self.downs, self.levels, strict=True):
            x = level(down(x))
            features.append(x)
        return features
