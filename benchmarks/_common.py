"""Helpers shared by the benchmarks: a peak-RSS sampler over the workers, test volumes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
if not SHARED.is_dir():
    SHARED = Path("/work/shared/data")


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


class PeakWorkerMemory:
    """Samples every worker's RSS in the background; ``peak`` is the largest single-worker value seen."""

    def __init__(self, client, interval: float = 0.1) -> None:
        self.client, self.interval = client, interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                values = self.client.run(_rss)
                self.peak = max([self.peak] + list(values.values()))
            except Exception:
                pass
            time.sleep(self.interval)

    def __enter__(self) -> "PeakWorkerMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def fib_affinities(out_dir: Path, crop=None) -> tuple[Path, Path]:
    """uint8 affinities derived from the real FIB-SEM labels (blurred, noisy), and the labels, as zarr."""
    import tifffile
    import zarr
    from scipy.ndimage import gaussian_filter

    from em_chunks.synthetic import synthetic_affinities

    labels = tifffile.imread(SHARED / "fib_medulla_250" / "labels.tif")
    if crop is not None:
        labels = labels[crop]
    affs = synthetic_affinities(labels, noise=0.0)
    rng = np.random.default_rng(0)
    affs = np.stack([gaussian_filter(a, 1.0) for a in affs]) + rng.normal(0, 0.03, affs.shape).astype(np.float32)
    affs_u8 = np.clip(np.round(affs * 255), 0, 255).astype(np.uint8)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data, chunks in (("affs.zarr", affs_u8, (3, 64, 128, 128)), ("gt.zarr", labels, (64, 128, 128))):
        arr = zarr.create_array(str(out_dir / name), shape=data.shape, dtype=data.dtype, chunks=chunks, overwrite=True)
        arr[...] = data
    return out_dir / "affs.zarr", out_dir / "gt.zarr"
