"""Exact metrics reduced on the workers (engine/metrics_reduce.py): real LocalCluster, real files.

The scores must be bit-identical for every chunk grid and reduction shape, equal the whole-volume
table's and scikit-image's (1e-9), and no per-chunk table may be needed on the client.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import zarr
from skimage.metrics import adapted_rand_error, variation_of_information

from em_chunks.api.evaluate import evaluate
from em_chunks.cli.main import main
from em_chunks.engine.metrics_reduce import TreeShape, contingency_scores, reduce_contingencies
from em_chunks.engine.source import Source
from em_chunks.engine.state import RunState
from em_chunks.errors import ChunkFailure, InputError
from em_chunks.geometry import ChunkGrid
from em_chunks.ops.metric_sums import MetricSums
from em_chunks.ops.metrics import aggregate_contingency, contingency

GRIDS = [(1, 1, 1), (2, 4, 4), (3, 2, 5)]
SHAPE = (24, 48, 64)


def _skimage(gt, seg):
    from skimage.segmentation import relabel_sequential

    # scikit-image allocates up to the largest id: give it the same partitions with small ids (0
    # stays 0)
    small = relabel_sequential(np.asarray(seg).astype(np.int64))[0]
    gt = relabel_sequential(np.asarray(gt).astype(np.int64))[0]
    are, prec, rec = adapted_rand_error(gt, small)
    split, merge = variation_of_information(gt, small, ignore_labels=[0])
    return dict(
        adapted_rand_error=are,
        adapted_rand_precision=prec,
        adapted_rand_recall=rec,
        voi_split=split,
        voi_merge=merge,
    )


def _close(ours, ref):
    for k, v in ref.items():
        assert abs(ours[k] - float(v)) < 1e-9, (k, ours[k], v)


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    """gt: blobs, with empty chunks (x < 13 unlabelled) and one label on a lattice through every
    chunk; seg: splits and merges of gt with huge packed ids, and one segment on a lattice through
    every chunk."""
    rng = np.random.default_rng(7)
    z, y, x = np.indices(SHAPE)
    gt = (1 + (z // 6) * 100 + (y // 12) * 10 + x // 16).astype(np.uint32)
    gt[rng.random(SHAPE) < 0.05] = 0
    seg = (gt.astype(np.uint64) // 3) * np.uint64(1 << 40) + (x % 3 == 0).astype(np.uint64)
    lattice = (z % 5 == 2) & (y % 7 == 3)
    gt[lattice] = 4_000_000_000  # one ground-truth object in every chunk
    seg[(z % 4 == 1) & (x % 6 == 5)] = np.uint64(7) << np.uint64(60)  # one segment in every chunk
    gt[:, :, :13] = 0  # chunks with no labelled voxel (x pieces: 64, 16 or 12.8 wide)
    d = tmp_path_factory.mktemp("metrics")
    zarr.save_array(str(d / "gt.zarr"), gt, zarr_format=3)
    zarr.save_array(str(d / "seg.zarr"), seg, zarr_format=3)
    return d / "seg.zarr", d / "gt.zarr", seg, gt


def test_grids_are_bit_identical_and_equal_the_whole_table_and_skimage(volumes, cluster_client):
    seg_path, gt_path, seg, gt = volumes
    whole = MetricSums.from_table(contingency(seg, gt)).scores()
    got = {g: evaluate(seg_path, gt_path, g, client=cluster_client) for g in GRIDS}
    for g in GRIDS:
        assert got[g] == whole, g  # bit for bit
    _close(whole, _skimage(gt, seg))


def test_every_chunk_holds_the_spanning_labels_and_some_chunks_are_empty(volumes):
    _, _, seg, gt = volumes
    grid = ChunkGrid(SHAPE, (3, 2, 5))
    spans_gt = [bool((gt[c.core.slices()] == 4_000_000_000).any()) for c in grid]
    spans_seg = [bool((seg[c.core.slices()] == np.uint64(7) << np.uint64(60)).any()) for c in grid]
    empty = [not gt[c.core.slices()].any() for c in grid]
    assert all(spans_seg) and sum(spans_gt) == len(grid) - sum(empty) and sum(empty) == 6


def _tables(chunk, seg: Source, gt: Source):
    """Three trials at once: the segmentation, its merge by id >> 40, the ground truth itself."""
    s, g = seg.read(chunk.core, 0), gt.read(chunk.core, 0)
    base = contingency(s, g)
    return [base, aggregate_contingency(base, lambda ids: ids >> np.uint64(40)), contingency(g, g)]


@pytest.mark.parametrize(
    "fan_in,split,split_leaves", [(8, 8, False), (2, 2, False), (3, 4, True), (8, 2, True)]
)
def test_several_tables_and_any_tree_shape_give_the_same_bits(
    volumes, cluster_client, fan_in, split, split_leaves
):
    seg_path, gt_path, seg, gt = volumes
    seg_src, gt_src = Source.open(seg_path), Source.open(gt_path)
    refs = [
        MetricSums.from_table(t).scores()
        for t in (contingency(seg, gt), contingency(seg >> np.uint64(40), gt), contingency(gt, gt))
    ]
    assert refs[2]["adapted_rand_error"] == 0.0 and refs[2]["voi_merge"] == 0.0
    grid = ChunkGrid(SHAPE, (3, 2, 5))  # 30 chunks: more than one level of 8 (or 2, or 3)
    r = reduce_contingencies(
        cluster_client,
        list(grid),
        _tables,
        lambda c: (seg_src, gt_src),
        3,
        fan_in=fan_in,
        split=split,
        split_leaves=split_leaves,
        key_prefix="t-shape",
        progress=False,
    )
    assert r.scores() == refs
    shape = TreeShape(30, fan_in, split, split_leaves)
    assert r.levels == shape.levels >= 2 and r.tasks == shape.tasks and r.chunks_run == 30
    _close(refs[1], _skimage(gt, seg >> np.uint64(40)))


def test_nothing_is_left_on_the_cluster_afterwards(volumes, cluster_client):
    seg_path, gt_path, _, _ = volumes
    seg_src, gt_src = Source.open(seg_path), Source.open(gt_path)
    contingency_scores(
        cluster_client,
        list(ChunkGrid(SHAPE, (2, 4, 4))),
        _tables,
        lambda c: (seg_src, gt_src),
        3,
        key_prefix="leakcheck",
        progress=False,
    )

    def held(dask_scheduler):
        return [str(k) for k in dask_scheduler.tasks if str(k).startswith("leakcheck")]

    deadline = time.time() + 20
    while cluster_client.run_on_scheduler(held) and time.time() < deadline:
        time.sleep(0.2)
    assert cluster_client.run_on_scheduler(held) == []


def test_real_fib_fragments_vs_labels(shared_data, cluster_client):
    import tifffile

    d = shared_data / "fib_medulla_250"
    gt, frag = tifffile.imread(d / "labels.tif"), tifffile.imread(d / "fragments.tif")
    whole = MetricSums.from_table(contingency(frag, gt)).scores()  # the 1,1,1 answer
    grids = GRIDS[1:]
    got = {g: evaluate(d / "fragments.tif", d / "labels.tif", g, client=cluster_client) for g in grids}
    assert all(got[g] == whole for g in grids), got
    are, prec, rec = adapted_rand_error(gt, frag)
    split, merge = variation_of_information(gt, frag, ignore_labels=[0])
    _close(
        whole,
        dict(
            adapted_rand_error=are,
            adapted_rand_precision=prec,
            adapted_rand_recall=rec,
            voi_split=split,
            voi_merge=merge,
        ),
    )
    assert 0.2 < whole["adapted_rand_error"] < 0.35  # the README's "about 0.27"


def test_all_zero_labels_are_one_line_input_error(volumes, cluster_client, tmp_path, capsys):
    seg_path, _, seg, _ = volumes
    zeros = tmp_path / "zeros.zarr"
    zarr.save_array(str(zeros), np.zeros(SHAPE, np.uint32), zarr_format=3)
    with pytest.raises(InputError, match="no labelled voxel") as err:
        evaluate(seg_path, zeros, "2,2,2", client=cluster_client)
    assert str(zeros) in str(err.value) and "\n" not in str(err.value)
    metrics = tmp_path / "metrics.json"
    code = main(
        [
            "evaluate",
            str(seg_path),
            "--labels",
            str(zeros),
            "--chunks",
            "1,1,2",
            "--workers",
            "1",
            "--metrics-out",
            str(metrics),
        ]
    )
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert (
        code == 2 and len(lines) == 1 and "no labelled voxel" in lines[0] and not metrics.exists()
    )


def _fails_on_chunk_4(chunk, seg: Source, gt: Source):
    if chunk.id == 4:
        raise RuntimeError("disk on fire")
    return _tables(chunk, seg, gt)


def test_a_failed_chunk_is_reported_with_its_box(volumes, cluster_client):
    seg_path, gt_path, _, _ = volumes
    seg_src, gt_src = Source.open(seg_path), Source.open(gt_path)
    grid = ChunkGrid(SHAPE, (2, 2, 3))
    with pytest.raises(ChunkFailure) as err:
        contingency_scores(
            cluster_client,
            list(grid),
            _fails_on_chunk_4,
            lambda c: (seg_src, gt_src),
            3,
            retries=0,
            progress=False,
        )
    msg = str(err.value)
    assert (
        msg.startswith("1 chunk(s) failed")
        and str(grid.chunk(4).core) in msg
        and "disk on fire" in msg
    )


def _refuses_all_but_chunk_2(chunk, seg: Source, gt: Source):
    if chunk.id != 2:
        raise RuntimeError(f"chunk {chunk.id} was produced again instead of loaded")
    return _tables(chunk, seg, gt)


def test_resume_loads_saved_tables_instead_of_producing_them(volumes, cluster_client, tmp_path):
    seg_path, gt_path, _, _ = volumes
    seg_src, gt_src = Source.open(seg_path), Source.open(gt_path)
    chunks = list(ChunkGrid(SHAPE, (2, 2, 3)))
    state = RunState(tmp_path / "run")
    first = reduce_contingencies(
        cluster_client, chunks, _tables, lambda c: (seg_src, gt_src), 3, state=state, progress=False
    )
    assert state.done("contingency") == {c.id for c in chunks} and first.chunks_skipped == 0
    (state.stage_dir("contingency") / "2.npz").unlink()
    again = reduce_contingencies(
        cluster_client,
        chunks,
        _refuses_all_but_chunk_2,
        lambda c: (seg_src, gt_src),
        3,
        state=state,
        retries=0,
        progress=False,
    )
    assert again.chunks_skipped == len(chunks) - 1 and again.chunks_run == 1
    assert again.scores() == first.scores()
