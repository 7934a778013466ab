"""Chunked vs whole-volume sliding-window inference on CPU: time ratio and bit-identity.

Kernel level (no Dask yet): one ``predict_volume`` over the whole volume against the union of per-chunk
calls, in the two schemes of :mod:`em_chunks.learn.inference`:

* ``box``     -- each chunk runs every window meeting its core (``predict_box``; redundant at chunk borders);
* ``partial`` -- each chunk runs the windows it owns (``predict_partial``) and each core then adds its
  neighbours' integer partial sums (``blend_partials``): every window computed exactly once.

Reads include the padded context of each chunk (``read_padded``), as a worker would do.

    python benchmarks/predict.py                      # fib_medulla_250 crop, small RSUNet, 3 chunk grids
    python benchmarks/predict.py --shape 64,250,250 --window 16,96,96 --chunks 2,4,4

Goal (issue 5): chunked / whole time <= 1.15 on CPU, affinities bit-identical.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from em_chunks.geometry import Box, ChunkGrid, parse_chunks
from em_chunks.io.padding import read_padded
from em_chunks.geometry.axes import per_axis
from em_chunks.geometry.window import SlidingWindow
from em_chunks.learn.inference import (
    blend_partials,
    predict_box,
    predict_partial,
    predict_volume,
    prepare_model,
)

DATA = Path("/work/shared/data/fib_medulla_250/image.tif")


def triple(text: str) -> tuple[int, int, int]:
    return per_axis(text, "triple")  # the package's one parser of per-axis values


def load_volume(shape: tuple[int, int, int]) -> tuple[np.ndarray, str]:
    if DATA.exists():
        import tifffile

        vol = tifffile.imread(DATA)
        return np.ascontiguousarray(vol[: shape[0], : shape[1], : shape[2]]), f"{DATA.parent.name} crop"
    return np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8), "random uint8"


def make_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "rsunet":
        from em_chunks.learn.models import build_model

        return build_model("rsunet", widths=[8, 12, 16], pooling=[1, 2, 2], out_channels=3, norm="batch")
    return torch.nn.Sequential(
        torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(8, 3, 3, padding=1)
    )


class Clock:
    """Wall and process-CPU seconds: on a shared machine the CPU time (one torch thread) is the steadier."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def run_box(model, vol, sw, grid):
    out = np.zeros((3,) + vol.shape, np.float32)
    n = 0
    t = Clock()
    for chunk in grid:
        ctx = sw.context_for(chunk.core)
        out[(slice(None),) + chunk.core.slices()] = predict_box(
            model, read_padded(vol, ctx, sw.boundary), ctx, chunk.core, sw)
        n += len(sw.batches(sw.windows_for(chunk.core)))
    return out, t.stop(), n


def run_partial(model, vol, sw, grid):
    out = np.zeros((3,) + vol.shape, np.float32)
    n = 0
    t = Clock()
    partials = []
    for chunk in grid:
        ctx = sw.owned_context(chunk.core)
        partials.append(predict_partial(model, read_padded(vol, ctx, sw.boundary), ctx, chunk.core, sw))
        n += len(sw.batches(sw.owned_windows(chunk.core)))
    for chunk in grid:
        meeting = [p for p in partials if not p[0].intersect(chunk.core).empty]
        out[(slice(None),) + chunk.core.slices()] = blend_partials(chunk.core, meeting, sw)
    return out, t.stop(), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="32,192,192")
    ap.add_argument("--window", default="16,64,64")
    ap.add_argument("--pad", default="4,16,16")
    ap.add_argument("--chunks", nargs="+", default=["1,1,1", "2,4,4", "3,2,5"])
    ap.add_argument("--model", choices=["rsunet", "conv"], default="rsunet")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (same for every run)")
    ap.add_argument("--schemes", nargs="+", default=["partial", "box"], choices=["partial", "box"])
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    vol, source = load_volume(triple(args.shape))
    model = prepare_model(make_model(args.model), "cpu")
    sw = SlidingWindow(vol.shape, triple(args.window), pad=triple(args.pad), sw_batch_size=args.batch)
    n_whole = len(sw.windows_for(Box.from_shape(vol.shape)))
    print(f"volume {vol.shape} ({source}), model {args.model}, window {sw.window}, stride {sw.stride}, "
          f"pad {sw.pad}, grid {sw.grid_shape} = {n_whole} windows, batch {args.batch}, torch threads {args.threads}")

    times = []
    for _ in range(2):  # the first run also warms oneDNN up; keep the faster of two
        t = Clock()
        whole = predict_volume(model, vol, sw)
        times.append(t.stop())
    wall, cpu = min(w for w, _ in times), min(c for _, c in times)
    n_batches = len(sw.batches(sw.windows_for(Box.from_shape(vol.shape))))
    print(f"whole volume: {n_batches} model batches, wall {wall:.2f} s ({vol.size / wall / 1e6:.3f} Mvox/s), "
          f"cpu {cpu:.2f} s")
    print(f"{'chunks':>8} {'scheme':>8} {'batches':>8} {'wall s':>8} {'ratio':>6} {'cpu s':>8} {'ratio':>6} "
          f"{'identical':>9} {'max diff':>9}")
    for spec in args.chunks:
        grid = ChunkGrid(vol.shape, parse_chunks(spec, vol.shape))
        for scheme in args.schemes:
            out, (w, c), n = (run_partial if scheme == "partial" else run_box)(model, vol, sw, grid)
            same = bool(np.array_equal(out, whole))
            diff = float(np.abs(out - whole).max())
            print(f"{spec:>8} {scheme:>8} {n:>8} {w:>8.2f} {w / wall:>6.2f} {c:>8.2f} {c / cpu:>6.2f} "
                  f"{str(same):>9} {diff:>9.2e}", flush=True)

if __name__ == "__main__":
    main()
