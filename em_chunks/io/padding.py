"""Boundary modes for reads that reach outside a volume, with the meaning ``dask.array.overlap`` gives them.

A read of box ``[b, e)`` along an axis of length ``L`` maps every output position ``i`` to a source voxel
(or to "fill"). The modes, named as in :func:`dask.array.overlap.overlap`:

============== ====================================== =====================================
mode           position -1, -2, ... reads             numpy ``np.pad`` name
============== ====================================== =====================================
``reflect``    0, 1, 2, ... (edge voxel repeated)     ``symmetric``
``mirror``     1, 2, 3, ... (edge voxel not repeated) ``reflect``  (what PyTC's tile2volume uses)
``nearest``    0, 0, 0, ...                           ``edge``
``periodic``   L-1, L-2, ...                          ``wrap``
``none``       nothing: the read is clipped to the volume (shorter output)
a number       that constant                          ``constant``
============== ====================================== =====================================

Beware the clash of names: dask's (and scipy.ndimage's) ``reflect`` is numpy's ``symmetric``; numpy's
``reflect`` is scipy.ndimage's ``mirror``. We follow dask, and offer numpy's variant as ``mirror`` (alias
``reflect-no-edge``) so neither can be taken for the other. ``symmetric`` is accepted as an alias of
``reflect``. This module is pure numpy: the tile reader and the per-block dask tasks share it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from em_chunks.errors import InputError
from em_chunks.geometry import Box

from em_chunks.geometry.boundary import MODES, Boundary, is_constant, normalize_boundary  # noqa: F401  (MODES re-exported)

_NUMPY_NAMES = {"reflect": "symmetric", "mirror": "reflect", "nearest": "edge", "periodic": "wrap"}


def source_indices(begin: int, end: int, length: int, boundary: Boundary) -> np.ndarray:
    """For output positions ``begin..end-1``, the source index along an axis of ``length`` (-1 = fill).

    ``none`` is treated like a constant here (positions outside give -1); use :func:`clip_span` to drop them.
    """
    i = np.arange(begin, end, dtype=np.int64)
    inside = (i >= 0) & (i < length)
    mode = boundary
    if length <= 0:
        return np.full(i.shape, -1, np.int64)
    if mode == "reflect":  # period 2L, edge repeated
        m = np.mod(i, 2 * length)
        src = np.where(m >= length, 2 * length - 1 - m, m)
    elif mode == "mirror":  # period 2L-2, edge not repeated
        if length == 1:
            src = np.zeros_like(i)
        else:
            m = np.mod(i, 2 * length - 2)
            src = np.where(m >= length, 2 * length - 2 - m, m)
    elif mode == "nearest":
        src = np.clip(i, 0, length - 1)
    elif mode == "periodic":
        src = np.mod(i, length)
    else:  # constant or none
        src = np.where(inside, i, -1)
    return src.astype(np.int64)


def clip_span(begin: int, end: int, length: int, boundary: Boundary) -> tuple[int, int]:
    """The output span of a read ``[begin, end)``: unchanged, or clipped to the volume for ``none``."""
    if boundary == "none":
        b, e = max(begin, 0), min(end, length)
        return b, max(b, e)
    return begin, end


@dataclass(frozen=True, slots=True)
class Run:
    """Output positions ``[out, out+n)`` reading source ``src, src+step, ...`` (``src`` -1: fill).

    ``step`` is +1, -1, or 0 (one source voxel repeated, as ``nearest`` does).
    """

    out: int
    n: int
    src: int
    step: int

    @property
    def src_lo(self) -> int:
        return self.src - (self.n - 1) if self.step < 0 else self.src

    @property
    def src_hi(self) -> int:
        """One past the last source index touched."""
        if self.step > 0:
            return self.src + self.n
        return self.src + 1

    @property
    def fill(self) -> bool:
        return self.src < 0


def axis_runs(begin: int, end: int, length: int, boundary: Boundary) -> list[Run]:
    """Split the read ``[begin, end)`` into runs of consecutive source voxels (output relative to ``begin``).

    Runs let a reader copy whole slices (possibly reversed) instead of gathering voxel by voxel.
    ``none`` must be clipped first with :func:`clip_span`.
    """
    src = source_indices(begin, end, length, boundary)
    runs: list[Run] = []
    n = len(src)
    start = 0
    while start < n:
        s = int(src[start])
        stop = start + 1
        if s < 0:
            while stop < n and src[stop] < 0:
                stop += 1
            runs.append(Run(start, stop - start, -1, 1))
        else:
            step = int(src[stop] - s) if stop < n and src[stop] >= 0 else 1
            if step not in (-1, 0, 1):
                step = 1
            while stop < n and src[stop] >= 0 and src[stop] - src[stop - 1] == step:
                stop += 1
            runs.append(Run(start, stop - start, s, step))
        start = stop
    return runs


def _axis_copy(run: Run, lo: int, hi: int) -> tuple[slice, slice] | None:
    """Output slice and piece slice for the part of ``run`` whose source lies in piece ``[lo, hi)``."""
    p0, p1 = max(run.src_lo, lo), min(run.src_hi, hi)
    if p1 <= p0:
        return None
    if run.step == 0:
        return slice(run.out, run.out + run.n), slice(p0 - lo, p0 - lo + 1)
    if run.step > 0:
        o = run.out + (p0 - run.src)
        return slice(o, o + (p1 - p0)), slice(p0 - lo, p1 - lo)
    # reversed: output position run.out + (run.src - p) holds source p
    o0 = run.out + (run.src - (p1 - 1))
    stop = p0 - 1 - lo
    return slice(o0, o0 + (p1 - p0)), slice(p1 - 1 - lo, stop if stop >= 0 else None, -1)


def source_boxes(runs: Sequence[Sequence[Run]]) -> Iterable[Box]:
    """The source box of every combination of non-fill runs (what a padded read needs from the volume)."""
    import itertools

    for combo in itertools.product(*runs):
        if any(r.fill for r in combo):
            continue
        yield Box.from_bounds([r.src_lo for r in combo], [r.src_hi for r in combo])


def assemble(
    shape: Sequence[int],
    dtype: np.dtype | str,
    runs: Sequence[Sequence[Run]],
    pieces: Iterable[tuple[Box, np.ndarray]],
    fill: float = 0,
) -> np.ndarray:
    """Build a padded read from ``pieces`` (in-volume boxes with their voxels) following the axis ``runs``.

    Each piece is copied into every place the runs map it to (several, for a reflected border), so the
    caller decodes each piece once however often the padding repeats it. The per-axis slice pairs are
    worked out once per distinct piece interval: pieces of a grid share them, and this loop runs for
    every block of every pass.
    """
    import itertools

    lead = (slice(None),) * (len(shape) - len(runs))  # leading (channel) axes are copied whole
    needs_fill = any(r.fill for axis in runs for r in axis)
    out = np.full(tuple(shape), fill, dtype=dtype) if needs_fill else np.empty(tuple(shape), dtype=dtype)
    live = [[r for r in axis if not r.fill] for axis in runs]
    cache: list[dict[tuple[int, int], list[tuple[slice, slice]]]] = [{} for _ in live]
    for box, data in pieces:
        per_axis = []
        for axis, (lo, n) in enumerate(zip(box.offset, box.shape)):
            key = (lo, lo + n)
            pairs = cache[axis].get(key)
            if pairs is None:
                pairs = [c for c in (_axis_copy(r, lo, lo + n) for r in live[axis]) if c is not None]
                cache[axis][key] = pairs
            if not pairs:
                break
            per_axis.append(pairs)
        else:
            for combo in itertools.product(*per_axis):
                out[lead + tuple(c[0] for c in combo)] = data[lead + tuple(c[1] for c in combo)]
    return out


def pad(array: np.ndarray, pad_width: Sequence[tuple[int, int]], boundary: Boundary) -> np.ndarray:
    """``np.pad`` with a boundary of this module (dask names): ``none`` returns ``array`` unpadded."""
    mode = normalize_boundary(boundary)
    if mode == "none":
        return array
    widths = [(int(a), int(b)) for a, b in pad_width]
    if is_constant(mode):
        return np.pad(array, widths, mode="constant", constant_values=np.asarray(mode).astype(array.dtype))
    if array.size == 0:
        raise InputError(f"cannot pad an empty array with boundary {mode!r}")
    return np.pad(array, widths, mode=_NUMPY_NAMES[str(mode)])


def read_padded(array: Any, box: Box, boundary: Boundary) -> np.ndarray:
    """The voxels of ``box`` (any position) of ``array``, padded by ``boundary``: THE padded read (the
    tiled reader follows the same runs and is tested against it).

    ``array`` may be numpy, zarr or dask (read once, only the part inside the volume that the padding
    needs); axes before the last ``box.ndim`` (channels) are kept whole.
    """
    mode = normalize_boundary(boundary)
    ndim = len(array.shape)
    lead, spatial = tuple(array.shape[: ndim - box.ndim]), tuple(array.shape[ndim - box.ndim:])
    if Box.from_shape(spatial).contains(box):  # nothing to pad: the plain read, no copy
        data = array[(slice(None),) * len(lead) + box.slices()]
        if isinstance(data, np.ndarray):
            return data.copy()  # a view would let the caller write into the source
        return np.asarray(data.compute(scheduler="sync") if hasattr(data, "compute") else data)
    spans = [clip_span(b, e, n, mode) for b, e, n in zip(box.begin, box.end, spatial)]
    runs = [axis_runs(b, e, n, mode) for (b, e), n in zip(spans, spatial)]
    shape = lead + tuple(e - b for b, e in spans)
    fill = mode if is_constant(mode) else 0
    sources = list(source_boxes(runs))
    pieces = []
    if sources and all(s > 0 for s in shape):
        need = Box.from_bounds([min(b.begin[a] for b in sources) for a in range(box.ndim)],
                               [max(b.end[a] for b in sources) for a in range(box.ndim)])
        data = array[(slice(None),) * len(lead) + need.slices()]
        data = data.compute(scheduler="sync") if hasattr(data, "compute") else data
        pieces.append((need, np.asarray(data)))
    return assemble(shape, array.dtype, runs, pieces, fill=fill)
