"""Settings read from the environment, shared by every layer (this module imports nothing of ours)."""

from __future__ import annotations

import os

#: seconds between periodic progress lines (chunks or iterations done, rate, ETA)
DEFAULT_PROGRESS_SECONDS = 15.0


def progress_period() -> float:
    """Seconds between periodic progress lines: ``$EMCHUNKS_PROGRESS_SECONDS`` (e.g. 1 in tests),
    default 15. Long work prints one at least this often, with or without a terminal."""
    raw = os.environ.get("EMCHUNKS_PROGRESS_SECONDS", "")
    try:
        value = float(raw) if raw else DEFAULT_PROGRESS_SECONDS
    except ValueError:
        value = DEFAULT_PROGRESS_SECONDS
    return value if value > 0 else DEFAULT_PROGRESS_SECONDS
