"""What a run keeps on disk when it is done, and ``emchunks clean``.

While a run is going, its output holds, besides the results, what resume needs: ``work/`` (the
fragments, and the partial sums of inference) and the intermediate files of the global steps under
``emchunks/state/data`` (pieces, links, the fragment join, the region graph, the agglomeration and
dust messages, names). They are larger than the results (docs/outputs.md gives the figures), and a
finished run no longer needs them: a rerun of a complete run is recognised from ``run.json`` and the
markers, which stay. So a complete decode or predict removes them, unless the workflow's
``output.keep_intermediates`` is true (e.g. to look at the fragments).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from em_chunks.engine.state import RunState
from em_chunks.io import layout

CLEANED = "intermediates-removed"


def intermediates(out: str | Path) -> list[Path]:
    """The folders a finished run no longer needs (those that exist); for ``tune``, its per-bounds
    working stores ``aff-LOW-HIGH.zarr`` (fragments and region graphs) too."""
    paths = [RunState(out).dir / "data", layout.work_group(out), *sorted(Path(out).glob("aff-*.zarr"))]
    return [p for p in paths if p.is_dir()]


def size_of(folder: Path) -> int:
    """Bytes of the files under ``folder``."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _flag(out: str | Path) -> Path:
    return RunState(out).dir / CLEANED


def remove_intermediates(out: str | Path) -> int:
    """Delete the intermediates of ``out``; returns the bytes freed.

    The flag written first says that the per-chunk markers no longer have their data behind them:
    a later run that is not recognised as complete starts over (:func:`start_over_if_cleaned`)."""
    if not intermediates(out):
        return 0
    _flag(out).parent.mkdir(parents=True, exist_ok=True)
    _flag(out).write_text("intermediates removed; a new run starts over\n")
    freed = 0
    for p in intermediates(out):
        freed += size_of(p)
        shutil.rmtree(p, ignore_errors=True)
    return freed


def start_over_if_cleaned(out: str | Path) -> bool:
    """Forget the done markers of a run whose intermediates were removed (they would point at
    deleted data); the results are recomputed and overwritten. True when it did."""
    flag = _flag(out)
    if not flag.exists():
        return False
    for entry in RunState(out).dir.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
    flag.unlink()
    return True
