"""The one progress display, shared by the stage runner (chunks) and training (iterations): a live rich
bar on stderr when it is a terminal, and a timer thread that produces one summary line every
``period`` seconds whatever happens (a batch job, a pipe, a run still waiting on its first result).

Top level like :mod:`em_chunks.settings` (imports nothing of ours), so engine and learn share it without
a layering exception.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Callable, Sequence


class ProgressDisplay:
    """``columns``: rich column objects of the live bar (the bar exists only if ``enabled`` and stderr
    is a terminal); ``beat`` is called every ``period`` seconds from a daemon thread until :meth:`close`."""

    def __init__(self, enabled: bool, columns: Callable[[], Sequence[Any]], beat: Callable[[], None],
                 period: float, name: str) -> None:
        self.bar: Any = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import Progress

            self.bar = Progress(*columns(), transient=True, console=Console(stderr=True))
            self.bar.start()
        self.period, self._beat_fn = period, beat
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=name, daemon=True)
        self._thread.start()

    def add_task(self, description: str, **fields: Any) -> Any:
        return self.bar.add_task(description, **fields) if self.bar is not None else None

    def update(self, task: Any, **fields: Any) -> None:
        if self.bar is not None and task is not None:
            self.bar.update(task, **fields)

    def _beat(self) -> None:
        while not self._stop.wait(self.period):
            self._beat_fn()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.bar is not None:
            self.bar.stop()


__all__ = ["ProgressDisplay"]
