"""The GPU check's driver: runs each step in its own process, time-boxed; writes device_check.json.

Run it through ``benchmarks/device_check.sh`` (it installs the carried wheels, sets PYTHONPATH).
Each step is a separate Python process (``device_check.py --step NAME``) in its own process group,
so a step that hangs or crashes (a CUDA error, a dask worker that never starts) is killed with its
children when its time is up, and the next step still runs. The JSON is rewritten after every step,
so whatever ran is kept even if the whole command is stopped from outside.

Steps, in order (the budget is shared; a step gets at most its own limit and what is left):

=================  =============================================================================
``env``            torch/CUDA, the GPU, versions of the carried packages, ``nvidia-smi``
``gpu_tests``      ``pytest -m gpu`` over the test files with the marker (counts from JUnit XML)
``data``           synthetic EM volume (``em_chunks.synthetic``, mirror-tiled) + labels as zarr,
                   a checkpoint of the SNEMI3D recipe's RSUNet (untrained weights)
``kernel``         the inference kernel alone (no Dask): read -> infer -> blend -> write, and the
                   model's forward-only ceiling at several batch sizes
``predict_engine`` the engine's infer + blend stages on a GPU worker (dask-cuda) + CPU workers
``train``          training steps fed by the chunk-iterator loader (BatchStream), AMP, eager
``predict_cli``    ``emchunks predict`` end to end (decoding too) on the same kind of cluster
``train_compile``  as ``train`` with ``torch.compile``
=================  =============================================================================
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import device_steps  # noqa: E402  (sibling module; benchmarks/ is not a package)

SCHEMA = "emchunks-device-check/1"
#: step -> (limit in seconds on the GPU machine, whether the GPU is sampled while it runs)
PLAN = {
    "env": (45, False),
    "gpu_tests": (100, True),
    "data": (90, False),
    "kernel": (100, True),
    "predict_engine": (130, True),
    "train": (75, True),
    "predict_cli": (120, True),
    "train_compile": (120, True),
}
DRY_LIMITS = {
    "env": 60,
    "gpu_tests": 90,
    "data": 60,
    "kernel": 60,
    "predict_engine": 120,
    "train": 90,
    "predict_cli": 150,
    "train_compile": 90,
}
NEEDS = {
    "kernel": "data",
    "predict_engine": "data",
    "train": "data",
    "predict_cli": "data",
    "train_compile": "data",
}
GRACE = 15  # seconds a step may overrun its own limit before it is killed (it aims to end before)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)


class GpuSampler:
    """``nvidia-smi`` every 200 ms while a step runs: GPU utilisation and memory"""

    def __init__(self, path: Path) -> None:
        self.path, self.proc = path, None
        self.error: str | None = None

    def __enter__(self) -> "GpuSampler":
        exe = shutil.which("nvidia-smi")
        if exe is None:
            self.error = "nvidia-smi not found"
            return self
        try:
            self.fh = open(self.path, "w")
            self.proc = subprocess.Popen(
                [
                    exe,
                    "--query-gpu=utilization.gpu,memory.used",
                    "--format=csv,noheader,nounits",
                    "-lms",
                    "200",
                ],
                stdout=self.fh,
                stderr=subprocess.DEVNULL,
            )
        except OSError as err:
            self.error = f"nvidia-smi failed to start: {err}"
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.fh.close()

    def figures(self) -> dict:
        if self.proc is None:
            return {"available": False, "reason": self.error}
        util, mem = [], []
        for line in self.path.read_text().splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 2 and all(p.replace(".", "", 1).isdigit() for p in parts):
                util.append(float(parts[0]))
                mem.append(float(parts[1]))
        if not util:
            return {"available": False, "reason": "nvidia-smi printed no samples"}
        busy = [u for u in util if u > 0]
        return {
            "available": True,
            "samples": len(util),
            "interval_s": 0.2,
            "util_mean_pct": round(sum(util) / len(util), 1),
            "util_max_pct": max(util),
            "util_mean_while_busy_pct": round(sum(busy) / len(busy), 1) if busy else 0.0,
            "busy_sample_fraction": round(len(busy) / len(util), 3),
            "memory_used_max_mib": max(mem),
        }


def run_step(
    name: str, limit: float, settings_path: Path, work: Path, sample_gpu: bool, grace: float = GRACE
) -> dict:
    """One step in a fresh process group; killed (group-wide) ``grace`` s after its limit."""
    result_path = work / f"{name}.result.json"
    log_path = work / f"{name}.log"
    result_path.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--step",
        name,
        "--settings",
        str(settings_path),
        "--result",
        str(result_path),
        "--limit",
        f"{limit:.1f}",
    ]
    t0 = time.perf_counter()
    status = "ok"
    sampler = GpuSampler(work / f"{name}.nvidia-smi.csv") if sample_gpu else None
    with open(log_path, "w") as log, sampler or _Null():
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(limit + grace)
        except subprocess.TimeoutExpired:
            status = "timeout"
            _kill_group(proc)
            rc = proc.returncode
    seconds = time.perf_counter() - t0
    entry: dict = {
        "status": status,
        "seconds": round(seconds, 2),
        "limit_seconds": round(limit, 1),
        "rc": rc,
    }
    part = {}
    if result_path.exists():
        try:
            part = json.loads(result_path.read_text())
        except ValueError as err:
            part = {"error": f"unreadable result file: {err}"}
    if status == "ok" and rc != 0:
        entry["status"] = "failed"
    if part.get("status") in ("failed", "skipped", "partial") and entry["status"] == "ok":
        entry["status"] = part["status"]
    entry["figures"] = part.get("figures", {})
    entry["error"] = part.get("error")
    if entry["status"] in ("failed", "timeout") and not entry["error"]:
        entry["error"] = (
            f"exited with {rc}" if status == "ok" else f"killed after {limit + grace:.0f} s"
        )
    if entry["status"] != "ok":
        entry["log_tail"] = _tail(log_path, 3000)
    if sampler is not None:
        entry["gpu_sampled"] = sampler.figures()
    return entry


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def _kill_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(path: Path, n: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-n:]


def summary(steps: dict) -> dict:
    """The headline figures, pulled out of the steps (None where a step did not produce them)."""

    def fig(step: str, *keys):
        node = steps.get(step, {}).get("figures", {})
        for k in keys:
            if not isinstance(node, dict) or k not in node:
                return None
            node = node[k]
        return node

    return {
        "gpu": fig("env", "gpu_name"),
        "predict_engine_mvoxel_per_s": fig("predict_engine", "mvoxel_per_s"),
        "predict_engine_cluster": fig("predict_engine", "cluster"),
        "kernel_mvoxel_per_s": fig("kernel", "mvoxel_per_s"),
        "kernel_infer_mvoxel_per_s": fig("kernel", "infer", "mvoxel_per_s"),
        "model_ceiling_mvoxel_per_s": fig("kernel", "model_forward", "best_mvoxel_per_s"),
        "predict_cli_mvoxel_per_s_infer_blend": fig("predict_cli", "infer_blend_mvoxel_per_s"),
        "predict_cli_status": fig("predict_cli", "run_status"),
        "train_steps_per_s": fig("train", "steps_per_s"),
        "train_samples_per_s": fig("train", "samples_per_s"),
        "train_gpu_idle_fraction": fig("train", "gpu_idle_fraction"),
        "train_compile_samples_per_s": fig("train_compile", "samples_per_s"),
        "gpu_tests": fig("gpu_tests", "counts"),
    }


def drive(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="emchunks-device-check-"))
    work.mkdir(parents=True, exist_ok=True)
    settings = device_steps.settings(args.dry_run, work)
    settings_path = work / "settings.json"
    write_json(settings_path, settings)
    names = list(PLAN) if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in PLAN]
    if unknown:
        print(
            f"error: --only {args.only}: unknown step(s) {', '.join(unknown)}; "
            f"steps: {', '.join(PLAN)}",
            file=sys.stderr,
        )
        return 2
    report = {
        "schema": SCHEMA,
        "dry_run": bool(args.dry_run),
        "started": now(),
        "finished": None,
        "budget_seconds": args.budget,
        "wheels": args.wheels,
        "host": device_steps.host_info(),
        "settings": settings,
        "steps": {},
        "summary": {},
    }
    json_path = out / "device_check.json"
    write_json(json_path, report)
    deadline = time.perf_counter() + args.budget
    for name in names:
        left = deadline - time.perf_counter() - GRACE
        base = DRY_LIMITS[name] if args.dry_run else PLAN[name][0]
        need = NEEDS.get(name)
        if need and need in report["steps"] and report["steps"][need]["status"] != "ok":
            report["steps"][name] = {
                "status": "skipped",
                "seconds": 0.0,
                "figures": {},
                "error": f"step {need} did not succeed",
            }
        elif need and need not in report["steps"] and not (work / "data.result.json").exists():
            report["steps"][name] = {
                "status": "skipped",
                "seconds": 0.0,
                "figures": {},
                "error": f"needs step {need} (run it first or with it)",
            }
        elif left < 10:
            report["steps"][name] = {
                "status": "skipped",
                "seconds": 0.0,
                "figures": {},
                "error": f"budget spent ({args.budget} s)",
            }
        else:
            limit = min(base, left)
            print(f"[{now()}] {name}: up to {limit:.0f} s", flush=True)
            report["steps"][name] = run_step(name, limit, settings_path, work, PLAN[name][1])
            entry = report["steps"][name]
            print(
                f"[{now()}] {name}: {entry['status']} in {entry['seconds']:.1f} s"
                + (f" -- {entry['error']}" if entry.get("error") else ""),
                flush=True,
            )
        report["summary"] = summary(report["steps"])
        report["host"]["loadavg_end"] = list(os.getloadavg())
        write_json(json_path, report)
    report["finished"] = now()
    write_json(json_path, report)
    log = out / "device_check.log"
    with open(log, "w") as fh:
        for name in names:
            fh.write(f"===== {name}\n{_tail(work / f'{name}.log', 20000)}\n")
    if not args.keep_work and not args.work:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report["summary"], indent=1))
    print(f"wrote {json_path}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", help="folder for device_check.json and device_check.log")
    ap.add_argument("--dry-run", action="store_true", help="small volume, CPU, short training")
    ap.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds for all steps together (default 450 on the GPU, 420 dry)",
    )
    ap.add_argument(
        "--only", help="comma-separated steps to run (data is needed by the predict/train steps)"
    )
    ap.add_argument(
        "--work",
        help="work folder (volume, checkpoint, outputs); default: a temporary one, removed",
    )
    ap.add_argument("--keep-work", action="store_true", help="keep the temporary work folder")
    ap.add_argument("--wheels", default="not installed by device_check.sh", help=argparse.SUPPRESS)
    ap.add_argument("--step", help=argparse.SUPPRESS)
    ap.add_argument("--settings", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--limit", type=float, default=60.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.step:
        return device_steps.run_one(args.step, Path(args.settings), Path(args.result), args.limit)
    if not args.out:
        ap.error("--out DIR is required")
    if args.budget is None:
        args.budget = 420.0 if args.dry_run else 450.0
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
