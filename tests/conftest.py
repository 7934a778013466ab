"""Shared fixtures: one real LocalCluster (worker processes) for the session, real data paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from _data import require


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder; a test that asks for it FAILS (not skips) where it is missing."""
    return require()


@pytest.fixture(scope="session")
def cluster_client():
    """A real Dask cluster with two worker processes, shared by the tests of a session."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit="4GiB")
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="session")
def fib_crop(shared_data):
    """A small crop of the real FIB-SEM volume: (image uint8, labels uint32)."""
    import tifffile

    img = tifffile.imread(shared_data / "fib_medulla_250" / "image.tif")[:40, :96, :96]
    lab = tifffile.imread(shared_data / "fib_medulla_250" / "labels.tif")[:40, :96, :96]
    return np.ascontiguousarray(img), np.ascontiguousarray(lab)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when two label arrays describe the same partition (ids may differ), 0 matching 0."""
    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    if a.shape != b.shape or not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a, b]), axis=1)
    return pairs.shape[1] == np.unique(a).size == np.unique(b).size
