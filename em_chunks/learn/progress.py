"""Training progress the user can see: a live bar on a terminal (iteration, train loss EMA, learning
rate, it/s, ETA) and, every ``period`` seconds, one line with the same figures: on the console when
there is no bar (a batch job, a pipe, ``--no-progress``), to ``quiet_log`` (e.g. the log file) when
there is one. The lines come from a timer thread, so a run waiting on its first batch says so too."""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Optional

from em_chunks.progress import ProgressDisplay


def _clock(seconds: float) -> str:
    s = int(round(max(0.0, seconds)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class LossEMA:
    """Exponential moving average of the training loss, bias-corrected (Adam-style), so the first
    values are not pulled towards 0. This is the "train loss (EMA)" printed everywhere."""

    def __init__(self, beta: float = 0.95) -> None:
        self.beta, self.value, self.n = beta, 0.0, 0

    def update(self, loss: float) -> float:
        self.n += 1
        self.value = self.beta * self.value + (1 - self.beta) * loss
        return self.get()

    def get(self) -> float:
        return self.value / (1 - self.beta**self.n) if self.n else math.nan


class TrainProgress:
    """Progress of iterations ``start..total`` (see the module docstring)."""

    def __init__(
        self,
        total: int,
        start: int,
        *,
        bar: bool,
        log: Callable[[str], None],
        quiet_log: Optional[Callable[[str], None]],
        period: float,
    ) -> None:
        self.total, self.start, self.done = total, start, start
        self.loss, self.lr = math.nan, math.nan
        self.t0 = time.perf_counter()
        self.log, self.quiet_log, self.period = log, quiet_log, period
        self.display = ProgressDisplay(bar, _train_columns, self._beat, period, "emchunks-train-progress")
        self.bar: Any = self.display.bar
        self.task = self.display.add_task("train", total=total, completed=start, info="")

    def rate(self) -> float:
        elapsed = time.perf_counter() - self.t0
        return (self.done - self.start) / elapsed if elapsed > 0 else 0.0

    def info(self) -> str:
        rate = self.rate()
        return f"train loss (EMA) {self.loss:.4f}  lr {self.lr:.2e}  {rate:.2f} it/s"

    def update(self, iteration: int, loss_ema: float, lr: float) -> None:
        self.done, self.loss, self.lr = iteration, loss_ema, lr
        self.display.update(self.task, completed=iteration, info=self.info())

    def line(self) -> str:
        """``train 83/300 iterations: train loss (EMA) 0.3213, lr 9.51e-04, 2.31 it/s; ETA 1:34``"""
        elapsed = time.perf_counter() - self.t0
        if self.done == self.start:
            return f"train {self.done}/{self.total} iterations: waiting for the first batches ({_clock(elapsed)})"
        rate = self.rate()
        eta = _clock((self.total - self.done) / rate) if rate > 0 else "unknown"
        return (
            f"train {self.done}/{self.total} iterations: train loss (EMA) {self.loss:.4f}, lr {self.lr:.2e}, "
            f"{rate:.2f} it/s; elapsed {_clock(elapsed)}, ETA {eta}"
        )

    def _beat(self) -> None:
        if self.bar is None:
            self.log(self.line())
        elif self.quiet_log is not None:
            self.quiet_log(self.line())

    def close(self) -> None:
        self.display.close()


def _train_columns() -> tuple:
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    return (TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeRemainingColumn())
