"""Exact metrics reduced on the workers: per-chunk contingency tables never reach the client.

``contingency_scores`` runs ``produce(chunk, *args_for(chunk))`` on a worker per chunk (one
contingency table per threshold/trial) and reduces the tables with a tree of tasks that is also a
hash shuffle, so that no task, and not the client, ever holds the volume's whole table. With fan-in
``f`` and split ``s`` (both 8), N chunks and L the smallest level with ``f**L >= N``:

* level 0: one leaf per chunk, in flat-id order; its tables become one keyed table
  (``ops/keyed_counts.py``: the ground-truth sizes, and per table the pairs and the segment sizes).
* level 1: node b merges the tables of leaves ``[f*b, f*b + f)`` and splits the result into ``s``
  parts by hash digit 0 of the key.
* level l >= 2: node (b, r) covers the block of ``f**l`` chunks b and hash range r (its l-1 low
  digits): it merges part ``r // s**(l-2)`` of each of its ``f`` children (l-1, c, r mod s**(l-2))
  and splits by digit l-1. The part is picked by a small task where the child's output lives, so
  only it travels.
* level L covers every chunk: each of its ``s**(L-1)`` nodes holds *every* row of the keys in its
  hash range and emits their exact :class:`MetricSums` (a few Python ints). The client adds those up
  (exact integers and :class:`ExactSum`), so the scores are bit-identical for any chunk grid,
  fan-in, split or arrival order.

Tasks: N leaves + ``ceil(N/f**l) * s**(l-1)`` nodes at level l (about N/f) + one pick per part below
the last level (about N per level): about ``N * (L + L/f)``; ``TreeShape(1000).tasks`` = 4941 (L =
4), ``TreeShape(10000).tasks`` = 61994 (L = 5) — O(chunks * levels), never chunks x partitions.

Memory per task, when no key repeats across chunks (the worst case): a level-1 node holds ``f``
chunks' tables, a level-l node ``f`` parts of 1/s**(l-1) of ``f**(l-1)`` chunks' rows: ``f *
(f/s)**(l-1)`` chunks' worth, i.e. a constant ``f`` chunks' worth at every level when s = f. Keys
that repeat (the ground truth, a neuron spanning many chunks) are one row per task after each merge,
so an object spanning the whole volume costs one row per task, not one per chunk.
``split_leaves=True`` splits at the leaves too: one chunk's worth per task, for ``N * s`` more tasks
(40528 for 1000 chunks). Cluster-wide the distinct rows are held once (on the workers, spillable)
until the last level. The client holds a future per leaf (released as it finishes) and per final
node, and the running sums: O(N) small objects, never a table.

Resume: with a :class:`RunState`, each leaf saves its tables (``<stage>/<chunk id>.npz``; table 0
under the names the old client-side stage used: seg, gt, count) and a rerun loads them on the worker
instead of producing them. The reduction itself is not resumed: it only merges data already
produced, far cheaper than the stages that produce its inputs.
"""

from __future__ import annotations

import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from distributed import Client, as_completed

from em_chunks.engine.record import RunRecord, StageTiming
from em_chunks.engine.runner import FailedChunk, _describe, _Progress, _scatter_large
from em_chunks.engine.state import RunState
from em_chunks.errors import ChunkFailure
from em_chunks.geometry import Chunk
from em_chunks.ops import keyed_counts as K
from em_chunks.ops.metric_sums import MetricSums
from em_chunks.ops.metrics import Contingency

FAN_IN = 8  # children per node
SPLIT = 8  # hash parts per node (= FAN_IN keeps the rows per task constant across levels)


@dataclass(frozen=True)
class TreeShape:
    """The reduction tree over ``chunks`` leaves: pure arithmetic, for the client and the docs.

    ``split_leaves``: the leaves split their table too, so level-1 nodes take one part per leaf (one
    chunk's worth of rows per task instead of ``fan_in`` chunks', for ``chunks * split`` more
    tasks)."""

    chunks: int
    fan_in: int = FAN_IN
    split: int = SPLIT
    split_leaves: bool = False

    @property
    def levels(self) -> int:
        """The last level L: the smallest with fan_in**L >= chunks (0 for one chunk)."""
        level = 0
        while self.fan_in**level < self.chunks:
            level += 1
        return level

    def blocks(self, level: int) -> int:
        return -(-self.chunks // self.fan_in**level)

    def ranges(self, level: int) -> int:
        """Hash ranges per block at ``level`` (a leaf holds all keys of its chunk)."""
        return 1 if level == 0 else self.split ** (level - 1 + self.split_leaves)

    def digit(self, level: int) -> int:
        """The hash digit a task at ``level`` (below the last) splits its table by."""
        return 0 if level == 0 else level - 1 + self.split_leaves

    def splits(self, level: int) -> bool:
        """Whether tasks at ``level`` split their table (the last level emits sums instead)."""
        return level < self.levels and (level > 0 or self.split_leaves)

    @property
    def tasks(self) -> int:
        """Leaves + nodes + one part-picking task per part of every splitting task."""
        nodes = [self.blocks(lv) * self.ranges(lv) for lv in range(self.levels + 1)]
        picks = sum(n * self.split for lv, n in enumerate(nodes) if self.splits(lv))
        return sum(nodes) + picks


@dataclass(frozen=True)
class Reduction:
    """What a reduction returns to the client: per table the exact sums, and how the tree ran."""

    sums: list[MetricSums]
    tasks: int
    levels: int
    peak_rows: int  # the most keyed rows any one task loaded (its inputs, before merging)
    chunks_run: int
    chunks_skipped: int

    def scores(self) -> list[dict[str, float]]:
        return [s.scores() for s in self.sums]


# ---- worker side ---------------------------------------------------------------------------------


def _save(root: str, stage: str, chunk_id: int, tables: Sequence[Contingency]) -> None:
    arrays = {}
    for t, table in enumerate(tables):
        tail = f"_{t}" if t else ""
        arrays.update({f"seg{tail}": table.seg, f"gt{tail}": table.gt, f"count{tail}": table.count})
    RunState(root).save(stage, chunk_id, arrays)


def _load(root: str, stage: str, chunk_id: int, n_tables: int) -> list[Contingency]:
    a = RunState(root).load(stage, chunk_id)
    tails = [f"_{t}" if t else "" for t in range(n_tables)]
    return [Contingency(a[f"seg{x}"], a[f"gt{x}"], a[f"count{x}"]) for x in tails]


def _leaf(
    produce: Callable[..., Sequence[Contingency]],
    chunk: Chunk,
    args: tuple,
    n_tables: int,
    root: Optional[str],
    stage: str,
    done: bool,
    last: bool,
    split: int,
) -> tuple[Any, int]:
    """Produce (or load) a chunk's tables: its keyed table (split in ``split`` parts by hash digit 0
    when ``split``), or at once its sums for a one-chunk tree."""
    if done:
        tables = _load(str(root), stage, chunk.id, n_tables)
    else:
        tables = list(produce(chunk, *args))
        if len(tables) != n_tables or not all(isinstance(t, Contingency) for t in tables):
            raise ValueError(
                f"produce returned {len(tables)} object(s) for chunk {chunk.name}, "
                f"expected {n_tables} Contingency table(s)"
            )
        if root is not None:
            _save(root, stage, chunk.id, tables)
    table = K.keyed_counts(tables)
    if last:
        return K.metric_sums_of(table, n_tables), len(table)
    return (K.split_counts(table, 0, split) if split else table), len(table)


def _node(
    inputs: Sequence[tuple[K.KeyedCounts, int]], n_tables: int, digit: int, split: int, last: bool
) -> tuple[Any, int]:
    """Merge one hash range of some chunks; split it by the next digit, or (keys complete) emit
    their sums."""
    peak = max([sum(len(t) for t, _ in inputs)] + [p for _, p in inputs])
    merged = K.merge_counts([t for t, _ in inputs])
    return (
        K.metric_sums_of(merged, n_tables) if last else K.split_counts(merged, digit, split)
    ), peak


def _pick(parts: tuple[list[K.KeyedCounts], int], index: int) -> tuple[K.KeyedCounts, int]:
    """One part of a node's output (runs where the output is: only that part then travels)."""
    return parts[0][index], parts[1]


# ---- client side ---------------------------------------------------------------------------------


def _submit_tree(
    client: Client,
    leaves: list,
    shape: TreeShape,
    n_tables: int,
    prefix: str,
    token: str,
    retries: int,
) -> list:
    """Submit levels 1..L over the leaf futures; return the last level's futures.

    Each level's futures are dropped once the next level is submitted: Dask keeps a result while a
    submitted task still needs it and frees it after, so intermediate tables never pile up."""
    prev = {(b, 0): f for b, f in enumerate(leaves)}
    f = shape.fan_in
    for level in range(1, shape.levels + 1):
        last = level == shape.levels
        below = shape.ranges(level - 1)
        nodes = {}
        for b in range(shape.blocks(level)):
            children = range(b * f, min((b + 1) * f, shape.blocks(level - 1)))
            for r in range(shape.ranges(level)):
                if not shape.splits(level - 1):  # unsplit leaves: take their whole tables
                    inputs = [prev[(c, 0)] for c in children]
                else:
                    rp, part = r % below, r // below
                    inputs = [
                        client.submit(
                            _pick,
                            prev[(c, rp)],
                            part,
                            pure=False,
                            retries=retries,
                            key=f"{prefix}-part-{level - 1}-{c}-{rp}-{part}-{token}",
                        )
                        for c in children
                    ]
                nodes[(b, r)] = client.submit(
                    _node,
                    inputs,
                    n_tables,
                    shape.digit(level),
                    shape.split,
                    last,
                    pure=False,
                    retries=retries,
                    key=f"{prefix}-reduce-{level}-{b}-{r}-{token}",
                )
        prev = nodes
    return list(prev.values())


def reduce_contingencies(
    client: Client,
    chunks: Sequence[Chunk],
    produce: Callable[..., Sequence[Contingency]],
    args_for: Callable[[Chunk], tuple],
    n_tables: int,
    *,
    key_prefix: str = "metrics",
    state: Optional[RunState] = None,
    stage: str = "contingency",
    fan_in: int = FAN_IN,
    split: int = SPLIT,
    split_leaves: bool = False,
    retries: int = 2,
    record: Optional[RunRecord] = None,
    progress: bool = True,
) -> Reduction:
    """Run the leaves and the reduction tree; only scalars come back (see the module docstring).

    Failed chunks are listed with their boxes in one :class:`ChunkFailure` once every leaf has
    ended."""
    if n_tables < 1:
        raise ValueError(f"n_tables must be >= 1, got {n_tables}")
    if fan_in < 2:
        raise ValueError(f"fan_in must be >= 2, got {fan_in}")
    K.split_counts(K.KeyedCounts.empty(), 0, split)  # checks split
    chunks = sorted(chunks, key=lambda c: c.id)
    shape = TreeShape(len(chunks), fan_in, split, split_leaves)
    digits = shape.digit(shape.levels - 1) + 1 if shape.levels else 0
    if digits * (split.bit_length() - 1) > 64:
        raise ValueError(f"{len(chunks)} chunks need more hash digits than 64 bits hold")
    t0 = time.perf_counter()
    done = state.done(stage) if state is not None else set()
    root = str(state.root) if state is not None else None
    token = uuid.uuid4().hex[:8]
    last = shape.levels == 0
    leaves, chunk_of = [], {}
    for chunk in chunks:
        skip = chunk.id in done
        args = () if skip else _scatter_large(client, tuple(args_for(chunk)))
        fut = client.submit(
            _leaf,
            produce,
            chunk,
            args,
            n_tables,
            root,
            stage,
            skip,
            last,
            split if shape.splits(0) else 0,
            key=f"{key_prefix}-{chunk.name}-{token}",
            pure=False,
            retries=retries,
        )
        leaves.append(fut)
        chunk_of[fut.key] = chunk
    finals = (
        leaves
        if last
        else _submit_tree(client, leaves, shape, n_tables, key_prefix, token, retries)
    )
    final_keys = {f.key for f in finals}
    skipped = len(done & {c.id for c in chunks})
    bar = _Progress(progress)
    bar.add(stage, len(chunks) - skipped, skipped)
    if progress:
        print(
            f"{stage}: exact metrics reduced on the workers: {shape.tasks} task(s) in "
            f"{shape.levels} level(s), {len(finals)} final part(s)",
            file=sys.stderr,
        )
    sums = [MetricSums() for _ in range(n_tables)]
    peak, failures, errors = 0, [], []
    waiting = as_completed(list(dict.fromkeys(leaves + finals)))
    del leaves, finals
    try:
        for fut in waiting:
            if fut.key in chunk_of:
                bar.advance(stage)
                if fut.status != "finished":
                    failures.append(
                        FailedChunk(stage, chunk_of[fut.key], _describe(fut.exception()))
                    )
            if fut.key in final_keys:
                if fut.status == "finished":
                    part, rows = fut.result()  # a list of MetricSums: scalars
                    sums = [a + b for a, b in zip(sums, part)]
                    peak = max(peak, rows)
                else:
                    errors.append(f"{fut.key}: {_describe(fut.exception())}")
            fut.release()
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    ran = [c for c in chunks if c.id not in done]
    failed_ids = {f.chunk.id for f in failures}
    bar.done(stage, len(failures), seconds)
    if record is not None:
        voxels = sum(c.core.size for c in ran if c.id not in failed_ids)
        record.add_stage(
            StageTiming(stage, seconds, voxels, len(ran) - len(failed_ids), len(chunks) - len(ran))
        )
    if failures:
        failures.sort(key=lambda x: x.chunk.id)
        lines = "; ".join(x.line() for x in failures[:5])
        more = f" (+{len(failures) - 5} more)" if len(failures) > 5 else ""
        raise ChunkFailure(f"{len(failures)} chunk(s) failed (in {stage}): {lines}{more}")
    if errors:
        raise ChunkFailure(f"{stage}: {len(errors)} reduction task(s) failed: {errors[0]}")
    return Reduction(sums, shape.tasks, shape.levels, peak, len(ran), len(chunks) - len(ran))


def contingency_scores(
    client: Client,
    chunks: Sequence[Chunk],
    produce: Callable[..., list[Contingency]],
    args_for: Callable[[Chunk], tuple],
    n_tables: int,
    *,
    key_prefix: str = "metrics",
    **options: Any,
) -> list[dict[str, float]]:
    """The exact scores (``ops/metrics.scores``'s keys) of each of the ``n_tables`` tables that
    ``produce(chunk, *args_for(chunk))`` returns per chunk, summed over ``chunks`` on the workers.

    ``options`` (see :func:`reduce_contingencies`): ``state``/``stage`` (resume of the leaves),
    ``fan_in``, ``split``, ``split_leaves``, ``retries``, ``record``, ``progress``. Raises
    InputError when no voxel has a ground-truth label."""
    return reduce_contingencies(
        client, chunks, produce, args_for, n_tables, key_prefix=key_prefix, **options
    ).scores()


__all__ = [
    "FAN_IN",
    "SPLIT",
    "Reduction",
    "TreeShape",
    "contingency_scores",
    "reduce_contingencies",
]
