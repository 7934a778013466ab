"""Training loses nothing and says what it does (issue 15): Ctrl-C saves a checkpoint and --resume
continues it, a folder holding a run is never silently replaced, run.json like every command, the true
iteration count after a time limit, named losses, a warmup warning, progress without a terminal."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from em_chunks.cli.main import main
from em_chunks.learn.checkpoint import read_checkpoint
from em_chunks.learn.config import load_train_config
from em_chunks.learn.trainer import train

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "data.patch=[8,16,16]",
    "model.config={widths: [4, 8]}",
    "data.chunk_iter=2",
    "optimizer.warmup=2",
]


@pytest.fixture()
def vol(tmp_path):
    rng = np.random.default_rng(0)
    label = np.kron(rng.integers(1, 20, (2, 4, 4)), np.ones((8, 8, 8), np.int64)).astype(np.uint32)
    tifffile.imwrite(tmp_path / "image.tif", rng.integers(0, 255, label.shape, dtype=np.uint8))
    tifffile.imwrite(tmp_path / "labels.tif", label)
    return tmp_path


def _args(vol: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        str(vol / "image.tif"),
        "--labels",
        str(vol / "labels.tif"),
        "--out",
        str(out),
        "--chunks",
        "1,2,2",
        "--workers",
        "1",
        "--no-progress",
        *_set(*SMALL, *extra),
    ]


def _set(*items: str) -> list[str]:
    """Train-config overrides in the CLI's one syntax (``--set train.KEY=VALUE``); flags pass through."""
    out: list[str] = []
    for item in items:
        out += ["--set", f"train.{item}"] if "=" in item and not item.startswith("-") else [item]
    return out


class _Lines:
    """Collect a subprocess's stderr lines as they come."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self.thread = threading.Thread(
            target=lambda: self.lines.extend(iter(stream.readline, "")), daemon=True
        )
        self.thread.start()

    def wait_for(self, pattern: str, timeout: float) -> re.Match | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = re.search(pattern, line)
                if m:
                    return m
            time.sleep(0.05)
        return None


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_resume_continues(vol):
    out = vol / "run"
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "EMCHUNKS_PROGRESS_SECONDS": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "em_chunks", *_args(vol, out, "--iterations", "5000")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    err = _Lines(proc.stderr)
    # without a terminal, periodic lines name the figures: iteration, train loss (EMA), lr, it/s, ETA
    seen = err.wait_for(
        r"^train (\d+)/5000 iterations: train loss \(EMA\) [\d.]+, lr [\d.e+-]+, [\d.]+ it/s; "
        r"elapsed [\d:]+( s)?, ETA",
        timeout=240,
    )
    assert seen, "".join(err.lines)
    assert int(seen.group(1)) < 500, (
        "no checkpoint may exist before the interrupt (every 500 iterations)"
    )
    assert not (out / "last.pt").exists()
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the trainer and its workers
    proc.wait(timeout=120)
    err.thread.join(timeout=10)
    text = "".join(err.lines)
    assert proc.returncode == 130, text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    last = [l for l in err.lines if l.strip()][-1]
    m = re.fullmatch(
        r"interrupted at iteration (\d+) of 5000; checkpoint saved \((.+)\); "
        r"the same command with --resume continues from it\n",
        last,
    )
    assert m, last
    reached = int(m.group(1))
    assert (
        Path(m.group(2)) == out / "last.pt"
        and read_checkpoint(out / "last.pt")["iteration"] == reached
    )
    record = json.loads((out / "run.json").read_text())
    assert (
        record["command"] == "train"
        and record["status"] == "interrupted"
        and record["message"] == last.strip()
    )
    assert record["config"]["train"]["iterations"] == 5000 and "torch" in record["versions"]

    # the same command without --resume refuses and touches nothing
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(_args(vol, out, "--iterations", "5000")) == 2
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before

    # --resume continues from the saved iteration (a shorter run here: 4 more iterations)
    assert main(_args(vol, out, "--iterations", str(reached + 4), "--resume")) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    steps = [i for i, _ in metrics["loss"]]
    assert steps == list(range(1, reached + 5))  # history kept, then reached+1 .. reached+4
    assert metrics["iterations"] == reached + 4 and metrics["iterations_this_run"] == 4
    assert read_checkpoint(out / "last.pt")["iteration"] == reached + 4
    assert json.loads((out / "run.json").read_text())["status"] == "complete"
    assert "resumed from" in (out / "train.log").read_text()


def test_train_refuses_a_folder_holding_a_run_and_overwrite_replaces_it(vol, capsys):
    out = vol / "run"
    assert main(_args(vol, out, "--iterations", "6", "checkpoint_every=2", "keep_best=5")) == 0
    old = sorted(p.name for p in out.glob("checkpoint-*.pt"))
    assert old == ["checkpoint-0000002.pt", "checkpoint-0000004.pt", "checkpoint-0000006.pt"]
    out_text = capsys.readouterr()
    assert "TensorBoard: tensorboard --logdir" in out_text.err
    assert re.search(
        r"trained 6 of 6 iterations; train loss \(EMA\) [\d.]+; best.pt = iteration \d+ "
        r"\(mean train loss over the last 50 iterations [\d.]+\)",
        out_text.out,
    ), out_text.out
    snapshot = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    assert main(_args(vol, out, "--iterations", "3")) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("error: ") and "\n" not in err and "--resume" in err and "--overwrite" in err
    )
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == snapshot

    assert main(_args(vol, out, "--iterations", "3", "checkpoint_every=3", "--overwrite")) == 0
    assert sorted(p.name for p in out.glob("checkpoint-*.pt")) == [
        "checkpoint-0000003.pt"
    ]  # no stale better one
    assert read_checkpoint(out / "best.pt")["iteration"] == 3
    assert json.loads((out / "metrics.json").read_text())["iterations"] == 3
    assert json.loads((out / "run.json").read_text())["status"] == "complete"


def _config(vol: Path, *extra: str):
    return load_train_config(
        None,
        [
            f"data.volumes=[{{image: '{vol / 'image.tif'}', label: '{vol / 'labels.tif'}'}}]",
            "data.chunks=[1,2,2]",
            *SMALL,
            *extra,
        ],
    )


def test_time_limit_reports_the_iterations_it_really_ran(vol):
    torch.set_num_threads(1)
    lines: list[str] = []
    metrics = train(
        _config(vol, "iterations=100000", "time_limit_minutes=0.002"),
        vol / "out",
        progress=False,
        log=lines.append,
    )
    n = metrics["iterations"]
    assert (
        1 <= n < 100000
        and metrics["stopped_by"] == "time_limit"
        and metrics["iterations_planned"] == 100000
    )
    saved = json.loads((vol / "out" / "metrics.json").read_text())
    assert (
        saved["iterations"]
        == n
        == len(saved["loss"])
        == read_checkpoint(vol / "out" / "last.pt")["iteration"]
    )
    assert any(f"time limit of 0.002 min reached at iteration {n} of 100000" in l for l in lines)


def test_losses_are_named_and_short_runs_warn_about_the_warmup(vol):
    torch.set_num_threads(1)
    lines: list[str] = []
    val = f"data.validation=[{{image: '{vol / 'image.tif'}', label: '{vol / 'labels.tif'}'}}]"
    metrics = train(
        _config(vol, "iterations=4", "optimizer.warmup=50", val, "data.validation_batches=1"),
        vol / "out",
        progress=False,
        log=lines.append,
    )
    assert any(
        l.startswith(
            "warning: 4 iterations is fewer than the learning-rate warmup (train.optimizer.warmup=50)"
        )
        for l in lines
    )
    saved = json.loads((vol / "out" / "metrics.json").read_text())
    ema = saved["train_loss_ema"]
    raw = [l for _, l in saved["loss"]]
    assert min(raw) <= ema <= max(raw)
    assert saved["validation_loss"] == saved["validation"][-1][1]
    best = saved["best_checkpoint"]
    assert (
        best["score_is"] == "validation loss" and best["score"] == saved["checkpoints"][0]["score"]
    )
    assert read_checkpoint(vol / "out" / "best.pt")["metrics"]["score_is"] == "validation loss"
    assert metrics["checkpoint_every"] == 1  # default: about ten checkpoints per run


def test_a_batch_no_patch_can_pass_is_refused_before_training(vol, capsys):
    rc = main(_args(vol, vol / "o", "data.rejection.size_thres=100000", "data.rejection.p=1"))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "size_thres" in err and "\n" not in err and not (vol / "o").exists()


def test_a_chunk_larger_than_a_worker_is_refused_before_training(vol):
    from em_chunks.errors import InputError
    from em_chunks.learn.trainer import check_batches, chunk_bytes, resolve_volumes

    cfg = _config(vol)
    volumes = resolve_volumes(cfg.data.volumes)
    need = chunk_bytes(cfg, volumes)
    # a (1, 2, 2) piece of the 16x32x32 volume with its margin, 12 bytes per voxel
    assert need >= 16 * 16 * 32 * 12
    check_batches(cfg, volumes, worker_memory=need * 10)
    with pytest.raises(InputError, match=r"train.data.chunks \(1, 2, 2\).*--chunks, e.g. 2,4,4"):
        check_batches(cfg, volumes, worker_memory=need)


def test_checkpoints_come_about_ten_times_a_run_by_default(vol):
    from em_chunks.learn.trainer import checkpoint_interval

    cfg = _config(vol)
    assert cfg.checkpoint_every is None and cfg.checkpoint_minutes == 10
    assert [checkpoint_interval(cfg, n) for n in (5, 300, 1000, 100000)] == [1, 30, 100, 500]
    assert checkpoint_interval(_config(vol, "checkpoint_every=7"), 1000) == 7
