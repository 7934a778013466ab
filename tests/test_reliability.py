"""Reliability: a killed worker, a killed run, a failing chunk, and parallel == sequential.

Each test drives the real CLI or API on a real LocalCluster with worker processes and real zarr stores.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dask
import numpy as np
import pytest
import zarr

from conftest import same_partition
from em_chunks.api.decode import decode
from em_chunks.cli.main import main
from em_chunks.engine.state import RunState
from em_chunks.synthetic import make_synthetic_em, synthetic_affinities
from em_chunks.io import layout


def _seg(out: Path) -> np.ndarray:
    return zarr.open_array(layout.segmentation_array(out), mode="r")[:]


@pytest.fixture(scope="module")
def affinities(tmp_path_factory):
    d = tmp_path_factory.mktemp("reliability")
    _, labels = make_synthetic_em((32, 96, 96), seed=11)
    affs = synthetic_affinities(labels, noise=0.2, seed=12).astype(np.float32)
    zarr.save_array(str(d / "affs.zarr"), affs, zarr_format=3)
    zarr.save_array(str(d / "gt.zarr"), labels.astype(np.uint32), zarr_format=3)
    ref = d / "ref.zarr"
    decode(d / "affs.zarr", ref, "1,1,1", workers=1, progress=False)
    return d / "affs.zarr", d / "gt.zarr", ref


def _wait_for_markers(out: Path, stage: str, n: int, timeout: float = 120) -> bool:
    state = RunState(out)
    t0 = time.time()
    while time.time() - t0 < timeout:
        if len(state.done(stage)) >= n:
            return True
        time.sleep(0.02)
    return False


def _kill_a_busy_worker(client, pids: dict, prefixes: tuple[str, ...] = ("",), timeout: float = 120) -> list[str]:
    """SIGKILL the worker that holds the most of this run's tasks (keys starting with ``prefixes``) right
    now; return those keys. The nanny restarts it; the scheduler reschedules what it held."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        held = {a: [str(k) for k in keys if str(k).startswith(prefixes)] for a, keys in client.processing().items()}
        addr = max(held, key=lambda a: len(held[a]), default=None)
        if addr is not None and held[addr] and addr in pids:
            os.kill(pids[addr], signal.SIGKILL)
            return held[addr]
        time.sleep(0.01)
    raise AssertionError(f"no worker held a task starting with {prefixes} within {timeout} s")


def _run_again_after_the_death(client, keys: list[str]) -> list[str]:
    """The keys the dead worker was processing when it died (the scheduler released them in its clean-up
    after the worker) that then ran again, elsewhere, to the end: the scheduler's own transition story."""

    def story(dask_scheduler, keys=tuple(keys)):
        return [(str(e[0]), str(e[1]), str(e[2]), str(e[4])) for e in dask_scheduler.story(*keys)]

    events = client.run_on_scheduler(story)
    rerun = []
    for key in keys:
        ev = [e for e in events if e[0] == key]
        lost = [i for i, (_, a, b, why) in enumerate(ev) if (a, b) == ("processing", "released") and "worker" in why]
        if lost and any((a, b) == ("processing", "memory") for _, a, b, _ in ev[lost[0]:]):
            rerun.append(key)
    return rerun


def test_killed_worker_costs_a_retry_not_a_result(affinities, tmp_path):
    from distributed import Client, LocalCluster

    affs, _, ref = affinities
    out = tmp_path / "out.zarr"
    # the scheduler keeps every transition of the run (its story is the evidence below)
    with dask.config.set({"distributed.admin.low-level-log-length": 10**6}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        pids = client.run(os.getpid)
        result: dict = {}

        def run() -> None:
            try:
                result["metrics"] = decode(affs, out, "4,4,4", client=client, progress=False)
            except BaseException as err:  # surfaced by the assertion below
                result["error"] = err

        thread = threading.Thread(target=run)
        thread.start()
        assert _wait_for_markers(out, "fragments", 4)
        finished_before_kill = layout.metrics_json(out).exists()
        held = _kill_a_busy_worker(client, pids)  # the nanny restarts it; its tasks are rescheduled
        thread.join(timeout=300)
        rerun = _run_again_after_the_death(client, held)
    assert not finished_before_kill
    assert "error" not in result, result.get("error")
    assert rerun, f"none of the dead worker's tasks {held} was run again"  # it held work, which was retried
    assert same_partition(_seg(out), _seg(ref))


def test_killed_run_resumes_and_ends_identical(affinities, tmp_path):
    affs, _, ref = affinities
    out = tmp_path / "out.zarr"
    args = [sys.executable, "-m", "em_chunks", "decode", str(affs), "--chunks", "4,4,4", "--out", str(out), "--workers", "2"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    assert _wait_for_markers(out, "fragments", 6), proc.communicate(timeout=5)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole command: client, scheduler and workers
    proc.wait(timeout=30)
    assert not layout.metrics_json(out).exists()
    state = RunState(out)
    done = {stage: len(state.done(stage)) for stage in ("fragments", "links", "region-graph", "segmentation")}
    assert done["fragments"] >= 6 and sum(done.values()) < 4 * 64  # killed half-way
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    for stage, n in done.items():
        assert f"{stage}: {64 - n} chunk(s) to run, {n} already done (skipped)" in rerun.stderr, stage
    assert same_partition(_seg(out), _seg(ref))
    assert layout.metrics_json(out).exists()


def test_half_written_chunk_is_never_done(affinities, tmp_path):
    """Data written but the marker not (killed between the two): the rerun redoes that chunk."""
    affs, _, ref = affinities
    out = tmp_path / "out.zarr"
    decode(affs, out, "2,2,2", workers=1, progress=False)
    state = RunState(out)
    marker = state.stage_dir("segmentation") / "3.npz"
    marker.unlink()
    arr = zarr.open_array(layout.segmentation_array(out), mode="r+")
    from em_chunks.geometry import ChunkGrid, storage_aligned

    grid = ChunkGrid(arr.shape, (2, 2, 2), align=storage_aligned(arr.shape, (2, 2, 2)))
    core = grid.chunk(3).core
    arr[core.slices()] = 12345  # garbage, as a worker killed mid-write would leave
    decode(affs, out, "2,2,2", workers=1, progress=False)
    assert same_partition(_seg(out), _seg(ref))


def _corrupt_middle(path: Path) -> bytes:
    data = path.read_bytes()
    bad = bytearray(data)
    mid = len(bad) // 2
    bad[mid:mid + 16] = bytes((b ^ 0xFF) for b in bad[mid:mid + 16])
    path.write_bytes(bytes(bad))
    return data


def test_failing_chunk_is_reported_and_rerun_finishes_the_rest(tmp_path, capsys):
    import torch

    from em_chunks.io.tileset import TileSet
    from em_chunks.io.tileset_make import make_tileset
    from em_chunks.learn.checkpoint import save_checkpoint
    from em_chunks.learn.models import build_model

    image, labels = make_synthetic_em((8, 64, 64), seed=2)
    tiles = make_tileset(image, tmp_path / "tiles", labels=labels, tile_size=32)
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "m.pt", build_model("unet", widths=(4, 8)), train_config={"data": {"patch": [4, 32, 32]}})
    tile = Path(TileSet.from_json(tiles).tile_path("image", 7, 1, 1))  # last section, bottom-right tile
    original = _corrupt_middle(tile)
    out = tmp_path / "out.zarr"
    args = ["predict", str(tiles), "--checkpoint", str(ckpt), "--chunks", "2,2,2", "--out", str(out), "--workers", "2"]
    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err
    assert code == 1
    line = [l for l in err.splitlines() if l.startswith("error:")][0]
    assert "infer chunk" in line and tile.name in line and "[" in line  # the chunk's box and the file
    done = RunState(out).done("infer")
    assert 0 < len(done) < 8
    assert not layout.metrics_json(out).exists()
    tile.write_bytes(original)  # fix the tile
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"infer: {8 - len(done)} chunk(s) to run, {len(done)} already done (skipped)" in err
    assert layout.metrics_json(out).exists()


def test_parallel_run_equals_sequential(affinities, cluster_client, tmp_path):
    affs, _, ref = affinities
    out = tmp_path / "par.zarr"
    decode(affs, out, "3,2,5", client=cluster_client, progress=False)
    assert same_partition(_seg(out), _seg(ref))


def test_write_boxes_never_share_a_storage_chunk():
    from em_chunks.geometry import Box, ChunkGrid, storage_aligned
    from em_chunks.io.ome_zarr import check_alignment

    shape, pieces = (250, 250, 250), (3, 2, 5)
    store = storage_aligned(shape, pieces)
    grid = ChunkGrid(shape, pieces, align=store)
    check_alignment(shape, store, [c.core for c in grid])  # the check run at output creation
    with pytest.raises(ValueError, match="not aligned"):
        check_alignment(shape, store, [c.core for c in ChunkGrid(shape, pieces)])  # plain floor split: shared
    owners: dict = {}
    for c in grid:
        for idx in Box.from_bounds([b // s for b, s in zip(c.core.begin, store)], [-(-e // s) for e, s in zip(c.core.end, store)]).iter_points():
            assert idx not in owners, "two chunks write one storage chunk"
            owners[idx] = c.id


def test_killed_worker_during_agglomeration_ends_identical(affinities, tmp_path):
    from distributed import Client, LocalCluster

    affs, _, ref = affinities
    out = tmp_path / "out.zarr"
    # the scheduler keeps every transition of the run (its story is the evidence below)
    with dask.config.set({"distributed.admin.low-level-log-length": 10**6}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        pids = client.run(os.getpid)
        result: dict = {}

        def run() -> None:
            try:
                result["metrics"] = decode(affs, out, "4,4,4", client=client, progress=False)
            except BaseException as err:
                result["error"] = err

        thread = threading.Thread(target=run)
        thread.start()
        assert _wait_for_markers(out, "merge-up-L0", 8)
        before = len(RunState(out).done("merge-down-L0"))
        held = _kill_a_busy_worker(client, pids, ("merge-",))
        thread.join(timeout=300)
        rerun = _run_again_after_the_death(client, held)
    assert before < 64  # the kill landed while blocks of the agglomeration were still to run
    assert "error" not in result, result.get("error")
    assert rerun, f"none of the dead worker's merge tasks {held} was run again"
    assert same_partition(_seg(out), _seg(ref))


def test_killed_run_during_agglomeration_resumes_identical(affinities, tmp_path):
    affs, _, ref = affinities
    out = tmp_path / "out.zarr"
    args = [sys.executable, "-m", "em_chunks", "decode", str(affs), "--chunks", "4,4,4", "--out", str(out), "--workers", "2"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    assert _wait_for_markers(out, "merge-up-L0", 10), proc.communicate(timeout=5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (out / "metrics.json").exists()
    state = RunState(out)
    stages = ("region-graph", "merge-up-L0", "merge-up-L1", "merge-down-L0", "segmentation")
    done = {stage: len(state.done(stage)) for stage in stages}
    assert done["merge-up-L0"] >= 10 and done["segmentation"] < 64
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    totals = {"merge-up-L1": 8}
    for stage, n in done.items():
        total = totals.get(stage, 64)
        assert f"{stage}: {total - n} chunk(s) to run, {n} already done (skipped)" in rerun.stderr, stage
    assert same_partition(_seg(out), _seg(ref))
