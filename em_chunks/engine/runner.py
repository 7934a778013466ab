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
from typing import Any, Callable, Iterable, Mapping, Sequence

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


def _execute(func: StageFunc, root: str, stage: str, chunk: Chunk, args: tuple) -> Summary:
    """Worker side: run the stage, then mark the chunk done by saving its summary (data first)."""
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
    """A rich progress bar on a terminal, a start and an end line otherwise."""

    def __init__(self, stage: str, total: int, skipped: int, enabled: bool) -> None:
        self.stage, self.total = stage, total
        self.bar = None
        tty = sys.stderr.isatty()
        print(f"{stage}: {total} chunk(s) to run, {skipped} already done (skipped)", file=sys.stderr)
        if enabled and tty and total:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True)
            self.bar.start()
            self.task = self.bar.add_task(stage, total=total)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def close(self, failed: int, seconds: float) -> None:
        if self.bar is not None:
            self.bar.stop()
        status = f", {failed} FAILED" if failed else ""
        print(f"{self.stage}: done in {seconds:.1f} s{status}", file=sys.stderr)


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
    """Run ``func`` on every chunk not yet done for ``stage``; return every chunk's summary by id.

    Chunks done by an earlier (interrupted) run are skipped and their saved summaries loaded. Failures
    of individual chunks do not stop the others; at the end a :class:`ChunkFailure` lists each failed
    chunk with its box and cause (after ``retries`` retries, which cover lost workers).
    """
    t0 = time.perf_counter()
    done = state.done(stage)
    todo = [c for c in chunks if c.id not in done]
    skipped = [c for c in chunks if c.id in done]
    bar = _Progress(stage, len(todo), len(skipped), progress)
    token = uuid.uuid4().hex[:8]
    futures = {}
    for chunk in todo:
        args = args_for(chunk) if args_for is not None else ()
        fut = client.submit(
            _execute,
            func,
            str(state.root),
            stage,
            chunk,
            args,
            key=f"{stage}-{chunk.name}-{token}",
            retries=retries,
            resources=dict(resources) if resources else None,
            pure=False,
        )
        futures[fut] = chunk
    summaries: dict[int, Summary] = {}
    failures: list[FailedChunk] = []
    for fut in as_completed(list(futures)):
        chunk = futures[fut]
        if fut.status == "finished":
            summaries[chunk.id] = fut.result()
        else:
            exc = fut.exception()
            failures.append(FailedChunk(stage, chunk, _describe(exc)))
        fut.release()
        bar.advance()
    seconds = time.perf_counter() - t0
    bar.close(len(failures), seconds)
    if load_summaries:
        for chunk in skipped:
            summaries[chunk.id] = state.load(stage, chunk.id)
    if record is not None:
        voxels = sum(c.core.size for c in todo)
        record.add_stage(StageTiming(stage, seconds, voxels, len(todo) - len(failures), len(skipped)))
    if failures and stop_on_failure:
        failures.sort(key=lambda f: f.chunk.id)
        lines = "; ".join(f.line() for f in failures[:5])
        more = f" (+{len(failures) - 5} more)" if len(failures) > 5 else ""
        raise ChunkFailure(f"{len(failures)} chunk(s) failed in stage {stage}: {lines}{more}")
    return summaries


def total_voxels(chunks: Iterable[Chunk]) -> int:
    return sum(c.core.size for c in chunks)
