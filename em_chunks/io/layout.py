"""Where everything of one run's output lives: the one module that spells output paths.

Layout 2 (docs/outputs.md explains the choices)::

    OUT.zarr/                     an NGFF 0.5 image: its multiscales are the run's picture
    OUT.zarr/0, 1, ...            pyramid levels: predict's affinities (C, Z, Y, X), or decode's
                                  mean affinity (Z, Y, X) uint8 (decode has no affinities of its
                                  own to show)
    OUT.zarr/labels/segmentation  the NGFF image-label of that image (levels 0, 1, ... as the image)
    OUT.zarr/work/                intermediate arrays (fragments; partial sums while running)
    OUT.zarr/emchunks/            a zarr group holding every non-zarr file of the run:
        run.json, metrics.json, preview.png, state/ (resume markers and fingerprint)

Because the root is an image with a ``labels`` group, ome-zarr-py's ``Reader`` (napari's reader) on
``OUT.zarr`` yields the image and the segmentation in one go, and because the non-zarr files sit
inside one group, listing the root's members (``zarr.open_group(OUT).keys()``) meets only zarr
nodes.

Layout 1 (emchunks before this module): ``affinities/0`` and ``labels/segmentation/0`` beside each
other at a root without NGFF metadata, ``run.json``/``metrics.json``/``preview.png``/``.emchunks/``
at the root. Its outputs stay readable (``labels/segmentation`` is where it was); resuming one is
refused.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from em_chunks.errors import InputError

LAYOUT_VERSION = 2
RUN_GROUP = "emchunks"
SEGMENTATION = "segmentation"
LABELS = "labels"
WORK = "work"
_LEGACY_STATE = ".emchunks"


# ---- the zarr hierarchy
# ---------------------------------------------------------------------------
def level_name(level: int) -> str:
    """The name of pyramid level ``level`` inside a multiscale group (NGFF dataset path)."""
    return str(int(level))


def image_group(out: str | Path) -> Path:
    """The NGFF image of the run: the root itself."""
    return Path(out)


def image_array(out: str | Path, level: int = 0) -> str:
    return f"{image_group(out)}/{level_name(level)}"


def labels_group(out: str | Path) -> Path:
    return image_group(out) / LABELS


def label_group(out: str | Path, name: str = SEGMENTATION) -> Path:
    return labels_group(out) / name


def label_array(out: str | Path, name: str = SEGMENTATION, level: int = 0) -> str:
    return f"{label_group(out, name)}/{level_name(level)}"


def segmentation_array(out: str | Path, level: int = 0) -> str:
    """The uint64 segmentation (level 0 unless asked): what evaluate and the viewer read."""
    return label_array(out, SEGMENTATION, level)


def group_of(out: str | Path, array_name: str) -> Path:
    """The multiscale group of ``array_name``: ``"image"`` (the root) or a label's name."""
    return image_group(out) if array_name == "image" else label_group(out, array_name)


def work_group(out: str | Path) -> Path:
    return Path(out) / WORK


def work_array(out: str | Path, name: str) -> str:
    return f"{work_group(out)}/{name}"


def partials_dir(out: str | Path) -> Path:
    """Inference's overlapping partial sums (``<chunk>.npy``), deleted when predict finishes."""
    return work_group(out) / "partials"


# ---- the run's non-zarr files
# -----------------------------------------------------------------------
def run_dir(out: str | Path) -> Path:
    """The zarr group that holds the run record, the metrics, the preview and the resume state."""
    return Path(out) / RUN_GROUP


def state_dir(out: str | Path) -> Path:
    return run_dir(out) / "state"


def run_json(out: str | Path) -> Path:
    return run_dir(out) / "run.json"


def metrics_json(out: str | Path) -> Path:
    return run_dir(out) / "metrics.json"


def preview_png(out: str | Path) -> Path:
    return run_dir(out) / "preview.png"


def log_file(out: str | Path) -> Path:
    return run_dir(out) / "emchunks.log"


def ensure_run_dir(out: str | Path) -> Path:
    """Create the run group with its ``zarr.json`` (so zarr sees a group there, not a stray
    folder)."""
    d = run_dir(out)
    d.mkdir(parents=True, exist_ok=True)
    meta = d / "zarr.json"
    if not meta.exists():
        doc = {
            "zarr_format": 3,
            "node_type": "group",
            "attributes": {
                "emchunks": {
                    "layout": LAYOUT_VERSION,
                    "contents": "run.json, metrics.json, preview.png and state/ (resume "
                    "markers) of this emchunks run: files, not zarr arrays",
                }
            },
        }
        tmp = d / f".zarr.json.{uuid.uuid4().hex}.tmp"
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        os.replace(tmp, meta)
    return d


# ---- which layout a folder holds
# --------------------------------------------------------------------
def layout_of(out: str | Path) -> int | None:
    """2 for this layout, 1 for an output of an older emchunks, None for anything else."""
    p = Path(out)
    if state_dir(p).is_dir() or (run_dir(p) / "zarr.json").is_file():
        return LAYOUT_VERSION
    if (p / _LEGACY_STATE).is_dir():
        return 1
    return None


def is_output(out: str | Path) -> bool:
    """True when ``out`` was written by emchunks (any layout)."""
    return layout_of(out) is not None


def refuse_legacy(out: str | Path) -> None:
    """Refuse to resume into an output of the older layout (mixing layouts would break both)."""
    if layout_of(out) == 1:
        raise InputError(
            f"{out}: written by an older emchunks (layout 1: affinities/ beside labels/, "
            f"no root image); it cannot be resumed: use a new --out (its segmentation stays "
            f"readable at {Path(out) / LABELS / SEGMENTATION})"
        )


def legacy_image_array(out: str | Path) -> str:
    """Layout 1's affinities (for reading old outputs only)."""
    return f"{Path(out)}/affinities/0"
