"""Bounded memory: ``decode`` a volume several times larger than the worker memory limit.

    python benchmarks/memory.py                                  # 128x1024x1024, --chunks 4,4,8, 2 workers x 600 MiB
    python benchmarks/memory.py --size 64,1024,1024 --chunks 2,4,8     # half the volume, same chunk size

The claim under test (docs/architecture.md, "Memory bounded by the chunk"): a decode task reads only its
chunk's context box and returns a small summary, so a worker's memory is set by the chunk size, never by the
volume. The benchmark builds a volume whose float32 affinities alone, and whose uint64 fragment and
segmentation arrays, are each larger than one worker's ``memory_limit``, decodes it on a LocalCluster of
worker processes with that limit, and reports:

* the peak worker RSS, twice: sampled every 50 ms from the client (``PeakWorkerMemory``) and the kernel's
  high-water mark of each worker process (``VmHWM`` in /proc, which no sampler can miss);
* the volume's bytes (uint8 as stored, float32 working set, uint64 fragments and segmentation) and their
  ratios to the limit, the wall time and voxels/s (whole run and per stage, from ``run.json``);
* whether Dask had to step in: worker restarts (pids before/after, ``worker-restart-memory`` events, nanny
  logs), pauses (worker logs), spilling (the SpillBuffer's disk-write metrics, "Unmanaged memory" warnings).

Exit status 1 when decode failed, a worker was restarted or paused, spilled, or its peak RSS reached the limit.

Data: the benchmark process never holds the whole volume either. One synthetic cell-label block
(``make_synthetic_em``) is mirror-tiled over the volume (labels are a function of the global voxel
coordinate, so cells continue across block and slab seams), and the uint8 affinities
(``synthetic_affinities`` with a little noise: few fragments, so the client-side agglomeration, which is
single-threaded Python, stays short) are written to zarr one z-slab at a time.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import dask
import numpy as np
import zarr
from dask.utils import format_bytes, parse_bytes
from distributed import Client, LocalCluster

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakWorkerMemory  # noqa: E402

from em_chunks.api.decode import decode  # noqa: E402
from em_chunks.io import layout  # noqa: E402
from em_chunks.synthetic import make_synthetic_em, synthetic_affinities  # noqa: E402
from em_chunks.geometry.axes import per_axis  # noqa: E402

MiB = 2**20


def _triple(text: str) -> tuple[int, int, int]:
    return per_axis(text, "triple")  # the package's one parser of per-axis values


# ---- data: mirror-tiled synthetic labels -> uint8 affinities, written slab by slab ------------------
def _mirror(coords: np.ndarray, n: int) -> np.ndarray:
    """Index into a length-``n`` block for global coordinates, reflecting at every block edge (…ab|ba…),
    so neighbouring voxels across a seam carry the same label and cells run on."""
    j = np.mod(coords, 2 * n)
    return np.where(j < n, j, 2 * n - 1 - j)


def write_affinities(path: Path, size: tuple[int, int, int], block: tuple[int, int, int], slab: int,
                     cell_size: float, noise: float, store_chunks: tuple[int, int, int]) -> float:
    """uint8 (3, Z, Y, X) affinities of a mirror-tiled label block, one z-slab in memory at a time.

    Each slab's labels include the slice before it, so the z-affinity of the slab's first slice is the
    true one, not the "no predecessor" zero: the volume is seamless. Returns the seconds spent.
    """
    t0 = time.perf_counter()
    block = tuple(min(b, s) for b, s in zip(block, size))
    _, labels = make_synthetic_em(block, seed=0, cell_size=cell_size, noise=0.0, blur=0.0)
    arr = zarr.create_array(str(path), shape=(3,) + size, dtype=np.uint8, chunks=(3,) + store_chunks, overwrite=True)
    ys, xs = _mirror(np.arange(size[1]), block[1]), _mirror(np.arange(size[2]), block[2])
    for i, z0 in enumerate(range(0, size[0], slab)):
        z1 = min(z0 + slab, size[0])
        first = max(z0 - 1, 0)  # the predecessor slice, for a true z-affinity at z0
        zs = _mirror(np.arange(first, z1), block[0])
        lab = labels[zs][:, ys][:, :, xs]
        affs = synthetic_affinities(lab, noise=noise, seed=1000 + i)[:, z0 - first:]
        arr[:, z0:z1] = np.rint(affs * 255).astype(np.uint8)
        del lab, affs
    return time.perf_counter() - t0


# ---- what each worker did: kernel peak RSS, pid, spilling ----------------------------------------
def _vm_hwm() -> int:
    """This process's peak RSS since it started (Linux ``VmHWM``). Not ``getrusage().ru_maxrss``: that one
    carries over the parent's RSS through fork+exec, so a worker would inherit the benchmark process's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status (not Linux?)")


def _reset_hwm() -> bool:
    """Reset this process's VmHWM (Linux >= 4.0: write 5 to clear_refs), so the next peak is the run's."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _worker_report(dask_worker=None) -> dict:
    """Runs on a worker (``client.run``): its high-water RSS, pid and SpillBuffer figures."""
    import os

    data = getattr(dask_worker, "data", None)
    spilled, writes = 0, 0.0
    if data is not None and hasattr(data, "spilled_total"):
        spilled = int(data.spilled_total.disk)
        writes = sum(v for (label, unit), v in getattr(data, "cumulative_metrics", {}).items()
                     if label == "disk-write" and unit == "count")
    return {
        "pid": os.getpid(),
        "maxrss": _vm_hwm(),
        "status": str(dask_worker.status) if dask_worker is not None else "?",
        "spilled_bytes_now": spilled,
        "disk_writes": writes,
    }


def _warm_up() -> int:
    """Import what the decode tasks import, so the baseline RSS is a loaded worker's."""
    import psutil
    import waterz  # noqa: F401

    import em_chunks.engine.decode  # noqa: F401

    return psutil.Process().memory_info().rss


PATTERNS = {
    "paused": re.compile(r"Pausing worker"),
    "unmanaged-high": re.compile(r"Unmanaged memory use is high"),
    "restarted": re.compile(r"exceeded .* memory budget|Restarting worker|Worker process .* was killed"),
}


def _log_hits(logs: dict) -> dict[str, int]:
    hits = {k: 0 for k in PATTERNS}
    for lines in logs.values():
        for _level, msg in lines:
            for k, pat in PATTERNS.items():
                hits[k] += bool(pat.search(msg))
    return hits


def run(args: argparse.Namespace) -> int:
    size, chunks = _triple(args.size), _triple(args.chunks)
    limit = parse_bytes(args.memory_limit)
    voxels = int(np.prod(size))
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="emchunks-bench-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    affs_path, out = work / "affs.zarr", work / "out.zarr"
    shutil.rmtree(out, ignore_errors=True)

    store = (args.slab, min(128, size[1]), min(128, size[2]))
    gen_s = write_affinities(affs_path, size, _triple(args.block), args.slab, args.cell_size, args.noise, store)
    t = zarr.open_array(str(affs_path), mode="r")
    print(f"data: uint8 affinities {t.shape} written slab by slab ({args.slab} slices) in {gen_s:.1f} s; "
          f"benchmark process peak RSS so far {_vm_hwm() / MiB:.0f} MiB")

    thresholds = {k: dask.config.get(f"distributed.worker.memory.{k}") for k in ("target", "spill", "pause", "terminate")}
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, memory_limit=limit,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        baseline = client.run(_warm_up)
        before = client.run(_worker_report)
        client_reset = _reset_hwm()  # the data generator's peak is not the client's peak during decode
        with PeakWorkerMemory(client, interval=0.05) as mem:
            t0 = time.perf_counter()
            try:  # a worker killed for memory fails its chunks after the retries: still report what happened
                metrics, error = decode(affs_path, out, chunks, client=client, workers=args.workers, progress=False), None
            except Exception as exc:  # noqa: BLE001
                metrics, error = None, f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            wall = time.perf_counter() - t0
        client_peak = _vm_hwm()
        try:  # a worker restarted by its nanny may still be starting
            client.wait_for_workers(args.workers, timeout=60)
        except Exception:  # noqa: BLE001
            pass
        after = client.run(_worker_report)
        logs = client.get_worker_logs()
        nanny_logs = client.get_worker_logs(nanny=True)
        events = client.get_events("worker-restart-memory")
        n_workers = len(client.scheduler_info()["workers"])

    # ---- figures ---------------------------------------------------------------------------------
    run_json = layout.run_json(out)
    stages = json.loads(run_json.read_text()).get("stages", []) if run_json.exists() else []
    peak_sampled = mem.peak
    # a worker killed for memory takes its VmHWM with it; the sampled peak still saw it
    peak_kernel = max([r["maxrss"] for r in after.values()] + [peak_sampled])
    base = max(baseline.values())
    restarted = (sorted(r["pid"] for r in before.values()) != sorted(r["pid"] for r in after.values())
                 or n_workers != args.workers or len(events) > 0)
    hits = _log_hits(logs)
    restart_hits = _log_hits(nanny_logs)["restarted"] + hits["restarted"]
    disk_writes = sum(r["disk_writes"] for r in after.values())
    spilled_now = sum(r["spilled_bytes_now"] for r in after.values())
    core = [int(np.ceil(s / n)) for s, n in zip(size, chunks)]
    ctx_vox = int(np.prod([c + 2 for c in core]))

    vol = {
        "affinities uint8 (stored)": 3 * voxels,
        "affinities float32 (working set)": 12 * voxels,
        "fragments uint64 (work/fragments)": 8 * voxels,
        "segmentation uint64": 8 * voxels,
    }
    print(f"volume {size[0]}x{size[1]}x{size[2]} = {voxels / 1e6:.1f} Mvoxel, --chunks {args.chunks} "
          f"(core ~{core[0]}x{core[1]}x{core[2]}, context float32 affinities {format_bytes(12 * ctx_vox)}), "
          f"{args.workers} worker processes x 1 thread")
    print(f"worker memory_limit {format_bytes(limit)}; thresholds (fractions of it) {thresholds}")
    for name, nbytes in vol.items():
        print(f"  {name:36s} {nbytes / MiB:8.0f} MiB = {nbytes / limit:5.2f} x limit")
    total = vol["affinities float32 (working set)"] + vol["fragments uint64 (work/fragments)"] + vol["segmentation uint64"]
    print(f"  {'float32 affs + uint64 frags + seg':36s} {total / MiB:8.0f} MiB = {total / limit:5.2f} x limit "
          f"= {total / (limit * args.workers):5.2f} x all workers' limits together")
    print(f"loaded idle worker RSS   {base / MiB:7.0f} MiB = {base / limit:.3f} x limit")
    print(f"peak worker RSS sampled  {peak_sampled / MiB:7.0f} MiB = {peak_sampled / limit:.3f} x limit  (every 50 ms, client.run)")
    print(f"peak worker RSS (kernel) {peak_kernel / MiB:7.0f} MiB = {peak_kernel / limit:.3f} x limit  (VmHWM high-water mark)")
    print(f"client (benchmark) process peak RSS during decode {client_peak / MiB:.0f} MiB"
          + ("" if client_reset else " (could not reset VmHWM: includes the data generation)"))
    print(f"volume float32 affinities / limit {vol['affinities float32 (working set)'] / limit:.2f};  "
          f"volume float32 affinities / peak worker RSS {vol['affinities float32 (working set)'] / peak_kernel:.2f}")
    if metrics is not None:
        print(f"wall {wall:.1f} s, {voxels / wall / 1e6:.3f} Mvoxel/s; fragments {metrics['fragments']}, "
              f"segments {metrics['segments']}, agglomeration {metrics['agglomeration']} (on the workers)")
    else:
        print(f"decode FAILED after {wall:.1f} s: {error}")
    for s in stages:
        vps = s["voxels_per_s"]
        print(f"  stage {s['stage']:13s} span {s['span_seconds']:7.1f} s  busy {s['busy_seconds']:7.1f} s  "
              f"{vps / 1e6 if vps else float('nan'):7.3f} Mvoxel/s  ({s['chunks_run']} chunks)")
    if metrics is not None:
        seg = zarr.open_array(str(out / "labels" / "segmentation" / "0"), mode="r")
        print(f"segmentation written: {seg.shape} {seg.dtype}")
    print(f"workers restarted: {'YES' if restarted else 'no'} (pids before {sorted(r['pid'] for r in before.values())}, "
          f"after {sorted(r['pid'] for r in after.values())}; restart events {len(events)}, restart log lines {restart_hits})")
    print(f"workers paused: {'YES' if hits['paused'] else 'no'} ({hits['paused']} 'Pausing worker' log lines)")
    print(f"spilled to disk: {'YES' if disk_writes or spilled_now else 'no'} ({disk_writes:.0f} disk writes, {spilled_now} bytes on disk now; "
          f"{hits['unmanaged-high']} 'Unmanaged memory use is high' warnings)")
    spill_at = thresholds["spill"] * limit if thresholds["spill"] else limit
    print(f"peak RSS below Dask's spill threshold ({thresholds['spill']} x limit = {format_bytes(spill_at)}): "
          f"{'yes' if peak_kernel < spill_at else 'NO'}")
    ok = metrics is not None and not restarted and not hits["paused"] and not disk_writes and not spilled_now and peak_kernel < limit
    print(f"bounded memory: {'PASS' if ok else 'FAIL'} (decode finished; no restart, pause or spill; peak RSS below the limit)")
    if not args.keep and not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="128,1024,1024", help="volume Z,Y,X in voxels")
    ap.add_argument("--chunks", default="4,4,8", help="the decode chunk grid (each chunk must fit a worker)")
    ap.add_argument("--memory-limit", default="600MiB", help="each worker's memory_limit")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--slab", type=int, default=16, help="z slices generated and written at a time (also the storage chunk z)")
    ap.add_argument("--block", default="32,256,256", help="the synthetic label block that is mirror-tiled")
    ap.add_argument("--cell-size", type=float, default=32.0, help="cell diameter in voxels (fewer cells, fewer fragments)")
    ap.add_argument("--noise", type=float, default=0.01, help="affinity noise (small: few fragments)")
    ap.add_argument("--work", help="working directory (kept); default a temporary one, removed")
    ap.add_argument("--keep", action="store_true", help="keep the temporary working directory")
    sys.exit(run(ap.parse_args()))


if __name__ == "__main__":
    main()
