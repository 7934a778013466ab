"""Run one stage of a pipeline: one Dask task per chunk, resume-aware, with progress and a failure summary.

A stage function runs on a worker as ``func(chunk, *args)``: it reads its own context box, runs a pure
kernel, writes its core to storage and returns a small summary (a dict of numpy arrays). The worker then
saves the summary, which marks the chunk done. Only boxes, statuses and summaries cross the scheduler.
"""

from __future__ import annotations

import sys
import time
import traceback
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from distributed import Client, as_completed

from em_chunks.engine.record import RunRecord, StageTiming
from em_chunks.engine.state import RunState
from em_chunks.errors import ChunkFailure, InputError
from em_chunks.geometry import Chunk

Summary = Mapping[str, Any]
StageFunc = Callable[..., Summary]


@dataclass(frozen=True)
class FailedChunk:
    stage: str
    chunk: Chunk
    error: str

    def line(self) -> str:
        return f"{self.stage} chunk {self.chunk.name} box {self.chunk.core}: {self.error}"


def _execute(func: StageFunc, root: str, stage: str, chunk: Chunk, args: tuple, deps: list | None = None) -> Summary:
    """Worker side: run the stage, then mark the chunk done by saving its summary (data first).

    ``deps`` are the (already resolved) results of the tasks this one waited for; unused here."""
    summary = func(chunk, *args)
    RunState(root).save(stage, chunk.id, summary)
    return summary


def _describe(exc: BaseException) -> str:
    """One line for a failed chunk: user errors as they are, others with their type and last frame."""
    if isinstance(exc, InputError):
        return str(exc)
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" ({tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno})" if tb else ""
    return f"{exc.__class__.__name__}: {' '.join(str(exc).split())}{where}"


class _Progress:
    """One rich progress display (a bar per stage) on a terminal; start and end lines otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.bar = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description:>14}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), transient=True, console=Console(stderr=True))
            self.bar.start()
        self.tasks: dict[str, Any] = {}

    def add(self, stage: str, total: int, skipped: int) -> None:
        print(f"{stage}: {total} chunk(s) to run, {skipped} already done (skipped)", file=sys.stderr)
        if self.bar is not None and total:
            self.tasks[stage] = self.bar.add_task(stage, total=total)

    def advance(self, stage: str) -> None:
        if self.bar is not None and stage in self.tasks:
            self.bar.advance(self.tasks[stage])

    def done(self, stage: str, failed: int, seconds: float) -> None:
        status = f", {failed} FAILED" if failed else ""
        print(f"{stage}: done in {seconds:.1f} s{status}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


@dataclass
class StageRun:
    """A stage whose tasks are submitted: futures of the chunks to run, the chunks skipped."""

    stage: str
    todo: list[Chunk]
    skipped: list[Chunk]
    futures: dict[int, Any]
    t0: float
    progress: bool


LARGE_ARGUMENT = 1 << 20  # bytes: bigger task arguments travel as scattered data, not inside the graph


def _scatter_large(client: Client, args: tuple) -> tuple:
    """Scatter any argument over ``LARGE_ARGUMENT`` bytes (e.g. a whole-volume id lookup) so the scheduler
    sees a small task and the data goes to the worker directly."""
    from dask.sizeof import sizeof

    return tuple(client.scatter(a, hash=False) if sizeof(getattr(a, "__dict__", a)) > LARGE_ARGUMENT else a for a in args)


def submit_stage(
    client: Client,
    state: RunState,
    stage: str,
    chunks: Sequence[Chunk],
    func: StageFunc,
    args_for: Callable[[Chunk], tuple] | None = None,
    *,
    deps_for: Callable[[Chunk], list] | None = None,
    resources: Mapping[str, float] | None = None,
    prefer: Sequence[str] | None = None,
    retries: int = 2,
    progress: bool = True,
) -> StageRun:
    """Submit ``func`` for every chunk not yet done for ``stage``, without waiting.

    ``deps_for(chunk)``: futures (of earlier submitted stages) the chunk's task must wait for; Dask starts
    it as soon as they finish, so stages overlap (e.g. decoding starts while inference still runs).
    ``prefer``: worker addresses to run on when they can (a loose restriction, e.g. the CPU workers of a
    cluster that also has GPU workers busy with inference).
    """
    done = state.done(stage)
    todo = [c for c in chunks if c.id not in done]
    skipped = [c for c in chunks if c.id in done]
    token = uuid.uuid4().hex[:8]
    futures = {}
    for chunk in todo:
        args = _scatter_large(client, args_for(chunk) if args_for is not None else ())
        deps = [d for d in (deps_for(chunk) if deps_for is not None else []) if d is not None]
        futures[chunk.id] = client.submit(
            _execute, func, str(state.root), stage, chunk, args, deps,
            key=f"{stage}-{chunk.name}-{token}", retries=retries,
            resources=dict(resources) if resources else None, pure=False,
            workers=list(prefer) if prefer else None, allow_other_workers=bool(prefer),
        )
    return StageRun(stage, todo, skipped, futures, time.perf_counter(), progress)


def collect(
    runs: Sequence[StageRun],
    state: RunState,
    *,
    record: RunRecord | None = None,
    load_summaries: bool = True,
    stop_on_failure: bool = True,
) -> dict[str, dict[int, Summary]]:
    """Wait for submitted stages; return each stage's summaries by chunk id (skipped chunks' loaded).

    Failures of individual chunks do not stop the others; at the end a :class:`ChunkFailure` lists every
    failed chunk with its stage, box and cause (after the retries, which also cover lost workers).
    """
    bar = _Progress(any(r.progress for r in runs))
    where: dict[Any, tuple[StageRun, Chunk]] = {}
    for run in runs:
        bar.add(run.stage, len(run.todo), len(run.skipped))
        by_id = {c.id: c for c in run.todo}
        for cid, fut in run.futures.items():
            where[fut] = (run, by_id[cid])
    summaries: dict[str, dict[int, Summary]] = {r.stage: {} for r in runs}
    failures: list[FailedChunk] = []
    remaining = {r.stage: len(r.todo) for r in runs}
    failed_in = {r.stage: 0 for r in runs}
    failed_ids: dict[str, set[int]] = {r.stage: set() for r in runs}
    try:
        for fut in as_completed(list(where)):
            run, chunk = where[fut]
            if fut.status == "finished":
                summaries[run.stage][chunk.id] = fut.result()
            else:
                failures.append(FailedChunk(run.stage, chunk, _describe(fut.exception())))
                failed_in[run.stage] += 1
                failed_ids[run.stage].add(chunk.id)
            bar.advance(run.stage)
            remaining[run.stage] -= 1
            if remaining[run.stage] == 0:
                _finish(run, failed_ids[run.stage], bar, record)
    finally:
        bar.close()
    for run in runs:
        if not run.todo:
            _finish(run, set(), bar, record)
        for fut in run.futures.values():
            fut.release()
        if load_summaries:
            for chunk in run.skipped:
                summaries[run.stage][chunk.id] = state.load(run.stage, chunk.id)
    if failures and stop_on_failure:
        order = {r.stage: i for i, r in enumerate(runs)}
        failures.sort(key=lambda f: (order[f.stage], f.chunk.id))
        counts = ", ".join(f"{failed_in[r.stage]} in {r.stage}" for r in runs if failed_in[r.stage])
        lines = "; ".join(f.line() for f in failures[:5])
        more = f" (+{len(failures) - 5} more)" if len(failures) > 5 else ""
        raise ChunkFailure(f"{len(failures)} chunk(s) failed ({counts}): {lines}{more}")
    return summaries


def _finish(run: StageRun, failed: set[int], bar: _Progress, record: RunRecord | None) -> None:
    seconds = time.perf_counter() - run.t0
    bar.done(run.stage, len(failed), seconds)
    if record is not None:
        voxels = sum(c.core.size for c in run.todo if c.id not in failed)  # only chunks that succeeded
        record.add_stage(StageTiming(run.stage, seconds, voxels, len(run.todo) - len(failed), len(run.skipped)))


def run_stage(
    client: Client,
    state: RunState,
    stage: str,
    chunks: Sequence[Chunk],
    func: StageFunc,
    args_for: Callable[[Chunk], tuple] | None = None,
    *,
    record: RunRecord | None = None,
    resources: Mapping[str, float] | None = None,
    retries: int = 2,
    progress: bool = True,
    load_summaries: bool = True,
    stop_on_failure: bool = True,
) -> dict[int, Summary]:
    """Run ``func`` on every chunk not yet done for ``stage`` and wait; return every chunk's summary by id.

    Chunks done by an earlier (interrupted) run are skipped and their saved summaries loaded.
    """
    run = submit_stage(client, state, stage, chunks, func, args_for, resources=resources, retries=retries, progress=progress)
    return collect([run], state, record=record, load_summaries=load_summaries, stop_on_failure=stop_on_failure)[stage]
