"""The synthetic EM-like volume: deterministic, membranes darker than cytoplasm, labels 0 exactly on
membranes, and waterz-convention affinities checked against a direct loop."""

import itertools

import numpy as np
import pytest
import waterz
from scipy import ndimage

from em_chunks import synthetic
from em_chunks.errors import InputError
from em_chunks.synthetic import make_synthetic_em, synthetic_affinities


def test_deterministic_for_a_seed_and_different_across_seeds():
    a = make_synthetic_em((8, 48, 48), seed=3)
    b = make_synthetic_em((8, 48, 48), seed=3)
    c = make_synthetic_em((8, 48, 48), seed=4)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_image_and_labels_agree():
    image, labels = make_synthetic_em((16, 64, 64), seed=1)
    assert image.dtype == np.uint8 and labels.shape == image.shape
    membrane = labels == 0
    assert 0.02 < membrane.mean() < 0.5  # membranes exist but do not dominate
    assert image[membrane].mean() < image[~membrane].mean() - 20  # dark membranes
    assert np.unique(labels[labels != 0]).size > 10  # many cells


def test_affinities_follow_the_waterz_convention():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(3, 4, 5))
    affs = synthetic_affinities(labels)
    assert affs.shape == (3,) + labels.shape
    voxels = itertools.product(*(range(s) for s in labels.shape))
    for c, (z, y, x) in itertools.product(range(3), voxels):
        v = (z, y, x)
        u = list(v)
        u[c] -= 1
        want = 0.0 if u[c] < 0 else float(labels[v] == labels[tuple(u)] != 0)
        assert affs[(c,) + v] == want, (c, v)
    noisy = synthetic_affinities(labels, noise=0.3, seed=1)
    assert noisy.min() >= 0 and noisy.max() <= 1 and not np.array_equal(noisy, affs)


def test_different_cells_never_touch_and_each_cell_is_one_piece():
    # thin membranes, thick z steps: where Voronoi neighbours would touch (and merge) across z
    _, labels = make_synthetic_em((12, 64, 64), seed=2, anisotropy=4.0, membrane_width=1.0)
    assert labels.max() > 10 and np.bincount(labels.ravel())[1:].max() < labels.size / 4
    for axis in range(3):
        a = np.moveaxis(labels, axis, 0)
        here, below = a[1:], a[:-1]
        touching = (here != below) & (here != 0) & (below != 0)
        assert not touching.any(), axis  # a membrane voxel always separates two cells
    # cells never touch, so the connected components of the foreground are the cells themselves
    _, pieces = ndimage.label(labels > 0)
    ids = np.unique(labels[labels > 0])
    assert pieces == ids.size and ids[0] == 1 and ids[-1] == ids.size  # one piece each, ids 1..N


def test_perfect_affinities_decode_to_the_labels():
    _, labels = make_synthetic_em((8, 48, 48), seed=6)
    segmentation = next(iter(waterz.agglomerate(synthetic_affinities(labels), [0.5])))
    pairs = np.unique(np.stack([labels.ravel(), segmentation.ravel()]), axis=1)
    cells = pairs[:, pairs[0] > 0]
    # each cell is exactly one segment and no segment spans two cells
    assert np.unique(cells[0]).size == cells.shape[1] == np.unique(cells[1]).size
    assert not np.isin(cells[1], segmentation[labels == 0]).any()


def test_parameters_shape_the_volume():
    thin = make_synthetic_em((8, 64, 64), seed=0, membrane_width=1.0)[1]
    thick = make_synthetic_em((8, 64, 64), seed=0, membrane_width=4.0)[1]
    assert (thick == 0).mean() > 1.5 * (thin == 0).mean()
    small = make_synthetic_em((8, 64, 64), seed=0, cell_size=12.0)[1]
    assert small.max() > 2 * thin.max()
    clean = make_synthetic_em((8, 64, 64), seed=0, noise=0.0, blur=0.0)[0]
    noisy = make_synthetic_em((8, 64, 64), seed=0, noise=0.2, blur=0.0)[0]
    assert noisy.astype(float).std() > clean.astype(float).std()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"shape": (0, 8, 8)},
        {"shape": (8, 8)},
        {"cell_size": 0},
        {"membrane_width": 0.5},
        {"noise": -1},
    ],
)
def test_bad_parameters_are_refused_with_one_line(kwargs):
    with pytest.raises(InputError) as info:
        make_synthetic_em(**kwargs)
    assert "\n" not in str(info.value) and next(iter(kwargs)) in str(info.value)


def test_affinities_refuse_a_volume_without_three_axes():
    with pytest.raises(InputError, match="labels"):
        synthetic_affinities(np.zeros((4, 4), dtype=np.uint32))


def test_batched_neighbour_queries_change_nothing(monkeypatch):
    whole = make_synthetic_em((6, 40, 40), seed=9)
    monkeypatch.setattr(synthetic, "_BATCH", 777)  # many batches, the last one partial
    batched = make_synthetic_em((6, 40, 40), seed=9)
    assert np.array_equal(whole[0], batched[0]) and np.array_equal(whole[1], batched[1])
