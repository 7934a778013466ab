"""predict on a real LocalCluster: bit-identical affinities for any chunk grid, the CLI from a tile JSON to
metrics, resume, and clear refusals (checkpoint, chunks, channels)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import zarr

from _ngff import reader_nodes, validate_output
from conftest import same_partition
from em_chunks.api.predict import predict
from em_chunks.api.workflow import Workflow
from em_chunks.cli.main import main
from em_chunks.io.tileset_make import make_tileset
from em_chunks.learn.checkpoint import save_checkpoint
from em_chunks.learn.models import build_model
from em_chunks.synthetic import make_synthetic_em
from em_chunks.io import layout

GRIDS = ["1,1,1", "2,4,4", "3,2,5"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("predict")
    image, labels = make_synthetic_em((20, 64, 64), seed=7)
    tiles = make_tileset(image, d / "tiles", labels=labels, tile_size=32)
    torch.manual_seed(0)
    model = build_model("unet", in_channels=1, out_channels=3, widths=(4, 8))
    ckpt = save_checkpoint(d / "model.pt", model, train_config={"data": {"patch": [8, 32, 32]}},
                           offsets=[[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    return d, tiles, ckpt, image, labels


def _affs(out):
    return zarr.open_array(layout.image_array(out), mode="r")[:]


def test_affinities_bit_identical_across_grids(setup, cluster_client, tmp_path):
    d, tiles, ckpt, _, _ = setup
    wf = Workflow.model_validate({"predict": {"overlap": [4, 16, 16]}, "decode": {"thresholds": [0.5]}})
    affs, segs = {}, {}
    for grid in GRIDS:
        out = tmp_path / f"{grid}.zarr"
        predict(tiles, ckpt, out, grid, wf, client=cluster_client, progress=False)
        affs[grid] = _affs(out)
        segs[grid] = zarr.open_array(layout.segmentation_array(out), mode="r")[:]
    assert affs["1,1,1"].shape == (3, 20, 64, 64) and affs["1,1,1"].dtype == np.float32
    assert affs["1,1,1"].std() > 0  # the model produced something
    for grid in GRIDS[1:]:
        assert np.array_equal(affs[grid], affs["1,1,1"]), grid
        assert same_partition(segs[grid], segs["1,1,1"]), grid


def test_uint8_affinities_within_one_step(setup, cluster_client, tmp_path):
    d, tiles, ckpt, _, _ = setup
    f = tmp_path / "f.zarr"
    q = tmp_path / "q.zarr"
    predict(tiles, ckpt, f, "1,2,2", None, client=cluster_client, progress=False)
    predict(tiles, ckpt, q, "2,1,2", Workflow.model_validate({"predict": {"output_dtype": "uint8"}}), client=cluster_client, progress=False)
    a, b = _affs(f), _affs(q)
    assert b.dtype == np.uint8
    assert np.abs(b.astype(np.float64) / 255 - a).max() <= 1 / 255 + 1e-7


def test_cli_from_tile_json_to_metrics_and_resume(setup, tmp_path, capsys):
    d, tiles, ckpt, image, labels = setup
    out = tmp_path / "run.zarr"
    args = ["predict", str(tiles), "--checkpoint", str(ckpt), "--chunks", "2,2,2", "--out", str(out), "--labels", str(tiles), "--workers", "2"]
    assert main(args) == 0
    metrics = json.loads(layout.metrics_json(out).read_text())
    for key in ("adapted_rand_error", "voi_split", "voi_merge"):
        assert key in metrics and np.isfinite(metrics[key])
    assert layout.preview_png(out).stat().st_size > 0
    record = json.loads(layout.run_json(out).read_text())
    assert [s["stage"] for s in record["stages"]][:2] == ["infer", "blend"]
    root = zarr.open_group(str(out), mode="r")
    assert root["labels"].attrs["ome"]["labels"] == ["segmentation"]
    assert root.attrs["ome"]["multiscales"][0]["axes"][0]["name"] == "c"
    # the printed path opens in one go: affinities and their segmentation label (napari's reader)
    assert f"outputs: {out}" in capsys.readouterr().out
    nodes = reader_nodes(out)
    assert [k for k, _, _ in nodes] == [["Multiscales"], ["Labels"], ["Label", "Multiscales"]]
    assert nodes[0][1] == [(3,) + labels.shape] and nodes[2][1] == [labels.shape]
    validate_output(out)
    before = _affs(out)
    capsys.readouterr()
    saved = layout.run_json(out).read_bytes()
    assert main(args) == 0  # a rerun of a complete run reports it and leaves it alone
    assert "already complete with this configuration" in capsys.readouterr().err
    assert layout.run_json(out).read_bytes() == saved
    # a complete run removed its intermediates; one no longer recognised as complete cannot resume
    # from markers whose data is gone: it starts over, and ends with the same affinities
    assert not layout.work_group(out).exists()
    layout.run_json(out).write_text(json.dumps({**record, "status": "interrupted"}))
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "intermediates were removed after an earlier run; computing anew" in err
    assert "infer: 8 chunk(s) to run" in err
    assert np.array_equal(_affs(out), before)


def _run(args, capsys):
    capsys.readouterr()
    code = main(args)
    return code, capsys.readouterr().err


def test_refusals_exit_2(setup, tmp_path, capsys):
    d, tiles, ckpt, _, _ = setup
    out = tmp_path / "o.zarr"
    base = ["predict", str(tiles), "--out", str(out)]
    code, err = _run(base + ["--checkpoint", str(tmp_path / "missing.pt")], capsys)
    assert code == 2 and "missing.pt" in err and "not found" in err
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    code, err = _run(base + ["--checkpoint", str(foreign)], capsys)
    assert code == 2 and "not an emchunks checkpoint" in err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    code, err = _run(base + ["--checkpoint", str(junk)], capsys)
    assert code == 2 and "junk.pt" in err
    code, err = _run(base + ["--checkpoint", str(ckpt), "--chunks", "21,1,1"], capsys)
    assert code == 2 and "only 20 voxels" in err
    two = build_model("unet", in_channels=2, out_channels=3, widths=(4, 8))
    ck2 = save_checkpoint(tmp_path / "two.pt", two, train_config={"data": {"patch": [8, 32, 32]}})
    code, err = _run(base + ["--checkpoint", str(ck2)], capsys)
    assert code == 2 and "2 input channels" in err
    for e in (err,):
        assert "Traceback" not in e and len(e.strip().splitlines()) == 1
    assert not out.exists()
