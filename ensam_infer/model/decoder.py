"""U-Net mask decoder: from the transformer's image tokens on the latent grid back up to the
input resolution, adding the encoder's skip features at each level."""

from __future__ import annotations

import torch
from torch import nn

from .conv import Conv3d
from .encoder import ResBlock


class MaskDecoder(nn.Module):
    def __init__(
        self, channels: tuple[int, ...], norm: str, blocks: int = 1, logit_bias: float = -5.0
    ) -> None:
        super().__init__()
        self.ups = nn.ModuleList()
        self.levels = nn.ModuleList()
        for i in range(len(channels) - 1, 0, -1):
            self.ups.append(nn.ConvTranspose3d(channels[i], channels[i - 1], 2, stride=2))
            self.levels.append(
                nn.Sequential(*[ResBlock(channels[i - 1], norm) for _ in range(blocks)])
            )
        self.head = Conv3d(channels[0], 1, 1)
        # Start from "nothing is foreground" so early training is not swamped by false
        # positives over the whole crop.
        nn.init.constant_(self.head.bias, logit_bias)

    def forward(self, latent: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """latent (B, C, d, h, w); skips finest first, batch B or 1 (shared by all classes)."""
        x = latent
        for up, level, skip in zip(self.ups, self.levels, reversed(skips[:-1]), strict=True):
            x = level(up(x) + skip.to(x.dtype))
        return self.head(x)
