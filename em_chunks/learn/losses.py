"""Masked losses for affinity logits, chosen by name, each with a weight and a start iteration.

Every loss takes ``(logits, target, mask)`` of shape (N, C, ...) and ignores voxels where ``mask`` is 0
(edges leaving the patch or touching invalid voxels).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

EPS = 1e-6


def bce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy averaged over the judged edges."""
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (loss * mask).sum() / mask.sum().clamp_min(1.0)


def weighted_bce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BCE with per-channel class rebalancing (DeepEM): connected and cut edges weigh half each.

    Boundaries are a small fraction of edges; without rebalancing a model learns "everything is
    connected" first and merges neurons.
    """
    dims = tuple(d for d in range(target.ndim) if d != 1)
    pos = (target * mask).sum(dims, keepdim=True)
    total = mask.sum(dims, keepdim=True)
    neg = total - pos
    w_pos = torch.where(pos > 0, total / (2 * pos.clamp_min(1.0)), torch.zeros_like(pos))
    w_neg = torch.where(neg > 0, total / (2 * neg.clamp_min(1.0)), torch.zeros_like(neg))
    weight = (target * w_pos + (1 - target) * w_neg) * mask
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (loss * weight).sum() / mask.sum().clamp_min(1.0)


def tversky(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, alpha: float = 0.5, beta: float = 0.5,
            boundary: float = 1.0) -> torch.Tensor:
    """Soft Tversky loss, 1 - TP / (TP + alpha FP + beta FN), per channel then averaged.

    With ``boundary=1`` the positive class is the *cut* edge (1 - affinity), the rare class whose recall
    decides merge errors; alpha = beta = 0.5 is the Dice loss.
    """
    p = torch.sigmoid(logits.float())
    t = target
    if boundary:
        p, t = 1 - p, 1 - t
    dims = (0,) + tuple(range(2, target.ndim))
    tp = (p * t * mask).sum(dims)
    fp = (p * (1 - t) * mask).sum(dims)
    fn = ((1 - p) * t * mask).sum(dims)
    return (1 - (tp + EPS) / (tp + alpha * fp + beta * fn + EPS)).mean()


def dice(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, boundary: float = 1.0) -> torch.Tensor:
    return tversky(logits, target, mask, 0.5, 0.5, boundary)


LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "bce": bce,
    "weighted_bce": weighted_bce,
    "dice": dice,
    "tversky": tversky,
}


class CombinedLoss:
    """Sum of weighted terms; a term joins at its ``start`` iteration. Returns the total and each part."""

    def __init__(self, terms: Sequence) -> None:
        self.terms = [(t.name, float(t.weight), int(t.start), dict(t.params)) for t in terms]

    def __call__(self, logits, target, mask, iteration: int) -> tuple[torch.Tensor, dict[str, float]]:
        total = logits.new_zeros((), dtype=torch.float32)
        parts = {}
        logits = logits.float()
        for name, weight, start, params in self.terms:
            if iteration < start:
                continue
            value = LOSSES[name](logits, target, mask, **params)
            parts[name] = float(value.detach())
            total = total + weight * value
        return total, parts
