"""The GPU check's inference steps: the kernel alone, the engine's stages, ``emchunks predict``.

All three use the same :class:`~em_chunks.engine.predict.InferenceSpec`
(``api.predict.inference_spec`` with the check's predict settings), so their Mvoxel/s compare like
for like, and the engine's affinities are compared bit for bit with the kernel's (chunking never
changes the answer, on the GPU too).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from device_steps import REPO, Clock, Result, torch_device


def predict_overrides(s: dict[str, Any]) -> list[str]:
    """The ``--set`` overrides of the predict section this check uses (the same for every step)."""
    sets = [
        f"predict.select_channel=[{','.join(str(c) for c in s['select_channel'])}]",
        f"predict.output_dtype={s['output_dtype']}",
        f"predict.amp={str(s['amp']).lower()}",
        f"predict.sw_batch_size={s['sw_batch_size']}",
        f"predict.device={s['device']}",
        "predict.preview=false",
    ]
    if s["window"]:
        sets.append(f"predict.window=[{','.join(str(v) for v in s['window'])}]")
    return sets


def inference_setup(s: dict[str, Any]):
    """(spec, model): the engine's InferenceSpec for the checkpoint, as ``predict`` resolves it."""
    from em_chunks.api.predict import inference_spec
    from em_chunks.api.workflow import load_workflow
    from em_chunks.learn.checkpoint import load_checkpoint

    cfg = load_workflow(None, predict_overrides(s)).predict_config()
    model, info = load_checkpoint(s["checkpoint"])
    info = {
        **info,
        "model_config": {
            **(info.get("model_config") or {}),
            "in_channels": model.in_channels,
            "out_channels": model.out_channels,
            "dims": model.dims,
        },
    }
    return inference_spec(cfg, Path(s["checkpoint"]), info, tuple(s["volume"])), model


def _mvox(voxels: float, seconds: float) -> float | None:
    return round(voxels / seconds / 1e6, 3) if seconds > 0 else None


# ---- the kernel alone ----------------------------------------------------------------------------
def forward_ceiling(
    model, sw, device: str, amp: bool, batch_sizes, volume_voxels: int, seconds: float
) -> dict:
    """Forward passes only (random input already on the device, no blending): the model's ceiling.

    ``mvoxel_per_s`` converts windows/s to volume voxels/s for this window grid (windows x overlap).
    On CUDA the batch of ``sw.sw_batch_size`` is also timed with cuDNN autotuning on (``benchmark``,
    non-deterministic algorithms), which ``prepare_model`` turns off for bit-exact chunking: the gap
    is what exactness costs."""
    import torch

    n_windows = int(np.prod(sw.grid_shape))
    out: dict[str, Any] = {"windows_in_volume": n_windows, "per_batch_size": {}}
    runs_for = max(0.25, seconds / (len(batch_sizes) + (device == "cuda")))

    def timed(bs: int) -> dict:
        x = torch.rand((bs, 1) + tuple(sw.window), device=device)
        if device == "cuda":
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with (
            torch.inference_mode(),
            torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and device == "cuda"),
        ):
            for _ in range(2):
                model(x)
            _sync(device)
            n, t0 = 0, time.perf_counter()
            while True:
                model(x)
                n += 1
                if n % 4 == 0 or device != "cuda":
                    _sync(device)
                    if time.perf_counter() - t0 >= runs_for:
                        break
            dt = time.perf_counter() - t0
        wps = n * bs / dt
        return {
            "batches": n,
            "seconds": round(dt, 3),
            "windows_per_s": round(wps, 2),
            "mvoxel_per_s": round(wps * volume_voxels / n_windows / 1e6, 3),
        }

    for bs in batch_sizes:
        out["per_batch_size"][str(bs)] = timed(bs)
    best = max(out["per_batch_size"].values(), key=lambda v: v["windows_per_s"])
    out["best_mvoxel_per_s"] = best["mvoxel_per_s"]
    if device == "cuda":
        flags = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = True, False
        try:
            out["cudnn_benchmark_mode"] = {
                "batch_size": sw.sw_batch_size,
                **timed(sw.sw_batch_size),
            }
        finally:
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = flags
        out["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def step_kernel(s: dict[str, Any], limit: float, res: Result) -> None:
    """read -> infer -> blend -> write of the whole volume in one process, no Dask (the ceiling)."""
    import torch
    import zarr

    from em_chunks.engine.source import Source
    from em_chunks.geometry import Box
    from em_chunks.learn.inference import blend_partials, predict_partial, prepare_model

    t = Clock()
    spec, model = inference_setup(s)
    device = torch_device(s)
    sw, opts = spec.sw, spec.options.replace(device=device)
    model = prepare_model(model, device)
    shape = tuple(s["volume"])
    voxels = int(np.prod(shape))
    res["device"] = device
    res["spec"] = {
        "window": list(sw.window),
        "stride": list(sw.stride),
        "sw_batch_size": sw.sw_batch_size,
        "amp": opts.amp,
        "select_channel": list(opts.select_channel or []),
        "output_dtype": opts.output_dtype,
        "grid_shape": list(sw.grid_shape),
    }
    res["setup_s"] = t.lap()
    res["model_forward"] = forward_ceiling(
        model,
        sw,
        device,
        opts.amp,
        s["forward_batch_sizes"],
        voxels,
        seconds=min(float(s["forward_seconds"]), 0.2 * limit),
    )
    res.save()
    t.lap()
    core = Box.from_shape(shape)
    ctx = sw.owned_context(core)
    raw = Source.open(s["image"]).read(ctx, sw.boundary)
    read_s = t.lap()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    box, sums = predict_partial(model, raw, ctx, core, sw, opts)
    infer_s = t.lap()
    n_windows = len(sw.owned_windows(core))
    res["infer"] = {
        "seconds": infer_s,
        "mvoxel_per_s": _mvox(voxels, infer_s),
        "windows": n_windows,
        "batches": len(sw.batches(sw.owned_windows(core))),
        "windows_per_s": round(n_windows / infer_s, 2),
        "partial_sums_gib": round(sums.nbytes / 2**30, 3),
    }
    if device == "cuda":
        res["infer"]["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    res.save()
    affs = blend_partials(core, [(box, sums)], sw, opts.output_dtype)
    del sums
    blend_s = t.lap()
    arr = zarr.create_array(
        str(Path(s["work"]) / "kernel_affinities.zarr"),
        shape=affs.shape,
        dtype=affs.dtype,
        chunks=(affs.shape[0],) + tuple(min(a, b) for a, b in zip((32, 256, 256), shape)),
        overwrite=True,
    )
    arr[...] = affs
    write_s = t.lap()
    total = read_s + infer_s + blend_s + write_s
    for name, sec in (("read", read_s), ("blend", blend_s), ("write", write_s)):
        res[name] = {"seconds": sec, "mvoxel_per_s": _mvox(voxels, sec)}
    res["seconds"] = round(total, 3)
    res["mvoxel_per_s"] = _mvox(voxels, total)
    res["affinities"] = {
        "shape": list(affs.shape),
        "dtype": str(affs.dtype),
        "mean": float(affs.mean()),
        "min": int(affs.min()) if affs.dtype == np.uint8 else float(affs.min()),
        "max": int(affs.max()) if affs.dtype == np.uint8 else float(affs.max()),
    }


# ---- a cluster with a GPU worker and CPU workers -------------------------------------------------
def _gpu_specs(s: dict[str, Any], cuda: bool) -> list[tuple[str, Any]]:
    """The ways to make the GPU worker, best first: dask-cuda's CUDA worker spec (CPU affinity, CUDA
    context created at start), then a plain Nanny with the ``GPU`` resource declared by hand."""
    from distributed import Nanny

    mem = s["worker_memory"]

    def dask_cuda() -> dict:
        from dask_cuda.worker_spec import worker_spec

        out = {}
        for key, spec in worker_spec(dashboard_address=None, threads_per_worker=1).items():
            spec["options"]["resources"] = {"GPU": 1}
            spec["options"]["memory_limit"] = mem
            out[f"gpu-{key}"] = spec
        return out

    def declared() -> dict:
        return {
            "gpu-0": {
                "cls": Nanny,
                "options": {"nthreads": 1, "resources": {"GPU": 1}, "memory_limit": mem},
            }
        }

    kinds = [("dask-cuda worker_spec (GPU worker) + CPU workers", dask_cuda)] if cuda else []
    kinds.append(
        (
            "Nanny with resources GPU=1 declared by hand + CPU workers"
            + ("" if cuda else " (no CUDA: the 'GPU' worker runs the model on its CPU)"),
            declared,
        )
    )
    return kinds


def start_cluster(s: dict[str, Any], res: Result):
    """A GPU worker beside ``cpu_workers`` CPU workers, as docker-compose runs them; returns
    ``(cluster, client)`` with every worker up. When dask-cuda cannot make its worker (not
    installed, no CUDA bindings, its start-up fails) the error is recorded and a declared-resource
    worker is used."""
    from distributed import Client, Nanny, Scheduler, SpecCluster

    info: dict[str, Any] = {}
    res["cluster"] = info
    cpu = {
        f"cpu-{i}": {
            "cls": Nanny,
            "options": {
                "nthreads": 1,
                "memory_limit": s["worker_memory"],
                "env": {"CUDA_VISIBLE_DEVICES": ""},
            },
        }
        for i in range(int(s["cpu_workers"]))
    }
    for kind, make in _gpu_specs(s, torch_device(s) == "cuda"):
        t = Clock()
        cluster = client = None
        try:
            workers = {**make(), **cpu}
            cluster = SpecCluster(
                workers=workers,
                scheduler={"cls": Scheduler, "options": {"dashboard_address": None}},
                silence_logs=40,
            )
            client = Client(cluster)
            client.wait_for_workers(len(workers), timeout=60)
        except Exception as err:
            info.setdefault("failed", []).append(f"{kind}: {err.__class__.__name__}: {err}"[:400])
            for thing in (client, cluster):
                try:
                    thing.close() if thing is not None else None
                except Exception:
                    pass
            continue
        info.update(
            {
                "kind": kind,
                "gpu_workers": sum(1 for k in workers if k.startswith("gpu")),
                "cpu_workers": len(cpu),
                "start_s": t.lap(),
            }
        )
        return cluster, client
    raise RuntimeError(f"no cluster could be started: {info.get('failed')}")


def _task_stream_summary(records: list[dict], wall: float) -> dict:
    """Per stage: tasks, compute and transfer seconds (sums), the first task's compute seconds (it
    also loads the model and sets up cuDNN) and the median/max of the others; per worker: busy share
    of the wall time."""
    stages: dict[str, dict[str, Any]] = {}
    runs: dict[str, list[tuple[float, float]]] = {}
    busy: dict[str, float] = {}
    for r in records:
        stage = str(r.get("key", "")).split("-", 1)[0]
        st = stages.setdefault(stage, {"tasks": 0, "compute_s": 0.0, "transfer_s": 0.0})
        st["tasks"] += 1
        for ss in r.get("startstops", ()):
            dt = ss["stop"] - ss["start"]
            if ss["action"] == "compute":
                st["compute_s"] += dt
                runs.setdefault(stage, []).append((ss["start"], dt))
                busy[r.get("worker", "?")] = busy.get(r.get("worker", "?"), 0.0) + dt
            elif ss["action"] == "transfer":
                st["transfer_s"] += dt
    for stage, st in stages.items():
        st["compute_s"] = round(st["compute_s"], 3)
        st["transfer_s"] = round(st["transfer_s"], 3)
        times = [dt for _, dt in sorted(runs.get(stage, []))]
        if times:
            rest = sorted(times[1:]) or times
            st["first_task_s"] = round(times[0], 3)
            st["other_tasks_median_s"] = round(rest[len(rest) // 2], 3)
            st["other_tasks_max_s"] = round(rest[-1], 3)
    share = {w: round(b / wall, 3) for w, b in sorted(busy.items())} if wall > 0 else {}
    return {"stages": stages, "worker_busy_fraction": share}


def step_predict_engine(s: dict[str, Any], limit: float, res: Result) -> None:
    """The engine's infer + blend stages (``submit_inference``, as ``predict`` submits them)."""
    import zarr
    from distributed import get_task_stream

    from em_chunks.engine.predict import submit_inference
    from em_chunks.engine.record import RunRecord
    from em_chunks.engine.runner import collect
    from em_chunks.engine.source import Source
    from em_chunks.engine.state import RunState
    from em_chunks.geometry import ChunkGrid, storage_aligned
    from em_chunks.io import layout
    from em_chunks.io.ome_zarr import create_root_image, open_root

    spec, _ = inference_setup(s)
    shape = tuple(s["volume"])
    voxels = int(np.prod(shape))
    pieces = tuple(s["pieces"])
    align = storage_aligned(shape, pieces)
    grid = ChunkGrid(shape, pieces, align=align)
    out = Path(s["work"]) / "engine.zarr"
    channels = len(spec.options.select_channel) if spec.options.select_channel else 3
    res["pieces"] = list(pieces)
    res["chunks"] = len(grid)
    cluster, client = start_cluster(s, res)
    res.save()
    with cluster, client:
        root = open_root(out)
        create_root_image(
            root, "affinities", (channels,) + shape, spec.options.output_dtype, (channels,) + align, None
        )
        raw = Source.open(s["image"])
        record = RunRecord("device-check", out, {})
        t0 = time.perf_counter()
        with get_task_stream(client) as ts:
            upstream = submit_inference(
                client,
                raw,
                out,
                grid,
                spec,
                layout.image_array(out),
                progress=False,
                resources={"GPU": 1},
            )
            collect(upstream.runs, RunState(out), record=record, load_summaries=False)
        wall = time.perf_counter() - t0
        res["seconds"] = round(wall, 3)
        res["mvoxel_per_s"] = _mvox(voxels, wall)
        res["stages"] = record.stage_table()
        res["tasks"] = _task_stream_summary(ts.data, wall)
        res["partials_gib_on_disk"] = round(
            sum(f.stat().st_size for f in (out / "work" / "partials").glob("*.npy")) / 2**30, 3
        )
        res.save()  # before closing the cluster (which can take a while)
    kernel = Path(s["work"]) / "kernel_affinities.zarr"
    if kernel.exists():
        a = zarr.open_array(layout.image_array(out), mode="r")
        b = zarr.open_array(str(kernel), mode="r")
        same, worst = True, 0
        for z in range(0, shape[0], 16):  # slab by slab: bounded memory
            x, y = np.asarray(a[:, z : z + 16]), np.asarray(b[:, z : z + 16])
            if not np.array_equal(x, y):
                same = False
                worst = max(worst, int(np.abs(x.astype(np.int16) - y.astype(np.int16)).max()))
        res["identical_to_kernel"] = same
        res["max_abs_diff_to_kernel"] = worst
        if not same:
            res.status, res.error = (
                "failed",
                f"engine affinities differ from the kernel's (max |diff| {worst})",
            )
    else:
        res["identical_to_kernel"] = None


# ---- emchunks predict, end to end ----------------------------------------------------------------
# "infer: done in 12.5 s" (older runs) or "infer: 8 chunk(s) in 7.5 s (...); done 12.5 s after submission"
STAGE_LINE = re.compile(r"^(?P<stage>[\w-]+): (?:done in|.*; done) (?P<s>[0-9.]+) s")


def step_predict_cli(s: dict[str, Any], limit: float, res: Result) -> None:
    """``python -m em_chunks predict`` (model, decoding, stitching) against the check's cluster
    (``--scheduler``); per-stage seconds come from its stderr, so they survive a time-out."""
    shape = tuple(s["volume"])
    voxels = int(np.prod(shape))
    out = Path(s["work"]) / "predict.zarr"
    t_all = time.perf_counter()
    cluster, client = start_cluster(s, res)
    client.close()  # the CLI connects on its own (--scheduler)
    res.save()
    with cluster:
        trained = Path(s["trained_checkpoint"])
        ckpt = str(trained) if trained.exists() else s["checkpoint"]
        res["checkpoint"] = "trained in step train" if trained.exists() else "untrained"
        cmd = [
            sys.executable,
            "-m",
            "em_chunks",
            "predict",
            s["image"],
            "--checkpoint",
            ckpt,
            "--chunks",
            ",".join(str(p) for p in s["pieces"]),
            "--out",
            str(out),
            "--scheduler",
            cluster.scheduler_address,
        ]
        for item in predict_overrides(s):
            cmd += ["--set", item]
        res["command"] = " ".join(["emchunks"] + cmd[3:]).replace(
            cluster.scheduler_address, "ADDRESS"
        )
        left = limit - (time.perf_counter() - t_all) - 8
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd,
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=max(5.0, left),
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            stdout, stderr, rc = proc.stdout, proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as err:
            stdout = (
                (err.stdout or b"").decode(errors="replace")
                if isinstance(err.stdout, bytes)
                else (err.stdout or "")
            )
            stderr = (
                (err.stderr or b"").decode(errors="replace")
                if isinstance(err.stderr, bytes)
                else (err.stderr or "")
            )
            rc = None
        wall = time.perf_counter() - t0
        _record_cli(res, out, voxels, stdout, stderr, rc, wall)
        res.save()  # before closing the cluster, which may still be busy with a stopped run's tasks


def _record_cli(res: Result, out: Path, voxels: int, stdout: str, stderr: str, rc, wall: float):
    """Stage times from the CLI's output, the run record and metrics when it finished."""
    import json

    print(stdout[-4000:], stderr[-6000:])
    stages = {}
    for line in stderr.splitlines():
        m = STAGE_LINE.match(line.strip())
        if m:
            stages[m["stage"]] = float(m["s"])
    res["rc"] = rc
    res["seconds"] = round(wall, 3)
    res["stage_done_s"] = stages  # seconds from the stage's submission to its last chunk
    if "blend" in stages:
        res["infer_blend_mvoxel_per_s"] = _mvox(
            voxels, max(stages["blend"], stages.get("infer", 0))
        )
    from em_chunks.io import layout

    run_json = layout.run_json(out)
    if run_json.exists():
        run = json.loads(run_json.read_text())
        res["run_status"] = run.get("status")
        res["run_wall_seconds"] = run.get("wall_seconds")
        res["run_stages"] = run.get("stages")
        metrics_json = layout.metrics_json(out)
        if metrics_json.exists():
            m = json.loads(metrics_json.read_text())
            res["decode"] = {
                k: m.get(k)
                for k in ("fragments", "region_graph_edges", "segments", "agglomeration")
            }
    else:
        res["run_status"] = "no run.json (stopped before the end)"
    if rc is None:
        res.status, res.error = (
            "partial",
            f"stopped at the step's time limit after {wall:.0f} s (stages done: {list(stages)})",
        )
        return
    res["mvoxel_per_s"] = _mvox(voxels, wall)
    if rc != 0:
        res.status = "failed"
        last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        res.error = f"emchunks predict exited {rc}: {last}"[:500]
