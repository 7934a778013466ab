"""Run one stage of a pipeline: one Dask task per chunk, resume-aware, with progress and a failure summary.

A stage function runs on a worker as ``func(chunk, *args)``: it reads its own context box, runs a pure
kernel, writes its core to storage and returns a small summary (a dict of numpy arrays). The worker then
saves the summary, which marks the chunk done. Only boxes, statuses and summaries cross the scheduler.
"""

from __future__ import annotations

import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from distributed import Client, as_completed

from em_chunks.engine.log import format_rate, format_seconds, progress_period, say
from em_chunks.engine.record import RunRecord, StageTiming
from em_chunks.engine.state import RunState
from em_chunks.errors import ChunkFailure, InputError
from em_chunks.geometry import Chunk
from em_chunks.progress import ProgressDisplay

Summary = Mapping[str, Any]
StageFunc = Callable[..., Summary]


@dataclass(frozen=True)
class FailedChunk:
    stage: str
    chunk: Chunk
    error: str

    def line(self) -> str:
        return f"{self.stage} chunk {self.chunk.name} box {self.chunk.core}: {self.error}"


class TimedSummary(dict):
    """A chunk's summary as its task returns it, carrying the task's own start and end (epoch seconds,
    measured on the worker), from which the stage's busy time and span follow. It is the summary dict
    itself (same keys), so code reading summaries needs to know nothing of it."""

    __slots__ = ("start", "stop")


def _execute(func: StageFunc, root: str, stage: str, chunk: Chunk, args: tuple, deps: list | None = None) -> Summary:
    """Worker side: run the stage, then mark the chunk done by saving its summary (data first).

    ``deps`` are the (already resolved) results of the tasks this one waited for; unused here."""
    start = time.time()
    summary = func(chunk, *args)
    RunState(root).save(stage, chunk.id, summary)
    out = TimedSummary(summary)
    out.start, out.stop = start, time.time()
    return out


def _describe(exc: BaseException) -> str:
    """One line for a failed chunk: user errors as they are, others with their type and last frame."""
    if isinstance(exc, InputError):
        return str(exc)
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" ({tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno})" if tb else ""
    return f"{exc.__class__.__name__}: {' '.join(str(exc).split())}{where}"


@dataclass
class _Count:
    """One stage's progress as seen by the client, and its tasks' measured times."""

    total: int
    skipped: int
    voxels_total: int
    done: int = 0
    failed: int = 0
    voxels: int = 0
    busy: float = 0.0
    first_start: Optional[float] = None
    last_end: Optional[float] = None

    def timed(self, summary: Any) -> None:
        start, stop = getattr(summary, "start", None), getattr(summary, "stop", None)
        if start is None or stop is None:
            return
        self.busy += stop - start
        self.first_start = start if self.first_start is None else min(self.first_start, start)
        self.last_end = stop if self.last_end is None else max(self.last_end, stop)

    @property
    def span(self) -> float:
        return self.last_end - self.first_start if self.first_start is not None and self.last_end is not None else 0.0


class _Progress:
    """Progress of the stages being collected: a live bar per stage on a terminal (when enabled), and
    always a periodic one-line summary (chunks done/total, voxels/s, ETA) every
    :func:`~em_chunks.engine.log.progress_period` seconds: on stderr when there is no live bar, in the
    run log in any case. Without a terminal (a batch job, a pipe) the lines are the progress."""

    def __init__(self, enabled: bool) -> None:
        self.tasks: dict[str, Any] = {}
        self.counts: dict[str, _Count] = {}
        self.t0 = time.time()
        self.lock = threading.Lock()
        self.display = ProgressDisplay(enabled, _stage_columns, self._beat, progress_period(), "emchunks-progress")
        self.bar = self.display.bar

    def add(self, stage: str, total: int, skipped: int, voxels_total: int = 0) -> None:
        with self.lock:
            self.counts[stage] = _Count(total, skipped, voxels_total)
        say(f"{stage}: {total} chunk(s) to run, {skipped} already done (skipped)")
        if self.bar is not None and total:
            self.tasks[stage] = self.display.add_task(stage, total=total, rate="")

    def advance(self, stage: str, voxels: int = 0, summary: Any = None, failed: bool = False) -> None:
        with self.lock:
            c = self.counts[stage]
            c.done += 1
            c.failed += int(failed)
            c.voxels += voxels
            if summary is not None:
                c.timed(summary)
            rate = self._rate(c)
        if stage in self.tasks:
            self.display.update(self.tasks[stage], advance=1, rate=format_rate(rate) if rate else "")

    def _rate(self, c: _Count) -> float:
        elapsed = time.time() - self.t0
        return c.voxels / elapsed if elapsed > 0 and c.voxels else 0.0

    def line(self) -> str:
        """``progress 1:05: fragments 120/256 chunks (1.2 Mvoxel/s), links 98/256 ...; ETA 0:52``"""
        with self.lock:
            parts, etas = [], []
            for stage, c in self.counts.items():
                if not c.total:
                    continue
                rate = self._rate(c)
                parts.append(f"{stage} {c.done}/{c.total} chunks" + (f" ({format_rate(rate)})" if rate else ""))
                left = c.voxels_total - c.voxels
                if rate and left > 0:
                    etas.append(left / rate)
            pending = any(c.done < c.total for c in self.counts.values())
        eta = f"ETA {format_seconds(max(etas))}" if etas else ("ETA unknown" if pending else "finishing")
        return f"progress {format_seconds(time.time() - self.t0)}: {', '.join(parts) or 'waiting'}; {eta}"

    def _beat(self) -> None:
        say(self.line(), console=self.bar is None)

    def done(self, stage: str, failed: int | None = None, seconds: float | None = None, *,
             since_submit: float | None = None) -> None:
        """``fragments: 256 chunk(s) in 28.7 s (first start to last end), 25.6 s busy on the workers,
        116 kvoxel/s; done 31.2 s after submission`` (the last figure includes waiting for upstream).

        ``failed``/``seconds``: for callers whose tasks carry no timing of their own (their stage line
        is then ``stage: done in SECONDS s``, measured from their submission)."""
        with self.lock:
            c = self.counts[stage]
            n_failed = c.failed if failed is None else failed
        status = f", {n_failed} FAILED" if n_failed else ""
        if c.first_start is None and seconds is not None:
            say(f"{stage}: done in {seconds:.1f} s{status}")
            return
        if not c.total:
            return
        rate = c.voxels / c.span if c.span > 0 else 0.0
        after = f"; done {since_submit:.1f} s after submission" if since_submit is not None else ""
        say(f"{stage}: {c.total - n_failed} chunk(s) in {c.span:.1f} s (first start to last end), "
            f"{c.busy:.1f} s busy on the workers" + (f", {format_rate(rate)}" if rate else "") + status + after)

    def close(self) -> None:
        self.display.close()


def _stage_columns() -> tuple:
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    return (TextColumn("{task.description:>14}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>16}"), TimeRemainingColumn())


@dataclass
class StageRun:
    """A stage whose tasks are submitted: futures of the chunks to run, the chunks skipped."""

    stage: str
    todo: list[Chunk]
    skipped: list[Chunk]
    futures: dict[int, Any]
    t0: float
    progress: bool


#: output root -> stage -> chunks, in submission order: what a run has set out to do, so that an
#: interrupt can say how far it got even before anything is being waited for
_SUBMITTED: dict[str, dict[str, int]] = {}


def submitted(root: Any) -> dict[str, int]:
    """Stages submitted for the output ``root`` in this process, with their number of chunks."""
    return dict(_SUBMITTED.get(str(Path(root)), {}))


def forget_submitted(root: Any) -> None:
    _SUBMITTED.pop(str(Path(root)), None)


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
    _SUBMITTED.setdefault(str(Path(state.root)), {})[stage] = len(chunks)
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
    Each stage's busy time and span (from its tasks' own start and end) go to ``record``. When waiting
    is interrupted (Ctrl-C), the stages' pending tasks are cancelled before the interrupt goes on.
    """
    bar = _Progress(any(r.progress for r in runs))
    where: dict[Any, tuple[StageRun, Chunk]] = {}
    for run in runs:
        bar.add(run.stage, len(run.todo), len(run.skipped), sum(c.core.size for c in run.todo))
        if record is not None:
            record.stage_totals[run.stage] = len(run.todo) + len(run.skipped)
        by_id = {c.id: c for c in run.todo}
        for cid, fut in run.futures.items():
            where[fut] = (run, by_id[cid])
    summaries: dict[str, dict[int, Summary]] = {r.stage: {} for r in runs}
    failures: list[FailedChunk] = []
    remaining = {r.stage: len(r.todo) for r in runs}
    failed_ids: dict[str, set[int]] = {r.stage: set() for r in runs}
    try:
        for fut in as_completed(list(where)):
            run, chunk = where[fut]
            # a result lost with its worker after finishing is computed again: wait for that (a pending
            # future's exception() waits, and is None when it then succeeds)
            if fut.status == "finished" or fut.exception() is None:
                result = fut.result()
                summaries[run.stage][chunk.id] = result
                bar.advance(run.stage, chunk.core.size, result)
            else:
                failures.append(FailedChunk(run.stage, chunk, _describe(fut.exception())))
                failed_ids[run.stage].add(chunk.id)
                bar.advance(run.stage, failed=True)
            remaining[run.stage] -= 1
            if remaining[run.stage] == 0:
                _finish(run, failed_ids[run.stage], bar, record)
    except BaseException:
        _cancel(list(where))
        raise
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
        counts = ", ".join(f"{len(failed_ids[r.stage])} in {r.stage}" for r in runs if failed_ids[r.stage])
        lines = "; ".join(f.line() for f in failures[:5])
        more = f" (+{len(failures) - 5} more)" if len(failures) > 5 else ""
        raise ChunkFailure(f"{len(failures)} chunk(s) failed ({counts}): {lines}{more}")
    return summaries


def _cancel(futures: list) -> None:
    """Cancel what is still pending (so a shared cluster stops working for nobody); never raises."""
    pending = [f for f in futures if not f.done()]
    if not pending:
        return
    try:
        pending[0].client.cancel(pending)
    except BaseException:  # the client may be closing already; the cluster then drops them anyway
        pass


def _finish(run: StageRun, failed: set[int], bar: _Progress, record: RunRecord | None) -> None:
    bar.done(run.stage, since_submit=time.perf_counter() - run.t0)
    if record is not None:
        c = bar.counts[run.stage]
        voxels = sum(ch.core.size for ch in run.todo if ch.id not in failed)  # only chunks that succeeded
        record.add_stage(StageTiming(run.stage, c.span, voxels, len(run.todo) - len(failed), len(run.skipped),
                                     busy_seconds=c.busy, first_start=c.first_start, last_end=c.last_end))


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
