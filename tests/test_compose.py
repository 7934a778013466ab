"""docker-compose.yml read as data (no Docker engine here): services, commands, GPU reservations, ports
bound to localhost, a required Jupyter token, one image, one shared volume."""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _services(compose):
    return compose["services"]


def test_services_and_one_image(compose):
    services = _services(compose)
    assert {"scheduler", "gpu-worker", "jupyter"} <= set(services)
    assert {s["image"] for s in services.values()} == {"emchunks:latest"}
    assert all(s.get("build") == "." for s in services.values())
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert '".[cuda]"' in dockerfile and "jupyterlab" in dockerfile


def test_scheduler(compose):
    s = _services(compose)["scheduler"]
    assert s["command"][:2] == ["dask", "scheduler"] and "8786" in s["command"]
    assert set(s["ports"]) == {"127.0.0.1:8786:8786", "127.0.0.1:8787:8787"}
    assert "/health" in " ".join(s["healthcheck"]["test"])


def test_gpu_worker(compose):
    w = _services(compose)["gpu-worker"]
    cmd = w["command"]
    assert cmd[:3] == ["dask", "cuda", "worker"] and "tcp://scheduler:8786" in cmd
    assert cmd[cmd.index("--resources") + 1] == "GPU=1"
    devices = w["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"] and devices[0]["driver"] == "nvidia"
    assert "count" in devices[0] or "device_ids" in devices[0]
    size = w["shm_size"]
    assert size.endswith("gb") and int(size[:-2]) >= 1
    assert w["depends_on"]["scheduler"]["condition"] == "service_healthy"


def test_cpu_workers_are_opt_in(compose):
    w = _services(compose)["cpu-worker"]
    assert w["profiles"] == ["cpu"] and w["command"][:2] == ["dask", "worker"]


def test_jupyter_requires_a_token_and_finds_the_scheduler(compose):
    j = _services(compose)["jupyter"]
    cmd = " ".join(j["command"])
    assert "--ServerApp.token=${JUPYTER_TOKEN:?" in cmd  # no default: compose refuses to start without one
    assert "token=''" not in cmd and 'token=""' not in cmd
    assert j["environment"]["DASK_SCHEDULER_ADDRESS"] == "tcp://scheduler:8786"
    assert j["ports"] == ["127.0.0.1:8888:8888"]


def test_every_published_port_is_bound_to_localhost(compose):
    for name, s in _services(compose).items():
        for port in s.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_one_shared_data_volume_everywhere(compose):
    assert list(compose["volumes"]) == ["emchunks-data"]
    for name, s in _services(compose).items():
        assert "emchunks-data:/data" in s["volumes"], name
