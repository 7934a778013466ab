"""``train``: the training loop (em_chunks.learn) run like every other command: the output folder
checked before anything starts, a cluster for the batch workers, a log file, a run record
(``run.json``: config, versions, timings, status) and one line on Ctrl-C."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Callable, Optional

from distributed import Client

from em_chunks.engine.cluster import connect, dashboard_link
from em_chunks.engine.interrupt import reliable_interrupts
from em_chunks.engine.log import heartbeat, log_file, say
from em_chunks.engine.record import RunRecord
from em_chunks.errors import InputError, Interrupted
from em_chunks.learn.run_dir import check_train_out, clear_run, log_path


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

    With validation data, training ends with the decoder search (:mod:`em_chunks.api.decoder_search`):
    ``best.pt`` is the checkpoint that decodes the validation region best and carries that decoder.
    Refused up front, in one line: a folder holding a run without ``resume``/``overwrite``, volumes that
    do not fit, a configuration that cannot yield a batch. Ctrl-C saves a checkpoint and raises
    :class:`Interrupted` (``run.json`` status ``interrupted``); the same call with ``resume=True`` continues
    (a run trained to the end but not searched yet does only the search).
    """
    from em_chunks.learn.trainer import check_batches

    out = Path(out)
    volumes, val_volumes = _checked_volumes(config, out, resume, overwrite)
    if resume and _trained(out) >= config.iterations and not _search_pending(config, out, val_volumes):
        say(f"{out}: already trained to iteration {_trained(out)} of {config.iterations}; nothing to do "
            f"(pass a larger --iterations to train on)")
        return _saved_metrics(out) or {"iterations": _trained(out)}
    record = RunRecord("train", out, {"train": config.model_dump(mode="json"), "resume": resume}, record_dir=out)
    ctx = contextlib.nullcontext(client) if client is not None else connect(scheduler, workers, gpu="never")
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
                metrics = _recorded(record, out, lambda: _train_and_search(config, out, c, val_volumes, resume,
                                                                           progress))
                record.write("complete", extra={"training": _summary(metrics)}, metrics_file=False)
                if (out / "tensorboard").is_dir():
                    say(f"TensorBoard: tensorboard --logdir {out / 'tensorboard'}")
    except KeyboardInterrupt:  # while the cluster started or stopped
        raise Interrupted("interrupted; nothing new was saved") from None
    return metrics


def _checked_volumes(config: Any, out: Path, resume: bool, overwrite: bool) -> tuple[list, list]:
    """(training, validation) volumes, refused before any cluster starts: a folder holding another run,
    no volume, missing labels, mismatched shapes, a split too small, a rule no batch passes."""
    from em_chunks.learn.trainer import check_batches, split_volumes

    check_train_out(out, resume, overwrite)
    if not config.data.volumes:
        raise InputError(
            "train.data.volumes: no training volume given (pass TILES_JSON or list volumes in the config)"
        )
    volumes, val_volumes = split_volumes(config)
    check_batches(config, volumes)
    return volumes, val_volumes


def _trained(out: Path) -> int:
    """The iteration ``out/last.pt`` reached."""
    from em_chunks.learn.checkpoint import read_checkpoint

    return int(read_checkpoint(out / "last.pt").get("iteration", 0))


def _search_pending(config: Any, out: Path, val_volumes: list) -> bool:
    """Whether the decoder search still has to run (validation data, search on, best.pt without decoder)."""
    from em_chunks.learn.checkpoint import read_checkpoint

    if not (config.decoder_search.enabled and val_volumes and (out / "best.pt").is_file()):
        return False
    return read_checkpoint(out / "best.pt").get("decoder") is None


def _train_and_search(config: Any, out: Path, client: Client, val_volumes: list, resume: bool,
                      progress: bool) -> dict[str, Any]:
    """The training loop (skipped when a resumed run has reached its iterations), then the search."""
    from em_chunks.api.decoder_search import search_decoder
    from em_chunks.learn.trainer import train as train_loop

    if resume and _trained(out) >= config.iterations:
        metrics = _saved_metrics(out)
    else:
        metrics = train_loop(config, out, client=client, resume=resume, progress=progress, log=say,
                             quiet_log=lambda m: say(m, console=False), check_out=False)
    if metrics.get("stopped_by") in ("iterations", "time_limit", None):
        t0 = time.perf_counter()
        entry = search_decoder(config, out, val_volumes, client, say)
        if entry is not None:
            metrics = {**metrics, **_saved_metrics(out), "decoder_search_s": time.perf_counter() - t0}
            _add_to_metrics(out, {"decoder_search_s": metrics["decoder_search_s"]})
    return metrics


def _recorded(record: RunRecord, out: Path, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``work``, writing run.json's status when it is interrupted or fails."""
    try:
        return work()
    except Interrupted as err:
        record.write("interrupted", message=str(err), extra={"training": _summary(_saved_metrics(out))})
        say(str(err), console=False)
        raise
    except BaseException as err:
        if isinstance(err, KeyboardInterrupt):  # before the loop began: nothing to save
            record.write("interrupted", message="interrupted before training started")
            raise Interrupted("interrupted before training started; nothing was saved") from None
        record.write("failed", error=str(err) if isinstance(err, InputError) else f"{err.__class__.__name__}: {err}")
        raise


def _add_to_metrics(out: Path, extra: dict[str, Any]) -> None:
    from em_chunks.learn.trainer import write_metrics

    write_metrics(out, _saved_metrics(out), extra)


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
        "tuned_decoder",
        "decoder_search_s",
        "device",
    )
    return {k: metrics[k] for k in keys if k in metrics}
