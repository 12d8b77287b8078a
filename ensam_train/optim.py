"""Optimizers: Muon (torch.optim.Muon) for the weight matrices and convolution kernels,
AdamW for everything else; or plain AdamW for the ablation. nGPT re-normalization and
gradient clipping happen in the training step, not here."""

from __future__ import annotations

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


class ReshapedMuon(torch.optim.Muon):
    """torch.optim.Muon accepts only 2-D parameters. Each kernel gets a 2-D view that shares
    its storage; gradients are copied into the views before every step, and Muon's in-place
    updates of the views land in the real kernels."""

    def __init__(self, params: list[nn.Parameter], **kwargs: object) -> None:
        self._originals = list(params)
        self._views = [nn.Parameter(p.data.view(p.shape[0], -1)) for p in self._originals]
        super().__init__(self._views, **kwargs)

    @torch.no_grad()
    def step(self, closure: object = None) -> object:
        for p, v in zip(self._originals, self._views, strict=True):
            v.grad = None if p.grad is None else p.grad.view(v.shape)
        return super().step(closure)

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
