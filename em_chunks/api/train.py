"""``train``: the training loop (em_chunks.learn) run like every other command: the output folder
checked before anything starts, a cluster for the batch workers, a log file, a run record
(``run.json``: config, versions, timings, status) and one line on Ctrl-C."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Optional

from distributed import Client

from em_chunks.engine.cluster import connect, dashboard_link
from em_chunks.engine.interrupt import reliable_interrupts
from em_chunks.engine.log import heartbeat, log_file, say
from em_chunks.engine.record import RunRecord
from em_chunks.errors import InputError, Interrupted


def worker_memory(client: Client) -> Optional[int]:
    """The smallest memory limit of the cluster's workers in bytes (None: no limit or no worker)."""
    workers = client.scheduler_info().get("workers", {}).values()
    limits = [int(w.get("memory_limit") or 0) for w in workers]
    limits = [m for m in limits if m > 0]
    return min(limits) if limits else None


def train(
    config: Any,
    out: str | Path,
    *,
    scheduler: Optional[str] = None,
    workers: int = 2,
    client: Optional[Client] = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``config`` (a :class:`~em_chunks.learn.config.TrainConfig`) into ``out``; returns the metrics.

    Refused up front, in one line: a folder holding a run without ``resume``/``overwrite``, volumes that
    do not fit, a configuration that cannot yield a batch. Ctrl-C saves a checkpoint and raises
    :class:`Interrupted` (``run.json`` status ``interrupted``); the same call with ``resume=True`` continues.
    """
    from em_chunks.learn.run_dir import check_train_out, clear_run, log_path
    from em_chunks.learn.trainer import check_batches, resolve_volumes
    from em_chunks.learn.trainer import train as train_loop

    out = Path(out)
    check_train_out(out, resume, overwrite)
    if not config.data.volumes:
        raise InputError(
            "train.data.volumes: no training volume given (pass TILES_JSON or list volumes in the config)"
        )
    # missing labels, mismatched shapes: refused before any cluster starts
    volumes = resolve_volumes(config.data.volumes)
    resolve_volumes(config.data.validation)
    check_batches(config, volumes)
    if resume:
        from em_chunks.learn.checkpoint import read_checkpoint

        reached = int(read_checkpoint(out / "last.pt").get("iteration", 0))
        if reached >= config.iterations:  # nothing to do: report the run as it is, touch nothing
            say(
                f"{out}: already trained to iteration {reached} of {config.iterations}; nothing to do "
                f"(pass a larger --iterations to train on)"
            )
            return _saved_metrics(out) or {"iterations": reached}
    record = RunRecord("train", out, {"train": config.model_dump(mode="json"), "resume": resume}, record_dir=out)
    ctx = (
        contextlib.nullcontext(client)
        if client is not None
        else connect(scheduler, workers, gpu="never")
    )
    try:
        with reliable_interrupts(), ctx as c:
            check_batches(config, volumes, worker_memory(c))
            if overwrite:
                clear_run(out)
            out.mkdir(parents=True, exist_ok=True)
            with log_file(log_path(out)) as log, heartbeat():
                record.dashboard = dashboard_link(c)
                say(f"dashboard: {record.dashboard}", console=client is not None)
                say(f"train -> {out} (log: {log})")
                record.write("running")
                try:
                    metrics = train_loop(
                        config,
                        out,
                        client=c,
                        resume=resume,
                        progress=progress,
                        log=say,
                        quiet_log=lambda m: say(m, console=False),
                        check_out=False,
                    )
                except Interrupted as err:
                    record.write(
                        "interrupted",
                        message=str(err),
                        extra={"training": _summary(_saved_metrics(out))},
                    )
                    say(str(err), console=False)
                    raise
                except BaseException as err:
                    if isinstance(err, KeyboardInterrupt):  # before the loop began: nothing to save
                        record.write("interrupted", message="interrupted before training started")
                        raise Interrupted(
                            "interrupted before training started; nothing was saved"
                        ) from None
                    record.write(
                        "failed",
                        error=f"{err.__class__.__name__}: {err}"
                        if not isinstance(err, InputError)
                        else str(err),
                    )
                    raise
                record.write("complete", extra={"training": _summary(metrics)}, metrics_file=False)
                if (out / "tensorboard").is_dir():
                    say(f"TensorBoard: tensorboard --logdir {out / 'tensorboard'}")
    except KeyboardInterrupt:  # while the cluster started or stopped
        raise Interrupted("interrupted; nothing new was saved") from None
    return metrics


def _saved_metrics(out: Path) -> dict[str, Any]:
    import json

    try:
        return json.loads((out / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "iterations",
        "iterations_planned",
        "iterations_this_run",
        "stopped_by",
        "elapsed_s",
        "iterations_per_s",
        "samples_per_s",
        "loader_wait_fraction",
        "train_loss_ema",
        "validation_loss",
        "best_checkpoint",
        "device",
    )
    return {k: metrics[k] for k in keys if k in metrics}
