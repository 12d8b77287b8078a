"""The assembled ENSAM network: encode an image once, then decode any number of prompted
objects against its features."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import ModelConfig
from .decoder import MaskDecoder
from .encoder import ImageEncoder
from .positional import build_positional, grid_positions
from .prompts import ClassPrompt, ClickMapEncoder, DensePromptEncoder, SparsePromptEncoder
from .transformer import TwoWayTransformer, unit


class Ensam(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        c = config
        self.encoder = ImageEncoder(c.in_channels, c.channels, c.blocks, c.norm)
        self.sparse = SparsePromptEncoder(c.width)
        self.dense = DensePromptEncoder(c.dense_channels, c.width)
        if c.click_map_radius > 0:
            self.click_maps = ClickMapEncoder(c.dense_channels, c.width, c.click_map_radius)
        positional = build_positional(c.positional, c.width, c.heads)
        self.transformer = TwoWayTransformer(c.width, c.heads, c.depth, c.mlp_width, positional)
        self.decoder = MaskDecoder(c.channels, c.norm, c.decoder_blocks, c.logit_bias)

    @property
    def stride(self) -> int:
        return self.config.stride

    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        """image (B, 1, D, H, W) in [0, 1], each axis a multiple of the stride."""
        if any(s % self.stride for s in image.shape[2:]):
            raise ValueError(
                f"input shape {tuple(image.shape[2:])} not a multiple of {self.stride}"
            )
        return self.encoder(image)

    def decode(
        self,
        features: list[torch.Tensor],
        prompts: list[ClassPrompt],
        prev_logits: torch.Tensor | None = None,
        prev_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, 1, D, H, W) for B prompted objects.

        features: the encoder's output for one image (batch 1, shared) or for B images.
        prev_logits: (B, 1, D, H, W) previous-step logits or None; prev_valid (B,) marks which
        objects have them (others get no dense prompt)."""
        latent = features[-1]
        batch = len(prompts)
        grid = tuple(latent.shape[2:])
        input_shape = tuple(s * self.stride for s in grid)
        extent = float(max(input_shape))
        latent = latent.expand(batch, -1, -1, -1, -1) if latent.shape[0] == 1 else latent
        with_clicks = self.config.click_map_radius > 0 and any(len(p.points) for p in prompts)
        if (prev_logits is not None or with_clicks) and self.config.dense_on_unit_latent:
            latent = unit(latent, dim=1)
        if prev_logits is not None:
            dense = self.dense(prev_logits.to(latent.dtype))
            if prev_valid is not None:
                dense = dense * prev_valid.to(dense.dtype).view(-1, 1, 1, 1, 1)
            latent = latent + dense
        if with_clicks:
            latent = latent + self.click_maps(prompts, input_shape).to(latent.dtype)
        image_tokens = latent.flatten(2).transpose(1, 2)
        image_pos = grid_positions(grid, self.stride, extent).to(latent.device)[None]
        tokens, pos, valid = self.sparse(prompts, extent)
        _, image_tokens = self.transformer(
            tokens.to(image_tokens.dtype), image_tokens, pos, image_pos, valid
        )
        width = image_tokens.shape[-1]
        out = image_tokens.transpose(1, 2).reshape(batch, width, *grid) * math.sqrt(width)
        return self.decoder(out, features)

    def forward(
        self,
        image: torch.Tensor,
        prompts: list[ClassPrompt],
        prev_logits: torch.Tensor | None = None,
        prev_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.decode(self.encode(image), prompts, prev_logits, prev_valid)

    def renormalize_(self) -> None:
        """nGPT weight re-normalization; call after every optimizer step."""
        self.transformer.renormalize_()
