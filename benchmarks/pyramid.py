"""Pyramid memory is bounded by the chunk: the same per-worker peak for a volume three times larger.

    python benchmarks/pyramid.py            # 32x1024x1024 and 96x1024x1024, 2 workers x 1 GiB
    python benchmarks/pyramid.py --sizes 64,1024,1024 --budget 1048576

For each size the benchmark writes an output as predict leaves it, float32 affinities (3, Z, Y, X)
at the root and a uint64 segmentation under labels/. It writes them slab by slab, so this process
never holds the volume. It then runs the pyramid stages (``write_pyramid``, ``pyramid: on``) for
both on a LocalCluster of worker processes with a memory limit. It reports each worker's kernel
high-water RSS (``VmHWM``, reset before the stages), the wall time per array, the levels made, and
the sizes of the arrays next to the limit. The claim: the peak is set by ``--budget`` (input voxels
per task), not by the volume.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from dask.utils import format_bytes, parse_bytes
from distributed import Client, LocalCluster

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import _rss  # noqa: E402
from memory import _reset_hwm, _vm_hwm  # noqa: E402

from em_chunks.config.output import OutputConfig  # noqa: E402
from em_chunks.engine.pyramid import write_pyramid  # noqa: E402
from em_chunks.io import layout  # noqa: E402
from em_chunks.io.ome_zarr import create_label, create_root_image, open_root  # noqa: E402

VOXEL = (40.0, 4.0, 4.0)
STORAGE = (32, 128, 128)


def _slab(z0: int, z1: int, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Blocky cells (ids from the coordinates) and affinities that are low on their faces."""
    z, y, x = np.meshgrid(
        np.arange(z0, z1), np.arange(shape[1]), np.arange(shape[2]), indexing="ij"
    )
    seg = (1 + (z // 9) * 10**6 + (y // 37) * 10**3 + x // 41).astype(np.uint64)
    affs = np.stack([(z % 9 != 0), (y % 37 != 0), (x % 41 != 0)]).astype(np.float32) * np.float32(
        0.9
    )
    return affs, seg


def make_output(out: Path, shape: tuple[int, int, int]) -> tuple[int, int]:
    root = open_root(out)
    img = create_root_image(root, "affinities", (3,) + shape, np.float32, (3,) + STORAGE, VOXEL)
    lab = create_label(root, layout.SEGMENTATION, shape, np.uint64, STORAGE, VOXEL)
    for z0 in range(0, shape[0], STORAGE[0]):
        z1 = min(shape[0], z0 + STORAGE[0])
        affs, seg = _slab(z0, z1, shape)
        img[:, z0:z1] = affs
        lab[z0:z1] = seg
    return 12 * int(np.prod(shape)), 8 * int(np.prod(shape))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["32,1024,1024", "96,1024,1024"])
    ap.add_argument("--budget", type=int, default=32 * 256 * 256, help="input voxels per task")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit", default="1GiB", help="memory_limit per worker")
    args = ap.parse_args()
    limit = parse_bytes(args.limit)
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="emchunks-pyramid-") as tmp,
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            memory_limit=limit,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        for text in args.sizes:
            shape = tuple(int(v) for v in text.split(","))
            out = Path(tmp) / f"{text.replace(',', 'x')}.zarr"
            affs_bytes, seg_bytes = make_output(out, shape)  # type: ignore[arg-type]
            idle = max(client.run(_rss).values())  # before the stages
            assert all(client.run(_reset_hwm).values()), "cannot reset VmHWM on this kernel"
            cfg = OutputConfig(pyramid="on", pyramid_tile=256)
            row = {
                "shape": shape,
                "affinities": format_bytes(affs_bytes),
                "segmentation": format_bytes(seg_bytes),
                "limit": format_bytes(limit),
                "idle_rss": format_bytes(idle),
            }
            for name in ("image", layout.SEGMENTATION):
                t0 = time.perf_counter()
                factors = write_pyramid(
                    client, out, name, config=cfg, budget_voxels=args.budget, progress=False
                )
                row[f"{name}_seconds"] = round(time.perf_counter() - t0, 1)
            row["levels"] = [list(f) for f in factors]
            row["peak_worker_rss"] = format_bytes(max(client.run(_vm_hwm).values()))
            row["restarts"] = len(client.get_events("worker-restart-memory"))
            rows.append(row)
            print(json.dumps(row), flush=True)
            shutil.rmtree(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
