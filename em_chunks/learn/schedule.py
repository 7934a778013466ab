"""Learning-rate schedules as pure functions of the iteration (nothing to save, resume is exact)."""

from __future__ import annotations

import math


def lr_factor(iteration: int, total: int, scheduler: str = "warmup_cosine", warmup: int = 100,
              min_ratio: float = 0.01, period: int = 1000, mult: float = 1.0, progress: float | None = None) -> float:
    """The multiplier of the base learning rate at ``iteration``.

    ``warmup_cosine``: linear warmup, then one cosine decay to ``min_ratio`` at ``total``.
    ``cosine_restarts``: linear warmup, then cosine cycles of ``period`` iterations (each ``mult`` times
    longer than the last) restarting at the full rate (SGDR, Loshchilov & Hutter 2017).
    """
    if scheduler == "constant":
        return 1.0
    if warmup > 0 and iteration < warmup:
        return (iteration + 1) / warmup
    t = iteration - warmup
    if scheduler == "warmup_cosine":
        span = max(1, total - warmup)
        frac = min(1.0, t / span if progress is None else max(t / span, progress))
    elif scheduler == "cosine_restarts":
        length = float(period)
        while t >= length:
            t -= length
            length *= mult
        frac = t / length
    else:
        raise ValueError(f"scheduler {scheduler!r}: expected constant, warmup_cosine or cosine_restarts")
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * frac))
