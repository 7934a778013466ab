"""A short real training run on a tiny synthetic volume: the loss goes down; checkpoints, resume, best-k."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch

from em_chunks.errors import InputError
from em_chunks.learn.checkpoint import load_checkpoint
from em_chunks.learn.config import load_train_config
from em_chunks.learn.trainer import train


def synthetic(tmp_path, shape=(16, 48, 48), seed=0):
    """Cells of 8 voxels with dark membranes between them: an easy affinity problem."""
    rng = np.random.default_rng(seed)
    cells = rng.permutation(np.arange(1, 1 + np.prod([-(-s // 8) for s in shape]))).reshape([-(-s // 8) for s in shape])
    label = np.kron(cells, np.ones((8, 8, 8), np.int64))[tuple(slice(0, s) for s in shape)].astype(np.uint32)
    edge = np.zeros(shape, bool)
    for ax in range(3):
        edge |= np.diff(label, axis=ax, prepend=label.take([0], axis=ax)) != 0
    image = np.where(edge, 40, 200) + rng.normal(0, 15, shape)
    tifffile.imwrite(tmp_path / "image.tif", np.clip(image, 0, 255).astype(np.uint8))
    tifffile.imwrite(tmp_path / "labels.tif", label)
    return str(tmp_path / "image.tif"), str(tmp_path / "labels.tif")


def config(image, labels, iterations=40, extra=()):
    return load_train_config(None, [
        f"data.volumes=[{{image: '{image}', label: '{labels}'}}]",
        "data.patch=[8,16,16]", "data.batch_size=2", "data.chunks=[1,2,2]", "data.chunk_iter=8",
        "model.config={widths: [8, 16], norm: group}", f"iterations={iterations}", "checkpoint_every=20",
        "keep_best=1", "optimizer.lr=0.01", "optimizer.warmup=2", "augment={flip: {p: 1.0}}", "log_every=5",
        *extra,
    ])


def test_loss_goes_down_and_outputs_are_written(tmp_path):
    torch.set_num_threads(1)
    image, labels = synthetic(tmp_path)
    metrics = train(config(image, labels), tmp_path / "out", progress=False)
    losses = [l for _, l in metrics["loss"]]
    assert len(losses) == 40
    assert np.mean(losses[-8:]) < 0.8 * np.mean(losses[:8])
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["iterations_per_s"] > 0 and len(saved["loss"]) == 40
    assert [r["iteration"] for r in saved["checkpoints"]] and len(saved["checkpoints"]) == 1  # best k = 1
    model, info = load_checkpoint(tmp_path / "out" / "best.pt")
    assert info["train_config"]["data"]["patch"] == [8, 16, 16] and info["offsets"][0] == [1, 0, 0]
    assert model.out_channels == 3


def test_resume_continues_where_it_stopped(tmp_path):
    torch.set_num_threads(1)
    image, labels = synthetic(tmp_path)
    out = tmp_path / "out"
    train(config(image, labels, iterations=20), out, progress=False)
    _, first = load_checkpoint(out / "last.pt")
    assert first["iteration"] == 20
    metrics = train(config(image, labels, iterations=30, extra=["swa_start=25"]), out, progress=False, resume=True)
    _, info = load_checkpoint(out / "last.pt")
    assert info["iteration"] == 30
    assert [i for i, _ in metrics["loss"]] == list(range(1, 31))  # history carried over, not restarted
    assert info["optimizer"]["state"][0]["step"] == 30
    swa_model, swa_info = load_checkpoint(out / "swa.pt")  # stochastic weight averaging over iterations 26-30
    assert swa_info["metrics"]["averaged"] == 5
    assert any(not torch.equal(a, b) for a, b in zip(swa_model.state_dict().values(), load_checkpoint(out / "last.pt")[0].state_dict().values()))


def test_resume_without_checkpoint_and_bad_patch_are_refused(tmp_path):
    image, labels = synthetic(tmp_path)
    with pytest.raises(InputError, match="no last.pt"):
        train(config(image, labels), tmp_path / "empty", resume=True, progress=False)
    with pytest.raises(InputError, match="multiples of"):
        train(config(image, labels, extra=["data.patch=[8,17,16]"]), tmp_path / "o", progress=False)


def test_2d_mode_trains_on_sections(tmp_path):
    torch.set_num_threads(1)
    image, labels = synthetic(tmp_path)
    cfg = config(image, labels, iterations=4, extra=[
        "data.dims=2", "data.target=aff2", "data.patch=[1,16,16]", "model.architecture=unet2d",
        "augment={flip: {p: 1.0}, grayscale: {p: 0.5}}"])
    metrics = train(cfg, tmp_path / "out2d", progress=False)
    assert len(metrics["loss"]) == 4
    model, info = load_checkpoint(tmp_path / "out2d" / "last.pt")
    assert model.dims == 2 and model.out_channels == 2 and info["offsets"] == [[1, 0], [0, 1]]
