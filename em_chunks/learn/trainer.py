"""The training loop: batches from the chunk stream, AdamW + schedule, losses by name, checkpoints.

``train(config, out_dir, client=...)`` is what ``emchunks train`` calls and what a notebook calls. On CUDA
it uses pinned memory + non-blocking copies, bfloat16 autocast and (if asked) ``torch.compile``; on a CPU
it runs the same loop in float32. Every ``checkpoint_every`` iterations it writes ``last.pt`` and a
numbered checkpoint, keeping the ``keep_best`` best (by validation loss when validation volumes are
configured, else by the mean training loss since the previous checkpoint), and ``metrics.json``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch

from em_chunks.errors import InputError, Interrupted
from em_chunks.learn.checkpoint import read_checkpoint, save_checkpoint
from em_chunks.learn.config import TrainConfig
from em_chunks.learn.distributed import barrier, device_for, init_from_env, wrap
from em_chunks.learn.data import BatchSpec, BatchStream, Rejection, local_batches, training_volume
from em_chunks.learn.losses import CombinedLoss
from em_chunks.learn.models import build_model
from em_chunks.learn.schedule import lr_factor
from em_chunks.learn.validation import resolve_volumes, split_volumes

__all__ = ["resolve_volumes", "split_volumes", "train"]


def chunk_bytes(config: TrainConfig, volumes: list) -> int:
    """Bytes a loader worker holds for the largest training chunk: its core grown by half the augmented
    input patch (clipped to the volume), as float32 image + labels + valid mask."""
    from em_chunks.learn.augment import build_augmentor

    in_shape = build_augmentor(dict(config.augment)).input_shape(tuple(config.data.patch))
    largest = 0
    for vol in volumes:
        shape = vol.shape
        core = [-(-s // min(p, s)) for s, p in zip(shape, config.data.chunks)]
        ctx = [min(s, c + 2 * ((n + 1) // 2)) for s, c, n in zip(shape, core, in_shape)]
        per_voxel = 4 + 8 + (1 if vol.valid is not None else 0)  # image as float32, labels up to 64 bits
        largest = max(largest, int(np.prod(ctx)) * per_voxel)
    return largest


def check_batches(config: TrainConfig, volumes: list, worker_memory: Optional[int] = None) -> None:
    """Refuse, before training starts, a configuration that cannot yield a single (useful) batch:
    a rejection rule no patch can pass, or a chunk too large for a loader worker's memory (the worker
    would be killed, retried and killed again while the trainer waits)."""
    d = config.data
    patch_voxels = int(np.prod(d.patch))
    if d.rejection.size_thres > patch_voxels and d.rejection.p >= 1:
        raise InputError(
            f"train.data.rejection.size_thres {d.rejection.size_thres}: more foreground voxels than a patch "
            f"{tuple(d.patch)} holds ({patch_voxels}) with p=1 rejects every patch; lower it or p"
        )
    if worker_memory:
        need = chunk_bytes(config, volumes)
        if need > 0.6 * worker_memory:
            gib = 1 << 30
            raise InputError(
                f"train.data.chunks {tuple(d.chunks)}: a training chunk with its margin needs about "
                f"{need / gib:.1f} GiB on a loader worker, which has {worker_memory / gib:.1f} GiB; "
                f"split the volume into more pieces (--chunks, e.g. {','.join(str(2 * c) for c in d.chunks)})"
            )


def batch_spec(config: TrainConfig, augment: bool = True) -> BatchSpec:
    d = config.data
    rej = Rejection(d.rejection.size_thres, d.rejection.p, d.rejection.min_valid_ratio)
    return BatchSpec(tuple(d.patch), d.batch_size, tuple(tuple(o) for o in d.offsets),
                     dict(config.augment) if augment else {}, rej, d.dims)


def make_model(config: TrainConfig) -> torch.nn.Module:
    cfg = {"in_channels": 1, "out_channels": len(config.data.offsets), "dims": config.data.dims, **config.model.config}
    model = build_model(config.model.architecture, **cfg)
    patch = config.data.patch[-model.dims:]
    bad = [p for p, m in zip(patch, model.size_multiple) if p % m]
    if bad:
        raise InputError(
            f"train.data.patch {tuple(config.data.patch)}: {config.model.architecture} needs spatial sizes that are "
            f"multiples of {model.size_multiple}"
        )
    return model


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def to_device(batch: dict[str, np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Numpy batch -> float tensors on ``device`` (pinned + non-blocking copies on CUDA)."""
    out = []
    for key in ("image", "target", "mask"):
        t = torch.from_numpy(batch[key])
        if device.type == "cuda":
            t = t.pin_memory().to(device, non_blocking=True)
        out.append(t.float())
    return out[0], out[1], out[2]


class Checkpoints:
    """Numbered checkpoints in ``out_dir``, keeping the ``keep`` best by score (lower is better)."""

    def __init__(self, out_dir: Path, keep: int, records: Optional[list[dict]] = None) -> None:
        self.out_dir, self.keep = out_dir, keep
        self.records = list(records or [])  # [{"iteration", "score", "path"}]

    def add(self, path: Path, iteration: int, score: float) -> None:
        self.records.append({"iteration": iteration, "score": float(score), "path": path.name})
        self.records.sort(key=lambda r: (math.inf if math.isnan(r["score"]) else r["score"], -r["iteration"]))
        for r in self.records[self.keep:]:
            (self.out_dir / r["path"]).unlink(missing_ok=True)
        self.records = self.records[: self.keep]
        best = self.out_dir / self.records[0]["path"]
        if best.exists():
            shutil.copyfile(best, self.out_dir / "best.pt")


def _tensorboard(out_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard not installed: scalars still go to metrics.json
        return None
    return SummaryWriter(str(out_dir / "tensorboard"))


@torch.no_grad()
def evaluate_loss(model, batches, device, loss_fn, iteration, amp_ctx) -> float:
    was_training = model.training
    model.eval()
    values = []
    for b in batches:
        x, y, m = to_device(b, device)
        with amp_ctx():
            logits = model(x)
        values.append(float(loss_fn(logits, y, m, iteration)[0]))
    model.train(was_training)
    return float(np.mean(values)) if values else float("nan")


def checkpoint_interval(config: TrainConfig, total: int) -> int:
    """``checkpoint_every``, or by default about ten checkpoints per run (at most every 500 iterations)."""
    if config.checkpoint_every is not None:
        return int(config.checkpoint_every)
    return max(1, min(500, total // 10))


#: what a checkpoint's ``score`` is (lower is better): named wherever a score is printed or saved
SCORE_VALIDATION = "validation loss"
SCORE_TRAIN = "mean train loss over the last 50 iterations"


@contextmanager
def _no_interrupts() -> Iterator[None]:
    """Let a checkpoint being written after Ctrl-C finish even if Ctrl-C is pressed again."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def train(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    client: Any = None,
    iterations: Optional[int] = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    quiet_log: Optional[Callable[[str], None]] = None,
    check_out: bool = True,
) -> dict[str, Any]:
    """Train a model as ``config`` says, writing checkpoints and ``metrics.json`` to ``out_dir``.

    ``client``: a ``distributed.Client`` whose workers load chunks and make batches; ``None`` makes
    them in this process (same batches, no prefetch: for tests and debugging). ``resume``: continue from
    ``out_dir/last.pt`` (model, optimizer, iteration, loss history). A folder holding a run is refused
    unless ``resume`` or ``overwrite`` (which removes that run first); ``check_out=False``: the caller
    has done that already (:func:`em_chunks.api.train.train`). Returns the metrics dict.

    Ctrl-C saves ``last.pt`` (and a numbered checkpoint) at the last finished iteration, then raises
    :class:`~em_chunks.errors.Interrupted`; a time limit stops the same way, without the exception.
    ``progress``: a live bar on a terminal; periodic lines go to ``log`` without one, to ``quiet_log``
    (e.g. a log file only) with one.
    """
    from em_chunks.learn.progress import LossEMA, TrainProgress
    from em_chunks.learn.run_dir import check_train_out, clear_run
    from em_chunks.settings import progress_period

    out = Path(out_dir)
    total = int(iterations or config.iterations)
    if not config.data.volumes:
        raise InputError("train.data.volumes: no training volume given (pass TILES_JSON or list volumes in the config)")
    if check_out:
        check_train_out(out, resume, overwrite)
    volumes, val_volumes = split_volumes(config)
    check_batches(config, volumes)
    torch.manual_seed(config.seed)
    rank = init_from_env()
    if check_out and overwrite and rank.main:
        clear_run(out)
    barrier(rank)  # every rank has checked the folder before rank 0 writes into it
    out.mkdir(parents=True, exist_ok=True)
    device = device_for(rank, pick_device(config.device))
    cuda = device.type == "cuda"
    model = make_model(config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.optimizer.lr, weight_decay=config.optimizer.weight_decay,
                            betas=config.optimizer.betas)
    metrics: dict[str, Any] = {"loss": [], "lr": [], "validation": [], "checkpoints": []}
    start = 0
    if resume:
        last = out / "last.pt"
        state = read_checkpoint(last, map_location=device)
        if state["architecture"] != model.architecture:
            raise InputError(f"{last}: made with architecture {state['architecture']!r}, the config says {model.architecture!r}")
        model.load_state_dict(state["state_dict"])
        if state.get("optimizer"):
            opt.load_state_dict(state["optimizer"])
        start = int(state["iteration"])
        metrics.update({k: v for k, v in (state.get("metrics") or {}).items() if k in metrics})
        if start >= total:
            log(f"{out}: already trained to iteration {start} of {total}; nothing to do "
                f"(pass a larger --iterations to train on)")
            saved = out / "metrics.json"
            return json.loads(saved.read_text()) if saved.is_file() else {**metrics, "iterations": start}
        log(f"resumed from {last} at iteration {start}")
    warmup = config.optimizer.warmup if config.optimizer.scheduler != "constant" else 0
    if total < warmup:
        log(f"warning: {total} iterations is fewer than the learning-rate warmup (train.optimizer.warmup={warmup}): "
            f"the rate never reaches train.optimizer.lr={config.optimizer.lr:g}; lower the warmup or train longer")
    every = checkpoint_interval(config, total)
    ckpts = Checkpoints(out, config.keep_best, metrics.get("checkpoints"))
    use_amp = cuda and config.amp
    amp_ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_amp else nullcontext
    step_model = wrap(model, rank, device)  # DDP under torchrun, else the model itself
    step_model = torch.compile(step_model) if (cuda and config.compile) else step_model
    swa = None
    if config.swa_start is not None:
        from torch.optim.swa_utils import AveragedModel

        # averages buffers too (BatchNorm statistics), so swa.pt is usable as it is
        swa = AveragedModel(model, use_buffers=True)
    loss_fn = CombinedLoss(config.loss)
    spec = batch_spec(config)
    pieces = tuple(config.data.chunks)
    # a resumed run continues with fresh samples rather than replaying the first ones
    seed = config.seed + 1000003 * start + 7919 * rank.rank  # ranks draw different samples
    if client is not None:
        stream = BatchStream(client, volumes, spec, pieces, config.data.chunk_iter, seed, config.data.window)
        batches: Iterator = iter(stream)
    else:
        stream = None
        batches = local_batches(volumes, spec, pieces, config.data.chunk_iter, seed)
    val_batches = []
    if val_volumes:
        # one fixed, un-augmented batch per chunk: spread over the validation volumes, memory bounded by a chunk
        gen = local_batches(val_volumes, batch_spec(config, augment=False), pieces, config.data.batch_size, seed=12345)
        val_batches = [next(gen) for _ in range(config.data.validation_batches)]
    writer = _tensorboard(out) if rank.main else None
    train_config = config.model_dump(mode="json")
    offsets = [list(o) for o in config.data.offsets]
    ema = LossEMA()
    for _, value in metrics["loss"][-50:]:  # a resumed run's average starts where it left off
        ema.update(value)
    score_name = SCORE_VALIDATION if val_batches else SCORE_TRAIN

    def save(iteration: int) -> None:
        if not rank.main:  # one writer: rank 0 (all ranks hold the same weights under DDP)
            return
        if any(r["iteration"] == iteration for r in ckpts.records):
            return  # this iteration is saved already (e.g. Ctrl-C right after a checkpoint)
        previous = max((r["iteration"] for r in ckpts.records), default=-1)
        recent = [l for i, l in metrics["loss"] if i > previous] or [math.nan]
        score = metrics["validation"][-1][1] if metrics["validation"] else float(np.mean(recent[-50:]))
        kwargs = dict(train_config=train_config, iteration=iteration, optimizer=opt, offsets=offsets)
        path = save_checkpoint(out / f"checkpoint-{iteration:07d}.pt", model, metrics={"score": score, "score_is": score_name},
                               **kwargs)
        ckpts.add(path, iteration, score)
        metrics["checkpoints"] = ckpts.records
        save_checkpoint(out / "last.pt", model, metrics=metrics, **kwargs)
        if swa is not None and int(swa.n_averaged) > 0:
            save_checkpoint(out / "swa.pt", swa.module, metrics={"averaged": int(swa.n_averaged)}, **kwargs)
        write_metrics(out, metrics, summary(iteration))

    t0 = time.perf_counter()
    wait = 0.0
    reached = start  # the last finished iteration
    steps = 0
    stopped_by = "iterations"
    extra: dict[str, Any] = {"device": str(device), "amp": use_amp, "compiled": bool(cuda and config.compile),
                             "iterations_planned": total, "checkpoint_every": every, "batch_size": spec.batch_size,
                             "patch": list(spec.out_shape), "score_is": score_name}

    def summary(iteration: int) -> dict[str, Any]:
        """Throughput and the named losses at ``iteration`` (what metrics.json and the CLI report)."""
        elapsed = time.perf_counter() - t0
        best = ckpts.records[0] if ckpts.records else None
        return {**extra, "iterations": iteration, "iterations_this_run": steps, "stopped_by": stopped_by,
                "iterations_per_s": steps / elapsed if elapsed else 0.0,
                "samples_per_s": steps * spec.batch_size / elapsed if elapsed else 0.0,
                "loader_wait_fraction": wait / elapsed if elapsed else 0.0, "elapsed_s": elapsed,
                "train_loss_ema": ema.get(),
                "validation_loss": metrics["validation"][-1][1] if metrics["validation"] else None,
                "best_checkpoint": {"iteration": best["iteration"], "score": best["score"], "score_is": score_name}
                if best else None}

    bar = TrainProgress(total, start, bar=progress and rank.main, log=log if rank.main else (lambda m: None),
                        quiet_log=quiet_log if rank.main else None, period=progress_period())
    model.train()
    limit = 60.0 * config.time_limit_minutes if config.time_limit_minutes else None
    minutes = 60.0 * config.checkpoint_minutes if config.checkpoint_minutes else None
    last_save = time.perf_counter()
    try:
        for it in range(start, total):
            tw = time.perf_counter()
            batch = next(batches)
            wait += time.perf_counter() - tw
            x, y, m = to_device(batch, device)
            progress_t = (time.perf_counter() - t0) / limit if limit else None
            factor = lr_factor(it, total, config.optimizer.scheduler, config.optimizer.warmup,
                               config.optimizer.min_lr_ratio, config.optimizer.restart_period, config.optimizer.restart_mult,
                               progress_t)
            for g in opt.param_groups:
                g["lr"] = config.optimizer.lr * factor
            with amp_ctx():
                logits = step_model(x)
            loss, parts = loss_fn(logits, y, m, it)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if config.optimizer.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.optimizer.grad_clip)
            opt.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise InputError(f"train: the loss became {value} at iteration {it + 1}; lower train.optimizer.lr "
                                 f"(now {config.optimizer.lr:g}) or check the labels")
            steps += 1
            reached = it + 1
            if swa is not None and it + 1 > config.swa_start:
                swa.update_parameters(model)
            metrics["loss"].append([it + 1, value])
            ema.update(value)
            if (it + 1) % config.log_every == 0 or it + 1 == total:
                metrics["lr"].append([it + 1, config.optimizer.lr * factor])
                if writer:
                    writer.add_scalar("loss/train", value, it + 1)
                    writer.add_scalar("loss/train_ema", ema.get(), it + 1)
                    for k, v in parts.items():
                        writer.add_scalar(f"loss/{k}", v, it + 1)
                    writer.add_scalar("lr", config.optimizer.lr * factor, it + 1)
                    _preview(writer, x, y, logits, it + 1)
            if val_batches and config.validate_every and ((it + 1) % config.validate_every == 0 or it + 1 == total):
                v = evaluate_loss(model, val_batches, device, loss_fn, it, amp_ctx)
                metrics["validation"].append([it + 1, v])
                if writer:
                    writer.add_scalar("loss/validation", v, it + 1)
            bar.update(it + 1, ema.get(), config.optimizer.lr * factor)
            now = time.perf_counter()
            out_of_time = bool(limit) and now - t0 >= limit
            if out_of_time:
                stopped_by = "time_limit"
            if (it + 1) % every == 0 or it + 1 == total or out_of_time or (minutes and now - last_save >= minutes):
                if val_batches and not (metrics["validation"] and metrics["validation"][-1][0] == it + 1):
                    metrics["validation"].append([it + 1, evaluate_loss(model, val_batches, device, loss_fn, it, amp_ctx)])
                save(it + 1)
                last_save = time.perf_counter()
            if out_of_time:
                log(f"time limit of {config.time_limit_minutes:g} min reached at iteration {it + 1} of {total}; "
                    f"checkpoint saved ({out / 'last.pt'})")
                break
    except KeyboardInterrupt:
        stopped_by = "interrupt"
        bar.close()
        with _no_interrupts():
            if reached > start:
                if val_batches and not (metrics["validation"] and metrics["validation"][-1][0] == reached):
                    metrics["validation"].append([reached, evaluate_loss(model, val_batches, device, loss_fn, reached, amp_ctx)])
                save(reached)
            _close(writer, batches)
        saved = f"checkpoint saved ({out / 'last.pt'})" if reached > start else "no new iteration to save"
        raise Interrupted(f"interrupted at iteration {reached} of {total}; {saved}; "
                          f"the same command with --resume continues from it") from None
    finally:
        bar.close()
        _close(writer, batches)
    final = summary(reached)
    if stream is not None:
        final["loader"] = dict(stream.stats)
    final["world_size"] = rank.world
    if rank.main:
        write_metrics(out, metrics, final)
    barrier(rank)
    return {**metrics, **final}


def _close(writer: Any, batches: Any) -> None:
    if writer:
        writer.close()
    if hasattr(batches, "close"):
        batches.close()


def _preview(writer, x, y, logits, step: int) -> None:
    """Middle section of raw / target / prediction (first affinity channel) as TensorBoard images."""
    if x.ndim == 5:
        z = x.shape[2] // 2
        raw, tgt, pred = x[0, 0, z], y[0, 0, z], torch.sigmoid(logits[0, 0, z].float())
    else:
        raw, tgt, pred = x[0, 0], y[0, 0], torch.sigmoid(logits[0, 0].float())
    for name, img in (("raw", raw), ("target", tgt), ("prediction", pred)):
        writer.add_image(f"preview/{name}", img.detach().cpu()[None], step)


def write_metrics(out: Path, metrics: dict, extra: dict) -> None:
    """metrics.json: loss history, learning rate, validation, checkpoints, throughput (atomic write)."""
    data = {**metrics, **extra}
    tmp = out / f".metrics.{os.getpid()}.json"
    tmp.write_text(json.dumps(data, indent=1, default=float))
    os.replace(tmp, out / "metrics.json")
