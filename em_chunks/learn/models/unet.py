"""A plain U-Net (2D or 3D) small enough to train on a CPU.

Same-padded convolutions keep the output the size of the input (a multiple of the product of the pooling
factors), which makes sliding-window inference and affinity targets line up voxel for voxel.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from em_chunks.learn.models.blocks import ConvNormAct, check_input, conv, per_axis, pool, upsample


class UNet(nn.Module):
    """Encoder/decoder with concatenated skips; ``widths`` gives the channels per level (top first).

    Parameters
    ----------
    in_channels, out_channels : channels of the input image and of the output (e.g. 3 affinities).
    widths : channels per level; ``len(widths)`` levels, ``len(widths) - 1`` poolings.
    pooling : per-level pooling factor, one for every pooling (an int or a tuple per axis), e.g.
        ``[[1, 2, 2], [2, 2, 2]]`` for anisotropic data; a single value is used for every level.
    kernel : convolution kernel per axis.
    dims : 3 for volumes, 2 for sections (PyTC ``DO_2D``).
    norm : "batch", "group", "instance" or "none".
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 3,
        widths: Sequence[int] = (16, 32, 64),
        pooling: Sequence = (2, 2, 2),
        kernel: int | Sequence[int] = 3,
        dims: int = 3,
        norm: str = "group",
    ) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims {dims}: expected 2 or 3")
        self.in_channels, self.out_channels, self.dims = int(in_channels), int(out_channels), int(dims)
        widths = [int(w) for w in widths]
        levels = len(widths)
        factors = _level_factors(pooling, levels - 1, dims)
        k = per_axis(kernel, dims)
        self.size_multiple = tuple(int(torch.prod(torch.tensor([f[a] for f in factors] or [1]))) for a in range(dims))

        self.down = nn.ModuleList()
        self.pools = nn.ModuleList()
        cin = self.in_channels
        for i, w in enumerate(widths):
            self.down.append(nn.Sequential(ConvNormAct(dims, cin, w, k, norm), ConvNormAct(dims, w, w, k, norm)))
            if i < levels - 1:
                self.pools.append(pool(dims, factors[i]))
            cin = w
        self.ups = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for i in reversed(range(levels - 1)):
            self.ups.append(upsample(dims, widths[i + 1], widths[i], factors[i]))
            self.up_blocks.append(
                nn.Sequential(ConvNormAct(dims, 2 * widths[i], widths[i], k, norm), ConvNormAct(dims, widths[i], widths[i], k, norm))
            )
        self.head = conv(dims, widths[0], self.out_channels, (1,) * dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (apply a sigmoid for affinities), same spatial size as ``x``."""
        check_input(x, self)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < len(self.pools):
                skips.append(x)
                x = self.pools[i](x)
        for up, block in zip(self.ups, self.up_blocks):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


def _level_factors(pooling: Sequence, n: int, dims: int) -> list[tuple[int, ...]]:
    """One pooling factor per level: a single factor (int or per-axis tuple) repeats for every level."""
    if isinstance(pooling, int) or (len(pooling) > 0 and all(isinstance(p, int) for p in pooling)):
        return [per_axis(pooling, dims)] * n
    if len(pooling) != n:
        raise ValueError(f"pooling {pooling}: needs one factor per pooling level ({n})")
    return [per_axis(p, dims) for p in pooling]
