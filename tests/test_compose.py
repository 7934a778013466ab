"""docker-compose.yml read as data (no Docker engine here): services, commands, GPU reservations,
ports bound to localhost, a required Jupyter token, one image, one shared volume."""

import re
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


def test_dockerfile_installs_the_package_on_a_cuda_base():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r'^RUN pip install "\.\[cuda\]" jupyterlab', dockerfile, re.M)
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", dockerfile, re.M).group(1)
    assert "cuda" in base and "runtime" in base
    assert re.search(r"^FROM \$\{BASE_IMAGE\}", dockerfile, re.M)
    assert re.findall(r"^USER (\S+)", dockerfile, re.M)[-1] != "root"  # services run unprivileged
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".git" in ignored and ".env" in ignored  # no history, no token file in the image


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
    # Jupyter Server takes its token from JUPYTER_TOKEN; `:?`: compose refuses to start without one
    assert j["environment"]["JUPYTER_TOKEN"].startswith("${JUPYTER_TOKEN:?")
    cmd = " ".join(j["command"])
    assert cmd.startswith("jupyter lab") and "--no-browser" in cmd
    # nothing on the command line may override the token (it would also show in `ps` on the host)
    assert "token" not in cmd.lower() and "password" not in cmd.lower()
    assert j["environment"]["DASK_SCHEDULER_ADDRESS"] == "tcp://scheduler:8786"
    assert j["ports"] == ["127.0.0.1:8888:8888"]


def test_secrets_have_no_default_anywhere():
    text = (ROOT / "docker-compose.yml").read_text()
    uses = re.findall(r"\$\{JUPYTER_TOKEN([^}]*)\}", text)
    # never `:-default` nor a bare `${...}`
    assert uses and all(u.startswith(":?") for u in uses), uses


def test_workers_and_healthcheck_point_at_the_scheduler(compose):
    services = _services(compose)
    cmd = services["scheduler"]["command"]
    port = cmd[cmd.index("--port") + 1]
    dashboard = cmd[cmd.index("--dashboard-address") + 1].rsplit(":", 1)[1]
    address = f"tcp://scheduler:{port}"
    for name in ("gpu-worker", "cpu-worker"):
        cmd = services[name]["command"]
        assert cmd[cmd.index("worker") + 1] == address, name
    for name, s in services.items():
        assert s["environment"]["DASK_SCHEDULER_ADDRESS"] == address, name
    probe = " ".join(services["scheduler"]["healthcheck"]["test"])
    assert f"http://localhost:{dashboard}/health" in probe


def test_every_published_port_is_bound_to_localhost(compose):
    for name, s in _services(compose).items():
        for port in s.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_one_shared_data_volume_everywhere(compose):
    assert list(compose["volumes"]) == ["emchunks-data"]
    for name, s in _services(compose).items():
        assert "emchunks-data:/data" in s["volumes"], name
