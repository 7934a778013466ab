"""The summary table printed at the end of each command."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from rich.console import Console
from rich.table import Table

METRIC_ORDER = ("adapted_rand_error", "adapted_rand_precision", "adapted_rand_recall", "voi_split", "voi_merge")


def print_metrics(metrics: Mapping[str, Any], title: str = "metrics") -> None:
    """Scalars as a table (metrics first), then per-stage timings when present."""
    console = Console()
    table = Table(title=title, show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    keys = [k for k in METRIC_ORDER if k in metrics] + [k for k in metrics if k not in METRIC_ORDER]
    for k in keys:
        v = metrics[k]
        if isinstance(v, float):
            table.add_row(k, f"{v:.6g}")
        elif isinstance(v, (int, str)):
            table.add_row(k, str(v))
    console.print(table)


def print_outputs(out: Path) -> None:
    """Where the results are and how to look at them (docs/outputs.md)."""
    from em_chunks.io import layout

    print(f"outputs: {out} (OME-Zarr: opens in napari with the segmentation as its label layer)")
    print(f"segmentation: {layout.segmentation_array(out)}; run record: {layout.run_json(out)}")
    print(f"view: emchunks view {out}   (neuroglancer; add --raw IMAGE for the raw data)")
