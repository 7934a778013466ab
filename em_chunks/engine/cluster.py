"""Connect to a Dask cluster: an existing scheduler, the notebook's current client, a LocalCUDACluster
when GPUs are visible and dask-cuda is installed, else a CPU LocalCluster with worker processes."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from typing import Any, Callable, Iterator, Optional

from distributed import Client, LocalCluster

from em_chunks.errors import InputError

PROBE_SECONDS = 5.0  # an unreachable --scheduler is refused within about this time


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


def _address_error(address: str, origin: str, why: str) -> InputError:
    hint = ""
    if address.startswith(("http://", "https://")):
        hint = " (that is a web address, e.g. the dashboard's; the scheduler listens on tcp://HOST:8786)"
    return InputError(f"{origin} {address}: {why}{hint}; expected the address of a running Dask scheduler, "
                      f"e.g. tcp://HOST:8786")


def probe_scheduler(address: str, origin: str = "--scheduler", timeout: float = PROBE_SECONDS) -> None:
    """Check that ``address`` answers as a Dask scheduler within ``timeout`` seconds, else raise a
    one-line :class:`InputError`. Refused ports and unknown hosts fail at once, a silent host after
    ``timeout``, something else listening there as soon as it answers."""
    import asyncio

    from distributed.comm.addressing import parse_address, parse_host_port
    from distributed.core import rpc

    try:
        scheme, loc = parse_address(address)
        if scheme in ("tcp", "tls"):
            host, port = parse_host_port(loc)
            with socket.create_connection((host, int(port)), timeout=timeout):
                pass
    except (ValueError, OverflowError, TypeError) as err:
        raise _address_error(address, origin, f"not a scheduler address ({err})") from None
    except socket.gaierror as err:
        raise _address_error(address, origin, f"unknown host ({err.strerror or err})") from None
    except (OSError, TimeoutError) as err:
        why = "connection refused" if isinstance(err, ConnectionRefusedError) else (
            f"no answer within {timeout:g} s" if isinstance(err, (TimeoutError, socket.timeout)) else str(err))
        raise _address_error(address, origin, f"cannot connect ({why})") from None

    async def identity() -> Any:
        async with rpc(address, timeout=timeout) as r:
            return await asyncio.wait_for(r.identity(), timeout)

    try:
        info = _run_async(identity)
    except BaseException as err:  # a silent port, a web server, garbage bytes: all "not a scheduler"
        if isinstance(err, KeyboardInterrupt):
            raise
        why = f"no answer within {timeout:g} s" if isinstance(err, (TimeoutError, asyncio.TimeoutError)) else (
            f"it does not answer as a Dask scheduler ({err.__class__.__name__})")
        raise _address_error(address, origin, why) from None
    if not isinstance(info, dict) or info.get("type") != "Scheduler":
        kind = info.get("type") if isinstance(info, dict) else type(info).__name__
        raise _address_error(address, origin, f"a Dask {kind}, not a scheduler")


def _run_async(func: Callable[[], Any]) -> Any:
    """Run a coroutine function to completion from synchronous code, even under a running event loop
    (a notebook's): in a helper thread then."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(func())
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(func())
        except BaseException as err:
            box["error"] = err

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


@contextlib.contextmanager
def workers_ignore_interrupts() -> Iterator[None]:
    """Worker processes started inside this block ignore SIGINT (inherited through fork/exec).

    A terminal's Ctrl-C goes to the whole foreground process group: without this every worker would
    die printing its own KeyboardInterrupt traceback, while the command itself shuts them down cleanly.
    (Only the main thread can change signal handlers; elsewhere this does nothing.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _spawn_ignoring_interrupts(cluster: Any, n: int, timeout: float = 30.0) -> None:
    """Scale ``cluster`` to ``n`` worker processes, ignoring SIGINT only while they are forked (they
    inherit that), so the command itself stays interruptible while the workers start up."""
    import multiprocessing
    import time

    with workers_ignore_interrupts():
        before = len(multiprocessing.active_children())
        cluster.scale(n)
        deadline = time.monotonic() + timeout
        while len(multiprocessing.active_children()) < before + n and time.monotonic() < deadline:
            time.sleep(0.01)


def dask_setup(worker: Any) -> None:
    """Worker preload (``preload=["em_chunks.engine.cluster"]``): a worker the nanny restarts later
    ignores SIGINT too (the first ones inherit it from :func:`workers_ignore_interrupts`)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _distributed_loggers() -> list[logging.Logger]:
    names = [n for n in logging.root.manager.loggerDict if n == "distributed" or n.startswith("distributed.")]
    return [logging.getLogger(n) for n in ["distributed", *names]]


def silence_distributed_logs() -> None:
    """Mute distributed's loggers in this process (run on the workers before they are shut down:
    a heartbeat that races the scheduler's close is logged as a CommClosedError traceback otherwise)."""
    for lg in _distributed_loggers():
        lg.setLevel(logging.CRITICAL + 1)


@contextlib.contextmanager
def quiet_distributed() -> Iterator[None]:
    """Mute distributed's loggers in this process while the block runs (a cluster shutting down)."""
    loggers = _distributed_loggers()
    levels = [lg.level for lg in loggers]
    silence_distributed_logs()
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def close_quietly(client: Optional[Client] = None, cluster: Any = None) -> None:
    """Shut a client (and the local cluster it started) down without log noise from either side."""
    with quiet_distributed():
        if client is not None:
            if cluster is not None and client.status == "running":
                with contextlib.suppress(Exception):
                    client.run(silence_distributed_logs)  # inside each worker process
            with contextlib.suppress(Exception):
                client.close()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close()


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
    if echo is None:
        from em_chunks.engine.log import say
    else:
        say = echo
    origin = "--scheduler"
    if not scheduler and os.environ.get("DASK_SCHEDULER_ADDRESS"):  # set in the compose services
        scheduler, origin = os.environ["DASK_SCHEDULER_ADDRESS"], "$DASK_SCHEDULER_ADDRESS"
    if scheduler:
        probe_scheduler(scheduler, origin)
        try:
            client = Client(scheduler, timeout="15s")
        except Exception as err:
            raise _address_error(scheduler, origin, f"cannot connect ({err.__class__.__name__}: {err})") from None
        say(f"dashboard: {dashboard_link(client)}")
        if not client.scheduler_info().get("workers"):
            say(f"warning: the scheduler at {scheduler} has no workers yet; the work waits until one joins")
        try:
            yield client
        finally:
            close_quietly(client)
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

        with workers_ignore_interrupts():  # Ctrl-C is the command's to handle, not each worker's
            cluster = LocalCUDACluster(dashboard_address=dashboard, resources={"GPU": 1},
                                       threads_per_worker=threads_per_worker, preload=[__name__])
    else:
        cluster = LocalCluster(n_workers=0, threads_per_worker=threads_per_worker, processes=True,
                               memory_limit=memory_limit, dashboard_address=dashboard, preload=[__name__])
        _spawn_ignoring_interrupts(cluster, workers)
    try:
        client = Client(cluster)
        if ngpu == 0:
            client.wait_for_workers(workers, timeout=120)
    except BaseException:
        close_quietly(cluster=cluster)
        raise
    say(f"dashboard: {dashboard_link(client)}")
    try:
        yield client
    finally:
        close_quietly(client, cluster)
