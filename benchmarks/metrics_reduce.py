"""Exact metrics: the old client-side merge of per-chunk contingency tables vs. the worker-side
reduction, side by side.

A synthetic volume is split into many chunks; each chunk's segmentation and labels are generated on
a worker from the voxel coordinates (no disk: this measures the merge, not I/O). Ground truth:
blocks of 16x32x32 (10 % unlabelled); segmentation: cells of 2x4x4 shifted against the blocks, so
cells straddle blocks; the pair table has about one row per 25 voxels.

* ``client``: the old ``run_evaluate``: every chunk's table comes to the client, which merges them
  (``merge_contingency``) and scores the whole table.
* ``workers``: ``engine/metrics_reduce.reduce_contingencies``: tables stay on the workers, only
  scalars come back.

Each method runs as its own client *process* against the same cluster, so its peak RSS is its own
(``VmHWM``, reset at exec, unlike ``ru_maxrss``). Printed per method: wall time, the client's CPU
time, its peak RSS and the growth over its connected-but-idle baseline, and the largest table one
process or task held; then the largest score difference between the methods, and ExactSum's speed.

    python benchmarks/metrics_reduce.py --shape 128,1024,1024 --chunks 4,8,8 --workers 2
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time

import numpy as np

from em_chunks.geometry import ChunkGrid


def _status(field: str) -> int:
    """A /proc/self/status field in bytes (VmRSS, VmHWM)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def labels_of(chunk) -> tuple[np.ndarray, np.ndarray]:
    """Segmentation (uint64) and ground truth (uint32) of a chunk's core, from its coordinates."""
    z, y, x = np.meshgrid(
        *[np.arange(b, e) for b, e in zip(chunk.core.begin, chunk.core.end)], indexing="ij"
    )
    gz, gy, gx = z // 16, y // 32, x // 32
    gt = (1 + gz * 4096 + gy * 64 + gx).astype(np.uint32)
    gt[((gz * 7 + gy * 13 + gx * 31) % 10) == 0] = 0  # 10 % of the blocks unlabelled
    sz, sy, sx = (z + 1) // 2, (y + 2) // 4, (x + 2) // 4  # cells shifted against the blocks
    seg = (
        (sz.astype(np.uint64) << np.uint64(40))
        | (sy.astype(np.uint64) << np.uint64(20))
        | sx.astype(np.uint64)
    )
    return seg, gt


def produce(chunk):
    from em_chunks.ops.metrics import contingency

    seg, gt = labels_of(chunk)
    return [contingency(seg, gt)]


def produce_dict(chunk):
    (t,) = produce(chunk)
    return {"seg": t.seg, "gt": t.gt, "count": t.count}


def run_client_merge(client, chunks) -> dict:
    """The old path (``run_evaluate`` before the reduction): tables to the client, merged there."""
    from em_chunks.ops import metrics as M

    futures = [
        client.submit(produce_dict, c, key=f"old-{c.name}", pure=False, retries=2) for c in chunks
    ]
    tables = {i: f.result() for i, f in enumerate(futures)}
    del futures
    merged = M.merge_contingency(
        [M.Contingency(t["seg"], t["gt"], t["count"]) for t in tables.values()]
    )
    del tables
    # in the new path's units (keyed rows: pairs + segment sizes + ground-truth sizes)
    keyed = len(merged) + np.unique(merged.seg).size + np.unique(merged.gt).size
    return {
        "scores": M.scores(merged),
        "largest_table_rows": keyed,
        "pair_rows": len(merged),
        "tasks": len(chunks),
    }


def run_worker_reduce(client, chunks) -> dict:
    from em_chunks.engine.metrics_reduce import reduce_contingencies

    r = reduce_contingencies(
        client, chunks, produce, lambda c: (), 1, key_prefix="new", progress=False
    )
    return {
        "scores": r.scores()[0],
        "largest_table_rows": r.peak_rows,
        "tasks": r.tasks,
        "levels": r.levels,
    }


def child(method: str, scheduler: str, shape, pieces) -> None:
    """One client process: connect, measure the baseline, run one method, print a JSON line."""
    from distributed import Client

    import em_chunks.engine.metrics_reduce  # noqa: F401  (imports before the baseline, for both methods)
    import em_chunks.ops.metrics  # noqa: F401

    client = Client(scheduler)
    chunks = list(ChunkGrid(shape, pieces))
    base = _status("VmRSS")
    t0, c0 = time.perf_counter(), time.process_time()
    out = (run_client_merge if method == "client" else run_worker_reduce)(client, chunks)
    out.update(method=method, wall_s=time.perf_counter() - t0, cpu_s=time.process_time() - c0)
    out.update(peak_rss=_status("VmHWM"), baseline_rss=base)
    print("RESULT " + json.dumps(out), flush=True)
    client.close()


def _exact_sum_rate() -> tuple[int, float]:
    from em_chunks.ops.exact_sum import ExactSum

    rng = np.random.default_rng(0)
    c = rng.integers(1, 1 << 20, 10_000_000).astype(np.float64)
    terms = c * np.log2(c)
    t0, c0 = time.perf_counter(), time.process_time()
    v = ExactSum.of(terms).value()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert v == math.fsum(terms)
    return terms.size, seconds, cpu


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--shape", default="128,1024,1024")
    ap.add_argument("--chunks", default="4,8,8")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="4GiB")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--scheduler", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    shape = tuple(int(v) for v in a.shape.split(","))
    pieces = tuple(int(v) for v in a.chunks.split(","))
    if a.child:
        child(a.child, a.scheduler, shape, pieces)
        return
    from distributed import LocalCluster

    grid = ChunkGrid(shape, pieces)
    print(
        f"volume {shape} = {np.prod(shape) / 1e6:.0f} Mvoxel, {len(grid)} chunks of about "
        f"{np.prod(shape) / len(grid) / 1e6:.2f} Mvoxel; {a.workers} worker process(es), 1 thread"
    )
    with LocalCluster(
        n_workers=a.workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        memory_limit=a.memory_limit,
    ) as cluster:
        results = {}
        for method in ("client", "workers"):
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    method,
                    "--scheduler",
                    cluster.scheduler_address,
                    "--shape",
                    a.shape,
                    "--chunks",
                    a.chunks,
                ],
                capture_output=True,
                text=True,
            )
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not line:
                sys.exit(f"{method} client failed:\n{proc.stderr[-3000:]}")
            results[method] = json.loads(line[0][7:])
    mb = 1 << 20
    print(
        f"{'method':<34}{'wall s':>8}{'client CPU s':>14}{'client peak MB':>16}{'growth MB':>11}"
        f"{'largest table rows':>20}{'tasks':>7}"
    )
    for name, label in (
        ("client", "old: tables merged on the client"),
        ("workers", "new: reduced on the workers"),
    ):
        r = results[name]
        print(
            f"{label:<34}{r['wall_s']:>8.1f}{r['cpu_s']:>14.1f}{r['peak_rss'] / mb:>16.0f}"
            f"{(r['peak_rss'] - r['baseline_rss']) / mb:>11.0f}"
            f"{r['largest_table_rows']:>20,}{r['tasks']:>7}"
        )
    print(
        f"rows are keyed rows (pairs + segment sizes + ground-truth sizes); the old path's table "
        f"is the whole volume's ({results['client']['pair_rows']:,} pairs), on the client; the "
        f"new path's the most rows one task "
        f"loaded, on a worker; {results['workers']['levels']} reduction levels"
    )
    old, new = results["client"]["scores"], results["workers"]["scores"]
    print(
        "largest score difference old vs new:",
        max(abs(old[k] - new[k]) for k in old),
        json.dumps(new),
    )
    n, seconds, cpu = _exact_sum_rate()
    print(
        f"ExactSum: {n / 1e6:.0f} M terms in {seconds:.3f} s wall, {cpu:.3f} s CPU "
        f"({n / cpu / 1e6:.0f} M terms per CPU second), equal to math.fsum"
    )


if __name__ == "__main__":
    main()
