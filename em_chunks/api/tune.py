"""``tune``: search decoder settings against labels with one data pass per watershed setting.

For each ``aff_threshold`` pair the fragments and the region graph are built once (stages A-C, with
the fragment-vs-labels contingency table); every merge function then agglomerates that graph once over
all thresholds (waterz's ``mergeUntil`` sequence), and each snapshot's exact metrics follow from the
contingency table without touching voxels again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import yaml
from distributed import Client

from em_chunks.api.decode import decode_params
from em_chunks.api.run import computing_run
from em_chunks.config.decode import DecodeConfig
from em_chunks.engine.cleanup import remove_intermediates
from em_chunks.engine.decode import check_affinities, check_labels, run_tune
from em_chunks.engine.source import Source
from em_chunks.errors import InputError
from em_chunks.geometry import ChunkGrid, parse_chunks, storage_aligned
from em_chunks.ops.params import MERGE_FUNCTIONS  # the default search: the named merge functions

THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.1, 0.91, 0.1))
AFF_THRESHOLDS = ((0.1, 0.999),)


def tune(
    affinities: str | Path,
    labels: str | Path,
    out: str | Path,
    chunks: str | tuple[int, int, int] = (1, 1, 1),
    *,
    merge_functions: Sequence[str] = MERGE_FUNCTIONS,
    thresholds: Sequence[float] = THRESHOLDS,
    aff_thresholds: Sequence[tuple[float, float]] = AFF_THRESHOLDS,
    base: Optional[DecodeConfig] = None,
    keep: bool = False,
    scheduler: Optional[str] = None,
    workers: int = 2,
    client: Optional[Client] = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Return ``{"trials": [...], "best": {...}}``, trials sorted by adapted Rand error (best first)."""
    base = base or DecodeConfig()
    ths = tuple(sorted(float(t) for t in thresholds))
    if not ths or any(not 0 <= t <= 1 for t in ths):
        raise InputError(f"--thresholds {list(thresholds)}: expected values in [0, 1]")
    for mf in merge_functions:
        DecodeConfig(**{**base.model_dump(), "merge_function": mf})  # refuse unknown names up front
    src = Source.open(affinities)
    check_affinities(src, decode_params(base))
    lab = Source.open_labels(labels)
    check_labels(lab, src.spatial_shape, what=f"affinities {src.path} (spatial shape)")
    pieces = parse_chunks(chunks, src.spatial_shape)
    grid = ChunkGrid(src.spatial_shape, pieces, align=storage_aligned(src.spatial_shape, pieces))
    resolved = {
        "affinities": str(Path(affinities).resolve()), "labels": str(Path(labels).resolve()), "chunks": list(pieces),
        "merge_functions": list(merge_functions), "thresholds": list(ths), "aff_thresholds": [list(a) for a in aff_thresholds],
        "base": base.model_dump(mode="json"),
    }
    trials: list[dict[str, Any]] = []
    with computing_run("tune", Path(out), resolved, scheduler=scheduler, workers=workers, client=client) as run:
        for low, high in aff_thresholds:
            params = decode_params(DecodeConfig(**{**base.model_dump(), "thresholds": ths, "aff_threshold": (low, high)}))
            sub = Path(out) / f"aff-{low:g}-{high:g}.zarr"
            for row in run_tune(run.client, src, sub, grid, params, list(merge_functions), lab, record=run.record,
                                progress=progress):
                trials.append({**row, "aff_threshold": [low, high]})
        trials.sort(key=lambda r: (r["adapted_rand_error"], r["voi_split"] + r["voi_merge"]))
        best = trials[0]
        run.metrics = {"best": best, "trials": trials}
    if not keep:  # the fragments and region graphs only served this search
        remove_intermediates(out)
    return run.metrics


def best_workflow_yaml(best: dict[str, Any], base: Optional[DecodeConfig] = None) -> str:
    """The best setting as a workflow YAML (a ``decode:`` section), validated before it is written."""
    base = base or DecodeConfig()
    cfg = DecodeConfig(**{**base.model_dump(), "merge_function": best["merge_function"],
                          "thresholds": (best["threshold"],), "aff_threshold": tuple(best["aff_threshold"])})
    doc = {
        "format_version": 1,
        "name": "tuned-decoder",
        "description": f"found by emchunks tune: adapted Rand error {best['adapted_rand_error']:.4f}",
        "decode": cfg.model_dump(mode="json"),
    }
    return yaml.safe_dump(doc, sort_keys=False)
