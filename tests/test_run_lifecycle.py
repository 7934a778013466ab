"""A computing command's life (issue 15): a finished run is recognised and left alone, Ctrl-C is one
line and a resumable state, long work is never silent, and the timings are each stage's own."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
import zarr
from distributed import get_task_stream

from em_chunks.api.decode import decode
from em_chunks.cli.main import main
from em_chunks.engine.record import RunRecord
from em_chunks.engine.runner import run_stage
from em_chunks.engine.state import RunState, log_path
from em_chunks.geometry import ChunkGrid
from em_chunks.io import layout
from em_chunks.synthetic import make_synthetic_em, synthetic_affinities

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    d = tmp_path_factory.mktemp("lifecycle")
    _, labels = make_synthetic_em((32, 96, 96), seed=3)
    zarr.save_array(
        str(d / "affs.zarr"), synthetic_affinities(labels).astype(np.float32), zarr_format=3
    )
    zarr.save_array(str(d / "gt.zarr"), labels.astype(np.uint32), zarr_format=3)
    return d


def _env(**extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        **extra,
    }
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    return env


def _emchunks(*args: str) -> list[str]:
    return [sys.executable, "-m", "em_chunks", *args]


def test_rerun_of_a_complete_decode_keeps_its_records_and_takes_seconds(volume, tmp_path, capsys):
    out = tmp_path / "seg.zarr"
    argv = [
        "decode",
        str(volume / "affs.zarr"),
        "--chunks",
        "2,2,2",
        "--out",
        str(out),
        "--labels",
        str(volume / "gt.zarr"),
    ]
    assert main(argv) == 0
    files = {"run.json": layout.run_json(out), "metrics.json": layout.metrics_json(out)}
    first = {name: path.read_bytes() for name, path in files.items()}
    stages = json.loads(first["run.json"])["stages"]
    assert {s["stage"] for s in stages} >= {"fragments", "links", "region-graph", "segmentation"}
    per_chunk = [s for s in stages if s["stage"] in ("fragments", "links", "region-graph", "segmentation")]
    assert len(per_chunk) == 4 and all(s["busy_seconds"] > 0 and s["chunks_run"] == 8 for s in per_chunk)
    segmentation = zarr.open_array(str(out / "labels" / "segmentation" / "0"), mode="r")[:]
    capsys.readouterr()

    t0 = time.perf_counter()
    assert main(argv) == 0
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert seconds < 10, seconds
    # reported from the records, without starting a cluster
    assert "already complete with this configuration" in err and "dashboard" not in err
    # not rewritten with 0-second stages
    assert {name: path.read_bytes() for name, path in files.items()} == first
    assert np.array_equal(
        zarr.open_array(str(out / "labels" / "segmentation" / "0"), mode="r")[:], segmentation
    )
    # the Python API returns the recorded metrics too
    again = decode(volume / "affs.zarr", out, "2,2,2", labels=volume / "gt.zarr")
    assert again == json.loads(first["metrics.json"])
    # another configuration is still refused, not taken for the finished run
    assert main(["decode", str(volume / "affs.zarr"), "--chunks", "2,2,1", "--out", str(out)]) == 2


def _log_times(path: Path, after: str) -> list[datetime]:
    """Timestamps of the log lines after the last line containing ``after``."""
    lines = path.read_text().splitlines()
    start = max(i for i, line in enumerate(lines) if after in line)
    return [datetime.strptime(line[:19], "%Y-%m-%d %H:%M:%S") for line in lines[start:]]


@pytest.mark.slow
def test_ctrl_c_in_decode_is_one_line_and_the_same_command_resumes(volume, tmp_path):
    out = tmp_path / "seg.zarr"
    args = _emchunks(
        "decode",
        str(volume / "affs.zarr"),
        "--chunks",
        "4,8,8",
        "--out",
        str(out),
        "--workers",
        "2",
    )
    # a terminal's Ctrl-C reaches the whole foreground process group: the command and its workers
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        start_new_session=True,
    )
    markers = RunState(out).stage_dir("fragments")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if markers.is_dir() and len(list(markers.glob("*.npz"))) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    lines = [l for l in err.splitlines() if l.strip()]
    assert proc.returncode == 130, err
    assert (
        "Traceback" not in err and "KeyboardInterrupt" not in err and "distributed." not in err
    ), err
    assert re.fullmatch(
        r"interrupted; the same command resumes: \d+ of \d+ chunks done "
        r"\(fragments \d+/256(, [\w-]+ \d+/\d+)*(; \d+ more stages? with no chunk done yet)?\)",
        lines[-1],
    ), lines[-1]
    assert sum("interrupted" in l for l in lines) == 1
    record = json.loads(layout.run_json(out).read_text())
    assert record["status"] == "interrupted" and record["message"] == lines[-1]
    done = len(RunState(out).done("fragments"))
    assert 2 <= done < 256
    assert not layout.metrics_json(out).exists()

    # the same command resumes, and without a terminal it says how far it got every period
    t0 = time.monotonic()
    rerun = subprocess.run(
        args, capture_output=True, text=True, env=_env(EMCHUNKS_PROGRESS_SECONDS="1"), timeout=600
    )
    seconds = time.monotonic() - t0
    assert rerun.returncode == 0, rerun.stderr
    assert f"fragments: {256 - done} chunk(s) to run, {done} already done (skipped)" in rerun.stderr
    assert "Traceback" not in rerun.stderr and "CommClosedError" not in rerun.stderr
    assert json.loads(layout.run_json(out).read_text())["status"] == "complete"
    progress = [l for l in rerun.stderr.splitlines() if l.startswith("progress ")]
    assert progress and all(re.search(r"\d+/256 chunks", l) and "ETA" in l for l in progress)
    # the log file holds every line, with timestamps; progress lines at least every few periods
    log = log_path(out)
    assert "interrupted; the same command resumes" in log.read_text()
    stamps = _log_times(log, "resuming the earlier run")
    assert (stamps[-1] - stamps[0]).total_seconds() <= seconds + 1
    # never silent: with a 1-second period no two lines of the log are far apart (loaded machine: 5 s)
    assert max((b - a).total_seconds() for a, b in zip(stamps, stamps[1:])) <= 5


def _sleepy(chunk, seconds: float) -> dict:
    time.sleep(seconds)
    return {"n": np.int64(chunk.id)}


def test_stage_busy_time_is_the_sum_of_its_tasks(cluster_client, tmp_path):
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    grid = ChunkGrid((4, 8, 8), (2, 2, 2))
    record = RunRecord("test", tmp_path, {})
    out = run_stage(
        cluster_client,
        RunState(tmp_path),
        "sleep",
        list(grid),
        _sleepy,
        lambda c: (0.3,),
        record=record,
        progress=False,
    )
    assert sorted(int(s["n"]) for s in out.values()) == list(range(8))
    (row,) = record.stage_table()
    assert row["chunks_run"] == 8 and row["voxels"] == 4 * 8 * 8
    assert 8 * 0.3 <= row["busy_seconds"] < 8 * 0.3 + 2.0  # eight 0.3-s tasks, on whichever worker
    # two workers ran them side by side: the span is about half the busy time, and lies in the run
    assert 4 * 0.3 <= row["span_seconds"] < row["busy_seconds"]
    assert 0 <= row["span_start_s"] < row["span_end_s"] <= record.totals()["wall_seconds"]
    assert row["voxels_per_s"] == pytest.approx(row["voxels"] / row["span_seconds"], rel=1e-3)
    assert row["voxels_per_worker_s"] == pytest.approx(
        row["voxels"] / row["busy_seconds"], rel=1e-3
    )


@pytest.mark.slow
def test_pipelined_predict_reports_each_stages_own_time(cluster_client, tmp_path):
    import torch

    from em_chunks.api.predict import predict
    from em_chunks.learn.checkpoint import save_checkpoint
    from em_chunks.learn.models import build_model

    image, _ = make_synthetic_em((16, 64, 64), seed=9)
    zarr.save_array(str(tmp_path / "raw.zarr"), image, zarr_format=3)
    torch.manual_seed(0)
    ckpt = save_checkpoint(
        tmp_path / "m.pt",
        build_model("unet", widths=(4, 8)),
        train_config={"data": {"patch": [8, 32, 32]}},
    )
    with get_task_stream(cluster_client) as ts:
        metrics = predict(
            tmp_path / "raw.zarr",
            ckpt,
            tmp_path / "out.zarr",
            "2,2,2",
            client=cluster_client,
            progress=False,
        )
    record = json.loads(layout.run_json(tmp_path / "out.zarr").read_text())
    wall = record["wall_seconds"]
    assert record["voxels"] == 16 * 64 * 64 and record["voxels_per_s"] == pytest.approx(
        record["voxels"] / wall, rel=0.01
    )
    rows = {r["stage"]: r for r in record["stages"]}
    saved = json.loads(layout.metrics_json(tmp_path / "out.zarr").read_text())
    assert (
        list(rows)[:4] == ["infer", "blend", "fragments", "links"]
        and saved["stages"] == record["stages"]
    )
    assert metrics["segments"] == saved["segments"]

    def compute_seconds(prefix: str) -> float:
        return sum(
            s["stop"] - s["start"]
            for t in ts.data
            if str(t["key"]).startswith(prefix)
            for s in t["startstops"]
            if s["action"] == "compute"
        )

    for name, row in rows.items():
        # spans nest inside the command's wall time; a stage's span is its own, not "since the start"
        assert 0 <= row["span_start_s"] <= row["span_end_s"] <= wall, row
        assert row["span_seconds"] == pytest.approx(
            row["span_end_s"] - row["span_start_s"], abs=2e-3
        )
        # busy = the sum of the stage's task durations, as Dask's task stream measures them too
        stream = compute_seconds(f"{name}-")
        assert (
            stream > 0
            and row["busy_seconds"] <= stream * 1.05 + 0.01
            and row["busy_seconds"] >= 0.8 * stream - 0.05
        ), (name, row, stream)
    # blending starts after the first inference ends, and no stage claims the whole pipeline's time
    assert rows["blend"]["span_start_s"] >= rows["infer"]["span_start_s"]
    assert rows["segmentation"]["span_seconds"] < rows["segmentation"]["span_end_s"]
