"""The one device picker: ``auto`` means CUDA when torch sees a GPU, else the CPU.

Inference resolves ``auto`` on the worker (the client may have no GPU while the workers do)."""

from __future__ import annotations

import torch


def pick_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` (or a torch.device) as a :class:`torch.device`."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


__all__ = ["pick_device"]
