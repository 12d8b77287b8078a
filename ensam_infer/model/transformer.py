"""The normalized (nGPT-style) two-way transformer between prompt tokens and image tokens.

Every token lives on the unit sphere; a residual update is a step towards the normalized
update, h <- norm(h + alpha * (norm(u) - h)), with a learned per-channel step alpha. Queries
and keys are unit-normalized with learned per-channel scales and the logits are multiplied by
sqrt(d_head) (not divided), as in nGPT. Weight matrices are kept at unit-norm rows by
`renormalize_()` after every optimizer step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def unit(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return F.normalize(x, dim=dim, eps=1e-6)


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, positional: nn.Module) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = width // heads
        self.q = nn.Linear(width, width, bias=False)
        self.k = nn.Linear(width, width, bias=False)
        self.v = nn.Linear(width, width, bias=False)
        self.o = nn.Linear(width, width, bias=False)
        self.qk_scale = nn.Parameter(torch.ones(heads, 1, self.head_dim))
        self.positional = positional

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.head_dim).transpose(1, 2)

    def logits_inputs(
        self, queries: torch.Tensor, keys: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized, scaled and rotated q and k, (B, heads, N, d)."""
        q = unit(self._split(self.q(queries))) * self.qk_scale
        k = unit(self._split(self.k(keys))) * self.qk_scale
        if getattr(self.positional, "relative", False):
            q = self.positional(q, q_pos)
            k = self.positional(k, k_pos)
        return q, k

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        q_pos: torch.Tensor,
        k_pos: torch.Tensor,
        key_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        q, k = self.logits_inputs(queries, keys, q_pos, k_pos)
        v = self._split(self.v(keys))
        mask = None if key_valid is None else key_valid[:, None, None, :]
        out = F.scaled_dot_product_attention(
            q, k.to(q.dtype), v.to(q.dtype), attn_mask=mask, scale=math.sqrt(self.head_dim)
        )
        b, _, n, _ = out.shape
        return self.o(out.transpose(1, 2).reshape(b, n, -1))


class SwiGLU(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.up = nn.Linear(width, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, width, bias=False)
        self.u_scale = nn.Parameter(torch.ones(hidden))
        self.v_scale = nn.Parameter(torch.ones(hidden))
        # Inputs are unit vectors, so projections are O(1/sqrt(width)); nGPT rescales the
        # gate's input by sqrt(width) so SiLU sees values of order one.
        self.gate_gain = math.sqrt(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, v = self.up(x).chunk(2, dim=-1)
        return self.down(u * self.u_scale * F.silu(v * self.v_scale * self.gate_gain))


class SphereStep(nn.Module):
    """h <- norm(h + alpha * (norm(update) - h)) with a learned per-channel alpha."""

    def __init__(self, width: int, alpha: float = 0.1) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.full((width,), alpha))

    def forward(self, h: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        return unit(h + self.alpha * (unit(update) - h))


class TwoWayBlock(nn.Module):
    """prompt self-attention → prompt-to-image → prompt MLP → image-to-prompt."""

    def __init__(self, width: int, heads: int, mlp_width: int, positional: nn.Module) -> None:
        super().__init__()
        self.self_attn = Attention(width, heads, positional)
        self.to_image = Attention(width, heads, positional)
        self.mlp = SwiGLU(width, mlp_width)
        self.to_prompt = Attention(width, heads, positional)
        self.steps = nn.ModuleList([SphereStep(width) for _ in range(4)])

    def forward(
        self,
        prompt: torch.Tensor,
        image: torch.Tensor,
        prompt_pos: torch.Tensor,
        image_pos: torch.Tensor,
        prompt_valid: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.steps
        prompt = s[0](prompt, self.self_attn(prompt, prompt, prompt_pos, prompt_pos, prompt_valid))
        prompt = s[1](prompt, self.to_image(prompt, image, prompt_pos, image_pos))
        prompt = s[2](prompt, self.mlp(prompt))
        image = s[3](image, self.to_prompt(image, prompt, image_pos, prompt_pos, prompt_valid))
        return prompt, image


class TwoWayTransformer(nn.Module):
    def __init__(
        self, width: int, heads: int, depth: int, mlp_width: int, positional: nn.Module
    ) -> None:
        super().__init__()
        self.positional = positional
        self.blocks = nn.ModuleList(
            [TwoWayBlock(width, heads, mlp_width, positional) for _ in range(depth)]
        )
        self.renormalize_()

    def forward(
        self,
        prompt: torch.Tensor,
        image: torch.Tensor,
        prompt_pos: torch.Tensor,
        image_pos: torch.Tensor,
        prompt_valid: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """prompt (B, Np, C), image (B, Ni, C), prompt_pos (B, Np, 3), image_pos (1, Ni, 3)."""
        if not getattr(self.positional, "relative", True):
            prompt = prompt + self.positional(prompt_pos).to(prompt.dtype)
            image = image + self.positional(image_pos).to(image.dtype)
        prompt, image = unit(prompt), unit(image)
        for block in self.blocks:
            prompt, image = block(prompt, image, prompt_pos, image_pos, prompt_valid)
        return prompt, image

    @torch.no_grad()
    def renormalize_(self) -> None:
        """Put every linear weight back on unit-norm rows (nGPT), after each optimizer step."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.weight.copy_(unit(module.weight.float(), dim=1).to(module.weight.dtype))
