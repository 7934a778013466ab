"""One training run's state and its steps: model and optimizer, resuming, the batch sources, one
iteration, validation, a checkpoint, the summary; :func:`em_chunks.learn.trainer.train` strings them
together. Kept apart so that each step is short and the loop reads as what it does."""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from em_chunks.errors import InputError, Interrupted
from em_chunks.learn.checkpoint import read_checkpoint, save_checkpoint
from em_chunks.learn.config import TrainConfig
from em_chunks.learn.data import BatchStream, local_batches
from em_chunks.learn.distributed import device_for, wrap
from em_chunks.learn.losses import CombinedLoss
from em_chunks.learn.progress import LossEMA
from em_chunks.learn.device import pick_device
from em_chunks.learn.schedule import lr_factor
from em_chunks.learn.trainer import (SCORE_TRAIN, SCORE_VALIDATION, Checkpoints, _close, _no_interrupts, _preview,
                                     _tensorboard, batch_spec, checkpoint_interval, evaluate_loss, make_model,
                                     to_device, write_metrics)


class TrainingRun:
    """What one call of ``train`` holds while it runs (rank 0 alone writes files)."""

    def __init__(self, config: TrainConfig, out: Path, total: int, rank: Any, log: Callable[[str], None]) -> None:
        self.config, self.out, self.total, self.rank, self.log = config, out, total, rank, log
        self.device = device_for(rank, pick_device(config.device))
        self.cuda = self.device.type == "cuda"
        self.model = make_model(config).to(self.device)
        o = config.optimizer
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=o.lr, weight_decay=o.weight_decay, betas=o.betas)
        self.metrics: dict[str, Any] = {"loss": [], "lr": [], "validation": [], "checkpoints": []}
        self.start = 0
        self.use_amp = self.cuda and config.amp
        self.amp_ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if self.use_amp else nullcontext
        self.ema = LossEMA()
        self.steps, self.wait, self.reached, self.stopped_by = 0, 0.0, 0, "iterations"
        self.stream: Optional[BatchStream] = None
        self.batches: Any = None
        self.writer: Any = None
        self.t0 = time.perf_counter()

    # ---- before the loop -------------------------------------------------------------------------
    def resume(self) -> bool:
        """Load ``last.pt`` (model, optimizer, iteration, history); False when it has reached ``total``."""
        last = self.out / "last.pt"
        state = read_checkpoint(last, map_location=self.device)
        if state["architecture"] != self.model.architecture:
            raise InputError(f"{last}: made with architecture {state['architecture']!r}, the config says "
                             f"{self.model.architecture!r}")
        self.model.load_state_dict(state["state_dict"])
        if state.get("optimizer"):
            self.opt.load_state_dict(state["optimizer"])
        self.start = self.reached = int(state["iteration"])
        self.metrics.update({k: v for k, v in (state.get("metrics") or {}).items() if k in self.metrics})
        if self.start >= self.total:
            self.log(f"{self.out}: already trained to iteration {self.start} of {self.total}; nothing to do "
                     f"(pass a larger --iterations to train on)")
            return False
        self.log(f"resumed from {last} at iteration {self.start}")
        return True

    def saved_metrics(self) -> dict[str, Any]:
        saved = self.out / "metrics.json"
        return json.loads(saved.read_text()) if saved.is_file() else {**self.metrics, "iterations": self.start}

    def prepare(self, client: Any, volumes: list, val_volumes: list) -> None:
        """Checkpointing, the compiled/DDP step model, SWA, the loss, the batch sources, TensorBoard."""

        config = self.config
        warmup = config.optimizer.warmup if config.optimizer.scheduler != "constant" else 0
        if self.total < warmup:
            self.log(f"warning: {self.total} iterations is fewer than the learning-rate warmup (train.optimizer.warmup="
                     f"{warmup}): the rate never reaches train.optimizer.lr={config.optimizer.lr:g}; lower the warmup "
                     f"or train longer")
        self.every = checkpoint_interval(config, self.total)
        self.ckpts = Checkpoints(self.out, config.keep_best, self.metrics.get("checkpoints"))
        step_model = wrap(self.model, self.rank, self.device)  # DDP under torchrun, else the model itself
        self.step_model = torch.compile(step_model) if (self.cuda and config.compile) else step_model
        self.swa = None
        if config.swa_start is not None:
            from torch.optim.swa_utils import AveragedModel

            # averages buffers too (BatchNorm statistics), so swa.pt is usable as it is
            self.swa = AveragedModel(self.model, use_buffers=True)
        self.loss_fn = CombinedLoss(config.loss)
        self.spec = batch_spec(config)
        self._batch_sources(client, volumes, val_volumes, batch_spec(config, augment=False))
        self.writer = _tensorboard(self.out) if self.rank.main else None
        self.train_config = config.model_dump(mode="json")
        self.offsets = [list(o) for o in config.data.offsets]
        for _, value in self.metrics["loss"][-50:]:  # a resumed run's average starts where it left off
            self.ema.update(value)
        self.score_name = SCORE_VALIDATION if self.val_batches else SCORE_TRAIN
        self.extra: dict[str, Any] = {
            "device": str(self.device), "amp": self.use_amp, "compiled": bool(self.cuda and config.compile),
            "iterations_planned": self.total, "checkpoint_every": self.every, "batch_size": self.spec.batch_size,
            "patch": list(self.spec.out_shape), "score_is": self.score_name}
        self.t0 = time.perf_counter()

    def _batch_sources(self, client: Any, volumes: list, val_volumes: list, val_spec: Any) -> None:
        config, pieces = self.config, tuple(self.config.data.chunks)
        # a resumed run continues with fresh samples rather than replaying the first ones
        seed = config.seed + 1000003 * self.start + 7919 * self.rank.rank  # ranks draw different samples
        if client is not None:
            self.stream = BatchStream(client, volumes, self.spec, pieces, config.data.chunk_iter, seed, config.data.window)
            self.batches = iter(self.stream)
        else:
            self.batches = local_batches(volumes, self.spec, pieces, config.data.chunk_iter, seed)
        self.val_batches: list = []
        if val_volumes:
            # one fixed, un-augmented batch per chunk: spread over the validation volumes, memory bounded by a chunk
            gen = local_batches(val_volumes, val_spec, pieces, config.data.batch_size, seed=12345)
            self.val_batches = [next(gen) for _ in range(config.data.validation_batches)]

    # ---- the loop --------------------------------------------------------------------------------
    def loop(self, bar: Any) -> None:
        """Iterations ``start..total``; stops early at the time limit (after a checkpoint)."""
        config = self.config
        self.model.train()
        limit = 60.0 * config.time_limit_minutes if config.time_limit_minutes else None
        minutes = 60.0 * config.checkpoint_minutes if config.checkpoint_minutes else None
        last_save = time.perf_counter()
        for it in range(self.start, self.total):
            lr = self.step(it, limit)
            done = it + 1
            self.validate(done, due=bool(config.validate_every) and (done % config.validate_every == 0 or done == self.total))
            bar.update(done, self.ema.get(), lr)
            now = time.perf_counter()
            out_of_time = bool(limit) and now - self.t0 >= limit
            if out_of_time:
                self.stopped_by = "time_limit"
            if done % self.every == 0 or done == self.total or out_of_time or (minutes and now - last_save >= minutes):
                self.validate(done, due=True)
                self.save(done)
                last_save = time.perf_counter()
            if out_of_time:
                self.log(f"time limit of {config.time_limit_minutes:g} min reached at iteration {done} of "
                         f"{self.total}; checkpoint saved ({self.out / 'last.pt'})")
                break

    def step(self, it: int, limit: Optional[float]) -> float:
        """One optimizer step on the next batch; returns the learning rate it used."""
        config, o = self.config, self.config.optimizer
        tw = time.perf_counter()
        batch = next(self.batches)
        self.wait += time.perf_counter() - tw
        x, y, m = to_device(batch, self.device)
        progress_t = (time.perf_counter() - self.t0) / limit if limit else None
        lr = o.lr * lr_factor(it, self.total, o.scheduler, o.warmup, o.min_lr_ratio, o.restart_period, o.restart_mult,
                              progress_t)
        for g in self.opt.param_groups:
            g["lr"] = lr
        with self.amp_ctx():
            logits = self.step_model(x)
        loss, parts = self.loss_fn(logits, y, m, it)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if o.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), o.grad_clip)
        self.opt.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise InputError(f"train: the loss became {value} at iteration {it + 1}; lower train.optimizer.lr "
                             f"(now {o.lr:g}) or check the labels")
        self.steps += 1
        self.reached = it + 1
        if self.swa is not None and it + 1 > config.swa_start:
            self.swa.update_parameters(self.model)
        self.metrics["loss"].append([it + 1, value])
        self.ema.update(value)
        if (it + 1) % config.log_every == 0 or it + 1 == self.total:
            self.metrics["lr"].append([it + 1, lr])
            self._scalars(it + 1, value, parts, lr, x, y, logits)
        return lr

    def _scalars(self, step: int, value: float, parts: dict, lr: float, x, y, logits) -> None:
        if not self.writer:
            return
        self.writer.add_scalar("loss/train", value, step)
        self.writer.add_scalar("loss/train_ema", self.ema.get(), step)
        for k, v in parts.items():
            self.writer.add_scalar(f"loss/{k}", v, step)
        self.writer.add_scalar("lr", lr, step)
        _preview(self.writer, x, y, logits, step)

    def validate(self, iteration: int, due: bool) -> None:
        """The validation loss at ``iteration`` when due and not measured there yet."""
        v = self.metrics["validation"]
        if not (self.val_batches and due) or (v and v[-1][0] == iteration):
            return
        value = evaluate_loss(self.model, self.val_batches, self.device, self.loss_fn, iteration - 1, self.amp_ctx)
        v.append([iteration, value])
        if self.writer:
            self.writer.add_scalar("loss/validation", value, iteration)

    # ---- checkpoints and figures -----------------------------------------------------------------
    def save(self, iteration: int) -> None:
        """A numbered checkpoint (scored), last.pt, swa.pt and metrics.json: rank 0 writes, once per iteration."""
        if not self.rank.main or any(r["iteration"] == iteration for r in self.ckpts.records):
            return  # one writer; an iteration saved already (e.g. Ctrl-C right after a checkpoint)
        previous = max((r["iteration"] for r in self.ckpts.records), default=-1)
        recent = [l for i, l in self.metrics["loss"] if i > previous] or [math.nan]
        v = self.metrics["validation"]
        score = v[-1][1] if v else float(np.mean(recent[-50:]))
        kwargs = dict(train_config=self.train_config, iteration=iteration, optimizer=self.opt, offsets=self.offsets)
        path = save_checkpoint(self.out / f"checkpoint-{iteration:07d}.pt", self.model,
                               metrics={"score": score, "score_is": self.score_name}, **kwargs)
        self.ckpts.add(path, iteration, score)
        self.metrics["checkpoints"] = self.ckpts.records
        save_checkpoint(self.out / "last.pt", self.model, metrics=self.metrics, **kwargs)
        if self.swa is not None and int(self.swa.n_averaged) > 0:
            save_checkpoint(self.out / "swa.pt", self.swa.module, metrics={"averaged": int(self.swa.n_averaged)},
                            **kwargs)
        write_metrics(self.out, self.metrics, self.summary(iteration))

    def summary(self, iteration: int) -> dict[str, Any]:
        """Throughput and the named losses at ``iteration`` (what metrics.json and the CLI report)."""
        elapsed = time.perf_counter() - self.t0
        best = self.ckpts.records[0] if self.ckpts.records else None
        rate = (lambda n: n / elapsed if elapsed else 0.0)
        v = self.metrics["validation"]
        return {**self.extra, "iterations": iteration, "iterations_this_run": self.steps, "stopped_by": self.stopped_by,
                "iterations_per_s": rate(self.steps), "samples_per_s": rate(self.steps * self.spec.batch_size),
                "loader_wait_fraction": self.wait / elapsed if elapsed else 0.0, "elapsed_s": elapsed,
                "train_loss_ema": self.ema.get(), "validation_loss": v[-1][1] if v else None,
                "best_checkpoint": {"iteration": best["iteration"], "score": best["score"], "score_is": self.score_name}
                if best else None}

    def interrupted(self, bar: Any) -> Interrupted:
        """Ctrl-C: save the last finished iteration (even if Ctrl-C comes again) and say how to go on."""
        self.stopped_by = "interrupt"
        bar.close()
        with _no_interrupts():
            if self.reached > self.start:
                self.validate(self.reached, due=True)
                self.save(self.reached)
            self.close()
        saved = f"checkpoint saved ({self.out / 'last.pt'})" if self.reached > self.start else "no new iteration to save"
        return Interrupted(f"interrupted at iteration {self.reached} of {self.total}; {saved}; "
                           f"the same command with --resume continues from it")

    def close(self) -> None:
        _close(self.writer, self.batches)
        self.writer = None

    def final(self) -> dict[str, Any]:
        """The summary with loader statistics and world size (metrics.json's last word, rank 0 writes it)."""
        final = self.summary(self.reached)
        if self.stream is not None:
            final["loader"] = dict(self.stream.stats)
        final["world_size"] = self.rank.world
        if self.rank.main:
            write_metrics(self.out, self.metrics, final)
        return final

