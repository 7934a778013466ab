"""Batches streamed from Dask workers to the trainer: chunk iterators with prefetch and backpressure.

PyTC's chunk iterator, distributed. Each training volume is split by ``pieces`` (``DATA_CHUNK_NUM``);
a chunk's context (its core grown by half the augmented input patch, clipped to the volume) is loaded by
one worker task, ``chunk_iter`` patches (``DATA_CHUNK_ITER``) are drawn from it by batch tasks that
depend on it, then the chunk is released. ``active_chunks`` chunks are worked at once (one per worker
by default) and the next ones are loaded ahead (prefetch), so no batch waits on a load.

Backpressure: at most ``window`` batch tasks are in flight; a new one is submitted only when the trainer
takes one, so a slow trainer never piles batches up in memory and a fast one finds them ready.
Batches are yielded in submission order, so a run with the same seed sees the same batches in the
same order whatever the worker timing (reproducible).

The number of workers does not change the batches either, only ``active_chunks`` does (it sets how the
batches of the chunks being worked are interleaved): with the same ``active_chunks``, 1 and 2 workers
stream identical batches in identical order. Its default is one chunk per worker (every worker busy), so
by default a 2-worker run sees the same batches of each chunk visit as a 1-worker run, interleaved between
two chunks instead of one chunk after the other. Fix ``active_chunks`` to make runs on different clusters
identical batch for batch (tests/test_learn_stream.py).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from em_chunks.geometry import Box, ChunkGrid
from em_chunks.learn.augment import build_augmentor
from em_chunks.learn.data.batches import load_chunk, make_batch
from em_chunks.learn.data.sampling import BatchSpec
from em_chunks.learn.data.volumes import TrainingVolume


@dataclass(frozen=True)
class ChunkTask:
    volume: int
    chunk: int
    epoch: int
    core: Box
    context: Box


def chunk_tasks(volumes: Sequence[TrainingVolume], pieces: Sequence[int], in_shape: Sequence[int], seed: int) -> Iterator[ChunkTask]:
    """The endless, seeded order in which chunks are visited.

    Volumes are picked with probability proportional to their ``weight`` (samples per epoch, as SKOOTS
    allows); each volume walks its own chunks in a fresh random order every pass.
    """
    rng = np.random.default_rng([seed, 7])
    grids = []
    for vol in volumes:
        shape = vol.shape
        grid_pieces = tuple(min(p, s) for p, s in zip(pieces, shape))
        grids.append(ChunkGrid(shape, grid_pieces, tuple((n + 1) // 2 for n in in_shape)))
    weights = np.array([v.weight for v in volumes], dtype=float)
    weights /= weights.sum()
    orders: list[list[int]] = [[] for _ in volumes]
    passes = [0] * len(volumes)
    while True:
        v = int(rng.choice(len(volumes), p=weights))
        if not orders[v]:
            orders[v] = list(rng.permutation(len(grids[v])))
            passes[v] += 1
        c = int(orders[v].pop())
        chunk = grids[v].chunk(c)
        context = chunk.context.intersect(grids[v].volume)
        origin = volumes[v].box.offset  # grids cover the volume's roi; tasks speak volume coordinates
        yield ChunkTask(v, c, passes[v], chunk.core.shift(origin), context.shift(origin))


class BatchStream:
    """Iterate over training batches (dicts of numpy arrays) made on a Dask cluster.

    Parameters
    ----------
    client : a connected ``distributed.Client``.
    volumes : the training volumes (image, labels, optional valid mask, weight).
    spec : batch shape, augmentations, targets, rejection sampling.
    pieces : chunks per axis (``--chunks``).
    chunk_iter : patches drawn from a chunk before moving on (``DATA_CHUNK_ITER``).
    window : batch tasks in flight at most (backpressure bound).
    active_chunks : chunks served at once (default: one per worker).
    """

    def __init__(self, client, volumes: Sequence[TrainingVolume], spec: BatchSpec, pieces: Sequence[int] = (1, 1, 1),
                 chunk_iter: int = 256, seed: int = 0, window: int = 6, active_chunks: int | None = None) -> None:
        self.client, self.volumes, self.spec = client, list(volumes), spec
        self.in_shape = build_augmentor(spec.augment).input_shape(spec.out_shape)
        self.batches_per_chunk = max(1, int(chunk_iter) // spec.batch_size)
        self.seed, self.window = int(seed), max(1, int(window))
        n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        self.active = int(active_chunks or n_workers)
        self._tasks = chunk_tasks(self.volumes, pieces, self.in_shape, self.seed)
        self.stats = {"chunks_loaded": 0, "batches": 0, "tries": 0, "samples": 0}

    def _load(self, task: ChunkTask):
        refs = self.volumes[task.volume].refs()
        key = f"train-chunk-{self.seed}-{task.volume}-{task.chunk}-{task.epoch}-{id(self)}"
        self.stats["chunks_loaded"] += 1
        return self.client.submit(load_chunk, refs, task.core, task.context, key=key, pure=False)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        # slots: [chunk future, chunk task, batches left]; the next chunk of each slot is loaded ahead
        slots = []
        ahead = collections.deque()
        for _ in range(self.active):
            t = next(self._tasks)
            slots.append([self._load(t), t, self.batches_per_chunk])
        for _ in range(self.active):
            t = next(self._tasks)
            ahead.append((self._load(t), t))
        inflight: collections.deque = collections.deque()
        n = 0
        try:
            while True:
                while len(inflight) < self.window:
                    slot = slots[n % self.active]
                    if slot[2] == 0:  # chunk used up: switch to a prefetched one, prefetch the next
                        fut, t = ahead.popleft()
                        slot[:] = [fut, t, self.batches_per_chunk]
                        t2 = next(self._tasks)
                        ahead.append((self._load(t2), t2))
                    t = slot[1]
                    seed = [self.seed, t.volume, t.chunk, t.epoch, slot[2]]
                    seed_int = int(np.random.SeedSequence(seed).generate_state(1)[0])
                    inflight.append(self.client.submit(make_batch, slot[0], self.spec, seed_int, pure=False))
                    slot[2] -= 1
                    n += 1
                batch = inflight.popleft().result()
                self.stats["batches"] += 1
                self.stats["tries"] += int(batch.pop("tries"))
                self.stats["samples"] += self.spec.batch_size
                yield batch
        finally:
            # release pending work when the trainer stops (dropping the futures lets the scheduler forget
            # them; cancelling running tasks only adds noise in the worker logs)
            inflight.clear()
            slots.clear()
            ahead.clear()


def local_batches(volumes: Sequence[TrainingVolume], spec: BatchSpec, pieces=(1, 1, 1), chunk_iter: int = 256, seed: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """The same batches as :class:`BatchStream` with one active chunk, made in this process (no cluster).

    For tests and debugging: same seeds, same chunk order, no prefetch.
    """
    in_shape = build_augmentor(spec.augment).input_shape(spec.out_shape)
    per_chunk = max(1, int(chunk_iter) // spec.batch_size)
    for t in chunk_tasks(volumes, pieces, in_shape, seed):
        chunk = load_chunk(volumes[t.volume].refs(), t.core, t.context)
        for left in range(per_chunk, 0, -1):
            seed_int = int(np.random.SeedSequence([seed, t.volume, t.chunk, t.epoch, left]).generate_state(1)[0])
            batch = make_batch(chunk, spec, seed_int)
            batch.pop("tries")
            yield batch
