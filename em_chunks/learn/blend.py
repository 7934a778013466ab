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

import numpy as np
import torch

from em_chunks.geometry.weights import (  # noqa: F401  (re-exported: the weights are pure geometry)
    BLENDINGS,
    MAX_COVER,
    VALUE_BITS,
    VALUE_LIMIT,
    WEIGHT_BITS,
    axis_profile,
    window_weights,
)


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
