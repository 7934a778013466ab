"""The run record (``run.json``) and ``metrics.json``: resolved config, versions, per-stage timings."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

from em_chunks.io import layout

_PACKAGES = ("emchunks", "dask", "distributed", "zarr", "numcodecs", "numpy", "waterz", "torch", "scikit-image", "pydantic")


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON atomically (temporary file + rename) so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


@dataclass
class StageTiming:
    """What one stage did, measured on the workers (each task's own start and end).

    ``seconds`` is the stage's span: from its first task's start to its last task's end (stages run
    side by side in a pipeline, so this is not "time since the pipeline started"). ``busy_seconds``
    sums the tasks' own durations over all workers. ``first_start``/``last_end`` are epoch seconds.
    """

    name: str
    seconds: float
    voxels: int
    chunks_run: int
    chunks_skipped: int
    busy_seconds: float = 0.0
    first_start: float | None = None
    last_end: float | None = None

    @property
    def voxels_per_s(self) -> float:
        """Voxels per second of the stage's span: its throughput on the whole cluster."""
        return self.voxels / self.seconds if self.seconds > 0 else float("nan")

    @property
    def voxels_per_worker_s(self) -> float:
        """Voxels per second of task time: what one worker does (busy time, not waiting)."""
        return self.voxels / self.busy_seconds if self.busy_seconds > 0 else float("nan")


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or value != value else round(value, digits)


@dataclass
class RunRecord:
    """Collects what a run did; ``write`` puts ``run.json`` (always) and ``metrics.json`` (on success).

    ``voxels``: the volume's size, set by the command, for the whole run's voxels per wall second.
    ``stage_totals``: chunks per stage seen so far (the runner fills it in), for progress on interrupt.
    """

    command: str
    out: Path
    config: Mapping[str, Any]
    started: float = field(default_factory=time.time)
    stages: list[StageTiming] = field(default_factory=list)
    dashboard: str | None = None
    voxels: int | None = None
    stage_totals: dict[str, int] = field(default_factory=dict)
    #: where run.json and metrics.json go; None: the output's run group (``io.layout``). Training
    #: keeps them beside its checkpoints.
    record_dir: Path | None = None

    def run_json_path(self) -> Path:
        return Path(self.record_dir) / "run.json" if self.record_dir is not None else layout.run_json(self.out)

    def metrics_json_path(self) -> Path:
        return Path(self.record_dir) / "metrics.json" if self.record_dir is not None else layout.metrics_json(self.out)

    def add_stage(self, timing: StageTiming) -> None:
        self.stages.append(timing)

    def wall_seconds(self) -> float:
        return time.time() - self.started

    def stage_table(self) -> list[dict[str, Any]]:
        """One row per stage: chunks, voxels, busy and span seconds (span's start and end relative to
        the run's start, so each lies inside ``[0, wall_seconds]``), and the two rates."""
        rows = []
        for s in self.stages:
            rows.append({
                "stage": s.name,
                "chunks_run": s.chunks_run,
                "chunks_skipped": s.chunks_skipped,
                "voxels": s.voxels,
                "busy_seconds": round(s.busy_seconds, 4),
                "span_seconds": round(s.seconds, 4),
                "span_start_s": _round(s.first_start - self.started if s.first_start is not None else None),
                "span_end_s": _round(s.last_end - self.started if s.last_end is not None else None),
                "voxels_per_s": _round(s.voxels_per_s, 1),
                "voxels_per_worker_s": _round(s.voxels_per_worker_s, 1),
            })
        return rows

    def totals(self) -> dict[str, Any]:
        """The whole run: wall seconds and (when the volume size is known) voxels per wall second."""
        wall = self.wall_seconds()
        out: dict[str, Any] = {"wall_seconds": round(wall, 3)}
        if self.voxels:
            out.update({"voxels": int(self.voxels), "voxels_per_s": round(self.voxels / wall, 1) if wall > 0 else None})
        return out

    def write(self, status: str, metrics: Mapping[str, Any] | None = None, error: str | None = None,
              message: str | None = None, *, extra: Mapping[str, Any] | None = None,
              metrics_file: bool = True) -> dict[str, Any] | None:
        """``run.json`` with ``status`` (running, complete, failed, interrupted) and ``extra`` fields; on
        ``complete`` also ``metrics.json`` (the command's metrics plus the stage table and totals),
        unless ``metrics_file`` is False (training writes its own). Returns what metrics.json holds."""
        totals = self.totals()
        record = {
            "command": self.command,
            "status": status,
            "started": datetime.fromtimestamp(self.started, timezone.utc).isoformat(),
            **totals,
            "config": self.config,
            "versions": versions(),
            "dashboard": self.dashboard,
            "stages": self.stage_table(),
        }
        if error:
            record["error"] = error
        if message:
            record["message"] = message
        record.update(extra or {})
        write_json(self.run_json_path(), record)
        if status == "complete" and metrics_file:
            full = {**(metrics or {}), "stages": self.stage_table(), **totals}
            write_json(self.metrics_json_path(), full)
            return full
        return None
