"""Entry point: run the typer app and turn user errors into one line + exit code 2."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run ``emchunks``; :class:`InputError` (and malformed config) print one line and exit 2."""
    from em_chunks.errors import ChunkFailure, InputError, Interrupted

    try:
        from em_chunks.cli.app import app
        from em_chunks.engine.interrupt import reliable_interrupts

        with reliable_interrupts():  # a Ctrl-C is never swallowed by a gc callback
            app(args=argv, prog_name="emchunks", standalone_mode=True)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ChunkFailure as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except Interrupted as err:  # Ctrl-C after the command saved its state: its one line says what to do
        print(str(err), file=sys.stderr)
        return 130
    except SystemExit as exc:  # typer/click exits with the command's code
        code = exc.code
        if code == 130:  # typer's translation of a Ctrl-C that no command handled
            print("interrupted", file=sys.stderr)
        return code if isinstance(code, int) else (0 if code is None else 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
