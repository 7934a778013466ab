"""The training output folder: whether it holds a run, and what ``--overwrite`` removes.

A folder that holds checkpoints of an earlier run is never silently replaced: ``--resume`` continues
that run, ``--overwrite`` removes it first (all of it, so no stale better checkpoint stays beside a
new one), and without either the command refuses before anything starts.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from em_chunks.errors import InputError

#: files a training run writes into its folder (checkpoint-*.pt besides); the log is ``train.log``
LOG = "train.log"
RUN_FILES = ("last.pt", "best.pt", "swa.pt", "metrics.json", "run.json", LOG)
RUN_DIRS = ("tensorboard", "validation")


def log_path(out: Path) -> Path:
    """The training run's log (every line the command printed, with timestamps), beside its checkpoints."""
    return Path(out) / LOG


def run_files(out: Path) -> list[Path]:
    """The files and folders of a training run found in ``out`` (empty: no run there)."""
    out = Path(out)
    if not out.is_dir():
        return []
    found = [out / n for n in RUN_FILES if (out / n).exists()]
    found += sorted(out.glob("checkpoint-*.pt"))
    return found


def check_train_out(out: Path, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse, in one line and before anything is written, an output folder the run cannot use."""
    out = Path(out)
    if resume and overwrite:
        raise InputError(
            "--resume and --overwrite: choose one (continue the run in --out, or replace it)"
        )
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a directory")
    if resume:
        if not (out / "last.pt").is_file():
            raise InputError(f"--out {out}: --resume given but there is no last.pt to resume from")
        return
    found = run_files(out)
    if found and not overwrite:
        names = ", ".join(p.name for p in found[:3]) + (", ..." if len(found) > 3 else "")
        raise InputError(
            f"--out {out}: holds a training run ({names}); pass --resume to continue it or "
            f"--overwrite to replace it (or choose another --out)"
        )


def clear_run(out: Path) -> None:
    """Remove an earlier run's files from ``out`` (``--overwrite``); other files are left alone."""
    out = Path(out)
    for p in run_files(out):
        p.unlink(missing_ok=True)
    for name in RUN_DIRS:
        shutil.rmtree(out / name, ignore_errors=True)
