"""User-facing errors: the CLI turns these into one line on stderr and exit code 2 (no traceback)."""

from __future__ import annotations


class InputError(Exception):
    """Bad input from the user (a file, a field, an option). The message names it and what was expected."""

    def __init__(self, message: str) -> None:
        # one line, always: a multi-line message would break the CLI contract
        super().__init__(" ".join(str(message).split()))


class ChunkFailure(Exception):
    """One or more chunks failed; the message lists each chunk's box and cause."""


class Interrupted(BaseException):
    """The user interrupted a command (Ctrl-C) after its state was saved; the message is the one line
    to show (what was kept and how to resume). A ``BaseException``, like ``KeyboardInterrupt``, so that
    ``except Exception`` never swallows it; the CLI prints the message and exits 130."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
