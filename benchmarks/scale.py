"""Does decoding scale out? The client's memory and CPU, and wall time, as the volume grows.

The decode runs as a new user runs it: the ``emchunks decode`` CLI against an external scheduler
with two worker processes (started here: ``dask scheduler`` + ``dask worker``). The CLI runs as a
child process, so its own peak RSS and CPU seconds are measured exactly (``os.wait4``).

Modes (combine them):

``--scale``     the same chunk size on 1x and 8x the voxels (twice each axis): the CLI's peak RSS
                ratio (goal <= 1.3) and its CPU time as a fraction of the wall time (goal <= 0.1).
``--compare``   one volume decoded with ``decode.agglomeration=distributed`` and ``=python`` (the
                whole region graph in one task) side by side: wall times, their ratio, and whether
                the two segmentations are bit-identical.
``--cap MB``    also run the 8x decode with the CLI's address space capped (``RLIMIT_AS``, the
                effect of ``ulimit -v``) to show the client needs no more as the volume grows.

Volumes: a synthetic EM-like label volume (``em_chunks.synthetic``), mirror-tiled to the size,
turned into blurred, noisy affinities (uint8): noise 0.3 gives roughly one fragment per 10-15 voxels,
like a briefly trained model's predictions.

    python benchmarks/scale.py --scale --compare --base 64,512,512 --core 32,128,128
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _labels_block(shape, seed=3) -> np.ndarray:
    from em_chunks.synthetic import make_synthetic_em

    _, labels = make_synthetic_em(tuple(shape), seed=seed)
    return labels.astype(np.uint32)


def _mirror(block: np.ndarray, box: tuple[slice, ...]) -> np.ndarray:
    """``box`` of the infinite mirror tiling of ``block`` (period 2n per axis, continuous seams)."""
    idx = []
    for s, n in zip(box, block.shape):
        i = np.arange(s.start, s.stop) % (2 * n)
        idx.append(np.where(i < n, i, 2 * n - 1 - i))
    return block[np.ix_(*idx)]


def write_volume(path: Path, shape, block: np.ndarray, noise: float, blur: float, slab: int = 32) -> Path:
    """uint8 affinities (3, *shape) of the mirror-tiled labels, written slab by slab along z."""
    import zarr
    from scipy import ndimage

    arr = zarr.create_array(str(path), shape=(3,) + tuple(shape), dtype=np.uint8,
                            chunks=(3, 32, 128, 128), overwrite=True)
    halo = 4
    for z0 in range(0, shape[0], slab):
        z1 = min(shape[0], z0 + slab)
        lab = _mirror(block, (slice(z0 - halo, z1 + halo), slice(-halo, shape[1] + halo), slice(-halo, shape[2] + halo)))
        affs = np.zeros((3,) + lab.shape, np.float32)
        for c in range(3):
            hi, lo = [slice(None)] * 3, [slice(None)] * 3
            hi[c], lo[c] = slice(1, None), slice(None, -1)
            a, b = lab[tuple(hi)], lab[tuple(lo)]
            affs[c][tuple(hi)] = (a == b) & (a != 0)
            affs[c] = ndimage.gaussian_filter(affs[c], blur)
        rng = np.random.default_rng(z0)
        affs += rng.normal(0, noise, affs.shape).astype(np.float32)
        core = affs[:, halo:-halo, halo:-halo, halo:-halo]
        arr[:, z0:z1] = np.clip(np.round(core * 255), 0, 255).astype(np.uint8)
    return path


class Cluster:
    """An external ``dask scheduler`` and two ``dask worker`` processes on this machine."""

    def __init__(self, workers: int, memory: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="emchunks-scale-")
        self.file = os.path.join(self.dir, "scheduler.json")
        self.procs = [subprocess.Popen(["dask", "scheduler", "--scheduler-file", self.file, "--port", "0",
                                        "--dashboard-address", ":0"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)]
        for _ in range(200):
            if os.path.exists(self.file):
                break
            time.sleep(0.1)
        time.sleep(0.5)
        self.address = json.loads(Path(self.file).read_text())["address"]
        for i in range(workers):
            self.procs.append(subprocess.Popen(
                ["dask", "worker", self.address, "--nworkers", "1", "--nthreads", "1", "--memory-limit", memory,
                 "--name", f"w{i}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client

        with Client(self.address) as c:
            c.wait_for_workers(workers, timeout=120)

    def close(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def run_cli(args: list[str], cap_mb: int | None = None) -> dict:
    """Run ``emchunks ...``; its wall time, CPU seconds and peak RSS (this child only)."""
    def limit() -> None:
        if cap_mb:
            resource.setrlimit(resource.RLIMIT_AS, (cap_mb << 20, cap_mb << 20))

    t0 = time.perf_counter()
    proc = subprocess.Popen(["emchunks"] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=limit, text=True)
    out_text = proc.stdout.read()
    err_text = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    return {"rc": rc, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mb": usage.ru_maxrss / 1024, "stderr_tail": err_text[-600:] if rc else "",
            "stdout_tail": out_text[-300:] if rc else ""}


def decode(address: str, affs: Path, out: Path, pieces, agglomeration: str = "distributed", cap_mb=None) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    r = run_cli(["decode", str(affs), "--chunks", ",".join(map(str, pieces)), "--out", str(out), "--scheduler",
                 address, "--set", f"decode.agglomeration={agglomeration}", "--set", "decode.thresholds=[0.3, 0.5]"], cap_mb)
    if r["rc"] == 0:
        from em_chunks.io import layout

        m = json.loads(layout.metrics_json(out).read_text())
        r.update(fragments=m["fragments"], edges=m["region_graph_edges"], segments=m["segments"])
    return r


def _line(name: str, r: dict) -> str:
    if r["rc"] != 0:
        return f"{name}: FAILED rc={r['rc']}: {r['stderr_tail'][-300:]}"
    return (f"{name}: wall {r['wall_s']:.1f} s, CLI CPU {r['cpu_s']:.1f} s ({r['cpu_s'] / r['wall_s']:.1%} of wall), "
            f"CLI peak RSS {r['peak_rss_mb']:.0f} MB, fragments {r.get('fragments')}, edges {r.get('edges')}, "
            f"segments {r.get('segments')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="64,512,512", help="1x volume shape Z,Y,X")
    ap.add_argument("--core", default="32,128,128", help="chunk core shape Z,Y,X (the same at every size)")
    ap.add_argument("--noise", type=float, default=0.3)
    ap.add_argument("--blur", type=float, default=1.0)
    ap.add_argument("--scale", action="store_true")
    ap.add_argument("--compare", action="store_true")
    ap.add_argument("--cap", type=int, default=None, help="RLIMIT_AS for the 8x CLI run, MB")
    ap.add_argument("--worker-memory", default="6GiB")
    ap.add_argument("--dir", default=None)
    a = ap.parse_args()
    base = tuple(int(v) for v in a.base.split(","))
    core = tuple(int(v) for v in a.core.split(","))
    work = Path(a.dir or tempfile.mkdtemp(prefix="emchunks-scale-data-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"load before: {os.getloadavg()}", flush=True)
    block = _labels_block(tuple(min(b, c) for b, c in zip(base, (64, 256, 256))))
    cluster = Cluster(2, a.worker_memory)
    results = {}
    try:
        one = write_volume(work / "affs-1x.zarr", base, block, a.noise, a.blur)
        pieces1 = tuple(max(1, b // c) for b, c in zip(base, core))
        if a.compare:
            d = decode(cluster.address, one, work / "dist.zarr", pieces1, "distributed")
            print(_line(f"1x {base} grid {pieces1} distributed", d), flush=True)
            p = decode(cluster.address, one, work / "py.zarr", pieces1, "python")
            print(_line(f"1x {base} grid {pieces1} python", p), flush=True)
            if d["rc"] == 0 and p["rc"] == 0:
                import zarr

                from em_chunks.io import layout

                same = np.array_equal(zarr.open_array(layout.segmentation_array(work / "dist.zarr"))[:],
                                      zarr.open_array(layout.segmentation_array(work / "py.zarr"))[:])
                print(f"distributed / python wall: {d['wall_s'] / p['wall_s']:.3f}; bit-identical: {same}", flush=True)
            results["compare"] = {"distributed": d, "python": p}
        if a.scale:
            big = tuple(2 * b for b in base)
            eight = write_volume(work / "affs-8x.zarr", big, block, a.noise, a.blur)
            pieces8 = tuple(max(1, b // c) for b, c in zip(big, core))
            r1 = results.get("compare", {}).get("distributed") or decode(cluster.address, one, work / "s1.zarr", pieces1)
            print(_line(f"1x {base} grid {pieces1}", r1), flush=True)
            r8 = decode(cluster.address, eight, work / "s8.zarr", pieces8)
            print(_line(f"8x {big} grid {pieces8}", r8), flush=True)
            if r1["rc"] == 0 and r8["rc"] == 0:
                print(f"CLI peak RSS 8x / 1x: {r8['peak_rss_mb'] / r1['peak_rss_mb']:.2f} (goal <= 1.3); CLI CPU / wall "
                      f"at 8x: {r8['cpu_s'] / r8['wall_s']:.1%} (goal <= 10%)", flush=True)
            results["scale"] = {"1x": r1, "8x": r8}
            if a.cap:
                rc = decode(cluster.address, eight, work / "cap.zarr", pieces8, cap_mb=a.cap)
                aff_mb = 3 * np.prod(big) / 2**20
                seg_mb = 8 * np.prod(big) / 2**20
                print(_line(f"8x with the CLI capped at {a.cap} MB address space (uint8 affinities {aff_mb:.0f} MB, "
                            f"uint64 segmentation {seg_mb:.0f} MB)", rc), flush=True)
                results["cap"] = rc
    finally:
        cluster.close()
        print(f"load after: {os.getloadavg()}", flush=True)
    print(json.dumps({k: v for k, v in results.items()}, default=str)[:2000])


if __name__ == "__main__":
    main()
