"""RSUNet: the residual symmetric U-Net of DeepEM / Lee et al. 2017 ("Superhuman accuracy on SNEMI3D").

Written from the paper's description: every level is a convolution followed by a residual block of two
convolutions; pooling is anisotropic (1, 2, 2) for ssTEM, upsampling is learned and skips are *added*
(symmetric), which keeps the decoder as light as the encoder. The input embedding uses a wide in-plane
kernel (1, 5, 5) as the paper does, so the first features see context within a section before mixing
across sections.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from em_chunks.learn.models.blocks import ConvNormAct, check_input, conv, norm as make_norm, per_axis, pool, upsample


class ResBlock(nn.Module):
    """x + conv(conv(x)) with norm/ELU; the identity path eases training of the deeper RSUNet."""

    def __init__(self, dims: int, channels: int, kernel: Sequence[int], norm_kind: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvNormAct(dims, channels, channels, kernel, norm_kind),
            conv(dims, channels, channels, kernel, bias=norm_kind == "none"),
            make_norm(norm_kind, dims, channels),
        )
        self.act = nn.ELU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class Level(nn.Module):
    """conv (in -> width) -> residual block -> conv: one level of the encoder or decoder."""

    def __init__(self, dims: int, cin: int, cout: int, kernel: Sequence[int], norm_kind: str) -> None:
        super().__init__()
        self.pre = ConvNormAct(dims, cin, cout, kernel, norm_kind)
        self.res = ResBlock(dims, cout, kernel, norm_kind)
        self.post = ConvNormAct(dims, cout, cout, kernel, norm_kind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.res(self.pre(x)))


class RSUNet(nn.Module):
    """Residual symmetric U-Net.

    Parameters
    ----------
    widths : channels per level (DeepEM uses 28, 36, 48, 64, 80).
    pooling : pooling factor for every level, (1, 2, 2) for anisotropic ssTEM.
    kernel : kernel of the level convolutions; the paper mixes (1,3,3) and (3,3,3).
    embed_kernel : kernel of the input/output embeddings.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 12,
        widths: Sequence[int] = (28, 36, 48, 64, 80),
        pooling: int | Sequence[int] = (1, 2, 2),
        kernel: int | Sequence[int] = 3,
        embed_kernel: int | Sequence[int] = (1, 5, 5),
        dims: int = 3,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims {dims}: expected 2 or 3")
        self.in_channels, self.out_channels, self.dims = int(in_channels), int(out_channels), int(dims)
        widths = [int(w) for w in widths]
        factor = per_axis(pooling, dims)
        k, ek = per_axis(kernel, dims), per_axis(embed_kernel, dims)
        n_pool = len(widths) - 1
        self.size_multiple = tuple(f**n_pool for f in factor)

        self.embed_in = ConvNormAct(dims, self.in_channels, widths[0], ek, norm)
        self.down = nn.ModuleList(Level(dims, widths[max(i - 1, 0)], w, k, norm) for i, w in enumerate(widths))
        self.pool = pool(dims, factor)
        self.ups = nn.ModuleList(upsample(dims, widths[i + 1], widths[i], factor) for i in reversed(range(n_pool)))
        self.up_levels = nn.ModuleList(Level(dims, widths[i], widths[i], k, norm) for i in reversed(range(n_pool)))
        self.embed_out = ConvNormAct(dims, widths[0], widths[0], ek, norm)
        self.head = conv(dims, widths[0], self.out_channels, (1,) * dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, same spatial size as ``x``."""
        check_input(x, self)
        x = self.embed_in(x)
        skips = []
        for i, level in enumerate(self.down):
            x = level(x)
            if i < len(self.down) - 1:
                skips.append(x)
                x = self.pool(x)
        for up, level in zip(self.ups, self.up_levels):
            x = level(up(x) + skips.pop())  # symmetric: add, not concatenate
        return self.head(self.embed_out(x))
