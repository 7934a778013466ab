"""What a command tells its user: one-line messages on stderr, each also appended (with a timestamp)
to the run's log file while a run is open, so a long job is never silent and leaves a record behind.

A message can be for the log only (``console=False``): periodic progress lines while a live progress
bar already shows the same on the terminal.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

from em_chunks.settings import progress_period  # noqa: F401  (re-exported for the engine)

logger = logging.getLogger("emchunks")


class _Stderr(logging.Handler):
    """Writes to the ``sys.stderr`` of the moment (a progress bar or a test may have replaced it)."""

    def emit(self, record: logging.LogRecord) -> None:
        if not getattr(record, "console", True):
            return
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # a closed stream must not break the computation
            self.handleError(record)


def _setup() -> None:
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # our lines are for the user, not for an application's root logger


_last = {"time": time.monotonic(), "message": ""}


def say(message: str, *, console: bool = True) -> None:
    """Tell the user ``message`` (one line on stderr) and append it to the open run log, if any."""
    _setup()
    _last["time"], _last["message"] = time.monotonic(), message
    logger.info(message, extra={"console": console})


@contextlib.contextmanager
def heartbeat(period: float | None = None) -> Iterator[None]:
    """While the block runs, say "still working" whenever nothing was said for ``period`` seconds
    (default :func:`progress_period`): between stages, while the client merges or agglomerates, a
    command is never silent for longer than that."""
    period = period or progress_period()
    stop = threading.Event()
    t0 = time.monotonic()

    def beat() -> None:
        while not stop.wait(min(1.0, period / 4)):
            quiet = time.monotonic() - _last["time"]
            if quiet >= period:
                last = _last["message"]
                what = (
                    f"; last: {last[:80]}" if last and not last.startswith("still working") else ""
                )
                say(f"still working ({format_seconds(time.monotonic() - t0)} elapsed{what})")

    thread = threading.Thread(target=beat, name="emchunks-heartbeat", daemon=True)
    _last["time"] = time.monotonic()
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


@contextlib.contextmanager
def log_file(path: Path) -> Iterator[Path]:
    """Append every message said while the block runs to ``path`` (created with its folder)."""
    _setup()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger.addHandler(handler)
    try:
        yield path
    finally:
        logger.removeHandler(handler)
        handler.close()


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3:05`` or ``1:02:03``: short enough for a progress line."""
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s} s"
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_rate(voxels_per_s: float) -> str:
    """Voxels per second with a unit prefix (``3.2 Mvoxel/s``)."""
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if voxels_per_s >= scale:
            return f"{voxels_per_s / scale:.3g} {unit}voxel/s"
    return f"{voxels_per_s:.3g} voxel/s"
