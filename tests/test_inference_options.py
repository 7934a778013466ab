"""Where the inference options live: one frozen options object built once from PredictConfig, a window
grid that is pure geometry (the client plans windows without torch), and no demo sentinel in predict()."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from em_chunks.config.inference import WINDOW_FIELDS, InferenceOptions, sliding_window
from em_chunks.config.predict import PredictConfig
from em_chunks.errors import InputError

ROOT = Path(__file__).resolve().parents[1]

#: PredictConfig fields that are not inference options (paths, the chunk grid, an extra output)
NOT_OPTIONS = {"input", "labels", "checkpoint", "chunks", "preview"}
#: InferenceOptions fields the checkpoint decides (api.predict.inference_spec), not the workflow
FROM_CHECKPOINT = {"offsets"}


def test_every_predict_field_has_one_home():
    """Each PredictConfig field is either a window-grid field or an InferenceOptions field (or a named
    non-option): none is silently dropped between the config and the runner, none lives twice."""
    options = {f.name for f in dataclasses.fields(InferenceOptions)}
    fields = set(PredictConfig.model_fields)
    assert not options & set(WINDOW_FIELDS)
    assert fields - NOT_OPTIONS == (options - FROM_CHECKPOINT) | set(WINDOW_FIELDS)


def test_options_are_copied_by_name_once():
    cfg = PredictConfig(tta="xy", select_channel=[2, 0], activation="none", output_dtype="uint8", amp=False,
                        device="cpu", torch_threads=2, pad=(1, 4, 4), crop=(1, 2, 2), overlap=(2, 8, 8),
                        blending="bump", sw_batch_size=2, boundary="reflect")
    opts = InferenceOptions.from_config(cfg, offsets=[[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    assert opts == InferenceOptions(device="cpu", amp=False, tta="xy", offsets=((1, 0, 0), (0, 1, 0), (0, 0, 1)),
                                    select_channel=(2, 0), activation="none", output_dtype="uint8", torch_threads=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.tta = "none"  # type: ignore[misc]
    sw = sliding_window(cfg, (20, 64, 64), window=(8, 32, 32))
    assert (sw.window, sw.pad, sw.crop, sw.overlap, sw.blending, sw.sw_batch_size, sw.boundary) == (
        (8, 32, 32), (1, 4, 4), (1, 2, 2), (2, 8, 8), "bump", 2, "reflect")


PLAN = """
import sys
from em_chunks.api.predict import inference_spec
from em_chunks.config.predict import PredictConfig
from em_chunks.engine.predict import chunks_reading
from em_chunks.geometry import ChunkGrid
cfg = PredictConfig(pad=(2, 8, 8), sw_batch_size=2)
info = {"train_config": {"data": {"patch": [8, 32, 32]}}, "model_config": {"out_channels": 3, "dims": 3}}
spec = inference_spec(cfg, "model.pt", info, (20, 96, 96))
grid = ChunkGrid((20, 96, 96), (2, 2, 2))
boxes = {c.id: spec.sw.partial_box(c.core) for c in grid}
readers = chunks_reading(grid, boxes)
windows = sum(len(spec.sw.owned_windows(c.core)) for c in grid)
print(windows, len(readers), sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""


def test_planning_windows_does_not_import_torch():
    """The client resolves the spec, plans every chunk's windows and the partial-sum readers: no torch."""
    import numpy as np

    proc = subprocess.run([sys.executable, "-c", PLAN], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    windows, readers, torch_modules = proc.stdout.strip().split(" ", 2)
    assert torch_modules == "[]", proc.stdout
    # the plan is real: every window of the grid is owned by exactly one chunk
    from em_chunks.geometry.window import SlidingWindow

    sw = SlidingWindow((20, 96, 96), (8, 32, 32), pad=(2, 8, 8), sw_batch_size=2)
    assert int(windows) == int(np.prod(sw.grid_shape)) and int(readers) == 8


def test_predict_refuses_the_demo_sentinel_with_a_hint(tmp_path):
    from em_chunks.api.predict import predict

    with pytest.raises(InputError, match="'demo' is not a path.*demo_paths"):
        predict("demo", "demo", tmp_path / "out.zarr", "1,1,1", "demo", progress=False)


def test_demo_paths_resolve_in_the_demo_layer(tmp_path):
    """The CLI's resolution: 'demo' names the demo's assets (made on first use), real paths pass through."""
    from em_chunks.api.demo import demo_paths, make_demo_data

    tiles = make_demo_data(tmp_path, shape=(4, 64, 64))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "best.pt").write_bytes(b"")  # present: nothing is trained
    paths = demo_paths("demo", "demo", "demo", None, "1,2,2", root=tmp_path, progress=False)
    assert (paths.input, paths.checkpoint, paths.labels) == (str(tiles), str(tmp_path / "model" / "best.pt"), str(tiles))
    assert paths.out == tmp_path / "predict-1-2-2.zarr"
    real = demo_paths("a.json", "m.pt", None, "o.zarr", "1,1,1", root=tmp_path / "never")
    assert (real.input, real.checkpoint, real.labels, real.out) == ("a.json", "m.pt", None, Path("o.zarr"))
    assert not (tmp_path / "never").exists()


def test_api_predict_does_not_import_api_demo():
    """No circle: demo -> predict only (the import-linter contract checks the whole package the same way)."""
    import ast

    tree = ast.parse((ROOT / "em_chunks" / "api" / "predict.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "em_chunks.api.demo" not in imported


def test_one_progress_display_beats_without_a_terminal():
    """The stage runner and training share em_chunks.progress: no bar without a terminal, and the summary
    line comes from the timer, so a run that has not finished anything still reports."""
    import time

    from em_chunks.progress import ProgressDisplay

    beats = []
    display = ProgressDisplay(True, lambda: (), lambda: beats.append(time.monotonic()), 0.05, "test-progress")
    time.sleep(0.4)
    display.close()
    n = len(beats)
    time.sleep(0.15)
    assert display.bar is None and display.add_task("x") is None  # pytest's stderr is not a terminal
    assert n >= 3 and len(beats) == n  # beats while open, none after close
