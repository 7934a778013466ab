"""Ctrl-C that is never lost.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be when SIGINT arrives. If that
is inside a garbage-collector callback (distributed installs one in every process) or a ``__del__``,
Python prints "Exception ignored in ..." with a traceback and drops the exception: the command carries
on as if nothing was pressed. While :func:`reliable_interrupts` is active, such a signal is not raised
there but delivered again a moment later, so it lands in ordinary code and stops the command.
"""

from __future__ import annotations

import _thread
import contextlib
import gc
import signal
import threading
from types import FrameType
from typing import Iterator, Optional

RETRY_SECONDS = 0.05


def _callback_codes() -> set:
    codes = set()
    for cb in list(gc.callbacks):
        func = getattr(cb, "__func__", cb)
        code = getattr(func, "__code__", None)
        if code is not None:
            codes.add(code)
    return codes


def _swallowing(frame: Optional[FrameType]) -> bool:
    """Whether an exception raised in ``frame`` would be swallowed: it runs inside a gc callback or a
    ``__del__`` (Python reports such exceptions as "ignored" and goes on)."""
    codes = _callback_codes()
    while frame is not None:
        if frame.f_code in codes or frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def _handler(signum: int, frame: Optional[FrameType]) -> None:
    if _swallowing(frame):
        threading.Timer(RETRY_SECONDS, _thread.interrupt_main).start()  # try again in ordinary code
        return
    raise KeyboardInterrupt


@contextlib.contextmanager
def reliable_interrupts() -> Iterator[None]:
    """While the block runs, SIGINT raises ``KeyboardInterrupt`` only where it cannot be swallowed.

    Only the main thread can install signal handlers; elsewhere (a notebook kernel's worker thread)
    this does nothing. A handler the application installed itself (not Python's default) is kept."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.default_int_handler:
        yield
        return
    signal.signal(signal.SIGINT, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
