"""Connect to a Dask cluster: an existing scheduler, the notebook's current client, a LocalCUDACluster
when GPUs are visible and dask-cuda is installed, else a CPU LocalCluster with worker processes."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable, Iterator, Optional

from distributed import Client, LocalCluster

from em_chunks.errors import InputError


def visible_gpus() -> int:
    """Number of CUDA devices visible to this process (0 without the [cuda] extra or a GPU)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return 0
    try:
        from dask_cuda.utils import get_n_gpus  # lazy: importable only with CUDA bindings
    except Exception:
        return 0
    try:
        return int(get_n_gpus())
    except Exception:
        return 0


def gpu_workers(client: Client) -> int:
    """Workers that advertise a ``GPU`` resource (dask-cuda workers started with ``--resources GPU=1``,
    or our LocalCUDACluster): inference tasks then ask for one, and CPU workers take the decoding."""
    workers = client.scheduler_info(n_workers=-1).get("workers", {}) if _takes_n_workers(client) else client.scheduler_info().get("workers", {})
    return sum(1 for w in workers.values() if (w.get("resources") or {}).get("GPU", 0) > 0)


def cpu_workers_beside_gpus(client: Client) -> list[str]:
    """Addresses of workers without a GPU resource, when GPU workers exist too (else empty): decoding
    prefers them, so it runs beside inference instead of queueing behind it on the GPU workers."""
    info = client.scheduler_info(n_workers=-1) if _takes_n_workers(client) else client.scheduler_info()
    workers = info.get("workers", {})
    gpu = [a for a, w in workers.items() if (w.get("resources") or {}).get("GPU", 0) > 0]
    return [a for a in workers if a not in gpu] if gpu else []


def _takes_n_workers(client: Client) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


def dashboard_link(client: Client) -> str:
    link = client.dashboard_link
    return link if link else "(dashboard disabled)"


@contextlib.contextmanager
def connect(
    scheduler: Optional[str] = None,
    workers: int = 2,
    *,
    threads_per_worker: int = 1,
    memory_limit: str | float | None = "auto",
    dashboard: str | None = ":0",
    gpu: str = "auto",
    echo: Callable[[str], None] | None = None,
) -> Iterator[Client]:
    """Yield a connected :class:`distributed.Client`, printing the dashboard link first.

    ``scheduler``: address of a running scheduler (``tcp://host:8786``; default ``$DASK_SCHEDULER_ADDRESS``),
    else a client already current
    in this process (a notebook's) is reused; else a local cluster is started and closed on exit.
    ``gpu``: ``"auto"`` starts a ``LocalCUDACluster`` when GPUs are visible, ``"never"`` forces CPU.
    """
    say = echo or (lambda msg: print(msg, file=sys.stderr))
    scheduler = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS") or None  # set in the compose services
    if scheduler:
        try:
            client = Client(scheduler, timeout="15s")
        except (OSError, TimeoutError) as err:
            raise InputError(f"--scheduler {scheduler}: cannot connect ({err.__class__.__name__}: {err})") from None
        say(f"dashboard: {dashboard_link(client)}")
        try:
            yield client
        finally:
            client.close()
        return
    try:
        current = Client.current()
    except ValueError:
        current = None
    if current is not None and current.status == "running":
        say(f"dashboard: {dashboard_link(current)}")
        yield current
        return
    if workers < 1:
        raise InputError(f"--workers {workers}: expected a positive number of worker processes")
    ngpu = visible_gpus() if gpu == "auto" else 0
    if ngpu > 0:
        from dask_cuda import LocalCUDACluster

        cluster = LocalCUDACluster(dashboard_address=dashboard, resources={"GPU": 1}, threads_per_worker=threads_per_worker)
    else:
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            memory_limit=memory_limit,
            dashboard_address=dashboard,
        )
    client = Client(cluster)
    say(f"dashboard: {dashboard_link(client)}")
    try:
        yield client
    finally:
        client.close()
        cluster.close()
