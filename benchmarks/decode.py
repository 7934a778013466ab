"""Chunked vs unchunked decode: wall time and peak worker memory, 1 vs 2 workers, same data, one run.

    python benchmarks/decode.py [--grid 2,2,2] [--size 250]

Data: uint8 affinities derived from the real FIB-SEM labels (fib_medulla_250), blurred and noisy.
Prints one line per configuration and the ratios the issue asks for (chunked/unchunked on 2 workers).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from distributed import Client, LocalCluster

from _common import PeakWorkerMemory, fib_affinities
from em_chunks.api.decode import decode


def one(affs: Path, gt: Path, work: Path, grid: str, workers: int) -> tuple[float, int, float]:
    out = work / f"out-{grid}-{workers}.zarr"
    shutil.rmtree(out, ignore_errors=True)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
        client.run(lambda: None)
        with PeakWorkerMemory(client) as mem:
            t0 = time.perf_counter()
            m = decode(affs, out, grid, labels=gt, client=client, progress=False)
            seconds = time.perf_counter() - t0
    return seconds, mem.peak, m["adapted_rand_error"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--grid", default="2,2,2", help="the chunked grid (the unchunked one is 1,1,1)")
    ap.add_argument("--size", type=int, default=250, help="crop the 250^3 volume to this edge length")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="emchunks-bench-decode-"))
    s = slice(0, args.size)
    affs, gt = fib_affinities(work, (s, s, s))
    results = {}
    for workers in (1, 2):
        for grid in ("1,1,1", args.grid):
            seconds, peak, are = one(affs, gt, work, grid, workers)
            results[(grid, workers)] = seconds
            print(f"grid {grid:>7} workers {workers}: {seconds:7.2f} s  peak worker RSS {peak / 2**20:7.0f} MiB  adapted Rand {are:.6f}")
    r2 = results[(args.grid, 2)] / results[("1,1,1", 2)]
    r1 = results[(args.grid, 1)] / results[("1,1,1", 1)]
    print(f"chunked/unchunked time, 2 workers: {r2:.3f}   (goal <= 1.0)")
    print(f"chunked/unchunked time, 1 worker:  {r1:.3f}")
    print(f"2 workers / 1 worker, chunked:     {results[(args.grid, 2)] / results[(args.grid, 1)]:.3f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
