"""Small building blocks shared by the U-Nets: dimension-agnostic conv / norm / pool / upsample.

Every model works in 2D or 3D (``dims``); kernel sizes and pooling factors are given per axis, so the
anisotropic (1, 2, 2) pooling of ssTEM data and isotropic FIB-SEM use the same code.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

NORMS = ("batch", "group", "instance", "none")


def per_axis(value: int | Sequence[int], dims: int) -> tuple[int, ...]:
    """Broadcast an int to ``dims`` axes; keep the last ``dims`` entries of a longer sequence.

    Keeping the *last* entries lets a 3D setting such as ``(1, 2, 2)`` serve a 2D model as ``(2, 2)``.
    """
    if isinstance(value, int):
        return (int(value),) * dims
    out = tuple(int(v) for v in value)
    if len(out) < dims:
        raise ValueError(f"{out}: needs {dims} values")
    return out[-dims:]


def conv(dims: int, cin: int, cout: int, kernel: Sequence[int], bias: bool = True) -> nn.Module:
    """A 'same'-padded convolution (odd kernels), so every level keeps its spatial size."""
    cls = nn.Conv3d if dims == 3 else nn.Conv2d
    pad = tuple(k // 2 for k in kernel)
    return cls(cin, cout, tuple(kernel), padding=pad, bias=bias)


def norm(kind: str, dims: int, channels: int) -> nn.Module:
    if kind == "batch":
        return (nn.BatchNorm3d if dims == 3 else nn.BatchNorm2d)(channels)
    if kind == "instance":
        return (nn.InstanceNorm3d if dims == 3 else nn.InstanceNorm2d)(channels, affine=True)
    if kind == "group":
        # groups of up to 8 channels; channel counts that do not divide fall back to fewer groups
        groups = max(1, channels // 8)
        while channels % groups:
            groups -= 1
        return nn.GroupNorm(groups, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm {kind!r}: expected one of {NORMS}")


def pool(dims: int, factor: Sequence[int]) -> nn.Module:
    return (nn.MaxPool3d if dims == 3 else nn.MaxPool2d)(tuple(factor))


def upsample(dims: int, cin: int, cout: int, factor: Sequence[int]) -> nn.Module:
    """A learned upsampling (transposed convolution with kernel = stride = factor): no checkerboard."""
    cls = nn.ConvTranspose3d if dims == 3 else nn.ConvTranspose2d
    return cls(cin, cout, tuple(factor), stride=tuple(factor))


class ConvNormAct(nn.Sequential):
    """conv -> norm -> ELU, the unit every block is made of."""

    def __init__(self, dims: int, cin: int, cout: int, kernel: Sequence[int], norm_kind: str) -> None:
        super().__init__(conv(dims, cin, cout, kernel, bias=norm_kind == "none"), norm(norm_kind, dims, cout), nn.ELU(inplace=True))


def check_input(x: torch.Tensor, model: nn.Module) -> None:
    """Refuse inputs the model cannot take, with a message saying what it expects."""
    dims, cin, mult = model.dims, model.in_channels, model.size_multiple
    if x.ndim != dims + 2 or x.shape[1] != cin:
        raise ValueError(f"{type(model).__name__} expects (N, {cin}, {dims} spatial axes), got {tuple(x.shape)}")
    bad = [s for s, m in zip(x.shape[2:], mult) if s % m]
    if bad:
        raise ValueError(f"{type(model).__name__}: spatial size {tuple(x.shape[2:])} must be a multiple of {mult}")
