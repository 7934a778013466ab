"""Synthetic EM-like volumes with known ground truth, for the demo and for tests.

Real EM data must be downloaded and its labels are imperfect; a synthetic volume is free,
deterministic and its segmentation is exact, so a test can say "the decoder recovers *these* cells".
The picture is a crude imitation of serial-section / FIB-SEM neuropil: 3D cells packed without gaps,
separated by thin dark membranes, with a textured, mid-grey cytoplasm, a little blur and noise.

Notes
-----
Cells are the Voronoi cells of jittered-grid seeds, computed in a *metric space* rather than voxel
space:

* z is scaled by ``anisotropy`` (physical z voxel size / xy voxel size) so cells span fewer slices
  in an anisotropic stack, and divided by ``elongation`` so cells are stretched along z, like
  neurites running through the sections;
* the query coordinates are displaced by a smooth random field (``warp``), which bends the flat
  Voronoi facets into organic, curved membranes.

The membrane is the set of voxels whose distance to their cell's boundary is below half the
``membrane_width``. That distance is the smallest distance to the bisector planes between the
nearest seed and the next ``_NEIGHBOURS - 1`` seeds (for a point inside a convex cell, distance to
the boundary is the distance to the nearest facet plane). On top of it, every voxel whose label
differs from its lower neighbour along an axis is made membrane, so two different cells never touch,
even across a thin anisotropic z step. Labels number the 6-connected regions between membranes
(consecutive from 1, in raster order; crumbs of a few voxels are made membrane), so labels are 0 on
exactly the membrane voxels and perfect affinities decode to exactly these labels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from em_chunks.errors import InputError

# seeds examined per voxel for the boundary distance: 2 is the classic approximation, a few more
# make the membrane width even at Voronoi corners, for little extra time
_NEIGHBOURS = 4

# points per neighbour query (memory ~150 MB per batch)
_BATCH = 1 << 20

# grey values in [0, 1] before blur and noise (real ssTEM: membranes ~0.33, cytoplasm ~0.55 +- 0.15)
_MEMBRANE_GREY = 0.22
_CYTOPLASM_GREY = (0.52, 0.78)
_TEXTURE = 0.06


def make_synthetic_em(
    shape: tuple[int, int, int] = (32, 128, 128),
    seed: int = 0,
    cell_size: float = 24.0,
    membrane_width: float = 2.0,
    noise: float = 0.06,
    blur: float = 1.0,
    anisotropy: float = 1.0,
    elongation: float = 1.5,
    warp: float = 0.25,
) -> tuple[np.ndarray, np.ndarray]:
    """Make an EM-like volume and its exact cell labels.

    Parameters
    ----------
    shape
        Volume shape (z, y, x) in voxels.
    seed
        Random seed; the same seed and parameters give the same arrays, bit for bit.
    cell_size
        Typical cell diameter in xy voxels.
    membrane_width
        Membrane thickness in xy voxels (at least 1; along z it is ``membrane_width / anisotropy``
        slices, but never less than one voxel between two cells).
    noise
        Standard deviation of the additive Gaussian noise, as a fraction of the grey range.
    blur
        Gaussian blur sigma in xy voxels (``blur / anisotropy`` along z); 0 disables it.
    anisotropy
        Physical z voxel size divided by the xy voxel size (1 for FIB-SEM, ~10 for ssTEM).
    elongation
        How much longer cells are along z than across (1 = round cells).
    warp
        Amplitude of the smooth displacement that curves the membranes, as a fraction of
        ``cell_size``.

    Returns
    -------
    image, labels
        ``uint8`` image (membranes dark) and ``uint32`` labels: consecutive cell ids from 1, 0 on
        membranes.
    """
    shape = _check_shape(shape)
    _check_positive("cell_size", cell_size)
    _check_positive("anisotropy", anisotropy)
    _check_positive("elongation", elongation)
    if membrane_width < 1:
        raise InputError(f"membrane_width: expected at least 1 voxel, got {membrane_width}")
    for name, value in (("noise", noise), ("blur", blur), ("warp", warp)):
        if value < 0:
            raise InputError(f"{name}: expected a value >= 0, got {value}")

    rng = np.random.default_rng(seed)
    # metric-space size of one voxel step along (z, y, x)
    scale = np.array([anisotropy / elongation, 1.0, 1.0])
    seeds = _jittered_seeds(shape, scale, cell_size, rng)
    points = _metric_coordinates(shape, scale, warp * cell_size, cell_size, rng)

    tree = cKDTree(seeds)
    cells = np.empty(len(points), dtype=np.int64)
    membrane = np.empty(len(points), dtype=bool)
    # in batches: the neighbour queries take ~150 bytes per point, so big volumes stay bounded
    for start in range(0, len(points), _BATCH):
        part = slice(start, start + _BATCH)
        dist, idx = tree.query(points[part], k=_NEIGHBOURS)  # the padded grid always has >= 8 seeds
        cells[part] = idx[:, 0]
        membrane[part] = _boundary_distance(dist, idx, seeds) < membrane_width / 2
    cells, membrane = cells.reshape(shape), membrane.reshape(shape)
    membrane |= _label_edges(cells)

    labels = _connected_cells(membrane, min_size=max(8, int(0.02 * cell_size**2)))
    image = _render(labels, labels == 0, shape, anisotropy, noise, blur, rng)
    return image, labels


def synthetic_affinities(
    labels: np.ndarray, noise: float = 0.0, seed: int = 0, blur: float = 0.0
) -> np.ndarray:
    """Exact nearest-neighbour affinities of a label volume, optionally degraded like a model's.

    Waterz convention: channel ``c`` at voxel ``v`` is the affinity between ``v`` and ``v - e_c``
    (``e_0`` = z, ``e_1`` = y, ``e_2`` = x): 1 where ``labels[v] == labels[v - e_c] != 0``, else 0;
    the first slice of each axis (no lower neighbour) is 0.

    Parameters
    ----------
    labels
        3D integer label volume, 0 = membrane / background.
    noise
        Standard deviation of additive Gaussian noise; results are clipped to [0, 1].
    seed
        Random seed for the noise.
    blur
        Gaussian sigma (voxels) applied per channel before the noise, softening the edges like a
        CNN does.

    Returns
    -------
    numpy.ndarray
        ``float32`` array of shape ``(3, Z, Y, X)``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise InputError(f"labels: expected a 3D (z, y, x) array, got shape {labels.shape}")
    if noise < 0 or blur < 0:
        raise InputError(f"noise/blur: expected values >= 0, got noise={noise}, blur={blur}")
    affs = np.zeros((3,) + labels.shape, dtype=np.float32)
    for axis in range(3):
        here = [slice(None)] * 3
        below = [slice(None)] * 3
        here[axis] = slice(1, None)
        below[axis] = slice(None, -1)
        a, b = labels[tuple(here)], labels[tuple(below)]
        affs[axis][tuple(here)] = (a == b) & (a != 0)
    if blur > 0:
        for axis in range(3):
            affs[axis] = ndimage.gaussian_filter(affs[axis], blur, mode="nearest")
    if noise > 0:
        affs += np.random.default_rng(seed).normal(0.0, noise, affs.shape).astype(np.float32)
        np.clip(affs, 0.0, 1.0, out=affs)
    return affs



def voronoi_labels(shape: tuple[int, int, int], n: int, seed: int = 0) -> np.ndarray:
    """Voronoi cells of ``n`` random seeds (ids 1..n, no membrane): the simplest volume whose every
    chunking cuts objects, for the decode kernels' oracle tests."""
    shape = _check_shape(shape)
    rng = np.random.default_rng(seed)
    pts = rng.integers(0, shape, size=(n, 3))
    mark = np.zeros(shape, np.int64)
    mark[tuple(pts.T)] = np.arange(1, n + 1)
    _, idx = ndimage.distance_transform_edt(mark == 0, return_indices=True)
    return mark[tuple(idx)]


def with_membranes(labels: np.ndarray) -> np.ndarray:
    """``labels`` with a one-voxel membrane (0) where a voxel's lower neighbour on some axis has
    another label (real label volumes, e.g. fib_medulla_250, assign boundaries to bodies)."""
    labels = np.asarray(labels)
    bnd = np.zeros(labels.shape, bool)
    for axis in range(labels.ndim):
        here = [slice(None)] * labels.ndim
        below = [slice(None)] * labels.ndim
        here[axis], below[axis] = slice(1, None), slice(None, -1)
        bnd[tuple(here)] |= labels[tuple(here)] != labels[tuple(below)]
    return np.where(bnd, 0, labels)

def _check_shape(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    dims = tuple(int(s) for s in shape)
    if len(dims) != 3 or min(dims) < 1:
        raise InputError(f"shape: expected three positive sizes (z, y, x), got {tuple(shape)}")
    return dims  # type: ignore[return-value]


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise InputError(f"{name}: expected a value > 0, got {value}")


def _jittered_seeds(
    shape: tuple[int, ...], scale: np.ndarray, spacing: float, rng: np.random.Generator
) -> np.ndarray:
    """Seeds on a grid with random jitter: more even cell sizes than Poisson points (no slivers).

    The grid extends one spacing past the volume so border cells are cut by the border, not swollen.
    """
    extent = np.asarray(shape) * scale
    axes = [np.arange(-spacing, e + spacing, spacing) + spacing / 2 for e in extent]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    return grid + rng.uniform(-0.4, 0.4, grid.shape) * spacing


def _metric_coordinates(
    shape: tuple[int, ...],
    scale: np.ndarray,
    amplitude: float,
    smoothness: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Voxel centres in metric space, displaced by a smooth random field (N, 3)."""
    coords = np.indices(shape, dtype=np.float32).reshape(3, -1).T * scale.astype(np.float32)
    if amplitude <= 0:
        return coords
    # smooth noise at low resolution, then linear upsampling: a few ms, not a large full-size filter
    step = max(smoothness / 4, 1.0)
    low = tuple(max(int(np.ceil(s * sc / step)) + 1, 2) for s, sc in zip(shape, scale))
    for axis in range(3):
        field = ndimage.gaussian_filter(rng.normal(size=low), sigma=2.0, mode="wrap")
        field *= amplitude / (field.std() + 1e-12)
        zoom = [n / m for n, m in zip(shape, low)]
        up = ndimage.zoom(field, zoom, order=1, grid_mode=True, mode="nearest")
        coords[:, axis] += up.ravel()
    return coords


def _boundary_distance(dist: np.ndarray, idx: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Distance from each point to its Voronoi cell's boundary (metric space).

    For the nearest seed s1 and another seed sk, the point's distance to their bisector plane is
    (dk^2 - d1^2) / (2 |s1 - sk|); the boundary distance is the minimum over the neighbours
    examined.
    """
    gap = np.linalg.norm(seeds[idx[:, 1:]] - seeds[idx[:, :1]], axis=-1)
    planes = (dist[:, 1:] ** 2 - dist[:, :1] ** 2) / (2 * gap)
    return planes.min(axis=1)


def _label_edges(cells: np.ndarray) -> np.ndarray:
    """Voxels whose cell differs from the lower neighbour along an axis: one per touching pair."""
    edges = np.zeros(cells.shape, dtype=bool)
    for axis in range(3):
        here = [slice(None)] * 3
        below = [slice(None)] * 3
        here[axis] = slice(1, None)
        below[axis] = slice(None, -1)
        edges[tuple(here)] |= cells[tuple(here)] != cells[tuple(below)]
    return edges


def _connected_cells(membrane: np.ndarray, min_size: int) -> np.ndarray:
    """Label the 6-connected regions between membranes; regions below ``min_size`` become membrane.

    A Voronoi cell can be cut in two by the membrane (a thin neck, a corner at the border).
    Numbering connected regions rather than Voronoi cells makes the ground truth exactly what
    perfect affinities decode to, and dropping crumbs of a few voxels avoids "cells" no segmentation
    could be asked to find. Regions are numbered 1..N in raster order of their first voxel,
    deterministically.
    """
    regions, count = ndimage.label(~membrane)
    sizes = np.bincount(regions.ravel(), minlength=count + 1)
    keep = sizes >= min_size
    keep[0] = False
    lookup = np.zeros(count + 1, dtype=np.uint32)
    lookup[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint32)
    return lookup[regions]


def _render(
    labels: np.ndarray,
    membrane: np.ndarray,
    shape: tuple[int, ...],
    anisotropy: float,
    noise: float,
    blur: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Grey image: per-cell tone + fine texture, dark membranes, then blur and noise."""
    tones = rng.uniform(*_CYTOPLASM_GREY, size=int(labels.max()) + 1).astype(np.float32)
    tones[0] = _MEMBRANE_GREY
    image = tones[labels]
    # texture: speckle at ~2 voxel scale, like vesicles and cytoskeleton, absent from membranes
    texture = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), 1.0)
    texture *= _TEXTURE / (texture.std() + 1e-12)
    image += np.where(membrane, 0.0, texture)
    if blur > 0:
        image = ndimage.gaussian_filter(image, (blur / anisotropy, blur, blur), mode="nearest")
    if noise > 0:
        image += rng.normal(0.0, noise, shape).astype(np.float32)
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
