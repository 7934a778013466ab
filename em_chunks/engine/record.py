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
    name: str
    seconds: float
    voxels: int
    chunks_run: int
    chunks_skipped: int

    @property
    def voxels_per_s(self) -> float:
        return self.voxels / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class RunRecord:
    """Collects what a run did; ``write`` puts ``run.json`` (always) and ``metrics.json`` (on success)."""

    command: str
    out: Path
    config: Mapping[str, Any]
    started: float = field(default_factory=time.time)
    stages: list[StageTiming] = field(default_factory=list)
    dashboard: str | None = None

    def add_stage(self, timing: StageTiming) -> None:
        self.stages.append(timing)

    def stage_table(self) -> list[dict[str, Any]]:
        return [
            {
                "stage": s.name,
                "seconds": round(s.seconds, 4),
                "voxels_per_s": round(s.voxels_per_s, 1) if s.seconds > 0 else None,
                "chunks_run": s.chunks_run,
                "chunks_skipped": s.chunks_skipped,
            }
            for s in self.stages
        ]

    def write(self, status: str, metrics: Mapping[str, Any] | None = None, error: str | None = None) -> None:
        record = {
            "command": self.command,
            "status": status,
            "started": datetime.fromtimestamp(self.started, timezone.utc).isoformat(),
            "wall_seconds": round(time.time() - self.started, 3),
            "config": self.config,
            "versions": versions(),
            "dashboard": self.dashboard,
            "stages": self.stage_table(),
        }
        if error:
            record["error"] = error
        write_json(layout.run_json(self.out), record)
        if status == "complete":
            write_json(layout.metrics_json(self.out), {**(metrics or {}), "stages": self.stage_table(), "wall_seconds": record["wall_seconds"]})
