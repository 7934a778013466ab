"""Cluster connection: local CPU cluster by default, an existing scheduler by address, GPU resources seen."""

import pytest
from distributed import Client, LocalCluster

from em_chunks.engine.cluster import connect, gpu_workers
from em_chunks.errors import InputError


def test_local_cluster_prints_dashboard_first_and_closes(capsys):
    lines = []
    with connect(None, 1, echo=lines.append) as client:
        assert len(client.scheduler_info()["workers"]) == 1
        assert client.submit(sum, [1, 2]).result() == 3
    assert lines and lines[0].startswith("dashboard: http")
    assert client.status == "closed"


def test_existing_scheduler_and_gpu_resources():
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None, resources={"GPU": 1}) as cluster:
        with connect(cluster.scheduler_address, echo=lambda m: None) as client:
            assert gpu_workers(client) == 1
            fut = client.submit(lambda: "ran", resources={"GPU": 1})
            assert fut.result(timeout=30) == "ran"


def test_unreachable_scheduler_is_a_clear_error():
    with pytest.raises(InputError, match="--scheduler tcp://127.0.0.1:1"):
        with connect("tcp://127.0.0.1:1", echo=lambda m: None):
            pass
