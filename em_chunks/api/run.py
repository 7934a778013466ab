"""The lifecycle every computing command shares: check the output, claim it for this configuration,
connect to the cluster (dashboard link first), record timings, write run.json and metrics.json."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from distributed import Client

from em_chunks.engine.cluster import connect, dashboard_link
from em_chunks.engine.record import RunRecord
from em_chunks.engine.state import RunState
from em_chunks.errors import ChunkFailure, InputError
from em_chunks.io.layout import is_output


def check_out(out: Path) -> None:
    """Refuse an ``--out`` that exists but is not an emchunks output (we would mix our files into it)."""
    if out.exists():
        if not out.is_dir():
            raise InputError(f"--out {out}: exists and is not a directory")
        if any(out.iterdir()) and not is_output(out):
            raise InputError(f"--out {out}: exists and is not an emchunks output; choose a new path")


class Run:
    """What a running command holds: the client, the record and the resume state."""

    def __init__(self, client: Client, record: RunRecord, state: RunState, resumed: bool) -> None:
        self.client, self.record, self.state, self.resumed = client, record, state, resumed
        self.metrics: dict[str, Any] = {}


@contextlib.contextmanager
def computing_run(
    command: str,
    out: Path,
    config: Mapping[str, Any],
    *,
    scheduler: Optional[str] = None,
    workers: int = 2,
    client: Optional[Client] = None,
) -> Iterator[Run]:
    """Claim ``out`` for ``config`` and yield a :class:`Run`; on success write metrics.json (from
    ``run.metrics``) and a complete run.json, on failure a run.json with status ``failed``."""
    out = Path(out)
    check_out(out)
    state = RunState(out)
    resumed = state.claim(command, config)
    if resumed:
        print(f"resuming the earlier run in {out} (same configuration)", file=sys.stderr)
    record = RunRecord(command, out, config)
    ctx = contextlib.nullcontext(client) if client is not None else connect(scheduler, workers)
    with ctx as c:
        if client is not None:
            print(f"dashboard: {dashboard_link(c)}", file=sys.stderr)
        record.dashboard = dashboard_link(c)
        run = Run(c, record, state, resumed)
        try:
            yield run
        except (ChunkFailure, InputError) as err:
            record.write("failed", error=str(err))
            raise
        except BaseException as err:
            record.write("failed", error=f"{err.__class__.__name__}: {err}")
            raise
        record.write("complete", run.metrics)
