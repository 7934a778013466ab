"""Pyramids: the kernels equal a naive numpy reference (odd shapes, partial end blocks), the factors
follow the voxel size, and the distributed levels are the same for every chunk grid and task
budget."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import zarr

from em_chunks.engine.pyramid import level_boxes, write_pyramid
from em_chunks.config.output import OutputConfig
from em_chunks.io import layout
from em_chunks.io.ome_zarr import create_label, create_root_image, open_root
from em_chunks.ops.downsample import downsample_mean, downsample_mode, level_shape, plan_factors


def _blocks(shape, factor):
    """Every output voxel with the input slices of its block (clipped at the far ends)."""
    out = [-(-s // f) for s, f in zip(shape, factor)]
    for idx in itertools.product(*(range(n) for n in out)):
        yield idx, tuple(slice(i * f, min((i + 1) * f, s)) for i, f, s in zip(idx, factor, shape))


def ref_mean(a, factor):
    out = np.zeros(a.shape[:-3] + tuple(-(-s // f) for s, f in zip(a.shape[-3:], factor)), a.dtype)
    for idx, sl in _blocks(a.shape[-3:], factor):
        block = a[(Ellipsis,) + sl].astype(np.float64)
        mean = block.reshape(block.shape[:-3] + (-1,)).mean(axis=-1)
        out[(Ellipsis,) + idx] = (
            np.floor(mean + 0.5) if np.issubdtype(a.dtype, np.integer) else mean
        )
    return out


def ref_mode(a, factor):
    out = np.zeros(tuple(-(-s // f) for s, f in zip(a.shape, factor)), a.dtype)
    for idx, sl in _blocks(a.shape, factor):
        ids, counts = np.unique(a[sl], return_counts=True)
        keep = ids != 0
        if keep.any():
            ids, counts = ids[keep], counts[keep]
            out[idx] = ids[
                np.argmax(counts)
            ]  # np.unique sorts: the first maximum is the smallest id
    return out


@pytest.mark.parametrize("shape", [(5, 7, 9), (1, 13, 6), (4, 8, 8), (3, 2, 1)])
@pytest.mark.parametrize("factor", [(2, 2, 2), (1, 2, 2), (2, 1, 1)])
def test_kernels_equal_the_reference(shape, factor):
    rng = np.random.default_rng(sum(shape) + sum(factor))
    f32 = rng.random(shape, dtype=np.float32)
    u8 = rng.integers(0, 256, (3,) + shape, dtype=np.uint8)
    labels = rng.integers(0, 4, shape).astype(np.uint64) * np.uint64(
        1 << 41
    )  # large packed-like ids
    np.testing.assert_allclose(downsample_mean(f32, factor), ref_mean(f32, factor), rtol=1e-6)
    assert downsample_mean(f32, factor).dtype == np.float32
    assert np.array_equal(
        downsample_mean(u8, factor), ref_mean(u8, factor)
    )  # channels kept, rounding exact
    got = downsample_mode(labels, factor)
    assert got.dtype == np.uint64 and np.array_equal(got, ref_mode(labels, factor))
    assert set(np.unique(got)) <= set(np.unique(labels))  # label-safe: no id is invented
    assert got.shape == level_shape(shape, factor)


def test_factors_follow_the_voxel_size():
    # anisotropic EM: x and y alone until their voxel catches up with z, then all three
    assert plan_factors((100, 4096, 4096), (40, 4, 4), 256) == [(1, 2, 2)] * 3 + [(2, 2, 2)]
    assert plan_factors((300, 300, 300), (8, 8, 8), 128) == [(2, 2, 2)] * 2
    assert plan_factors((32, 128, 128), (20, 10, 10), 256) == []  # fits the tile: no level
    # a flat axis (one section) is never halved, and planning stops when nothing can shrink
    assert all(f[0] == 1 for f in plan_factors((1, 1000, 1000), (1, 1, 1), 64))
    assert plan_factors((2, 2, 2), None, 1) == [(2, 2, 2)]


def test_level_boxes_cover_the_level_once_within_the_budget():
    shape, storage, factor = (7, 45, 38), (4, 8, 8), (1, 2, 2)
    for budget in (1, 600, 5000, 10**9):
        boxes = level_boxes(shape, storage, factor, budget)
        cover = np.zeros(shape, np.int32)
        for c in boxes:
            cover[c.core.slices()] += 1
            for b, e, s, n in zip(c.core.begin, c.core.end, storage, shape):
                assert b % s == 0 and (
                    e % s == 0 or e == n
                )  # whole storage chunks: no shared writes
            reads = np.prod(
                [
                    min(n * f, e * f) - b * f
                    for b, e, n, f in zip(c.core.begin, c.core.end, shape, factor)
                ]
            )
            assert reads <= max(budget, np.prod([s * f for s, f in zip(storage, factor)]))
        assert (cover == 1).all()
        assert sorted(c.id for c in boxes) == list(range(len(boxes)))


def _output(tmp_path, name, affs, seg, storage):
    out = tmp_path / name
    root = open_root(out)
    img = create_root_image(
        root, "affinities", affs.shape, affs.dtype, (affs.shape[0],) + storage, (40, 8, 8)
    )
    img[:] = affs
    lab = create_label(root, layout.SEGMENTATION, seg.shape, np.uint64, storage, (40, 8, 8))
    lab[:] = seg
    return out


def test_distributed_levels_equal_the_reference_for_every_grid(cluster_client, tmp_path):
    rng = np.random.default_rng(7)
    shape = (9, 45, 38)  # odd in every axis: partial end blocks at every level
    affs = rng.random((3,) + shape, dtype=np.float32)
    seg = rng.integers(0, 6, shape).astype(np.uint64)
    cfg = OutputConfig(pyramid="on", pyramid_tile=8)
    levels = {}
    for storage, budget in [((4, 8, 8), 1), ((2, 16, 8), 3000), ((16, 64, 64), 10**9)]:
        out = _output(tmp_path, f"o-{storage[0]}-{budget}.zarr", affs, seg, storage)
        f_img = write_pyramid(
            cluster_client, out, "image", config=cfg, budget_voxels=budget, progress=False
        )
        f_seg = write_pyramid(
            cluster_client,
            out,
            layout.SEGMENTATION,
            config=cfg,
            budget_voxels=budget,
            progress=False,
        )
        assert f_img == f_seg and len(f_img) > 2
        levels[storage] = [
            (
                np.asarray(zarr.open_array(layout.image_array(out, k))[:]),
                np.asarray(zarr.open_array(layout.segmentation_array(out, k))[:]),
            )
            for k in range(len(f_img))
        ]
        # metadata: one dataset per level, scale = voxel x cumulative factor
        ms = dict(zarr.open_group(str(out)).attrs)["ome"]["multiscales"][0]
        assert [d["coordinateTransformations"][0]["scale"][1:] for d in ms["datasets"]] == [
            [40.0 * f[0], 8.0 * f[1], 8.0 * f[2]] for f in f_img
        ]
    first = levels[(4, 8, 8)]
    img_ref, seg_ref = affs, seg
    steps = plan_factors(shape, (40, 8, 8), 8)
    for k, step in enumerate(steps, start=1):
        img_ref, seg_ref = ref_mean(img_ref, step), ref_mode(seg_ref, step)
        np.testing.assert_allclose(first[k][0], img_ref, rtol=1e-6)
        assert np.array_equal(first[k][1], seg_ref)
    for other in levels.values():  # chunking never changes them: bit-identical
        for (a, s), (a0, s0) in zip(other, first):
            assert np.array_equal(a, a0) and np.array_equal(s, s0)


def test_pyramid_resumes_and_is_off_below_the_threshold(cluster_client, tmp_path, capsys):
    rng = np.random.default_rng(1)
    affs = rng.random((3, 6, 40, 40), dtype=np.float32)
    seg = rng.integers(0, 3, (6, 40, 40)).astype(np.uint64)
    out = _output(tmp_path, "r.zarr", affs, seg, (2, 8, 8))
    assert write_pyramid(cluster_client, out, "image", progress=False) == [
        (1, 1, 1)
    ]  # auto: small volume
    assert "1" not in zarr.open_group(str(out))
    cfg = OutputConfig(pyramid="auto", pyramid_min_voxels=1000, pyramid_tile=16)
    f1 = write_pyramid(cluster_client, out, "image", config=cfg, progress=False)
    assert len(f1) == 3
    capsys.readouterr()
    assert write_pyramid(cluster_client, out, "image", config=cfg, progress=False) == f1
    err = capsys.readouterr().err
    assert (
        "pyramid-image-1: 0 chunk(s) to run" in err and "pyramid-image-2: 0 chunk(s) to run" in err
    )
