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
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch

from em_chunks.errors import InputError
from em_chunks.learn.config import TrainConfig
from em_chunks.learn.distributed import barrier, init_from_env
from em_chunks.learn.data import BatchSpec, Rejection
from em_chunks.learn.models import build_model
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
                     dict(config.augment) if augment else {}, rej, d.dims, d.erosion_radius)


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
    from em_chunks.learn.loop import TrainingRun
    from em_chunks.learn.progress import TrainProgress
    from em_chunks.settings import progress_period

    out = Path(out_dir)
    volumes, val_volumes = _checked(config, out, resume, overwrite, check_out)
    torch.manual_seed(config.seed)
    rank = init_from_env()
    _claim_out(out, rank, check_out and overwrite)
    run = TrainingRun(config, out, int(iterations or config.iterations), rank, log)
    if resume and not run.resume():
        return run.saved_metrics()
    run.prepare(client, volumes, val_volumes)
    main = rank.main
    bar = TrainProgress(run.total, run.start, bar=progress and main, log=log if main else (lambda m: None),
                        quiet_log=quiet_log if main else None, period=progress_period())
    try:
        run.loop(bar)
    except KeyboardInterrupt:
        raise run.interrupted(bar) from None
    finally:
        bar.close()
        run.close()
    final = run.final()
    barrier(rank)
    return {**run.metrics, **final}


def _checked(config: TrainConfig, out: Path, resume: bool, overwrite: bool, check_out: bool) -> tuple[list, list]:
    """(training, validation) volumes; refused in one line: no volume, a folder holding another run
    (unless the caller checked it), volumes that do not fit, a rule no batch can pass."""
    from em_chunks.learn.run_dir import check_train_out

    if not config.data.volumes:
        raise InputError("train.data.volumes: no training volume given (pass TILES_JSON or list volumes in the config)")
    if check_out:
        check_train_out(out, resume, overwrite)
    volumes, val_volumes = split_volumes(config)
    check_batches(config, volumes)
    return volumes, val_volumes


def _claim_out(out: Path, rank: Any, clear: bool) -> None:
    """Rank 0 removes an earlier run (``--overwrite``) once every rank has checked the folder."""
    from em_chunks.learn.run_dir import clear_run

    if clear and rank.main:
        clear_run(out)
    barrier(rank)  # every rank has checked the folder before rank 0 writes into it
    out.mkdir(parents=True, exist_ok=True)


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
