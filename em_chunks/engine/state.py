"""Resume state of one run: a config fingerprint and per-stage, per-chunk done markers.

A chunk is *done* for a stage when its summary file exists. The worker writes the chunk's data first,
then the summary to a temporary name and renames it (atomic on POSIX), so a chunk killed half-way is
never counted as done. Listing one directory per stage keeps start-up fast with thousands of chunks.
Summaries are ``.npz`` files of plain arrays (``allow_pickle=False``): loading them runs no code.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from em_chunks.errors import InputError
from em_chunks.io import layout

STATE_DIR = str(layout.state_dir(""))  # relative to the output root (io/layout.py says where)


def fingerprint(config: Mapping[str, Any]) -> str:
    """A stable hash of a JSON-able config (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def log_path(out: str | Path) -> Path:
    """The log file of the run whose output is ``out`` (every command's messages, with timestamps):
    in the run's group of non-zarr files (``io.layout.log_file``)."""
    return layout.log_file(out)


class RunState:
    """Done markers and summaries in the output's state folder (``io.layout.state_dir``)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.dir = layout.state_dir(self.root)

    # ---- configuration fingerprint ----------------------------------------------------------
    def check_claim(self, command: str, config: Mapping[str, Any]) -> bool:
        """Whether ``root`` holds an earlier run of this configuration (True) or nothing yet (False);
        writes nothing. Raises :class:`InputError` naming the differing fields for another configuration.
        """
        layout.refuse_legacy(self.root)
        path = self.dir / "fingerprint.json"
        wanted = {"command": command, "config": json.loads(json.dumps(config, default=str))}
        if path.exists():
            try:
                recorded = json.loads(path.read_text())
            except (OSError, ValueError):
                raise InputError(f"{path}: unreadable resume state; delete {self.root} to start over") from None
            if fingerprint(recorded) != fingerprint(wanted):
                fields = _diff(recorded, wanted)
                raise InputError(
                    f"{self.root} holds results of a different configuration (differs in: "
                    f"{', '.join(fields[:5]) or 'command'}); use another --out or delete it to start over"
                )
            return True
        return False

    def claim(self, command: str, config: Mapping[str, Any]) -> bool:
        """Record the config of this run, or check it equals the recorded one.

        Returns True when resuming an earlier run of the same configuration. Raises :class:`InputError`
        naming the differing fields when ``root`` holds results of another configuration.
        """
        if self.check_claim(command, config):
            return True
        path = self.dir / "fingerprint.json"
        wanted = {"command": command, "config": json.loads(json.dumps(config, default=str))}
        layout.ensure_run_dir(self.root)
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(wanted, indent=2, sort_keys=True))
        os.replace(tmp, path)
        return False

    # ---- per-chunk markers ------------------------------------------------------------------
    def stage_dir(self, stage: str) -> Path:
        return self.dir / stage

    def done(self, stage: str) -> set[int]:
        """Chunk ids marked done for ``stage`` (one directory listing)."""
        d = self.stage_dir(stage)
        if not d.is_dir():
            return set()
        out = set()
        with os.scandir(d) as it:
            for entry in it:
                name = entry.name
                if name.endswith(".npz") and name[:-4].isdigit():
                    out.add(int(name[:-4]))
        return out

    def save(self, stage: str, chunk_id: int, summary: Mapping[str, Any]) -> None:
        """Write the summary and thereby mark the chunk done (atomic rename, after the data)."""
        d = self.stage_dir(stage)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{chunk_id}.{uuid.uuid4().hex}.tmp.npz"
        arrays = {k: np.asarray(v) for k, v in summary.items()}
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, d / f"{chunk_id}.npz")

    def load(self, stage: str, chunk_id: int) -> dict[str, np.ndarray]:
        with np.load(self.stage_dir(stage) / f"{chunk_id}.npz", allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
