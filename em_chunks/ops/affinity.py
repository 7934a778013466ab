"""Affinity conventions shared by the decoding kernels (waterz's, so results can be compared with it).

Channel ``c`` at voxel ``v`` is the affinity of the edge between ``v`` and its predecessor ``v - e_c``.
Every kernel reads a *context* array (the chunk's core grown by at least one voxel, zero outside the
volume) and never trusts a value for an edge that leaves the volume: those edges are masked here.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from em_chunks.geometry import Box

BINS = 256
# fixed-point unit for exact, order-independent affinity sums (mean affinity): 2**-32
FIXED_ONE = float(1 << 32)
# value given to edges that leave the volume: below any threshold, never a maximum that counts
OUTSIDE = np.float32(-1.0)


def as_float_affinities(affs: np.ndarray) -> np.ndarray:
    """float32 affinities in [0, 1]; uint8 input (0..255) is divided by 255 (the same everywhere)."""
    a = np.asarray(affs)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / np.float32(255.0)
    return a.astype(np.float32, copy=False)


def select_channels(affs_ctx: np.ndarray, channels: Sequence[int]) -> np.ndarray:
    """The three short-range channels (z, y, x) as float32."""
    a = np.asarray(affs_ctx)
    if a.ndim != 4:
        raise ValueError(f"affinities must be (C, Z, Y, X), got shape {a.shape}")
    ch = tuple(int(c) for c in channels)
    if max(ch) >= a.shape[0]:
        raise ValueError(f"affinity channels {ch} not all present in {a.shape[0]} channels")
    if ch != tuple(range(a.shape[0])):
        a = a[list(ch)]
    return as_float_affinities(a)


def check_context(box: Box, context: Box, arr_shape: Sequence[int], grow: int = 1) -> None:
    """Refuse a context array that does not cover ``box`` grown by ``grow`` (a caller bug, not user input)."""
    if tuple(arr_shape) != context.shape:
        raise ValueError(f"context array shape {tuple(arr_shape)} != context box shape {context.shape}")
    if not context.contains(box.grow(grow)):
        raise ValueError(f"context {context} does not contain {box} grown by {grow}")


def edge_affinities(
    a: np.ndarray, box: Box, context: Box, volume_shape: Sequence[int]
) -> np.ndarray:
    """The 6 incident edge affinities of every voxel of ``box``: (6, *box.shape) float32.

    Order -z, -y, -x, +z, +y, +x (waterz's). Edges leaving the volume are ``OUTSIDE``.
    ``a`` is (3, *context.shape) float32 and ``context`` must contain ``box`` grown by 1.
    """
    out = np.empty((6,) + tuple(box.shape), np.float32)
    rel = box.relative_to(context)
    for c in range(3):
        sl = list(rel.slices())
        out[c] = a[c][tuple(sl)]
        sl[c] = slice(sl[c].start + 1, sl[c].stop + 1)
        out[3 + c] = a[c][tuple(sl)]
        # edges that leave the volume: the first plane (to v - e_c) and the last one (to v + e_c)
        if box.begin[c] == 0 and box.shape[c]:
            idx = [slice(None)] * 3
            idx[c] = 0
            out[c][tuple(idx)] = OUTSIDE
        if box.end[c] == volume_shape[c] and box.shape[c]:
            idx = [slice(None)] * 3
            idx[c] = -1
            out[3 + c][tuple(idx)] = OUTSIDE
    return out


def discretize(aff: np.ndarray, bins: int = BINS) -> np.ndarray:
    """waterz's ``discretize<int>(value, bins)``: NaN and values <= 0 -> 0, >= 1 -> bins-1, else floor(v*bins)."""
    v = np.asarray(aff, dtype=np.float32)
    scaled = v * np.float32(bins)  # exact for a power of two, as float math in C++
    out = np.zeros(v.shape, np.int64)
    pos = v > 0
    out[pos] = np.minimum(np.floor(scaled[pos]).astype(np.int64), bins - 1)
    return out.astype(np.uint8 if bins <= 256 else np.int64)


def to_fixed(aff: np.ndarray) -> np.ndarray:
    """Affinities as int64 multiples of 2**-32, so sums are exact and independent of summation order."""
    return np.rint(np.asarray(aff, dtype=np.float64) * FIXED_ONE).astype(np.int64)


def mean_affinity_u8(affs: np.ndarray) -> np.ndarray:
    """A grey picture of the boundaries: the mean of the (C, Z, Y, X) affinities per voxel, 0..255
    (membranes dark, cell interiors bright, as in EM). Decode's outputs show it as their image."""
    a = as_float_affinities(affs).astype(np.float64)
    mean = a.sum(axis=0) / a.shape[0]
    return np.clip(np.floor(mean * 255.0 + 0.5), 0, 255).astype(np.uint8)
