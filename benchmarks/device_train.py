"""The GPU check's training steps: the recipe's model fed by the chunk-iterator loader.

The step loop is the trainer's (``em_chunks.learn.trainer``: ``to_device`` with pinned memory, bf16
autocast, AdamW, gradient clipping, the recipe's losses, ``float(loss)`` each step), timed in three
parts:

* warm-up: the first steps (cluster start-up, first chunk loads, cuDNN set-up, compilation);
* fed: steps with batches from :class:`~em_chunks.learn.data.BatchStream`; the time spent waiting in
  ``next(stream)`` over the fed time is the GPU idle fraction (the loader not keeping up);
* model only: the same step on one batch kept on the device, the GPU's rate without the loader.
"""

from __future__ import annotations

import time
from typing import Any

from device_steps import Clock, Result, recipe_train, torch_device


def step_train(s: dict[str, Any], limit: float, res: Result) -> None:
    _train(s, limit, res, compile_model=False)


def step_train_compile(s: dict[str, Any], limit: float, res: Result) -> None:
    _train(s, limit, res, compile_model=True)


def _train(s: dict[str, Any], limit: float, res: Result, *, compile_model: bool) -> None:
    import torch
    from distributed import Client, LocalCluster

    from em_chunks.learn.data import BatchStream
    from em_chunks.learn.losses import CombinedLoss
    from em_chunks.learn.trainer import batch_spec, make_model, resolve_volumes, to_device

    t_all = Clock()
    started = time.perf_counter()
    cfg = recipe_train(s)
    device = torch.device(torch_device(s))
    cuda = device.type == "cuda"
    torch.manual_seed(cfg.seed)
    model = make_model(cfg).to(device)
    model.train()
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.optimizer.lr, weight_decay=cfg.optimizer.weight_decay
    )
    loss_fn = CombinedLoss(cfg.loss)
    spec = batch_spec(cfg)
    use_amp = cuda and cfg.amp
    backend = s["train"]["compile_backend"]
    step_model = torch.compile(model, backend=backend) if compile_model else model
    t = s["train"]
    res.figures.update(
        {
            "device": str(device),
            "amp": use_amp,
            "compiled": compile_model,
            "compile_backend": backend if compile_model else None,
            "batch_size": spec.batch_size,
            "patch": list(spec.out_shape),
            "augment": sorted(cfg.augment),
            "loader_workers": t["loader_workers"],
            "in_flight_window": cfg.data.window,
            "chunks": list(cfg.data.chunks),
            "chunk_iter": cfg.data.chunk_iter,
        }
    )

    def step(batch, it: int) -> float:
        x, y, m = to_device(batch, device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
            logits = step_model(x)
        loss, _ = loss_fn(logits, y, m, it)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optimizer.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optimizer.grad_clip)
        opt.step()
        return float(loss.detach())

    workers = int(t["loader_workers"])
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            memory_limit=s["worker_memory"],
            silence_logs=40,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(workers, timeout=60)
        res["cluster_start_s"] = t_all.lap()
        stream = BatchStream(
            client,
            resolve_volumes(cfg.data.volumes),
            spec,
            tuple(cfg.data.chunks),
            cfg.data.chunk_iter,
            seed=cfg.seed,
            window=cfg.data.window,
        )
        batches = iter(stream)
        batch = next(batches)
        res["first_batch_s"] = t_all.lap()
        res["bytes_per_batch_mb"] = round(sum(v.nbytes for v in batch.values()) / 1e6, 2)
        losses = []
        warm = []
        for it in range(int(t["warmup_steps"])):
            c = Clock()
            losses.append(step(batch if it == 0 else next(batches), it))
            warm.append(c.lap())
        res["warmup_steps"] = len(warm)
        res["warmup_step_s"] = warm  # the first includes cuDNN set-up (and compilation)
        res.save()
        # fed by the loader, until max_steps or max_seconds (leaving time for the model-only part)
        budget = min(
            float(t["max_seconds"]), max(2.0, limit - (time.perf_counter() - started) - 25)
        )
        wait = 0.0
        n = 0
        t0 = time.perf_counter()
        while n < int(t["max_steps"]) and time.perf_counter() - t0 < budget:
            tw = time.perf_counter()
            batch = next(batches)
            wait += time.perf_counter() - tw
            losses.append(step(batch, len(warm) + n))
            n += 1
        fed = time.perf_counter() - t0
        stats = dict(stream.stats)
        batches.close()
    res["steps"] = n
    res["seconds"] = round(fed, 3)
    res["steps_per_s"] = round(n / fed, 3)
    res["samples_per_s"] = round(n * spec.batch_size / fed, 3)
    res["gpu_idle_fraction"] = round(wait / fed, 3)  # waiting for the loader / fed time
    res["loader_wait_s"] = round(wait, 3)
    res["loader"] = stats
    res["loss_first_last"] = [losses[0], losses[-1]]
    res.save()
    # model only: one batch on the device, no loader
    x, y, m = to_device(batch, device)
    k = int(t["model_only_steps"])
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(k):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
            logits = step_model(x)
        loss, _ = loss_fn(logits, y, m, i)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optimizer.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optimizer.grad_clip)
        opt.step()
        float(loss.detach())
    dt = time.perf_counter() - t0
    res["model_only"] = {
        "steps": k,
        "seconds": round(dt, 3),
        "steps_per_s": round(k / dt, 3),
        "samples_per_s": round(k * spec.batch_size / dt, 3),
    }
    if cuda:
        res["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    finite = all(v == v and abs(v) != float("inf") for v in losses)
    if not finite:
        res.status, res.error = "failed", "a training loss was NaN or infinite"
    elif not compile_model:
        # a briefly trained model gives affinities with structure, so predict_cli's decoding sees a
        # realistic number of fragments (untrained weights give about one per ten voxels)
        from em_chunks.learn.checkpoint import save_checkpoint

        save_checkpoint(
            s["trained_checkpoint"],
            model,
            train_config=cfg.model_dump(mode="json"),
            iteration=len(losses) + k,
            offsets=[list(o) for o in cfg.data.offsets],
        )
        res["trained_checkpoint_steps"] = len(losses) + k
