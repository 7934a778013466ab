"""The lifecycle every computing command shares: check the output, connect to the cluster (dashboard
link first), claim the output for this configuration, log, record timings, write run.json and
metrics.json; recognise a run that is already complete; turn Ctrl-C into one line and a resumable state."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from distributed import Client

from em_chunks.engine.cleanup import start_over_if_cleaned
from em_chunks.engine.cluster import connect, dashboard_link
from em_chunks.engine.interrupt import reliable_interrupts
from em_chunks.engine.log import format_rate, format_seconds, heartbeat, log_file, say
from em_chunks.engine.record import RunRecord
from em_chunks.engine.runner import forget_submitted, submitted
from em_chunks.engine.state import RunState, fingerprint, log_path
from em_chunks.errors import ChunkFailure, InputError, Interrupted
from em_chunks.io import layout


def check_out(out: Path) -> None:
    """Refuse an ``--out`` that exists but is not an emchunks output (we would mix our files into it)."""
    if out.exists():
        if not out.is_dir():
            raise InputError(f"--out {out}: exists and is not a directory")
        if any(out.iterdir()) and not layout.is_output(out):
            raise InputError(f"--out {out}: exists and is not an emchunks output; choose a new path")


class Run:
    """What a running command holds: the client, the record and the resume state."""

    def __init__(self, client: Client, record: RunRecord, state: RunState, resumed: bool) -> None:
        self.client, self.record, self.state, self.resumed = client, record, state, resumed
        self.metrics: dict[str, Any] = {}


def _read_json(path: Path) -> Optional[dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def completed(command: str, out: str | Path, config: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    """The metrics of a run of ``command`` with ``config`` that already completed in ``out``, else None.

    Complete means: the resume state's fingerprint is this configuration's, ``run.json`` says
    ``complete`` and ``metrics.json`` is readable. Nothing is written or recomputed: the recorded
    figures stay as the run that made them measured them (a rerun reports in seconds).
    """
    out = Path(out)
    if layout.layout_of(out) != layout.LAYOUT_VERSION:
        return None
    state = RunState(out)
    try:
        if not state.check_claim(command, config):
            return None
    except InputError:
        return None  # another configuration: the caller's claim reports it
    record = _read_json(layout.run_json(out))
    metrics = _read_json(layout.metrics_json(out))
    if (
        record is None
        or metrics is None
        or record.get("status") != "complete"
        or record.get("command") != command
    ):
        return None
    if fingerprint(record.get("config") or {}) != fingerprint(json.loads(json.dumps(dict(config), default=str))):
        return None
    # every chunk it ran or skipped is still marked done (stages that keep markers; a compacted run
    # whose markers were removed on purpose is still complete)
    for row in record.get("stages") or []:
        stage = str(row.get("stage"))
        wanted = int(row.get("chunks_run", 0)) + int(row.get("chunks_skipped", 0))
        if state.stage_dir(stage).is_dir() and len(state.done(stage)) < wanted:
            return None
    wall = record.get("wall_seconds")
    took = f", it took {format_seconds(float(wall))}" if isinstance(wall, (int, float)) else ""
    say(
        f"{out}: already complete with this configuration (started {record.get('started', '?')}{took}); "
        f"reporting its recorded metrics (delete {out} to recompute)"
    )
    return metrics


def interrupted_line(record: RunRecord, state: RunState) -> str:
    """``interrupted; the same command resumes: 44 of 96 chunks done (infer 32/32, blend 12/32, ...)``

    Counts the done markers of every stage submitted so far (``runner.submitted``, else the stages
    the record saw)."""
    totals = submitted(state.root) or dict(record.stage_totals)
    parts, done_all, total_all, idle = [], 0, 0, 0
    for stage, total in totals.items():
        done = min(len(state.done(stage)), total)
        if done or not parts:  # the stages that got somewhere (and the first, whatever it did)
            parts.append(f"{stage} {done}/{total}")
        else:
            idle += 1
        done_all, total_all = done_all + done, total_all + total
    if not totals:
        return "interrupted; the same command resumes (no chunk was finished yet)"
    rest = f"; {idle} more stage{'s' if idle > 1 else ''} with no chunk done yet" if idle else ""
    return (f"interrupted; the same command resumes: {done_all} of {total_all} chunks done "
            f"({', '.join(parts)}{rest})")


@contextlib.contextmanager
def computing_run(
    command: str,
    out: Path,
    config: Mapping[str, Any],
    *,
    scheduler: Optional[str] = None,
    workers: int = 2,
    client: Optional[Client] = None,
    voxels: Optional[int] = None,
) -> Iterator[Run]:
    """Claim ``out`` for ``config`` and yield a :class:`Run`; on success write metrics.json (from
    ``run.metrics``) and a complete run.json, on failure a run.json with status ``failed``.

    The cluster is connected before anything is written (an unreachable ``--scheduler`` leaves no
    trace). Every message goes to the run's log file too (:func:`~em_chunks.engine.state.log_path`).
    Ctrl-C cancels the pending tasks, records status ``interrupted`` and raises :class:`Interrupted`
    with one line saying how far it got (done chunks are kept: the same command resumes).
    ``voxels``: the volume's size, for the whole run's voxels per wall second.
    Callers check :func:`completed` first, so a finished run is reported, not redone.
    """
    out = Path(out)
    check_out(out)
    state = RunState(out)
    # a different configuration is refused before connecting
    resumed = state.check_claim(command, config)
    record = RunRecord(command, out, config, voxels=voxels)
    forget_submitted(out)  # an earlier call in this process (a notebook) counts for nothing here
    ctx = contextlib.nullcontext(client) if client is not None else connect(scheduler, workers)
    try:
        with reliable_interrupts(), ctx as c:
            state.claim(command, config)
            restarted = start_over_if_cleaned(out)
            with log_file(log_path(out)) as log, heartbeat():
                # connect() printed the link already; a caller's client has it said here
                say(f"dashboard: {dashboard_link(c)}", console=client is not None)
                say(f"{command} -> {out} (log: {log})")
                if restarted:
                    say(f"{out}: its intermediates were removed after an earlier run; computing anew")
                elif resumed:
                    say(f"resuming the earlier run in {out} (same configuration)")
                record.dashboard = dashboard_link(c)
                record.write("running")
                run = Run(c, record, state, resumed)
                try:
                    yield run
                except KeyboardInterrupt:
                    raise _Stopped() from None  # leave the cluster first, then count what was kept
                except (ChunkFailure, InputError) as err:
                    record.write("failed", error=str(err))
                    say(f"failed: {err}", console=False)
                    raise
                except BaseException as err:
                    record.write("failed", error=f"{err.__class__.__name__}: {err}")
                    say(f"failed: {err.__class__.__name__}: {err}", console=False)
                    raise
                written = record.write("complete", run.metrics) or {}
                # the caller gets what metrics.json holds (stages, totals), as a rerun does
                run.metrics.update({k: v for k, v in written.items() if k not in run.metrics})
                totals = record.totals()
                rate = (
                    f", {format_rate(totals['voxels_per_s'])} over {totals['voxels']:,} voxels"
                    if totals.get("voxels_per_s")
                    else ""
                )
                say(
                    f"{command}: complete in {format_seconds(totals['wall_seconds'])} wall time{rate}"
                )
    except _Stopped:
        line = interrupted_line(record, state)
        record.write("interrupted", message=line)
        with log_file(log_path(out)):
            say(line, console=False)  # the CLI prints it, once, as its last line
        raise Interrupted(line) from None


class _Stopped(Exception):
    """Internal: Ctrl-C inside a run, carried out of the cluster's context before it is reported."""
