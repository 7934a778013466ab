"""On a cluster with a 'GPU' worker and a CPU worker, inference runs only where the GPU resource is, and
blending/decoding of finished chunks runs on the CPU worker while later chunks are still being inferred."""

import numpy as np
import torch
import zarr
from distributed import Client, Nanny, SpecCluster, Scheduler, get_task_stream

from em_chunks.api.predict import predict
from em_chunks.learn.checkpoint import save_checkpoint
from em_chunks.learn.models import build_model
from em_chunks.synthetic import make_synthetic_em
from em_chunks.io import layout


def test_decoding_overlaps_inference_on_cpu_workers(tmp_path):
    image, _ = make_synthetic_em((16, 64, 64), seed=9)
    zarr.save_array(str(tmp_path / "raw.zarr"), image, zarr_format=3)
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "m.pt", build_model("unet", widths=(4, 8)), train_config={"data": {"patch": [8, 32, 32]}})
    workers = {
        "gpu": {"cls": Nanny, "options": {"nthreads": 1, "resources": {"GPU": 1}}},
        "cpu": {"cls": Nanny, "options": {"nthreads": 1}},
    }
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": None}}
    with SpecCluster(workers=workers, scheduler=scheduler) as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        gpu_addr = next(a for a, w in client.scheduler_info()["workers"].items() if w.get("resources", {}).get("GPU"))
        with get_task_stream(client) as ts:
            predict(tmp_path / "raw.zarr", ckpt, tmp_path / "out.zarr", "2,4,4", client=client, progress=False)
    tasks = ts.data
    infer = [t for t in tasks if str(t["key"]).startswith("infer-")]
    later = [t for t in tasks if str(t["key"]).startswith(("blend-", "fragments-"))]
    assert len(infer) == 32 and infer and later
    assert all(t["worker"] == gpu_addr for t in infer)  # the GPU resource routes inference

    def start(t):
        return min(s["start"] for s in t["startstops"] if s["action"] == "compute")

    def stop(t):
        return max(s["stop"] for s in t["startstops"] if s["action"] == "compute")

    last_infer = max(stop(t) for t in infer)
    overlapping = [t for t in later if start(t) < last_infer and t["worker"] != gpu_addr]
    assert overlapping, "no blending/decoding ran on the CPU worker while inference was still running"
    affs = zarr.open_array(layout.image_array(tmp_path / "out.zarr"), mode="r")[:]
    assert np.isfinite(affs).all() and affs.std() > 0
