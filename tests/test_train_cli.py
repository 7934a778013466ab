"""``emchunks train`` end to end, its one-line errors (exit 2), and the shipped workflows validate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from em_chunks.cli.main import main
from em_chunks.errors import InputError
from em_chunks.learn.config import TrainConfig, load_train_config
from em_chunks.learn.models import build_model

WORKFLOWS = sorted((Path(__file__).parent.parent / "workflows").glob("*.yaml"))


@pytest.fixture()
def vol(tmp_path):
    rng = np.random.default_rng(0)
    label = np.kron(rng.integers(1, 20, (2, 4, 4)), np.ones((8, 8, 8), np.int64)).astype(np.uint32)
    tifffile.imwrite(tmp_path / "image.tif", rng.integers(0, 255, label.shape, dtype=np.uint8))
    tifffile.imwrite(tmp_path / "labels.tif", label)
    tifffile.imwrite(tmp_path / "small.tif", label[:, :16])
    return tmp_path


def test_cli_trains_and_writes_checkpoints(vol, capsys):
    rc = main(["train", str(vol / "image.tif"), "--labels", str(vol / "labels.tif"), "--out", str(vol / "out"),
               "--iterations", "3", "--chunks", "1,2,2", "--workers", "2", "--no-progress",
               "data.patch=[8,16,16]", "model.config={widths: [4, 8]}", "data.chunk_iter=2"])
    assert rc == 0
    assert (vol / "out" / "best.pt").exists() and (vol / "out" / "metrics.json").exists()
    assert "trained 3 of 3 iterations; train loss (EMA)" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["{d}/image.tif"], "no labels"),
    (["{d}/image.tif", "--labels", "{d}/small.tif"], "differs from image"),
    (["{d}/missing.tif", "--labels", "{d}/labels.tif"], "not found"),
    (["{d}/image.tif", "--labels", "{d}/labels.tif", "--set", "train.data.patch=[0,16,16]"], "data.patch"),
    (["{d}/image.tif", "--labels", "{d}/labels.tif", "--set", "train.model.architecture=resnet"], "unknown architecture"),
    (["{d}/image.tif", "--labels", "{d}/labels.tif", "--chunks", "0,1,1"], "--chunks"),
])
def test_cli_errors_are_one_line_exit_2(vol, capsys, args, message):
    rc = main(["train", *[a.format(d=vol) for a in args], "--out", str(vol / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("error: ") and message in err and "\n" not in err


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_shipped_workflows_validate(path):
    cfg = load_train_config(path)
    assert isinstance(cfg, TrainConfig)
    model = build_model(cfg.model.architecture, in_channels=1, out_channels=len(cfg.data.offsets),
                        dims=cfg.data.dims, **cfg.model.config)
    assert all(p % m == 0 for p, m in zip(cfg.data.patch, model.size_multiple))


def test_config_refuses_typos_and_tolerates_other_sections(tmp_path):
    wf = tmp_path / "wf.yaml"
    wf.write_text("train:\n  iterations: 5\npredict: {anything: 1}\ndecode: {thresholds: [0.3]}\n")
    assert load_train_config(wf).iterations == 5
    assert load_train_config(wf, ["iterations=7"]).iterations == 7
    wf.write_text("train:\n  iteratons: 5\n")
    with pytest.raises(InputError, match="iteratons"):
        load_train_config(wf)
    assert TrainConfig.model_json_schema()["properties"]["format_version"]
