"""Cluster connection: local CPU cluster by default, an existing scheduler by address, GPU resources seen."""

import os
import subprocess
import sys

import pytest
from distributed import Client, LocalCluster

from em_chunks.engine.cluster import connect, gpu_workers
from em_chunks.errors import InputError


_FRESH_PROCESS = """
from em_chunks.engine.cluster import connect
lines = []
with connect(None, 1, echo=lines.append) as client:
    n = len(client.scheduler_info()["workers"])
    three = client.submit(sum, [1, 2]).result()
print(n, three, lines[0].startswith("dashboard: http"), client.status)
"""


def test_local_cluster_prints_dashboard_first_and_closes():
    # in a process of its own, as the CLI runs: in this one a test's cluster may be the current client,
    # which connect() reuses on purpose (a notebook's Client)
    env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    done = subprocess.run([sys.executable, "-c", _FRESH_PROCESS], capture_output=True, text=True, env=env,
                          timeout=180)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "3", "True", "closed"]


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
