"""Blending of overlapping window predictions in exact integer arithmetic, so chunking cannot change a bit.

Why integers: a voxel's output is ``sum_w weight_w * pred_w / sum_w weight_w`` over the windows that cover
it. In floating point that sum depends on the order of the additions, so a chunked run matches a
whole-volume run only if every voxel sees the same windows in the same order. We make the sum exact
instead, which makes it independent of order and of how windows are split between tasks:

* each window's weight map is quantised once to integers ``1 .. 2**WEIGHT_BITS`` (2**20) (never 0, so every
  covered voxel has a positive normaliser, also for the ``bump`` profile that vanishes at the borders);
* each prediction is rounded to fixed point, ``q = round(p * 2**VALUE_BITS)`` (resolution 6e-8, below
  float32's spacing near 1), after clamping ``|p| <= VALUE_LIMIT`` so int64 sums cannot overflow;
* ``acc += q * weight`` and ``norm += weight`` in int64 are exact, hence associative;
* the output is ``float32(acc / (norm * 2**VALUE_BITS))`` computed in float64 (deterministic rounding).

The only approximation against textbook float blending is the rounding of ``p`` (absolute error
<= 2**-25) and of the weights (2**-21 of the peak); both are far below what matters for affinities.

``uint8`` outputs are ``round(clip(p, 0, 1) * 255)`` (round half to even), so a stored value differs from
the float result by at most 0.5/255.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

WEIGHT_BITS = 20
VALUE_BITS = 24
VALUE_LIMIT = float(2**10)  # |prediction| clamp: 2**10 * 2**24 * 2**20 = 2**54 per window; 256 windows fit int64
MAX_COVER = 256  # most windows allowed to cover one voxel (checked by SlidingWindow)
BLENDINGS = ("gaussian", "bump", "constant")


def axis_profile(length: int, mode: str) -> np.ndarray:
    """The 1-D weight profile of a window axis (float64, peak 1 at the centre).

    ``gaussian``: sigma = length / 8, as PyTC's gaussian blending. ``bump``: ``exp(1 - 1/(1 - t**2))`` with
    ``t`` the voxel centre in (-1, 1), smooth and flat-topped. ``constant``: plain averaging.
    """
    i = np.arange(length, dtype=np.float64)
    centre = (length - 1) / 2.0
    if mode == "constant" or length == 1:
        return np.ones(length)
    if mode == "gaussian":
        sigma = length / 8.0
        return np.exp(-0.5 * ((i - centre) / sigma) ** 2)
    if mode == "bump":
        t = (i - centre) / (length / 2.0)  # voxel centres never reach +-1, so the profile is positive
        return np.exp(1.0 - 1.0 / (1.0 - t**2))
    raise ValueError(f"blending {mode!r}: expected one of {', '.join(BLENDINGS)}")


@lru_cache(maxsize=16)
def _weights(shape: tuple[int, ...], mode: str) -> np.ndarray:
    w = np.ones((), np.float64)
    for n in shape:
        w = np.multiply.outer(w, axis_profile(n, mode))
    w = w / w.max()
    q = np.maximum(np.rint(w * 2**WEIGHT_BITS), 1).astype(np.int64)
    q.flags.writeable = False
    return q


def window_weights(shape: Sequence[int], mode: str) -> np.ndarray:
    """Integer blending weights (int64, 1 .. 2**WEIGHT_BITS) of a window of ``shape``; read-only, cached."""
    return _weights(tuple(int(s) for s in shape), mode)


def quantize(pred: torch.Tensor) -> torch.Tensor:
    """Fixed-point int64 of a float prediction (exact: a power-of-two scale, then round half to even)."""
    p = pred.float().clamp(-VALUE_LIMIT, VALUE_LIMIT)
    return torch.round(p * float(2**VALUE_BITS)).to(torch.int64)


def finish(acc: np.ndarray, norm: np.ndarray, output_dtype: str = "float32") -> np.ndarray:
    """The blended output from the integer sums: ``acc`` (C, *shape) and ``norm`` (*shape)."""
    if np.any(norm <= 0):
        raise ValueError("some voxels are covered by no window (normaliser 0): the window grid is broken")
    out = (acc.astype(np.float64) / (norm.astype(np.float64) * float(2**VALUE_BITS))).astype(np.float32)
    return to_dtype(out, output_dtype)


def to_dtype(prob: np.ndarray, output_dtype: str) -> np.ndarray:
    """``float32`` as is, or ``uint8`` as ``round(clip(p, 0, 1) * 255)`` (max error 0.5/255)."""
    if output_dtype == "float32":
        return prob.astype(np.float32, copy=False)
    if output_dtype == "uint8":
        return np.rint(np.clip(prob, 0.0, 1.0) * np.float32(255.0)).astype(np.uint8)
    raise ValueError(f"output_dtype {output_dtype!r}: expected 'float32' or 'uint8'")


__all__ = ["axis_profile", "window_weights", "quantize", "finish", "to_dtype", "BLENDINGS"]
