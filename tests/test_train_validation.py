"""Issue 11: the validation split is never trained on, training ends with a decoder search on it,
best.pt carries the winner (weights_only-loadable) and predict uses it unless told otherwise:
overrides > --config decode section > the checkpoint's tuned decoder > built-in defaults."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from em_chunks.errors import InputError
from em_chunks.geometry import Box
from em_chunks.io import layout
from em_chunks.learn.checkpoint import read_checkpoint, save_checkpoint, stored_decoder, write_decoder
from em_chunks.learn.config import load_train_config
from em_chunks.learn.data.stream import chunk_tasks, local_batches
from em_chunks.learn.models import build_model
from em_chunks.learn.trainer import batch_spec
from em_chunks.learn.validation import split_volumes

SPLIT = "data.validation_split={fraction: 0.25, axis: z}"
TINY = ["data.patch=[4,16,16]", "model.config={widths: [4, 8]}", "data.chunk_iter=2", "optimizer.warmup=1"]


@pytest.fixture()
def vol(tmp_path) -> Path:
    """Blocks of ids; the last quarter of z (the held-out part) has image values no training voxel has."""
    rng = np.random.default_rng(0)
    labels = np.kron(rng.integers(1, 30, (4, 4, 4)), np.ones((4, 8, 8), np.int64)).astype(np.uint32)
    image = rng.integers(0, 100, labels.shape).astype(np.uint8)
    image[12:] = 250
    tifffile.imwrite(tmp_path / "image.tif", image)
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    return tmp_path


def _cfg(vol: Path, *extra: str):
    volumes = f"data.volumes=[{{image: '{vol / 'image.tif'}', label: '{vol / 'labels.tif'}'}}]"
    return load_train_config(None, [volumes, *TINY, *extra])


def test_validation_region_is_never_sampled_for_training(vol):
    cfg = _cfg(vol, SPLIT, "augment={}")
    train, val = split_volumes(cfg)
    assert train[0].box == Box.from_bounds((0, 0, 0), (12, 32, 32))
    assert val[0].box == Box.from_bounds((12, 0, 0), (16, 32, 32))
    for task in itertools.islice(chunk_tasks(train, (2, 2, 2), (4, 16, 16), 0), 64):
        assert train[0].box.contains(task.context), task  # no chunk (nor its margin) reaches the held-out part
    batches = local_batches(train, batch_spec(cfg, augment=False), (1, 2, 2), 4, seed=3)
    top = max(float(next(batches)["image"].max()) for _ in range(60))
    assert top <= 100 / 255 + 1e-6, top  # a held-out voxel (250) never appears in a training batch
    held = local_batches(val, batch_spec(cfg, augment=False), (1, 1, 1), 1, seed=0)
    assert float(next(held)["image"].min()) > 0.9  # and the validation batches do come from it


def test_a_split_smaller_than_a_patch_is_refused(vol):
    with pytest.raises(InputError, match="validation_split"):
        split_volumes(_cfg(vol, "data.validation_split={fraction: 0.1, axis: z}"))


def _checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(path, build_model("unet", widths=(4, 8)), train_config={"data": {"patch": [4, 16, 16]}})


ENTRY = {"decode": {"merge_function": "mean", "thresholds": [0.35], "aff_threshold": [0.3, 0.999]},
         "scores": {"adapted_rand_error": 0.0625, "voi_split": 0.1, "voi_merge": 0.2},
         "validation": {"image": "x.tif", "box": [[12, 0, 0], [16, 32, 32]]}, "iteration": 4}


def test_the_tuned_decoder_round_trips_through_the_checkpoint(tmp_path):
    path = _checkpoint(tmp_path / "best.pt")
    before = read_checkpoint(path)["state_dict"]
    write_decoder(path, ENTRY)
    state = torch.load(path, weights_only=True)  # plain data only
    assert state["decoder"] == ENTRY
    assert all(torch.equal(state["state_dict"][k], v) for k, v in before.items())
    assert stored_decoder(state, path) == ENTRY
    assert stored_decoder({k: v for k, v in state.items() if k != "decoder"}, path) is None


def test_predict_precedence(tmp_path):
    from em_chunks.api.decoder_choice import choose_decoder
    from em_chunks.config.decode import DecodeConfig

    tuned = {"decoder": ENTRY}
    with_decode = tmp_path / "with.yaml"
    with_decode.write_text("decode: {merge_function: aff50_his256, thresholds: [0.6]}\n")
    without = tmp_path / "without.yaml"
    without.write_text("predict: {tta: none}\n")
    cfg_decode = DecodeConfig(merge_function="aff50_his256", thresholds=(0.6,))
    cases = [  # (workflow, decode section it gives, overrides, checkpoint info) -> (source, merge fn, threshold)
        ((None, DecodeConfig(), [], tuned), ("checkpoint", "mean", 0.35)),
        ((without, DecodeConfig(), [], tuned), ("checkpoint", "mean", 0.35)),
        ((with_decode, cfg_decode, [], tuned), ("config", "aff50_his256", 0.6)),
        ((None, DecodeConfig(thresholds=(0.7,)), ["decode.thresholds=[0.7]"], tuned), ("overrides+checkpoint", "mean", 0.7)),
        ((with_decode, cfg_decode.model_copy(update={"thresholds": (0.8,)}), ["decode.thresholds=[0.8]"], tuned),
         ("overrides+config", "aff50_his256", 0.8)),
        ((None, DecodeConfig(), [], {}), ("defaults", "aff85_his256", 0.5)),
    ]
    for (wf, dec, overrides, info), (source, mf, thr) in cases:
        chosen, used = choose_decoder(wf, dec, overrides, info, "m.pt")
        assert (used["source"], chosen.merge_function, chosen.thresholds[0]) == (source, mf, thr), (wf, overrides)
        assert "\n" not in used["line"] and used["line"].startswith(f"decoder: {mf}")
    chosen, _ = choose_decoder(None, DecodeConfig(), [], tuned, "m.pt")
    assert chosen.aff_threshold == (0.3, 0.999)


def test_predict_uses_the_inference_the_decoder_was_tuned_with_unless_told(tmp_path):
    from em_chunks.api.decoder_choice import choose_decoder, choose_inference, inference_note
    from em_chunks.config.decode import DecodeConfig
    from em_chunks.config.predict import PredictConfig

    tuned = {"decoder": {**ENTRY, "predict": {"tta": "flip", "window": [8, 32, 32]}}}
    sets_tta = tmp_path / "tta.yaml"
    sets_tta.write_text("predict: {tta: xy}\n")
    other = tmp_path / "other.yaml"
    other.write_text("predict: {overlap: 8}\n")
    cases = [  # (workflow, its predict section, overrides, checkpoint info) -> (tta, window, their sources)
        ((None, {}, [], tuned), ("flip", (8, 32, 32), "checkpoint", "checkpoint")),
        ((other, {"overlap": 8}, [], tuned), ("flip", (8, 32, 32), "checkpoint", "checkpoint")),
        ((sets_tta, {"tta": "xy"}, [], tuned), ("xy", (8, 32, 32), "config", "checkpoint")),
        ((None, {"window": [4, 16, 16]}, ["predict.window=[4,16,16]"], tuned), ("flip", (4, 16, 16), "checkpoint", "overrides")),
        ((None, {}, ["predict.tta=none"], tuned), ("none", (8, 32, 32), "overrides", "checkpoint")),
        ((None, {}, [], {"decoder": ENTRY}), ("none", None, "defaults", "defaults")),  # tuned without predict settings
        ((None, {}, [], {}), ("none", None, "defaults", "defaults")),
    ]
    for (wf, section, overrides, info), want in cases:
        cfg, sources = choose_inference(wf, PredictConfig(**section), overrides, info, "m.pt")
        got = (cfg.tta, None if cfg.window is None else tuple(cfg.window), sources["tta"], sources["window"])
        assert got == want, (wf, overrides, info)
    cfg, sources = choose_inference(None, PredictConfig(), [], tuned, "m.pt")
    _, used = choose_decoder(None, DecodeConfig(), [], tuned, "m.pt", note=inference_note(cfg, sources))
    assert used["line"].endswith("; TTA flip, window [8, 32, 32] (as tuned, from the checkpoint)")
    assert "\n" not in used["line"]
    for bad in ({"tta": "sideways"}, {"window": [8, 32]}, {"tta": "flip", "stride": 4}):
        with pytest.raises(InputError, match="m.pt: the checkpoint's tuned decoder has predict settings"):
            choose_inference(None, PredictConfig(), [], {"decoder": {**ENTRY, "predict": bad}}, "m.pt")


def test_training_tunes_the_decoder_and_predict_uses_it(vol, cluster_client, capsys):
    from em_chunks.api.predict import predict
    from em_chunks.api.train import train

    search = ["decoder_search.merge_functions=[mean, aff50_his256]", "decoder_search.thresholds=[0.3, 0.6]",
              "decoder_search.aff_thresholds=[[0.1, 0.999]]", "decoder_search.tta=xy",
              "decoder_search.window=[4, 16, 16]"]
    cfg = _cfg(vol, SPLIT, "iterations=4", "checkpoint_every=2", "keep_best=2", *search)
    out = vol / "model"
    # trained without the search (as if interrupted during it): --resume does the search only
    train(_cfg(vol, SPLIT, "iterations=4", "checkpoint_every=2", "keep_best=2", "decoder_search.enabled=false"),
          out, client=cluster_client, progress=False)
    assert "decoder" not in torch.load(out / "best.pt", weights_only=True)
    last = (out / "last.pt").read_bytes()
    metrics = train(cfg, out, client=cluster_client, progress=False, resume=True)
    assert (out / "last.pt").read_bytes() == last and metrics["iterations"] == 4  # no iteration more
    best = torch.load(out / "best.pt", weights_only=True)
    entry = best["decoder"]
    assert entry["decode"]["merge_function"] in ("mean", "aff50_his256")
    assert entry["decode"]["thresholds"][0] in (0.3, 0.6)
    assert entry["validation"]["box"] == [[12, 0, 0], [16, 32, 32]]
    assert entry["predict"] == {"tta": "xy", "window": [4, 16, 16]}  # how the validation affinities were made
    assert 0 <= entry["scores"]["adapted_rand_error"] <= 1
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["tuned_decoder"] == entry == metrics["tuned_decoder"]
    assert saved["best_checkpoint"]["iteration"] == entry["iteration"] in (2, 4)
    assert saved["best_checkpoint"]["score"] == entry["scores"]["adapted_rand_error"]
    assert {c["path"] for c in entry["searched"]["checkpoints"]} == {"checkpoint-0000002.pt", "checkpoint-0000004.pt"}
    assert min(c["adapted_rand_error"] for c in entry["searched"]["checkpoints"]) == entry["scores"]["adapted_rand_error"]
    assert not (out / "validation").exists()  # the search's files only served it

    capsys.readouterr()
    pred = predict(vol / "image.tif", out / "best.pt", vol / "pred.zarr", (1, 1, 1), labels=vol / "labels.tif",
                   client=cluster_client, progress=False)
    said = "".join(capsys.readouterr())
    run = json.loads(layout.run_json(vol / "pred.zarr").read_text())
    assert run["config"]["decoder_source"] == "checkpoint"
    assert run["config"]["predict"]["tta"] == "xy" and run["config"]["inference_source"]["tta"] == "checkpoint"
    assert run["config"]["decode"]["merge_function"] == entry["decode"]["merge_function"]
    assert pred["threshold"] == entry["decode"]["thresholds"][0]
    assert [l for l in said.splitlines() if l.startswith("decoder: ")][0].endswith(
        f"(validation adapted Rand {entry['scores']['adapted_rand_error']:.4f}); TTA xy, window [4, 16, 16] (as tuned, "
        "from the checkpoint)")

    # a checkpoint without a tuned decoder still predicts, with the defaults
    plain = _checkpoint(vol / "plain.pt")
    pred = predict(vol / "image.tif", plain, vol / "plain.zarr", (1, 1, 1), client=cluster_client, progress=False)
    run = json.loads(layout.run_json(vol / "plain.zarr").read_text())
    assert run["config"]["decoder_source"] == "defaults" and pred["threshold"] == 0.5
    assert run["config"]["predict"]["tta"] == "none" and run["config"]["inference_source"]["tta"] == "defaults"
    assert pred["segments"] > 0


def test_the_validation_region_is_copied_on_the_workers_exactly(vol, cluster_client, tmp_path):
    """write_region copies slab by slab in worker tasks (the client never holds the region)."""
    import zarr

    from em_chunks.api.decoder_search import write_region
    from em_chunks.learn.data import TrainingVolume
    from em_chunks.learn.data.volumes import VolumeRef

    box = Box((5, 3, 2), (9, 20, 27))  # 9 sections in slabs of 4: three tasks per layer, the last short
    tv = TrainingVolume(VolumeRef(str(vol / "image.tif")), VolumeRef(str(vol / "labels.tif")), roi=box)
    image, labels = write_region(tv, tmp_path / "work", cluster_client, slab=4)
    src_i, src_l = tifffile.imread(vol / "image.tif"), tifffile.imread(vol / "labels.tif")
    assert np.array_equal(zarr.open_array(str(image), mode="r")[:], src_i[box.slices()])
    assert np.array_equal(zarr.open_array(str(labels), mode="r")[:], src_l[box.slices()])
