"""Blocks of chunks in an octree: level 0 is the chunk grid, each level halves the grid per axis.

The global decoding steps (fragment joins, agglomeration, dust) run one task per block, level by
level: a block decides what lies inside it and away from its faces, and passes the rest to its
parent, so the data reaching the top is surface-sized, not volume-sized. Block ``i`` of level ``l``
covers chunk indices ``[i * 2**l, min((i + 1) * 2**l, n))`` on each axis; an axis with fewer chunks
simply stops splitting earlier. The root is the one block of the top level.

Faces are numbered as the decoding kernels number directions: 0..5 = -z, -y, -x, +z, +y, +x.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from em_chunks.geometry.box import Box
from em_chunks.geometry.grid import Chunk, ChunkGrid

FACES = ((0, -1), (1, -1), (2, -1), (0, 1), (1, 1), (2, 1))  # face k -> (axis, step)


@dataclass(frozen=True, slots=True)
class Block:
    """One block: its ``level``, block ``index`` at that level, flat ``id`` (C order at that level) and
    the chunk index range ``[lo, hi)`` it covers."""

    level: int
    index: tuple[int, ...]
    id: int
    lo: tuple[int, ...]
    hi: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"L{self.level}-" + "-".join(str(i) for i in self.index)


class Octree:
    """The block hierarchy over a :class:`ChunkGrid`."""

    def __init__(self, grid: ChunkGrid) -> None:
        self.grid = grid
        self.pieces = tuple(grid.pieces)
        top = 0
        while any(-(-n // (1 << top)) > 1 for n in self.pieces):
            top += 1
        self.top = top  # level of the root

    @property
    def levels(self) -> range:
        return range(self.top + 1)

    def shape(self, level: int) -> tuple[int, ...]:
        """Number of blocks per axis at ``level``."""
        return tuple(-(-n // (1 << level)) for n in self.pieces)

    def block(self, level: int, index: Sequence[int]) -> Block:
        shape = self.shape(level)
        idx = tuple(int(i) for i in index)
        fid = 0
        for i, n in zip(idx, shape):
            if not 0 <= i < n:
                raise IndexError(f"block {idx} outside level {level} shape {shape}")
            fid = fid * n + i
        step = 1 << level
        lo = tuple(i * step for i in idx)
        hi = tuple(min((i + 1) * step, n) for i, n in zip(idx, self.pieces))
        return Block(level, idx, fid, lo, hi)

    def blocks(self, level: int) -> Iterator[Block]:
        shape = self.shape(level)
        for fid in range(int(np.prod(shape))):
            yield self.block(level, np.unravel_index(fid, shape))

    def root(self) -> Block:
        return self.block(self.top, (0,) * len(self.pieces))

    def children(self, block: Block) -> list[Block]:
        """The blocks of the level below inside ``block`` (C order)."""
        if block.level == 0:
            return []
        shape = self.shape(block.level - 1)
        ranges = [range(2 * i, min(2 * i + 2, n)) for i, n in zip(block.index, shape)]
        return [self.block(block.level - 1, (z, y, x)) for z in ranges[0] for y in ranges[1] for x in ranges[2]]

    def parent(self, block: Block) -> Block | None:
        if block.level == self.top:
            return None
        return self.block(block.level + 1, tuple(i // 2 for i in block.index))

    def chunks(self, block: Block) -> list[Chunk]:
        """The grid chunks a block covers (C order)."""
        return [self.grid.chunk((z, y, x)) for z in range(block.lo[0], block.hi[0])
                for y in range(block.lo[1], block.hi[1]) for x in range(block.lo[2], block.hi[2])]

    def box(self, block: Block) -> Box:
        """The voxels a block covers."""
        bounds = self.grid.bounds
        return Box.from_bounds([b[i] for b, i in zip(bounds, block.lo)], [b[i] for b, i in zip(bounds, block.hi)])

    def as_chunk(self, block: Block) -> Chunk:
        """The block in the shape the stage runner takes (``id`` = flat id at its level)."""
        box = self.box(block)
        return Chunk(index=block.index, id=block.id, core=box, context=box)

    def outer_faces(self, block: Block, chunk_index: np.ndarray, face_bits: np.ndarray) -> np.ndarray:
        """Of each chunk's ``face_bits``, those on ``block``'s outer boundary (not on the volume's).

        ``chunk_index``: (k, 3) grid indices of chunks inside ``block``; ``face_bits``: uint8 (k,),
        bit f set when the thing touches face f of its chunk. Returns uint8 (k,).
        """
        ci = np.asarray(chunk_index, np.int64).reshape(-1, 3)
        bits = np.asarray(face_bits, np.uint8)
        out = np.zeros(bits.shape, np.uint8)
        for f, (axis, step) in enumerate(FACES):
            if step < 0:
                on = (ci[:, axis] == block.lo[axis]) & (block.lo[axis] > 0)
            else:
                on = (ci[:, axis] == block.hi[axis] - 1) & (block.hi[axis] < self.pieces[axis])
            out |= np.where(on, bits & np.uint8(1 << f), np.uint8(0)).astype(np.uint8)
        return out

    def contains_chunks(self, block: Block, chunk_index: np.ndarray) -> np.ndarray:
        """True for each (k, 3) chunk index inside ``block``."""
        ci = np.asarray(chunk_index, np.int64).reshape(-1, 3)
        lo, hi = np.asarray(block.lo), np.asarray(block.hi)
        return np.all((ci >= lo) & (ci < hi), axis=1)

    def chunk_index_of(self, chunk_ids: np.ndarray) -> np.ndarray:
        """(k, 3) grid indices of flat chunk ids."""
        return np.stack(np.unravel_index(np.asarray(chunk_ids, np.int64), self.pieces), axis=1).astype(np.int64)
