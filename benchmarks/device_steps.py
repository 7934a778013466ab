"""The GPU check's settings and its small steps (env, gpu_tests, data), one process each.

A step fills a :class:`Result` as it goes and saves it after every phase, so a step killed at its
time limit still leaves the figures of the phases it finished. Heavy steps live in
``device_predict.py`` and
``device_train.py``.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "workflows" / "snemi3d-aff12.yaml"


# ---- settings: the one place that says what the full run and the dry run do ----------------------
def settings(dry: bool, work: Path) -> dict[str, Any]:
    """Sizes, paths and options of every step (written to the work folder, read by each step)."""
    cpus = os.cpu_count() or 2
    common = {
        "dry_run": dry,
        "work": str(work),
        "recipe": str(RECIPE),
        "image": str(work / "image.zarr"),
        "labels": str(work / "labels.zarr"),
        "checkpoint": str(work / "checkpoint.pt"),
        "trained_checkpoint": str(
            work / "trained.pt"
        ),  # written by the train step, read by predict_cli
        # the decoder reads channels 0-2 (z, y, x nearest neighbours) of the recipe's 12 (aff12)
        "select_channel": [0, 1, 2],
        "output_dtype": "uint8",
        "amp": True,
        "sw_batch_size": 4,
        "anisotropy": 5.0,  # 30 x 6 x 6 nm, as SNEMI3D
    }
    if dry:
        return {
            **common,
            "volume": [16, 96, 96],
            "block": [16, 96, 96],
            "input_chunks": [8, 48, 48],
            "model_config": {
                "widths": [4, 8],
                "pooling": [1, 2, 2],
                "embed_kernel": [1, 5, 5],
                "norm": "batch",
            },
            "window": [8, 48, 48],
            "pieces": [1, 2, 2],
            "device": "cpu",
            "forward_batch_sizes": [4, 8],
            "forward_seconds": 1.0,
            "cpu_workers": 1,
            "worker_memory": "3GiB",
            "train": {
                "patch": [8, 48, 48],
                "batch_size": 2,
                "loader_workers": 2,
                "warmup_steps": 1,
                "max_steps": 3,
                "max_seconds": 20.0,
                "model_only_steps": 2,
                "compile_backend": "eager",
            },
        }
    return {
        **common,
        "volume": [100, 1024, 1024],
        "block": [32, 256, 256],
        "input_chunks": [16, 256, 256],
        "model_config": None,  # the recipe's
        "window": None,  # the recipe's training patch (16, 224, 224)
        "pieces": [2, 4, 4],
        "device": "cuda",
        "forward_batch_sizes": [4, 8, 16],
        "forward_seconds": 15.0,
        "cpu_workers": max(1, min(12, cpus - 3)),
        "worker_memory": "8GiB",
        "train": {
            "patch": None,
            "batch_size": None,
            "loader_workers": max(1, min(12, cpus - 3)),
            "warmup_steps": 3,
            "max_steps": 400,
            "max_seconds": 30.0,
            "model_only_steps": 20,
            "compile_backend": "inductor",
        },
    }


def recipe_train(s: dict[str, Any]):
    """The SNEMI3D recipe's TrainConfig with this check's volumes (dry run: small model)."""
    from em_chunks.config.base import load_yaml
    from em_chunks.learn.config import TrainConfig

    train = dict(load_yaml(s["recipe"])["train"])
    data = dict(train["data"])
    data["volumes"] = [{"image": s["image"], "label": s["labels"]}]
    t = s["train"]
    if t["patch"]:
        data["patch"] = t["patch"]
    if t["batch_size"]:
        data["batch_size"] = t["batch_size"]
    train["data"] = data
    if s["model_config"]:
        train["model"] = {
            "architecture": train["model"]["architecture"],
            "config": s["model_config"],
        }
    return TrainConfig.model_validate(train)


def host_info() -> dict[str, Any]:
    try:
        import psutil

        mem = round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:
        mem = None
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "memory_gib": mem,
        "loadavg_start": list(os.getloadavg()),
    }


# ---- the result of one step ----------------------------------------------------------------------
class Result:
    """What a step found: ``figures`` (named values), ``status``, ``error``; saved per phase."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.figures: dict[str, Any] = {}
        self.status = "ok"
        self.error: str | None = None

    def __setitem__(self, key: str, value: Any) -> None:
        self.figures[key] = value

    def __getitem__(self, key: str) -> Any:
        return self.figures[key]

    def save(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(
            json.dumps(
                {"status": self.status, "error": self.error, "figures": self.figures},
                indent=1,
                default=_plain,
            )
        )
        os.replace(tmp, self.path)


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


class Clock:
    """Seconds since construction (or the last ``lap``)."""

    def __init__(self) -> None:
        self.t = time.perf_counter()

    def lap(self) -> float:
        t = time.perf_counter()
        dt, self.t = t - self.t, t
        return round(dt, 3)


def run_one(name: str, settings_path: Path, result_path: Path, limit: float) -> int:
    """Entry point of a step process: run it, record any exception as the step's error."""
    s = json.loads(settings_path.read_text())
    res = Result(result_path)
    res.save()
    try:
        STEPS[name](s, limit, res)
    except Exception as err:
        res.status = "failed"
        res.error = f"{err.__class__.__name__}: {' '.join(str(err).split())[:500]}"
        traceback.print_exc()
    res.save()
    return 0 if res.status != "failed" else 1


def torch_device(s: dict[str, Any]) -> str:
    """``cuda`` when asked for and present, else ``cpu`` with one torch thread (as engine workers
    run; several OpenMP threads on a shared, oversubscribed CPU slow each batch down many times)."""
    import torch

    if s["device"] == "cuda" and torch.cuda.is_available():
        return "cuda"
    torch.set_num_threads(1)
    return "cpu"


# ---- env -----------------------------------------------------------------------------------------
PACKAGES = (
    "numpy",
    "scipy",
    "skimage",
    "tifffile",
    "dask",
    "distributed",
    "zarr",
    "numcodecs",
    "waterz",
    "pydantic",
    "pydantic_core",
    "tornado",
    "dask_cuda",
    "pynvml",
    "cuda.core",
    "typer",
    "rich",
    "yaml",
)


def step_env(s: dict[str, Any], limit: float, res: Result) -> None:
    """What is there: torch and the GPU, each package the pipeline needs (missing: named)."""
    import importlib

    import torch

    res["torch"] = torch.__version__
    res["torch_cuda"] = torch.version.cuda
    res["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        res["gpu_name"] = p.name
        res["gpu_count"] = torch.cuda.device_count()
        res["gpu_memory_gib"] = round(p.total_memory / 2**30, 1)
        res["capability"] = f"{p.major}.{p.minor}"
        res["multiprocessors"] = p.multi_processor_count
        res["cudnn"] = torch.backends.cudnn.version()
        res["bf16_supported"] = torch.cuda.is_bf16_supported()
    packages = {}
    for name in PACKAGES:
        try:
            mod = importlib.import_module(name)
            packages[name] = str(getattr(mod, "__version__", "present"))
        except Exception as err:
            packages[name] = f"missing: {err.__class__.__name__}: {err}"[:200]
    res["packages"] = packages
    import em_chunks

    res["em_chunks_path"] = str(Path(em_chunks.__file__).parent)
    try:
        from em_chunks.engine.cluster import visible_gpus

        res["visible_gpus_for_connect"] = (
            visible_gpus()
        )  # > 0: `emchunks predict` starts a LocalCUDACluster
    except Exception as err:
        res["visible_gpus_for_connect"] = f"{err.__class__.__name__}: {err}"
    exe = shutil.which("nvidia-smi")
    if exe:
        q = subprocess.run(
            [
                exe,
                "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            timeout=20,
        )
        res["nvidia_smi"] = (q.stdout or q.stderr).strip()
    else:
        res["nvidia_smi"] = None
    missing = [
        n
        for n, v in packages.items()
        if v.startswith("missing") and n not in ("dask_cuda", "pynvml", "cuda.core")
    ]
    if missing:
        res.status, res.error = "failed", f"packages missing: {', '.join(missing)}"


# ---- gpu_tests -----------------------------------------------------------------------------------
def step_gpu_tests(s: dict[str, Any], limit: float, res: Result) -> None:
    """``pytest -m gpu`` over the test files that use the marker; counts from the JUnit XML."""
    import xml.etree.ElementTree as ET

    files = sorted(
        str(p.relative_to(REPO))
        for p in (REPO / "tests").glob("test_*.py")
        if re.search(r"mark\.gpu\b", p.read_text())
    )
    res["files"] = files
    xml = Path(s["work"]) / "gpu_tests.xml"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-m",
        "gpu",
        "-p",
        "no:cacheprovider",
        f"--junitxml={xml}",
        "-o",
        f"timeout={int(max(30, limit - 10))}",
        *files,
    ]
    res["command"] = " ".join(cmd[1:])
    t = Clock()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=max(10, limit - 5))
    res["seconds"] = t.lap()
    res["pytest_rc"] = proc.returncode
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    res["pytest_summary"] = lines[-1] if lines else ""
    print(proc.stdout[-6000:], proc.stderr[-3000:])
    if not xml.exists():
        res.status, res.error = "failed", f"pytest wrote no JUnit XML (rc {proc.returncode})"
        return
    root = ET.parse(xml).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    cases = []
    for case in suite.iter("testcase"):
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                msg = (node.get("message") or "")[:200]
                break
        else:
            msg = ""
        cases.append(
            {
                "test": f"{case.get('classname')}::{case.get('name')}",
                "outcome": outcome,
                "seconds": float(case.get("time") or 0),
                "message": msg,
            }
        )
    counts = {
        k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "error", "skipped")
    }
    res["counts"] = counts
    res["cases"] = cases
    if counts["failed"] or counts["error"] or proc.returncode not in (0, 5):
        res.status, res.error = "failed", f"pytest -m gpu: {res['pytest_summary']}"


# ---- data: volume, labels, checkpoint ------------------------------------------------------------
def _mirror(index, n: int):
    import numpy as np

    period = 2 * n
    r = np.asarray(index) % period
    return np.where(r < n, r, period - 1 - r)


def step_data(s: dict[str, Any], limit: float, res: Result) -> None:
    """A synthetic EM block (exact labels) mirror-tiled to the volume (zarr); a checkpoint."""
    import numpy as np
    import torch
    import zarr

    from em_chunks.learn.checkpoint import save_checkpoint
    from em_chunks.learn.trainer import make_model
    from em_chunks.synthetic import make_synthetic_em

    t = Clock()
    block, shape = tuple(s["block"]), tuple(s["volume"])
    img_b, lab_b = make_synthetic_em(block, seed=0, anisotropy=s["anisotropy"])
    res["synthetic_block_s"] = t.lap()
    idx = np.ix_(*(_mirror(np.arange(n), b) for n, b in zip(shape, block)))
    for name, data in (("image", img_b), ("labels", lab_b)):
        arr = zarr.create_array(
            s[name], shape=shape, dtype=data.dtype, chunks=tuple(s["input_chunks"]), overwrite=True
        )
        step = s["input_chunks"][0]
        for z in range(0, shape[0], step):  # one slab of storage chunks in memory at a time
            zs = idx[0][z : z + step]
            arr[z : z + len(zs)] = data[(zs, idx[1], idx[2])]
        res[f"{name}_write_s"] = t.lap()
    res["volume"] = list(shape)
    res["volume_mvoxel"] = round(float(np.prod(shape)) / 1e6, 3)
    res["labels_in_block"] = int(lab_b.max())
    cfg = recipe_train(s)
    torch.manual_seed(0)
    model = make_model(cfg)
    save_checkpoint(
        s["checkpoint"],
        model,
        train_config=cfg.model_dump(mode="json"),
        offsets=[list(o) for o in cfg.data.offsets],
    )
    res["checkpoint_s"] = t.lap()
    res["model"] = {
        "architecture": cfg.model.architecture,
        "config": dict(cfg.model.config),
        "parameters": sum(p.numel() for p in model.parameters()),
        "out_channels": len(cfg.data.offsets),
        "patch": list(cfg.data.patch),
    }


def _lazy(module: str, name: str) -> Callable:
    def call(*args, **kwargs):
        mod = __import__(module)
        return getattr(mod, name)(*args, **kwargs)

    return call


STEPS: dict[str, Callable[[dict, float, Result], None]] = {
    "env": step_env,
    "gpu_tests": step_gpu_tests,
    "data": step_data,
    "kernel": _lazy("device_predict", "step_kernel"),
    "predict_engine": _lazy("device_predict", "step_predict_engine"),
    "predict_cli": _lazy("device_predict", "step_predict_cli"),
    "train": _lazy("device_train", "step_train"),
    "train_compile": _lazy("device_train", "step_train_compile"),
}
