"""The chunk grid: a volume split into ``(nz, ny, nx)`` pieces (PyTC ``DATA_CHUNK_NUM``).

Chunk ``i`` along an axis of length ``L`` split into ``n`` pieces covers ``[floor(i*L/n), floor((i+1)*L/n))``,
so pieces differ in size by at most one voxel and the grid depends only on ``(shape, pieces)``.
Each chunk has a *core* (the voxels it owns and writes) and a *context* (the core grown by the halo,
which it reads; it may reach outside the volume and is then padded by the reader).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterator, Sequence

from em_chunks.errors import InputError
from em_chunks.geometry.axes import per_axis
from em_chunks.geometry.box import Box


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of the grid: its grid ``index``, flat ``id`` (C order), ``core`` and ``context`` boxes."""

    index: tuple[int, ...]
    id: int
    core: Box
    context: Box

    @property
    def name(self) -> str:
        """A short name for task keys and messages, e.g. ``1-0-3``."""
        return "-".join(str(i) for i in self.index)


def split_axis(length: int, pieces: int) -> list[int]:
    """Boundaries ``[floor(i*L/n) for i in 0..n]`` of ``pieces`` near-equal parts of ``length``."""
    return [(i * length) // pieces for i in range(pieces + 1)]


def snapped_split(length: int, pieces: int, align: int = 1) -> list[int]:
    """:func:`split_axis` with interior boundaries rounded to the nearest multiple of ``align``.

    Used so chunk cores are unions of whole storage chunks: no two tasks ever write one storage chunk.
    """
    bounds = split_axis(length, pieces)
    if align == 1:
        return bounds
    return [0] + [min(length, ((b + align // 2) // align) * align) for b in bounds[1:-1]] + [length]


def storage_aligned(shape: Sequence[int], pieces: Sequence[int], max_chunk: Sequence[int] = (64, 128, 128)) -> tuple[int, ...]:
    """A storage chunk shape, per axis the largest power of two <= min(core size, max), whose multiples
    can carry the chunk boundaries with no empty chunk (so the aligned grid exists)."""
    out = []
    for length, n, cap in zip(shape, pieces, max_chunk):
        c = 1
        while c * 2 <= min(length // n, cap):
            c *= 2
        while c > 1:
            b = snapped_split(length, n, c)
            if all(e > s for s, e in zip(b, b[1:])):
                break
            c //= 2
        out.append(c)
    return tuple(out)


def parse_chunks(spec: str | Sequence[int], shape: Sequence[int] | None = None, name: str = "--chunks") -> tuple[int, ...]:
    """Parse and check a chunk spec such as ``"2,4,4"``; refuse zero, negative, non-integer or too many pieces."""
    values = per_axis(spec, name, scalar=False, minimum=1, noun="pieces per axis")
    if shape is not None:
        shape3 = tuple(shape)[-3:]
        for axis, (n, length) in enumerate(zip(values, shape3)):
            if n > length:
                raise InputError(
                    f"{name} {spec!r}: {n} pieces along axis {'zyx'[axis]} but the volume has only "
                    f"{length} voxels there (shape {shape3})"
                )
    return values


@dataclass(frozen=True, slots=True)
class ChunkGrid:
    """A volume of ``shape`` split into ``pieces`` per axis, each chunk read with ``halo`` voxels of context."""

    shape: tuple[int, ...]
    pieces: tuple[int, ...]
    halo: tuple[int, ...] = (0, 0, 0)
    #: snap interior boundaries to multiples of this (per axis); 1 keeps the exact floor(i*L/n) split.
    align: tuple[int, ...] = (1, 1, 1)

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        pieces = parse_chunks(tuple(self.pieces), shape)
        halo = (int(self.halo),) * len(shape) if isinstance(self.halo, int) else tuple(int(h) for h in self.halo)
        if len(halo) != len(shape) or any(h < 0 for h in halo):
            raise InputError(f"halo {self.halo!r}: expected {len(shape)} non-negative integers")
        align = (int(self.align),) * len(shape) if isinstance(self.align, int) else tuple(int(a) for a in self.align)
        if len(align) != len(shape) or any(a < 1 for a in align):
            raise ValueError(f"align {self.align!r}: expected {len(shape)} positive integers")
        for length, n, a in zip(shape, pieces, align):
            b = snapped_split(length, n, a)
            if any(e <= s for s, e in zip(b, b[1:])):
                raise ValueError(f"align {a} leaves an empty chunk when splitting {length} voxels in {n}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "pieces", pieces)
        object.__setattr__(self, "halo", halo)
        object.__setattr__(self, "align", align)

    @property
    def bounds(self) -> tuple[list[int], ...]:
        """Per axis, the ``pieces + 1`` chunk boundaries."""
        return tuple(snapped_split(length, n, a) for length, n, a in zip(self.shape, self.pieces, self.align))

    @property
    def dask_chunks(self) -> tuple[tuple[int, ...], ...]:
        """The core sizes per axis, in the form ``dask.array`` expects for ``chunks=``."""
        return tuple(tuple(b[i + 1] - b[i] for i in range(len(b) - 1)) for b in self.bounds)

    @property
    def volume(self) -> Box:
        return Box.from_shape(self.shape)

    def __len__(self) -> int:
        n = 1
        for p in self.pieces:
            n *= p
        return n

    def flat_id(self, index: Sequence[int]) -> int:
        """C-order flat id of a grid index."""
        fid = 0
        for i, n in zip(index, self.pieces):
            if not 0 <= i < n:
                raise IndexError(f"chunk index {tuple(index)} outside grid {self.pieces}")
            fid = fid * n + int(i)
        return fid

    def index_of(self, flat_id: int) -> tuple[int, ...]:
        out = []
        for n in reversed(self.pieces):
            out.append(flat_id % n)
            flat_id //= n
        return tuple(reversed(out))

    def chunk(self, index: Sequence[int] | int) -> Chunk:
        idx = self.index_of(index) if isinstance(index, int) else tuple(int(i) for i in index)
        bounds = self.bounds
        begin = tuple(b[i] for b, i in zip(bounds, idx))
        end = tuple(b[i + 1] for b, i in zip(bounds, idx))
        core = Box.from_bounds(begin, end)
        return Chunk(index=idx, id=self.flat_id(idx), core=core, context=core.grow(self.halo))

    def __iter__(self) -> Iterator[Chunk]:
        for idx in itertools.product(*(range(n) for n in self.pieces)):
            yield self.chunk(idx)

    def neighbours(self, chunk: Chunk) -> list[Chunk]:
        """The up to 26 chunks that touch ``chunk`` (faces, edges, corners)."""
        out = []
        for d in itertools.product((-1, 0, 1), repeat=len(self.pieces)):
            if not any(d):
                continue
            idx = tuple(i + x for i, x in zip(chunk.index, d))
            if all(0 <= i < n for i, n in zip(idx, self.pieces)):
                out.append(self.chunk(idx))
        return out

    def chunk_at(self, point: Sequence[int]) -> Chunk:
        """The chunk whose core holds voxel ``point``."""
        import bisect

        idx = tuple(bisect.bisect_right(b, p) - 1 for b, p in zip(self.bounds, point))
        return self.chunk(idx)
