"""Positional encodings for the transformer's tokens.

The "Equivariant" in ENSAM: queries and keys are rotated by R(p) = exp(sum_a p_a A_a) with a
learned skew-symmetric generator A_a per axis, so attention logits depend on positions only
through R(p)^T R(q). With commuting 2x2 blocks ("RoPE-Mixed") that product is R(q - p): the
attention is exactly translation-equivariant. "LieRE" learns full (non-commuting) blocks. The
absolute sinusoidal variant exists for the paper's ablation.

Positions are (z, y, x) in units of the network input's largest axis, so they lie in [0, 1].
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _frequency_init(heads: int, pairs: int, generator: torch.Generator) -> torch.Tensor:
    """RoPE-Mixed initialisation: log-spaced frequencies, each pair pointing in a random 3D
    direction, so every axis and every mix of axes is covered from the first step."""
    freqs = math.pi * torch.logspace(0, 2, pairs)  # pi .. 100 pi per unit of position
    direction = torch.randn(heads, pairs, 3, generator=generator)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    return (direction * freqs[None, :, None]).permute(2, 0, 1).contiguous()  # (3, heads, pairs)


class RotaryEncoding(nn.Module):
    """Rotary encoding of q and k, one learned generator per axis and head."""

    relative = True

    def __init__(self, heads: int, head_dim: int, full_blocks: bool = False) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError("head_dim must be even")
        self.heads = heads
        self.head_dim = head_dim
        self.full_blocks = full_blocks
        gen = torch.Generator().manual_seed(0)
        theta = _frequency_init(heads, head_dim // 2, gen)
        if full_blocks:
            # LieRE: a full skew-symmetric generator, started at the RoPE-Mixed block
            # structure plus a little noise so training can discover cross-pair mixing.
            gen_matrix = torch.zeros(3, heads, head_dim, head_dim)
            idx = torch.arange(0, head_dim, 2)
            gen_matrix[:, :, idx + 1, idx] = theta
            gen_matrix += 0.01 * torch.randn(gen_matrix.shape, generator=gen)
            self.weight = nn.Parameter(gen_matrix)
        else:
            self.theta = nn.Parameter(theta)

    def generators(self) -> torch.Tensor:
        """The skew-symmetric generators A, shape (3, heads, head_dim, head_dim)."""
        if self.full_blocks:
            w = torch.tril(self.weight, diagonal=-1)
            return w - w.transpose(-1, -2)
        a = self.theta.new_zeros(3, self.heads, self.head_dim, self.head_dim)
        idx = torch.arange(0, self.head_dim, 2, device=a.device)
        a[:, :, idx + 1, idx] = self.theta
        a[:, :, idx, idx + 1] = -self.theta
        return a

    def rotations(self, pos: torch.Tensor) -> torch.Tensor:
        """R(p) = matrix_exp(sum_a p_a A_a) for positions (..., 3): shape (..., heads, d, d)."""
        gen = torch.einsum("...a,ahij->...hij", pos.float(), self.generators().float())
        return torch.linalg.matrix_exp(gen)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Rotate x (B, heads, N, d) by the rotations of pos (B or 1, N, 3)."""
        if self.full_blocks:
            rot = self.rotations(pos).transpose(-3, -4)  # (B, heads, N, d, d)
            return torch.einsum("bhnij,bhnj->bhni", rot, x.float()).to(x.dtype)
        # With 2x2 blocks the matrix exponential is a plain rotation per pair: use the closed
        # form (identical to matrix_exp, tested) because it is far cheaper on many tokens.
        angle = torch.einsum("bna,ahp->bhnp", pos.float(), self.theta.float())
        cos, sin = angle.cos(), angle.sin()
        x0, x1 = x[..., 0::2].float(), x[..., 1::2].float()
        out = torch.stack((cos * x0 - sin * x1, sin * x0 + cos * x1), dim=-1)
        return out.flatten(-2).to(x.dtype)


class SinusoidalEncoding(nn.Module):
    """Absolute encoding added to the tokens (ablation baseline): per axis, sin and cos of
    log-spaced frequencies, zero-padded to the token width."""

    relative = False

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width
        pairs = width // 6
        self.register_buffer("freqs", math.pi * torch.logspace(0, 2, pairs), persistent=False)

    def forward(self, pos: torch.Tensor) -> torch.Tensor:
        """Encoding for positions (..., 3): shape (..., width)."""
        angle = pos.float()[..., None] * self.freqs  # (..., 3, pairs)
        enc = torch.cat((angle.sin(), angle.cos()), dim=-1).flatten(-2)
        pad = self.width - enc.shape[-1]
        return nn.functional.pad(enc, (0, pad)) / math.sqrt(3 * self.freqs.numel())


def build_positional(kind: str, width: int, heads: int) -> nn.Module:
    if kind == "rope_mixed":
        return RotaryEncoding(heads, width // heads, full_blocks=False)
    if kind == "liere":
        return RotaryEncoding(heads, width // heads, full_blocks=True)
    if kind == "sinusoidal":
        return SinusoidalEncoding(width)
    raise ValueError(f"unknown positional encoding {kind!r}")


def grid_positions(grid: tuple[int, int, int], stride: int, extent: float) -> torch.Tensor:
    """Centres of the latent grid's cells in input-voxel units, divided by `extent`: (N, 3)."""
    axes = [(torch.arange(n, dtype=torch.float32) + 0.5) * stride for n in grid]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack(mesh, dim=-1).reshape(-1, 3) / extent
