"""Bad input across every command: one line naming what is wrong, exit code 2, no traceback, and
nothing written that could be mistaken for a result."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from em_chunks.cli.main import main
from em_chunks.io.tileset import TileSet
from em_chunks.io.tileset_make import make_tileset
from em_chunks.learn.checkpoint import save_checkpoint
from em_chunks.learn.models import build_model
from em_chunks.synthetic import make_synthetic_em, synthetic_affinities


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    image, labels = make_synthetic_em((8, 48, 48), seed=1)
    f: dict[str, Path] = {"dir": d}
    f["tiles"] = make_tileset(image, d / "tiles", labels=labels, tile_size=24)
    ts = TileSet.from_json(f["tiles"])
    # variants of the tile JSON
    good = json.loads(f["tiles"].read_text())
    for name, mutate in {
        "malformed": lambda t: t.write_text("{ not json"),
        "missing_key": lambda t: t.write_text(json.dumps({k: v for k, v in good.items() if k != "height"})),
        "wrong_type": lambda t: t.write_text(json.dumps({**good, "tile_size": "big"})),
    }.items():
        p = d / "tiles" / f"{name}.json"
        mutate(p)
        f[name] = p
    # a copy of the grid with one tile missing and one with a truncated tile
    for name in ("missing_tile", "truncated_tile"):
        sub = make_tileset(image, d / name, labels=labels, tile_size=24)
        tile = Path(TileSet.from_json(sub).tile_path("image", 3, 1, 0))
        if name == "missing_tile":
            tile.unlink()
        else:
            tile.write_bytes(tile.read_bytes()[:40])
        f[name] = sub
    f["fib_quick"] = Path(__file__).resolve().parents[1] / "workflows" / "fib-quick.yaml"
    f["image_only"] = make_tileset(image, d / "image_only", tile_size=24)  # no label layer
    zarr.save_array(str(d / "img.zarr"), image, zarr_format=3)
    zarr.save_array(str(d / "gt_float.zarr"), labels.astype(np.float32), zarr_format=3)
    zarr.save_array(str(d / "gt_float64.zarr"), labels.astype(np.float64), zarr_format=3)
    f["img"], f["gt_float"], f["gt_float64"] = d / "img.zarr", d / "gt_float.zarr", d / "gt_float64.zarr"
    import tifffile

    tifffile.imwrite(d / "gt_float.tif", labels.astype(np.float32))
    f["gt_float_tif"] = d / "gt_float.tif"
    affs = synthetic_affinities(labels).astype(np.float32)
    zarr.save_array(str(d / "affs.zarr"), affs, zarr_format=3)
    zarr.save_array(str(d / "gt.zarr"), labels.astype(np.uint32), zarr_format=3)
    zarr.save_array(str(d / "gt_small.zarr"), labels[:-1].astype(np.uint32), zarr_format=3)
    f["affs"], f["gt"], f["gt_small"] = d / "affs.zarr", d / "gt.zarr", d / "gt_small.zarr"
    torch.manual_seed(0)
    f["ckpt"] = save_checkpoint(d / "m.pt", build_model("unet", widths=(4, 8)), train_config={"data": {"patch": [4, 24, 24]}})
    f["not_ckpt"] = d / "not.pt"
    f["not_ckpt"].write_bytes(b"\x00" * 64)
    other = torch.load(f["ckpt"], weights_only=True)
    other["architecture"] = "vision-transformer-9000"
    f["other_arch"] = d / "other.pt"
    torch.save(other, f["other_arch"])
    bad = torch.load(f["ckpt"], weights_only=True)
    bad["decoder"] = {"decode": {"merge_function": "bogus_his9", "thresholds": [0.2]}}
    f["bad_decoder"] = d / "bad-decoder.pt"
    torch.save(bad, f["bad_decoder"])
    return f


OUT = "{dir}/out-{case}"

CASES = {
    # name: (argv template, what the message must say)
    "predict-malformed-json": (["predict", "{malformed}", "--checkpoint", "{ckpt}", "--out", OUT], "malformed.json"),
    "predict-missing-key": (["predict", "{missing_key}", "--checkpoint", "{ckpt}", "--out", OUT], "height"),
    "predict-wrong-type": (["predict", "{wrong_type}", "--checkpoint", "{ckpt}", "--out", OUT], "tile_size"),
    "predict-missing-tile": (["predict", "{missing_tile}", "--checkpoint", "{ckpt}", "--out", OUT], "not found"),
    "predict-truncated-tile": (["predict", "{truncated_tile}", "--checkpoint", "{ckpt}", "--out", OUT], "3/"),
    "predict-chunks-zero": (["predict", "{tiles}", "--checkpoint", "{ckpt}", "--chunks", "0,1,1", "--out", OUT], "--chunks"),
    "predict-chunks-letters": (["predict", "{tiles}", "--checkpoint", "{ckpt}", "--chunks", "a,b,c", "--out", OUT], "--chunks"),
    "predict-chunks-two-axes": (["predict", "{tiles}", "--checkpoint", "{ckpt}", "--chunks", "2,2", "--out", OUT], "--chunks"),
    "predict-chunks-too-many": (["predict", "{tiles}", "--checkpoint", "{ckpt}", "--chunks", "9,1,1", "--out", OUT], "only 8 voxels"),
    "predict-missing-input": (["predict", "{dir}/nope.json", "--checkpoint", "{ckpt}", "--out", OUT], "nope.json"),
    "predict-missing-checkpoint": (["predict", "{tiles}", "--checkpoint", "{dir}/nope.pt", "--out", OUT], "nope.pt"),
    "predict-not-a-checkpoint": (["predict", "{tiles}", "--checkpoint", "{not_ckpt}", "--out", OUT], "not.pt"),
    "predict-bad-tuned-decoder": (["predict", "{tiles}", "--checkpoint", "{bad_decoder}", "--out", OUT], "tuned decoder"),
    "predict-other-architecture": (["predict", "{tiles}", "--checkpoint", "{other_arch}", "--out", OUT], "vision-transformer-9000"),
    "predict-labels-shape": (["predict", "{tiles}", "--checkpoint", "{ckpt}", "--labels", "{gt_small}", "--out", OUT], "shape"),
    "decode-no-channel-axis": (["decode", "{gt}", "--out", OUT], "channel axis"),
    "decode-chunks-zero": (["decode", "{affs}", "--chunks", "0,1,1", "--out", OUT], "--chunks"),
    "decode-chunks-too-many": (["decode", "{affs}", "--chunks", "1,1,49", "--out", OUT], "only 48 voxels"),
    "decode-labels-shape": (["decode", "{affs}", "--labels", "{gt_small}", "--out", OUT], "shape"),
    "decode-missing-input": (["decode", "{dir}/nope.zarr", "--out", OUT], "nope.zarr"),
    "decode-bad-override": (["decode", "{affs}", "--out", OUT, "--set", "decode.merge_function=aff99_nonsense"], "--set decode.merge_function"),
    "evaluate-shape": (["evaluate", "{gt}", "--labels", "{gt_small}"], "shape"),
    "evaluate-missing": (["evaluate", "{dir}/nope.zarr", "--labels", "{gt}"], "nope.zarr"),
    "tune-missing-labels": (["tune", "{affs}", "--labels", "{dir}/nope.tif", "--out", OUT], "nope.tif"),
    "tune-chunks": (["tune", "{affs}", "--labels", "{gt}", "--chunks", "2,4", "--out", OUT], "--chunks"),
    "train-malformed-json": (["train", "{malformed}", "--out", OUT], "malformed.json"),
    "train-missing-labels": (["train", "{affs}", "--out", OUT], "label"),
    "train-shape-mismatch": (["train", "{tiles}", "--labels", "{gt_small}", "--out", OUT], "shape"),
    "train-chunks": (["train", "{tiles}", "--chunks", "a,b,c", "--out", OUT], "--chunks"),
    "tileset-info-missing-key": (["tileset", "info", "{missing_key}"], "height"),
    "tileset-make-missing-volume": (["tileset", "make", "{dir}/nope.tif", OUT], "nope.tif"),
    # labels that are not segment ids: float dtypes, a tile JSON without a label layer (issue 15)
    "evaluate-float32-labels": (["evaluate", "{gt}", "--labels", "{gt_float}"], "float32"),
    "evaluate-float64-labels-tiff": (["evaluate", "{gt}", "--labels", "{gt_float_tif}"], "float32"),
    "evaluate-float-segmentation": (["evaluate", "{gt_float64}", "--labels", "{gt}"], "float64"),
    "evaluate-image-only-tiles": (["evaluate", "{gt}", "--labels", "{image_only}"], "no label layer"),
    "decode-float-labels": (["decode", "{affs}", "--labels", "{gt_float}", "--out", OUT], "float32"),
    "decode-image-only-labels": (["decode", "{affs}", "--labels", "{image_only}", "--out", OUT], "no label layer"),
    "predict-image-only-labels": (["predict", "{tiles}", "--checkpoint", "{ckpt}", "--labels", "{image_only}", "--out", OUT], "no label layer"),
    "tune-float-labels": (["tune", "{affs}", "--labels", "{gt_float}", "--out", OUT], "float32"),
    "train-float-labels": (["train", "{tiles}", "--labels", "{gt_float}", "--out", OUT], "float32"),
    "train-image-only-labels": (["train", "{tiles}", "--labels", "{image_only}", "--out", OUT], "no label layer"),
    "train-image-only-valid-mask": (["train", "{tiles}", "--valid-mask", "{image_only}", "--out", OUT], "no valid_mask layer"),
    "train-missing-tile": (["train", "{missing_tile}", "--out", OUT], "not found"),
    # tile grids asked of what is not there
    "tileset-make-crop-beyond-y": (["tileset", "make", "{img}", OUT, "--crop", "0:4,0:100,0:10"], "axis y range 0:100 is outside the volume of shape (8, 48, 48)"),
    "tileset-make-crop-beyond-z": (["tileset", "make", "{img}", OUT, "--crop", "2:9,:,:"], "axis z"),
    "tileset-make-crop-negative": (["tileset", "make", "{img}", OUT, "--crop", "0:4,-8:48,0:10"], "axis y"),
    "tileset-make-crop-empty": (["tileset", "make", "{img}", OUT, "--crop", "3:3,:,:"], "selects nothing"),
    "tileset-make-out-is-a-file": (["tileset", "make", "{img}", "{tiles}"], "exists and is not a folder"),
    # a --scheduler nobody answers at: refused at once, before the output is claimed
    "decode-scheduler-refused": (["decode", "{affs}", "--out", OUT, "--scheduler", "tcp://127.0.0.1:1"], "connection refused"),
    "decode-scheduler-no-port": (["decode", "{affs}", "--out", OUT, "--scheduler", "localhost"], "not a scheduler address"),
    "decode-scheduler-dashboard-url": (["decode", "{affs}", "--out", OUT, "--scheduler", "http://127.0.0.1:1"], "web address"),
    "decode-scheduler-unknown-host": (["decode", "{affs}", "--out", OUT, "--scheduler", "tcp://no-such-host.invalid:8786"], "unknown host"),
    "predict-scheduler-refused": (["predict", "{tiles}", "--checkpoint", "{ckpt}", "--out", OUT, "--scheduler", "tcp://127.0.0.1:1"], "--scheduler"),
    "evaluate-scheduler-refused": (["evaluate", "{gt}", "--labels", "{gt}", "--scheduler", "tcp://127.0.0.1:1"], "--scheduler"),
    "tune-scheduler-refused": (["tune", "{affs}", "--labels", "{gt}", "--out", OUT, "--scheduler", "tcp://127.0.0.1:1"], "--scheduler"),
    "train-scheduler-refused": (["train", "{tiles}", "--out", OUT, "--scheduler", "tcp://127.0.0.1:1"], "--scheduler"),
    # a bad override names the override, not the workflow file it did not come from
    "train-negative-iterations": (["train", "{tiles}", "--out", OUT, "--config", "{fib_quick}", "--set", "train.iterations=-5"], "--set train.iterations=-5"),
    "train-bad-nested-override": (["train", "{tiles}", "--out", OUT, "--set", "train.optimizer.lr=-1"], "--set train.optimizer.lr=-1"),
    "train-override-empty-key": (["train", "{tiles}", "--out", OUT, "--set", "=3"], "expected key=value"),
    "decode-threshold-flag": (["decode", "{affs}", "--out", OUT, "--threshold", "7"], "--threshold 7"),
    "predict-bad-set": (["predict", "{tiles}", "--checkpoint", "{ckpt}", "--out", OUT, "--set", "predict.tta=bogus"], "predict.tta=bogus"),
    # a training configuration that cannot yield a batch is refused before training
    "train-rejection-impossible": (["train", "{tiles}", "--out", OUT, "--set", "train.data.patch=[4,16,16]",
                                    "--set", "train.data.rejection.size_thres=5000", "--set", "train.data.rejection.p=1"], "size_thres"),
    "train-negative-erosion": (["train", "{tiles}", "--out", OUT, "--set", "train.data.label_erosion=-1"], "label_erosion"),
    "train-resume-nothing": (["train", "{tiles}", "--out", OUT, "--resume"], "no last.pt"),
    "train-resume-and-overwrite": (["train", "{tiles}", "--out", OUT, "--resume", "--overwrite"], "choose one"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_2_with_one_line(case, files, capsys):
    argv, needle = CASES[case]
    names = {k: str(v) for k, v in files.items()}
    args = [a.format(**names, case=case) for a in argv]
    before = sorted(p.name for p in files["dir"].iterdir())
    capsys.readouterr()
    t0 = time.perf_counter()
    code = main(args)
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert code == 2, (case, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), (case, err)
    assert needle in lines[0], (case, lines[0])
    assert "Traceback" not in err
    assert not Path(OUT.format(dir=files["dir"], case=case)).exists(), "something was written"
    assert sorted(p.name for p in files["dir"].iterdir()) == before, "something was written"
    if "scheduler" in case:  # refused at once, not after a connection timeout
        assert seconds < 5, (case, seconds)
