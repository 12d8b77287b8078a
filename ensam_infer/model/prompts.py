"""Prompt encoder: sparse tokens for clicks and box corners, and the dense path that feeds
the previous step's logits back into the latent.

Token content says only *what* a prompt is (foreground click, background click, newest click,
box min/max corner); *where* it is enters through the positional encoding in attention.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .conv import Conv3d


@dataclass
class ClassPrompt:
    """One object's prompts in network-input voxel indices (z, y, x).

    box: (z0, y0, x0, z1, y1, x1), inclusive corners, or None.
    points: (n, 3) click voxels in the order they were given; the last one is the newest.
    positive: (n,) True for a foreground click.
    """

    box: tuple[float, float, float, float, float, float] | None = None
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))
    positive: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))

    @property
    def num_tokens(self) -> int:
        return (2 if self.box is not None else 0) + len(self.points)


class SparsePromptEncoder(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.click = nn.Embedding(2, width)  # 0 background, 1 foreground
        self.last_click = nn.Parameter(torch.zeros(width))
        self.corner = nn.Embedding(2, width)  # 0 min corner, 1 max corner
        self.padding = nn.Parameter(torch.zeros(width), requires_grad=False)
        nn.init.normal_(self.click.weight, std=1.0)
        nn.init.normal_(self.corner.weight, std=1.0)
        nn.init.normal_(self.last_click, std=0.5)

    def forward(
        self, prompts: list[ClassPrompt], extent: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tokens (B, N, C), positions (B, N, 3) normalized by `extent`, valid mask (B, N).

        Classes with fewer prompts are padded; padded tokens are masked out of attention."""
        device = self.click.weight.device
        n_max = max(1, max(p.num_tokens for p in prompts))
        width = self.click.weight.shape[1]
        tokens = self.padding.expand(len(prompts), n_max, width).clone()
        pos = torch.zeros(len(prompts), n_max, 3, device=device)
        valid = torch.zeros(len(prompts), n_max, dtype=torch.bool, device=device)
        for b, prompt in enumerate(prompts):
            items, where = [], []
            if prompt.box is not None:
                lo = torch.tensor(prompt.box[:3], dtype=torch.float32)
                hi = torch.tensor(prompt.box[3:], dtype=torch.float32)
                items += [self.corner.weight[0], self.corner.weight[1]]
                where += [lo + 0.5, hi + 0.5]
            if len(prompt.points):
                kinds = torch.as_tensor(np.asarray(prompt.positive, bool), device=device).long()
                emb = self.click(kinds).clone()
                emb[-1] = emb[-1] + self.last_click
                items += list(emb)
                pts = torch.as_tensor(np.asarray(prompt.points, np.float32)) + 0.5
                where += list(pts)
            if not items:
                continue
            k = len(items)
            tokens[b, :k] = torch.stack(items)
            pos[b, :k] = torch.stack(where).to(device) / extent
            valid[b, :k] = True
        return tokens, pos, valid


def channel_unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=1, eps=1e-6)


class DensePromptEncoder(nn.Module):
    """Previous logits at input resolution → stride-2 2³ convs (each followed by channel L2
    normalization and GELU) → 1×1 conv to the latent width, added to the latent."""

    def __init__(self, channels: tuple[int, ...], width: int, in_channels: int = 1) -> None:
        super().__init__()
        ins = (in_channels,) + tuple(channels[:-1])
        self.convs = nn.ModuleList(
            [Conv3d(i, o, 2, stride=2) for i, o in zip(ins, channels, strict=True)]
        )
        self.out = Conv3d(channels[-1], width, 1)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        # Logits far from zero carry no more information than their sign; clamping keeps a
        # confident previous step from dominating the latent.
        return self.embed(logits.clamp(-20.0, 20.0) / 10.0)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.gelu(channel_unit(conv(x)))
        return self.out(x)


class ClickMapEncoder(nn.Module):
    """Each object's clicks as two maps at input resolution (a ball of `radius` voxels per
    positive / negative click), through a dense path of its own to the latent width."""

    def __init__(self, channels: tuple[int, ...], width: int, radius: float) -> None:
        super().__init__()
        self.radius = float(radius)
        self.path = DensePromptEncoder(channels, width, in_channels=2)

    def forward(self, prompts: list[ClassPrompt], shape: tuple[int, int, int]) -> torch.Tensor:
        device = self.path.out.weight.device
        maps = torch.stack([click_maps(p, shape, self.radius) for p in prompts]).to(device)
        out = self.path.embed(maps.to(self.path.out.weight.dtype))
        # an object without clicks in a batch with some gets nothing, as when decoded alone
        has_clicks = torch.tensor([len(p.points) > 0 for p in prompts], device=device)
        return out * has_clicks.to(out.dtype).view(-1, 1, 1, 1, 1)


def click_maps(prompt: ClassPrompt, shape: tuple[int, int, int], radius: float) -> torch.Tensor:
    """(2, D, H, W): 1 within `radius` of a positive (channel 0) or negative (1) click."""
    maps = torch.zeros((2, *shape))
    reach = int(np.ceil(radius))
    for point, positive in zip(prompt.points, prompt.positive, strict=True):
        centre = np.clip(np.round(np.asarray(point)).astype(int), 0, np.asarray(shape) - 1)
        lo = np.maximum(centre - reach, 0)
        hi = np.minimum(centre + reach + 1, shape)
        axes = [torch.arange(a, b) - c for a, b, c in zip(lo, hi, centre, strict=True)]
        dz, dy, dx = torch.meshgrid(*axes, indexing="ij")
        ball = (dz**2 + dy**2 + dx**2) <= radius**2
        window = maps[0 if positive else 1, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        window[ball] = 1.0
    return maps
