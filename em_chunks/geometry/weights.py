"""Integer blending weights of a window (pure numpy): the part of :mod:`em_chunks.learn.blend` that the
window grid needs, so planning windows never imports torch. Why integers: see :mod:`em_chunks.learn.blend`."""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np

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


__all__ = ["BLENDINGS", "MAX_COVER", "VALUE_BITS", "VALUE_LIMIT", "WEIGHT_BITS", "axis_profile", "window_weights"]
