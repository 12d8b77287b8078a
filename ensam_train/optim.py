"""Optimizers: Muon (torch.optim.Muon) for the weight matrices and convolution kernels,
AdamW for everything else; or plain AdamW for the ablation. nGPT re-normalization and
gradient clipping happen in the training step, not here."""

from __future__ import annotations

import math

import torch
from torch import nn


def muon_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split parameters into (matrices for Muon, the rest for AdamW).

    Muon is meant for the hidden layers' linear maps: Linear weights and convolution kernels
    (a kernel is a matrix out x (in * k^3)). Embedding tables, norms, biases, scales and the
    rotary generators are not linear maps between hidden layers and go to AdamW."""
    matrix_types = (nn.Linear, nn.Conv3d, nn.ConvTranspose3d)
    muon_ids = set()
    for module in model.modules():
        if isinstance(module, matrix_types) and module.weight.requires_grad:
            muon_ids.add(id(module.weight))
    muon, other = [], []
    for p in model.parameters():
        if p.requires_grad:
            (muon if id(p) in muon_ids else other).append(p)
    return muon, other


def orthogonalized(update: torch.Tensor, coefficients: tuple[float, float, float], steps: int,
                   eps: float) -> torch.Tensor:  # fmt: skip
    """Muon's Newton-Schulz iteration (the quintic of torch.optim.Muon, same coefficients and
    steps): `update` with its singular values pushed towards one, in float32.

    torch.optim.Muon runs it in bf16, which is fast on GPUs and on CPUs with bf16 in
    hardware but emulated, and about ten times slower than float32, on others: on a 2-core
    AVX2 CPU the bf16 iteration took 2.2 s of an 8 s ENSAM-light training step. In float32
    it costs a fraction of that everywhere, and it is the more exact of the two."""
    a, b, c = coefficients
    x = update.float()
    wide = x.shape[0] <= x.shape[1]
    x = x if wide else x.T  # the Gram matrix is the smaller side squared
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x if wide else x.T).to(update.dtype)


def muon_lr_scale(shape: torch.Size, adjust_lr_fn: str | None) -> float:
    """torch.optim.Muon's per-matrix learning-rate factor for an (A, B) matrix."""
    rows, cols = shape[:2]
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    if adjust_lr_fn in (None, "original"):
        return math.sqrt(max(1.0, rows / cols))
    return 1.0


class ReshapedMuon(torch.optim.Muon):
    """torch.optim.Muon accepts only 2-D parameters. Each kernel gets a 2-D view that shares
    its storage; gradients are copied into the views before every step, and the in-place
    updates of the views land in the real kernels.

    The step is torch.optim.Muon's (momentum, Nesterov, Newton-Schulz, decoupled weight
    decay, its learning-rate adjustment, its hyperparameters and its state, so checkpoints
    of either load in the other) with the Newton-Schulz iteration in float32
    (`orthogonalized`)."""

    def __init__(self, params: list[nn.Parameter], **kwargs: object) -> None:
        self._originals = list(params)
        self._views = [nn.Parameter(p.data.view(p.shape[0], -1)) for p in self._originals]
        super().__init__(self._views, **kwargs)

    @torch.no_grad()
    def step(self, closure: object = None) -> object:
        for p, v in zip(self._originals, self._views, strict=True):
            v.grad = None if p.grad is None else p.grad.view(v.shape)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return loss

    def _update(self, p: nn.Parameter, group: dict) -> None:
        lr, momentum = float(group["lr"]), group["momentum"]
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p.grad)
        buf = state["momentum_buffer"]
        buf.lerp_(p.grad, 1 - momentum)
        update = p.grad.lerp(buf, momentum) if group["nesterov"] else buf
        update = orthogonalized(update, group["ns_coefficients"], group["ns_steps"], group["eps"])
        p.mul_(1 - lr * group["weight_decay"])
        p.add_(update, alpha=-lr * muon_lr_scale(p.shape, group["adjust_lr_fn"]))

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self._originals:
            p.grad = None
        super().zero_grad(set_to_none)


def build_optimizers(
    model: nn.Module, kind: str, lr: float, weight_decay: float
) -> list[torch.optim.Optimizer]:
    """'muon': Muon for matrices + AdamW for the rest; 'adamw': AdamW for everything."""
    if kind == "adamw":
        return [torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)]
    if kind != "muon":
        raise ValueError(f"unknown optimizer {kind!r}")
    muon, other = muon_parameters(model)
    return [
        # "match_rms_adamw" scales Muon's orthogonal update to AdamW's typical RMS, so one
        # learning rate serves both groups.
        ReshapedMuon(
            muon, lr=lr, weight_decay=weight_decay, momentum=0.95, adjust_lr_fn="match_rms_adamw"
        ),
        torch.optim.AdamW(other, lr=lr, weight_decay=0.0),
    ]


def lr_factor(step: int, warmup: int, milestones: list[int], gamma: float) -> float:
    """Linear warm-up, then step decay by `gamma` at each milestone."""
    warm = min(1.0, (step + 1) / max(1, warmup))
    return warm * gamma ** sum(step >= m for m in milestones)
