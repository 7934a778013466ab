"""The GPU check (benchmarks/device_check.sh): its dry run on the CPU, its time-boxing, and the CUDA
tests it runs on a GPU machine (``-m gpu``: the engine on a LocalCUDACluster, AMP training; skipped
without CUDA)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
STEPS = [
    "env",
    "gpu_tests",
    "data",
    "kernel",
    "predict_engine",
    "train",
    "predict_cli",
    "train_compile",
]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    env["PYTHON"] = sys.executable
    return env


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("device-check")
    t0 = time.perf_counter()
    proc = subprocess.run(
        ["bash", str(BENCH / "device_check.sh"), "--dry-run", "--out", str(out)],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "device_check.json").read_text())
    data["_wall"] = time.perf_counter() - t0
    data["_out"] = out
    return data


@pytest.mark.slow
def test_dry_run_runs_every_step(dry_run):
    assert dry_run["schema"] == "emchunks-device-check/1"
    assert dry_run["dry_run"] is True and dry_run["finished"]
    assert list(dry_run["steps"]) == STEPS
    for name, step in dry_run["steps"].items():
        assert step["status"] == "ok", (name, step.get("error"), step.get("log_tail"))
        assert 0 < step["seconds"] <= step["limit_seconds"] + 15
    assert dry_run["wheels"].startswith("skipped")
    log = (dry_run["_out"] / "device_check.log").read_text()
    assert all(f"===== {name}\n" in log for name in STEPS)
    assert dry_run["host"]["cpus"] >= 1 and len(dry_run["host"]["loadavg_start"]) == 3


@pytest.mark.slow
def test_dry_run_inference_figures(dry_run):
    s = dry_run["steps"]
    vox = float(np.prod(dry_run["settings"]["volume"]))
    assert s["data"]["figures"]["volume_mvoxel"] == pytest.approx(vox / 1e6, abs=1e-3)
    k = s["kernel"]["figures"]
    assert k["device"] == "cpu" and k["spec"]["select_channel"] == [0, 1, 2]
    parts = sum(k[p]["seconds"] for p in ("read", "infer", "blend", "write"))
    assert k["seconds"] == pytest.approx(parts, abs=0.01)
    assert k["mvoxel_per_s"] == pytest.approx(vox / k["seconds"] / 1e6, rel=0.02)
    assert k["infer"]["windows"] == np.prod(k["spec"]["grid_shape"]) and k["infer"]["batches"] >= 1
    assert (
        k["affinities"]["shape"] == [3] + dry_run["settings"]["volume"]
        and k["affinities"]["dtype"] == "uint8"
    )
    assert 0 <= k["affinities"]["min"] <= k["affinities"]["mean"] <= k["affinities"]["max"] <= 255
    ceiling = k["model_forward"]
    assert set(ceiling["per_batch_size"]) == {"4", "8"} and ceiling["best_mvoxel_per_s"] > 0
    e = s["predict_engine"]["figures"]
    assert e["identical_to_kernel"] is True  # chunking never changes the answer
    assert [st["stage"] for st in e["stages"]] == ["infer", "blend"]
    assert all(st["chunks_run"] == e["chunks"] == 4 for st in e["stages"])
    assert e["cluster"]["gpu_workers"] == 1 and "declared by hand" in e["cluster"]["kind"]
    infer = e["tasks"]["stages"]["infer"]
    assert infer["tasks"] == 4 and infer["compute_s"] >= infer["first_task_s"] > 0
    assert infer["other_tasks_median_s"] <= infer["other_tasks_max_s"]
    assert 0 < e["mvoxel_per_s"] and e["partials_gib_on_disk"] > 0
    c = s["predict_cli"]["figures"]
    assert c["rc"] == 0 and c["run_status"] == "complete"
    assert {"infer", "blend", "fragments", "links", "region-graph", "segmentation"} <= set(
        c["stage_done_s"]
    )
    assert c["infer_blend_mvoxel_per_s"] > 0 and "--scheduler ADDRESS" in c["command"]
    assert s["env"]["figures"]["torch"] == torch.__version__
    assert s["env"]["figures"]["packages"]["zarr"][0].isdigit()


@pytest.mark.slow
def test_dry_run_training_and_gpu_test_figures(dry_run):
    s = dry_run["steps"]
    for name, compiled in (("train", False), ("train_compile", True)):
        t = s[name]["figures"]
        assert t["compiled"] is compiled and t["device"] == "cpu" and t["amp"] is False
        assert t["steps"] >= 1 and 0 <= t["gpu_idle_fraction"] <= 1
        assert t["samples_per_s"] == pytest.approx(t["steps_per_s"] * t["batch_size"], rel=0.01)
        assert t["loader"]["batches"] >= t["steps"] + t["warmup_steps"] - 1
        assert t["model_only"]["steps_per_s"] > 0
        assert all(np.isfinite(t["loss_first_last"]))
    assert s["train_compile"]["figures"]["compile_backend"] == "eager"
    g = s["gpu_tests"]["figures"]
    assert (
        "tests/test_device_check.py" in g["files"]
        and "tests/test_inference_models.py" in g["files"]
    )
    assert g["counts"]["failed"] == g["counts"]["error"] == 0
    if not torch.cuda.is_available():
        assert g["counts"]["skipped"] == len(g["cases"]) >= 3
    summary = dry_run["summary"]
    assert summary["kernel_mvoxel_per_s"] == s["kernel"]["figures"]["mvoxel_per_s"]
    assert summary["train_samples_per_s"] == s["train"]["figures"]["samples_per_s"]


def test_bad_arguments_exit_2(tmp_path):
    env = _env()
    proc = subprocess.run(
        ["bash", str(BENCH / "device_check.sh"), "--dry-run"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "--out" in proc.stderr
    proc = subprocess.run(
        [
            "bash",
            str(BENCH / "device_check.sh"),
            "--dry-run",
            "--out",
            str(tmp_path),
            "--only",
            "env,bogus",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "bogus" in proc.stderr
    assert not (tmp_path / "device_check.json").exists()


def test_out_variable_wins_and_missing_data_skips(tmp_path):
    """$OUT (set on the device machine) takes precedence over --out; a step whose input was never
    made is recorded as skipped, not run."""
    env = {**_env(), "OUT": str(tmp_path / "from-env")}
    proc = subprocess.run(
        [
            "bash",
            str(BENCH / "device_check.sh"),
            "--dry-run",
            "--out",
            str(tmp_path / "arg"),
            "--only",
            "kernel",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "from-env" / "device_check.json").read_text())
    assert not (tmp_path / "arg").exists()
    assert (
        data["steps"]["kernel"]["status"] == "skipped"
        and "data" in data["steps"]["kernel"]["error"]
    )


def test_a_step_past_its_limit_is_killed_with_its_children(tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        import device_check
        import device_steps
    finally:
        sys.path.remove(str(BENCH))
    settings = device_steps.settings(True, tmp_path)
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings))
    (tmp_path / "image.zarr").mkdir()  # not a volume: the step would fail, but it is stopped first
    t0 = time.perf_counter()
    entry = device_check.run_step("train", 0.1, path, tmp_path, sample_gpu=True, grace=1.0)
    assert time.perf_counter() - t0 < 10
    assert entry["status"] == "timeout" and "killed after" in entry["error"]
    assert entry["gpu_sampled"]["available"] is (entry["gpu_sampled"].get("samples") is not None)


def test_a_stopped_cli_run_keeps_the_stages_it_finished(tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        import device_predict
        import device_steps
    finally:
        sys.path.remove(str(BENCH))
    res = device_steps.Result(tmp_path / "r.json")
    err = "dashboard: x\ninfer: 32 chunk(s) to run\ninfer: done in 12.5 s\nblend: done in 14.0 s\n"
    device_predict._record_cli(res, tmp_path / "none.zarr", 100 * 10**6, "", err, None, 60.0)
    assert res.status == "partial" and "blend" in res.error
    assert res["stage_done_s"] == {"infer": 12.5, "blend": 14.0}
    # the runner's current stage lines (span, busy, and the time since submission the figure is)
    line = "links: 8 chunk(s) in 0.3 s (first start to last end), 0.6 s busy on the workers; done 11.2 s after submission"
    assert device_predict.STAGE_LINE.match(line)["s"] == "11.2"
    assert res["infer_blend_mvoxel_per_s"] == pytest.approx(100 / 14.0, rel=1e-3)
    assert "mvoxel_per_s" not in res.figures and res["run_status"].startswith("no run.json")


# ---- CUDA tests: run by the GPU check (pytest -m gpu), skipped without a CUDA device -------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _tiny_checkpoint(tmp_path: Path, shape=(24, 96, 96)) -> tuple[Path, Path, Path]:
    import zarr

    from em_chunks.learn.checkpoint import save_checkpoint
    from em_chunks.learn.models import build_model
    from em_chunks.synthetic import make_synthetic_em

    img, lab = make_synthetic_em(shape, seed=1, anisotropy=3.0)
    paths = []
    for name, data in (("image", img), ("labels", lab)):
        arr = zarr.create_array(
            str(tmp_path / f"{name}.zarr"), shape=data.shape, dtype=data.dtype, chunks=(8, 48, 48)
        )
        arr[...] = data
        paths.append(tmp_path / f"{name}.zarr")
    torch.manual_seed(0)
    model = build_model("rsunet", widths=[8, 12], pooling=[1, 2, 2], out_channels=3)
    ckpt = save_checkpoint(
        tmp_path / "model.pt", model, train_config={"data": {"patch": [8, 48, 48]}}
    )
    return paths[0], paths[1], ckpt


@pytest.mark.gpu
@cuda
def test_cuda_predict_on_local_cuda_cluster_is_chunk_invariant(tmp_path):
    """`predict` on the cluster connect() starts when GPUs are visible (a LocalCUDACluster):
    inference runs on the GPU worker with bf16 autocast; affinities do not depend on chunking."""
    import zarr

    pytest.importorskip("dask_cuda")
    from em_chunks.api.predict import predict
    from em_chunks.engine.cluster import connect, gpu_workers, visible_gpus

    image, labels, ckpt = _tiny_checkpoint(tmp_path)
    assert visible_gpus() >= 1
    sets = ["predict.device=cuda", "predict.amp=true", "predict.preview=false"]
    with connect(workers=1, dashboard=None) as client:
        assert gpu_workers(client) >= 1
        outs = []
        for chunks in ("1,1,1", "2,2,2"):
            out = tmp_path / f"pred-{chunks.replace(',', '')}.zarr"
            metrics = predict(
                image,
                ckpt,
                out,
                chunks,
                None,
                labels,
                overrides=sets,
                client=client,
                progress=False,
            )
            assert (
                0.0 <= metrics["adapted_rand_error"] <= 1.0
            )  # evaluated against the synthetic labels
            outs.append(np.asarray(zarr.open_array(f"{out}/affinities/0", mode="r")[...]))
            run = json.loads((out / "run.json").read_text())
            assert run["status"] == "complete" and run["stages"][0]["stage"] == "infer"
    np.testing.assert_array_equal(outs[0], outs[1])
    assert 0.0 <= outs[0].min() and outs[0].max() <= 1.0 and outs[0].std() > 0


@pytest.mark.gpu
@cuda
def test_cuda_training_with_amp_writes_a_loadable_checkpoint(tmp_path):
    from em_chunks.learn.checkpoint import load_checkpoint
    from em_chunks.learn.config import TrainConfig
    from em_chunks.learn.trainer import train

    image, labels, _ = _tiny_checkpoint(tmp_path)
    cfg = TrainConfig.model_validate(
        {
            "iterations": 4,
            "checkpoint_every": 4,
            "log_every": 1,
            "amp": True,
            "compile": False,
            "device": "cuda",
            "model": {
                "architecture": "rsunet",
                "config": {"widths": [8, 12], "pooling": [1, 2, 2]},
            },
            "data": {
                "volumes": [{"image": str(image), "label": str(labels)}],
                "patch": [8, 48, 48],
                "batch_size": 2,
                "chunk_iter": 8,
            },
            "augment": {
                "flip": {"p": 1.0, "isotropic": False},
                "elastic": {"p": 0.5, "alpha": 8, "sigma": 4},
            },
        }
    )
    metrics = train(cfg, tmp_path / "run", client=None, progress=False, log=lambda _: None)
    assert metrics["device"].startswith("cuda") and metrics["amp"] is True
    assert len(metrics["loss"]) == 4 and all(np.isfinite(v) for _, v in metrics["loss"])
    model, info = load_checkpoint(tmp_path / "run" / "last.pt")
    assert info["iteration"] == 4
    assert all(torch.isfinite(p).all() for p in model.parameters())
