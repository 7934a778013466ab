"""Affinity targets for any list of offsets, in waterz's convention, with masks for edges we cannot judge.

Convention (waterz, DeepEM): the channel for offset ``o = (dz, dy, dx)`` at voxel ``v`` is the edge between
``v`` and ``v - o``; it is 1 iff ``label[v] == label[v - o] != 0``. So channel 0 of ``aff3`` (offset
(1, 0, 0)) at ``v`` links ``v`` to the voxel one section *above* (lower z), exactly what
``waterz.agglomerate`` reads. The mask is 0 where ``v - o`` falls outside the patch, or where either end of
the edge is outside the valid region: the loss ignores those edges instead of learning "boundary" there.

Pure numpy: the loader workers compute targets next to the data, the trainer only receives arrays.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: nearest-neighbour affinities, channel order z, y, x as waterz expects
AFF3: tuple[tuple[int, int, int], ...] = ((1, 0, 0), (0, 1, 0), (0, 0, 1))

#: the DeepEM / Lee et al. 2017 long-range set. The short-range edges come first in z, y, x order so the
#: first three channels are directly the waterz input; then z 2-4, x 3/9/27, y 3/9/27 as DeepEM lists them.
AFF12: tuple[tuple[int, int, int], ...] = AFF3 + (
    (2, 0, 0), (3, 0, 0), (4, 0, 0),
    (0, 0, 3), (0, 0, 9), (0, 0, 27),
    (0, 3, 0), (0, 9, 0), (0, 27, 0),
)

#: 2D nearest-neighbour affinities (y, x) for section-wise (DO_2D) training
AFF2: tuple[tuple[int, int], ...] = ((1, 0), (0, 1))

NAMED = {"aff3": AFF3, "aff12": AFF12, "aff2": AFF2}


def widen_boundaries(label: np.ndarray, radius: Sequence[int]) -> np.ndarray:
    """Labels with every voxel within ``radius`` (per axis, a box) of a different label set to 0.

    Why (PyTC ``LABEL_EROSION``, gunpowder ``GrowBoundary``): dense labels that assign the membrane to
    the bodies put the cut between two neurons on one arbitrary voxel face inside a membrane several
    voxels thick, so a network can only learn a soft, blurred boundary there, which a watershed leaks
    through. Widened, the boundary covers the membrane: its affinities are learnt as clearly 0. Both
    sides of a contact lose ``radius`` voxels (a boundary ``2 radius`` voxels thick); background (0)
    grows the same way. Array borders replicate the edge voxel, so they never invent a boundary.
    """
    from scipy import ndimage

    label = np.asarray(label)
    size = tuple(2 * int(r) + 1 for r in radius)
    if len(size) != label.ndim:
        raise ValueError(f"radius {tuple(radius)} has {len(size)} axes, labels have {label.ndim}")
    if all(s == 1 for s in size) or label.size == 0:
        return label
    high = ndimage.maximum_filter(label, size=size, mode="nearest")
    low = ndimage.minimum_filter(label, size=size, mode="nearest")
    return np.where(high == low, label, np.zeros((), label.dtype))


def affinity_offsets(spec: str | Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """Offsets from a name ("aff3", "aff12", "aff2") or an explicit list such as ``[[1,0,0],[0,3,0]]``."""
    if isinstance(spec, str):
        if spec not in NAMED:
            raise ValueError(f"affinity set {spec!r}: expected one of {', '.join(NAMED)} or a list of offsets")
        return [tuple(o) for o in NAMED[spec]]
    out = [tuple(int(v) for v in o) for o in spec]
    if not out or len({len(o) for o in out}) != 1:
        raise ValueError(f"offsets {spec!r}: expected a non-empty list of equally long integer tuples")
    if any(all(v == 0 for v in o) for o in out):
        raise ValueError(f"offsets {spec!r}: the zero offset links a voxel to itself")
    return out


def short_range_channels(offsets: Sequence[Sequence[int]]) -> list[int]:
    """Indices of the unit offsets (z, y, x order): the channels a waterz decoder reads."""
    offsets = [tuple(o) for o in offsets]
    dims = len(offsets[0])
    units = [tuple(int(a == b) for b in range(dims)) for a in range(dims)]
    missing = [u for u in units if u not in offsets]
    if missing:
        raise ValueError(f"offsets {offsets}: no channel for the unit offsets {missing}")
    return [offsets.index(u) for u in units]


def _edge_slices(shape: Sequence[int], offset: Sequence[int]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Slices selecting ``v`` and ``v - offset`` for every ``v`` whose partner is inside the array."""
    here, there = [], []
    for n, d in zip(shape, offset):
        if d >= 0:
            here.append(slice(min(d, n), n))
            there.append(slice(0, max(n - d, 0)))
        else:
            here.append(slice(0, max(n + d, 0)))
            there.append(slice(min(-d, n), n))
    return tuple(here), tuple(there)


def affinities(
    label: np.ndarray,
    offsets: Sequence[Sequence[int]],
    valid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Affinity targets and their loss mask, both ``float32`` of shape ``(len(offsets),) + label.shape``.

    ``valid`` (same shape, nonzero = valid) marks voxels whose labels can be trusted; an edge is judged
    only if both its ends are valid and inside the array.
    """
    label = np.asarray(label)
    if valid is not None and valid.shape != label.shape:
        raise ValueError(f"valid mask shape {valid.shape} differs from label shape {label.shape}")
    aff = np.zeros((len(offsets),) + label.shape, dtype=np.float32)
    mask = np.zeros_like(aff)
    ok = None if valid is None else np.asarray(valid) != 0
    for c, off in enumerate(offsets):
        if len(off) != label.ndim:
            raise ValueError(f"offset {tuple(off)} has {len(off)} axes, labels have {label.ndim}")
        here, there = _edge_slices(label.shape, off)
        a, b = label[here], label[there]
        aff[c][here] = (a == b) & (a != 0)
        mask[c][here] = 1.0 if ok is None else (ok[here] & ok[there])
    return aff, mask
