"""Read cost of a tile grid as a halo'd chunk grid, relative to decoding every tile once.

    ratio = time(compute every block of TileSet.to_dask(grid, halo))  /  time(decode every tile once)

Both sides use 2 threads (dask's threaded scheduler with num_workers=2; a 2-thread pool for the reference),
read the same files in the same process, after one warm-up pass that puts the files in the OS cache. The
goal is ratio <= 1.25 (PyTC v1's tile2volume, which decodes every tile each chunk touches, measured 9.1x).
We also print the PyTC-v1-style figure (each chunk decodes the tiles it touches, 2 threads over chunks) and
the peak memory (tracemalloc: numpy + Python allocations) of each way.

Usage::

    python benchmarks/tile_read.py                       # fib_medulla_250 turned into 128 px tiles
    python benchmarks/tile_read.py --tiles my/tiles.json  # any existing tile grid
    python benchmarks/tile_read.py --grid 2,4,4 --halo 8,32,32 --tile-size 128 --repeat 3
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dask

from em_chunks import TileSet, make_tileset
from em_chunks.geometry import ChunkGrid
from em_chunks.io.tiles import decode_count
from em_chunks.io.tileset_graph import _read_tile
from em_chunks.geometry.axes import per_axis

DEFAULT_VOLUME = Path(__file__).resolve().parents[2] / "shared" / "data" / "fib_medulla_250" / "image.tif"


def _triple(text: str) -> tuple[int, int, int]:
    return per_axis(text, "triple")  # the package's one parser of per-axis values


def decode_all_once(ts: TileSet, threads: int = 2) -> int:
    """The reference: every tile of the grid decoded exactly once, on a ``threads``-thread pool."""
    jobs = [(z, r, c) for z, r, c, _ in ts.iter_tiles()]
    fmt = ts._fmt("image")

    def one(job):
        z, r, c = job
        return _read_tile(ts._ref("image", z, r, c), fmt, z, r, c, ts._geom("image", r, c)).nbytes

    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(one, jobs))


def compute_blocks(ts: TileSet, grid, halo, boundary: str, threads: int = 2) -> int:
    """Every block of the halo'd chunk grid, computed (not concatenated), on the threaded scheduler."""
    arr = ts.to_dask(grid, halo, boundary)
    blocks = dask.compute(*arr.to_delayed().ravel(), scheduler="threads", num_workers=threads)
    return sum(b.nbytes for b in blocks)


def _checksum(block):
    import numpy as np

    return np.array([[[block.size]]])


def consume_blocks(ts: TileSet, grid, halo, boundary: str, threads: int = 2) -> int:
    """As a pipeline stage sees it: every block computed and handed to a (trivial) consumer on the worker,
    then dropped, so memory is recycled instead of all blocks being kept for the caller."""
    arr = ts.to_dask(grid, halo, boundary)
    sizes = arr.map_blocks(_checksum, chunks=(1, 1, 1), dtype=int)
    return int(sizes.sum().compute(scheduler="threads", num_workers=threads))


def pytc_style(ts: TileSet, grid, halo, boundary: str, threads: int = 2) -> int:
    """PyTC v1's way: each chunk reads its context on its own, decoding every tile it touches."""
    chunks = list(ChunkGrid(ts.shape, grid, halo))
    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(lambda ch: ts.read(ch.context, boundary=boundary).nbytes, chunks))


def timed(fn, *args):
    """((wall seconds, CPU seconds of this process), result)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    return (time.perf_counter() - t0, time.process_time() - c0), out


def peak_mb(fn, *args) -> float:
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn(*args)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiles", type=Path, help="an existing tile JSON (default: make one from --volume)")
    ap.add_argument("--volume", type=Path, default=DEFAULT_VOLUME)
    ap.add_argument("--tile-size", type=int, default=128)
    ap.add_argument("--grid", default="2,4,4")
    ap.add_argument("--halo", default="8,32,32")
    ap.add_argument("--boundary", default="reflect")
    ap.add_argument("--repeat", type=int, default=5, help="timed passes of each, interleaved")
    ap.add_argument("--no-pytc", action="store_true", help="skip the PyTC-v1-style comparison")
    args = ap.parse_args(argv)
    grid, halo = _triple(args.grid), _triple(args.halo)

    with tempfile.TemporaryDirectory() as tmp:
        if args.tiles is None:
            t0 = time.perf_counter()
            tiles = make_tileset(args.volume, Path(tmp) / "tiles", tile_size=args.tile_size)
            print(f"made {tiles} from {args.volume} in {time.perf_counter() - t0:.1f} s")
        else:
            tiles = args.tiles
        ts = TileSet.from_json(tiles)
        n_tiles = sum(1 for _ in ts.iter_tiles())
        rows, cols = ts.tile_grid()
        print(f"tile grid: shape {ts.shape} {ts.spec.dtype}, {n_tiles} PNGs ({rows}x{cols} of {ts.tile_shape()} "
              f"per section); chunks {grid} halo {halo} boundary {args.boundary}; 2 threads each")

        decode_all_once(ts)  # warm-up: files in the OS cache, imports and thread pools started, for both
        compute_blocks(ts, grid, halo, args.boundary)
        t_ref, t_dask, t_use = [], [], []
        for _ in range(args.repeat):  # interleaved, so a change of machine load hits every side alike
            t_ref.append(timed(decode_all_once, ts)[0])
            before = decode_count()
            t_dask.append(timed(compute_blocks, ts, grid, halo, args.boundary)[0])
            decodes = decode_count() - before
            t_use.append(timed(consume_blocks, ts, grid, halo, args.boundary)[0])
        t_pytc = []
        if not args.no_pytc:
            before = decode_count()
            t_pytc.append(timed(pytc_style, ts, grid, halo, args.boundary)[0])
            pytc_decodes = decode_count() - before

        def runs(ts_):
            return ", ".join(f"{t[0]:.3f}/{t[1]:.3f}" for t in ts_)

        best_ref, best_dask = min(t[0] for t in t_ref), min(t[0] for t in t_dask)
        print("times are wall/CPU seconds; CPU (process time) is robust to other load on the machine")
        print(f"decode every tile once (2-thread pool):   best wall {best_ref:.3f} s  (runs: {runs(t_ref)})")
        print(f"to_dask all blocks (threaded, 2 workers): best wall {best_dask:.3f} s  (runs: {runs(t_dask)}), "
              f"{decodes} decodes for {n_tiles} tiles")
        print(f"to_dask blocks consumed, not kept:       best wall {min(t[0] for t in t_use):.3f} s  (runs: {runs(t_use)})")
        if t_pytc:
            print(f"PyTC-v1 style (chunk reads its tiles):    wall {t_pytc[0][0]:.3f} s  ({pytc_decodes} decodes)")
        m_ref = peak_mb(decode_all_once, ts)
        m_dask = peak_mb(compute_blocks, ts, grid, halo, args.boundary)
        m_use = peak_mb(consume_blocks, ts, grid, halo, args.boundary)
        print(f"peak traced memory: decode-once {m_ref:.0f} MiB (holds nothing), to_dask {m_dask:.0f} MiB "
              f"(includes every block kept for the caller: {compute_blocks(ts, grid, halo, args.boundary) / 2**20:.0f} MiB), "
              f"to_dask consumed {m_use:.0f} MiB; "
              f"volume {ts.shape[0] * ts.shape[1] * ts.shape[2] * ts.dtype().itemsize / 2**20:.0f} MiB; "
              f"process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
        med = statistics.median
        print(f"RATIO to_dask / decode-once = {best_dask / best_ref:.2f} (best wall)  "
              f"{med(t[0] for t in t_dask) / med(t[0] for t in t_ref):.2f} (median wall)  "
              f"{med(t[1] for t in t_dask) / med(t[1] for t in t_ref):.2f} (median CPU)   goal <= 1.25")
        print(f"RATIO to_dask consumed / decode-once = {min(t[0] for t in t_use) / best_ref:.2f} (best wall)  "
              f"{med(t[1] for t in t_use) / med(t[1] for t in t_ref):.2f} (median CPU)")
        if t_pytc:
            print(f"RATIO PyTC-v1 style / decode-once = {t_pytc[0][0] / best_ref:.2f} (wall)  "
                  f"{t_pytc[0][1] / med(t[1] for t in t_ref):.2f} (CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
