"""A Ctrl-C that arrives while a garbage-collector callback runs is not lost (Python would report it as
"Exception ignored" and go on, and the command would carry on as if nothing was pressed)."""

from __future__ import annotations

import gc
import signal
import sys
import time

import pytest

from em_chunks.engine.interrupt import reliable_interrupts


def _sigint_inside_gc_callback():
    fired = []

    def callback(phase, info):
        if phase == "start" and not fired:
            fired.append(True)
            signal.raise_signal(signal.SIGINT)
            for _ in range(1000):  # Python runs the handler here, inside the callback
                pass

    return callback


def _wait(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)


def test_python_alone_swallows_it(monkeypatch):
    ignored = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: ignored.append(u.exc_type))
    callback = _sigint_inside_gc_callback()
    gc.callbacks.append(callback)
    try:
        gc.collect()
        _wait(0.3)  # nothing is raised: the interrupt was dropped
    finally:
        gc.callbacks.remove(callback)
    assert ignored == [KeyboardInterrupt]  # "Exception ignored in ..."


def test_reliable_interrupts_delivers_it_in_ordinary_code(monkeypatch):
    ignored = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: ignored.append(u.exc_type))
    callback = _sigint_inside_gc_callback()
    gc.callbacks.append(callback)
    try:
        with pytest.raises(KeyboardInterrupt):
            with reliable_interrupts():
                gc.collect()
                _wait(5)
    finally:
        gc.callbacks.remove(callback)
    assert ignored == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
