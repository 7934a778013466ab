"""Client-side global agglomeration: the Python backend against the waterz backend.

Region graphs come from real decoding (stages A-C of ``decode_reference`` on one chunk) of noisy,
blurred affinities derived from the fib_medulla_250 labels (with 1-voxel membranes), in cubes of
increasing size; noise 0.2 gives roughly one fragment per 10-20 voxels, like predicted affinities.
Each backend runs in a forked child, so its peak memory above the parent's (MB) is measured too.
Prints fragments, edges, seconds and extra peak MB per backend, the time ratio python / waterz, and
the adapted Rand error between the two backends' segmentations (0 = same partition).

    python benchmarks/agglomerate.py --sizes 64,128,192 --noise 0.2 --thresholds 0.3,0.5
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time

import numpy as np
from scipy import ndimage

from em_chunks.geometry import ChunkGrid
from em_chunks.ops.agglomerate import agglomerate
from em_chunks.ops.decode_reference import fragments_volume, region_graph_volume
from em_chunks.ops.metrics import contingency, scores
from em_chunks.ops.params import DecodeParams

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _common import SHARED  # noqa: E402


def _affinities(labels: np.ndarray, noise: float, blur: float, seed: int) -> np.ndarray:
    """Membranes between bodies, ideal affinities, then blur and Gaussian noise, in [0, 1]."""
    bnd = np.zeros(labels.shape, bool)
    for c in range(3):
        hi, lo = [slice(None)] * 3, [slice(None)] * 3
        hi[c], lo[c] = slice(1, None), slice(None, -1)
        bnd[tuple(hi)] |= labels[tuple(hi)] != labels[tuple(lo)]
    gt = np.where(bnd, 0, labels)
    affs = np.zeros((3,) + gt.shape, np.float32)
    for c in range(3):
        hi, lo = [slice(None)] * 3, [slice(None)] * 3
        hi[c], lo[c] = slice(1, None), slice(None, -1)
        affs[c][tuple(hi)] = (gt[tuple(hi)] == gt[tuple(lo)]) & (gt[tuple(hi)] != 0)
    if blur:
        affs = ndimage.gaussian_filter(affs, (0, blur, blur, blur))
    rng = np.random.default_rng(seed)
    affs += rng.normal(0, noise, affs.shape).astype(np.float32)
    return np.clip(affs, 0, 1).astype(np.float32)


def _load_labels(size: int) -> np.ndarray:
    import tifffile

    path = SHARED / "fib_medulla_250" / "labels.tif"
    labels = tifffile.imread(path).astype(np.uint64)
    if size > min(labels.shape):
        raise SystemExit(f"--sizes: at most {min(labels.shape)} for {path}")
    return labels[:size, :size, :size]


def _child(conn, table, edges, params) -> None:
    import psutil

    base = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    out = agglomerate(table, edges, params)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    conn.send((out, seconds, max(peak - base, 0) / 2**20))


def _run(table, edges, params, backend):
    """(segment ids per threshold, seconds, extra peak MB) of one backend in a forked child."""
    params = params.replace(agglomeration=backend)
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, table, edges, params))
    proc.start()
    result = recv.recv()
    proc.join()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="64,128,192", help="cube edge lengths (comma-separated)")
    ap.add_argument("--noise", type=float, default=0.2)
    ap.add_argument("--blur", type=float, default=0.7)
    ap.add_argument("--thresholds", default="0.3,0.5")
    ap.add_argument("--merge-function", default="aff85_his256")
    ap.add_argument("--skip-python-above", type=int, default=10_000_000,
                    help="run only the waterz backend for graphs with more fragments than this")
    args = ap.parse_args()
    ths = [float(t) for t in args.thresholds.split(",")]
    params = DecodeParams(thresholds=tuple(ths), merge_function=args.merge_function)
    print(f"merge function {args.merge_function}, thresholds {ths}, noise {args.noise}, "
          f"blur {args.blur}")
    print(f"{'size':>6} {'fragments':>10} {'edges':>10} {'graph s':>8} {'python s':>9} "
          f"{'python MB':>9} {'waterz s':>9} {'waterz MB':>9} {'ratio':>6} {'ARE(py,wz)':>11}")
    for size in [int(s) for s in args.sizes.split(",")]:
        affs = _affinities(_load_labels(size), args.noise, args.blur, seed=size)
        t0 = time.perf_counter()
        grid = ChunkGrid(affs.shape[1:], (1, 1, 1), 1)
        labels, table = fragments_volume(affs, grid, params)
        edges = region_graph_volume(affs, labels, table, grid, params)
        t_graph = time.perf_counter() - t0
        del affs
        wz, t_wz, mb_wz = _run(table, edges, params, "waterz")
        if len(table) <= args.skip_python_above:
            py, t_py, mb_py = _run(table, edges, params, "python")
            # fragment-weighted comparison through the voxels: segment of each labelled voxel
            canon = table.canonical_lookup()(labels)
            rows = table.index_of(canon[canon != 0])
            are = max(scores(contingency(w[rows], p[rows]))["adapted_rand_error"]
                      for p, w in zip(py, wz))
            py_text = f"{t_py:9.2f} {mb_py:9.0f}"
            ratio, are_text = f"{t_py / t_wz:6.2f}", f"{are:11.5f}"
        else:
            py_text, ratio, are_text = f"{'-':>9} {'-':>9}", f"{'-':>6}", f"{'-':>11}"
        print(f"{size:>6} {len(table):>10} {len(edges):>10} {t_graph:8.1f} {py_text} "
              f"{t_wz:9.2f} {mb_wz:9.0f} {ratio} {are_text}", flush=True)


if __name__ == "__main__":
    main()
