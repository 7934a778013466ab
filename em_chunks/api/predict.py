"""``predict``: model -> affinities -> waterz-style decoding -> (metrics), chunk by chunk on the cluster.

Takes real paths only: the demo's ``demo`` names are resolved before (``api/demo.py`` ``demo_paths``, called
by the CLI), so a predict call never trains a model. The inference settings are resolved once, here
(:func:`inference_spec`), into the window grid and the options object the workers receive intact.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any, Optional

import numpy as np
import zarr
from distributed import Client

from em_chunks.api.decode import decode_params
from em_chunks.api.decoder_choice import choose_decoder, choose_inference, inference_note
from em_chunks.api.run import completed, computing_run
from em_chunks.api.workflow import Workflow, load_workflow
from em_chunks.config.inference import InferenceOptions, sliding_window
from em_chunks.config.predict import DEMO_SENTINEL, PredictConfig
from em_chunks.engine.cluster import gpu_workers
from em_chunks.engine.decode import check_labels, run_decode
from em_chunks.engine.log import say
from em_chunks.engine.predict import InferenceSpec, submit_inference
from em_chunks.engine.preview import write_preview
from em_chunks.engine.cleanup import remove_intermediates
from em_chunks.engine.pyramid import write_pyramids
from em_chunks.engine.source import Source
from em_chunks.errors import InputError
from em_chunks.geometry import Box, ChunkGrid, parse_chunks, storage_aligned
from em_chunks.io import layout
from em_chunks.io.ome_zarr import check_alignment, create_root_image, open_root


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def inference_spec(cfg: PredictConfig, checkpoint: Path, info: dict, volume: tuple[int, int, int]) -> InferenceSpec:
    """Resolve what the checkpoint decides (window = training patch, 2-D models, offsets), check the input
    fits, and build the window grid and the options object once; both then travel intact to the workers."""
    train = info.get("train_config") or {}
    model_cfg = info.get("model_config") or {}
    patch = tuple((train.get("data") or {}).get("patch") or (16, 64, 64))
    window = tuple(cfg.window or patch)
    dims = int(model_cfg.get("dims", 3))
    if dims == 2 and window[0] != 1:
        window = (1,) + window[1:]
    offsets = info.get("offsets")
    out_channels = int(model_cfg.get("out_channels", len(offsets) if offsets else 3))
    if cfg.select_channel is not None and max(cfg.select_channel) >= out_channels:
        raise InputError(f"predict.select_channel {list(cfg.select_channel)}: the model has {out_channels} output channels")
    options = InferenceOptions.from_config(cfg, offsets=offsets or None)
    return InferenceSpec(str(checkpoint), sliding_window(cfg, volume, window=window), options)


def predict(
    input: Optional[str | Path] = None,
    checkpoint: Optional[str | Path] = None,
    out: Optional[str | Path] = None,
    chunks: Optional[str | tuple[int, int, int]] = None,
    workflow: Optional[Workflow | str | Path] = None,
    labels: Optional[str | Path] = None,
    *,
    overrides: Optional[list[str]] = None,
    scheduler: Optional[str] = None,
    workers: int = 2,
    client: Optional[Client] = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the model, decoding and (with labels) evaluation; returns the metrics (also in metrics.json)."""
    from em_chunks.learn.checkpoint import load_checkpoint

    wf = workflow if isinstance(workflow, Workflow) else load_workflow(workflow, overrides)
    cfg = wf.predict_config()
    input = input or cfg.input
    checkpoint = checkpoint or cfg.checkpoint
    labels = labels or cfg.labels
    for name, value in (("INPUT", input), ("--checkpoint", checkpoint), ("--labels", labels)):
        if str(value) == DEMO_SENTINEL:  # resolved by the CLI / demo layer, never here (no demo -> train inside)
            raise InputError(f"predict: {name} 'demo' is not a path; `emchunks predict` resolves it, in Python "
                             f"call em_chunks.api.demo.demo_paths(...) first")
    if input is None:
        raise InputError("predict: no INPUT given and the workflow names no predict.input")
    if checkpoint is None:
        raise InputError("predict: --checkpoint is required (or predict.checkpoint in the workflow)")
    if out is None:
        raise InputError("predict: --out is required")
    if str(input).lower().endswith(".txt"):
        return _predict_singly(Path(input), Path(checkpoint), out, cfg, wf, scheduler=scheduler, workers=workers,
                               client=client, progress=progress, workflow=workflow, overrides=overrides)
    raw = Source.open(input)
    if len(raw.shape) != 3:
        raise InputError(f"{raw.path}: the model takes a (Z, Y, X) image volume, got shape {raw.shape}")
    model, info = load_checkpoint(checkpoint)
    info = {**info, "model_config": {**(info.get("model_config") or {}), "in_channels": model.in_channels,
                                     "out_channels": model.out_channels, "dims": model.dims}}
    del model
    in_channels = int(info["model_config"]["in_channels"])
    if in_channels != 1:
        raise InputError(f"{checkpoint}: the model expects {in_channels} input channels, the input {raw.path} has 1")
    shape = raw.spatial_shape
    lab = Source.open_labels(labels) if labels is not None else None
    if lab is not None:
        check_labels(lab, shape, what=f"input {raw.path}")
    pieces = parse_chunks(chunks if chunks is not None else cfg.chunks, shape)
    align = storage_aligned(shape, pieces)
    grid = ChunkGrid(shape, pieces, align=align)
    cfg, inference_source = choose_inference(workflow, cfg, overrides, info, checkpoint)
    spec = inference_spec(cfg, Path(checkpoint), info, shape)  # validates the window grid before anything is written
    decoder, used = choose_decoder(workflow, wf.decode, overrides, info, checkpoint, note=inference_note(cfg, inference_source))
    wf = wf.model_copy(update={"decode": decoder})
    params = decode_params(wf.decode)
    out = Path(out)
    resolved = {
        "input": str(Path(input).resolve()), "checkpoint": str(Path(checkpoint).resolve()),
        "checkpoint_sha256": _sha256(Path(checkpoint)), "labels": str(Path(labels).resolve()) if labels else None,
        "chunks": list(pieces), "predict": cfg.model_dump(mode="json", exclude={"input", "labels", "checkpoint", "chunks"}),
        "decode": wf.decode.model_dump(mode="json"), "decoder_source": used["source"], "inference_source": inference_source,
        "window": list(spec.sw.window),
        "output": wf.output.model_dump(mode="json"),
    }
    done = completed("predict", out, resolved)
    if done is not None:
        return done
    with computing_run("predict", out, resolved, scheduler=scheduler, workers=workers, client=client,
                       voxels=int(np.prod(shape))) as run:
        say(used["line"])
        root = open_root(out)
        check_alignment(shape, align, [c.core for c in grid])
        opts = spec.options
        channels = len(opts.select_channel) if opts.select_channel else int((info.get("model_config") or {}).get("out_channels", 3))
        voxel = raw.voxel_size() or wf.voxel_size
        affs = create_root_image(root, "affinities", (channels,) + shape, opts.output_dtype, (channels,) + align, voxel)
        # inference and the first decoding stages are submitted together: a chunk is decoded as soon as
        # it and its neighbours have affinities, while later chunks are still being inferred
        upstream = submit_inference(run.client, raw, out, grid, spec, layout.image_array(out), progress=progress,
                                    resources={"GPU": 1} if gpu_workers(run.client) else None)
        aff_src = Source.open(layout.image_array(out))
        metrics = run_decode(run.client, aff_src, out, grid, params, labels=lab, record=run.record,
                             voxel_size=voxel, progress=progress, upstream=upstream)
        metrics["window"] = list(spec.sw.window)
        if cfg.preview:
            z = shape[0] // 2
            section = Box((z, 0, 0), (1,) + shape[1:])
            seg_arr = zarr.open_array(layout.segmentation_array(out), mode="r")
            write_preview(layout.preview_png(out), raw.read(section)[0], np.asarray(affs[:, z]),
                          np.asarray(seg_arr[z]))
            metrics["preview"] = str(layout.preview_png(out))
        shutil.rmtree(layout.partials_dir(out), ignore_errors=True)
        write_pyramids(run.client, out, ["image", "segmentation"], wf.output,
                       budget_voxels=max(c.core.size for c in grid), record=run.record,
                       progress=progress)
        run.metrics = metrics
    if not wf.output.keep_intermediates:
        remove_intermediates(out)
    return {**run.metrics, "out": str(out)}


def _predict_singly(listing: Path, checkpoint: Path, out: Path, cfg: PredictConfig, wf: Workflow, *,
                    scheduler: Optional[str], workers: int, client: Optional[Client], progress: bool,
                    workflow: Any = None, overrides: Optional[list[str]] = None) -> dict[str, Any]:
    """PyTC ``DO_SINGLY``: 2D images listed in a text file, each predicted, decoded and saved on its own."""
    from em_chunks.engine.singly import read_list, run_singly
    from em_chunks.learn.checkpoint import load_checkpoint

    images = read_list(listing)
    model, info = load_checkpoint(checkpoint)
    if model.in_channels != 1:
        raise InputError(f"{checkpoint}: the model expects {model.in_channels} input channels, the images have 1")
    info = {**info, "model_config": {**(info.get("model_config") or {}), "out_channels": model.out_channels, "dims": model.dims}}
    cfg, inference_source = choose_inference(workflow, cfg, overrides, info, checkpoint)
    spec = inference_spec(cfg, checkpoint, info, (1, 1, 1))
    decoder, used = choose_decoder(workflow, wf.decode, overrides, info, checkpoint, note=inference_note(cfg, inference_source))
    wf = wf.model_copy(update={"decode": decoder})
    params = decode_params(wf.decode)
    resolved = {"input": str(listing.resolve()), "images": [str(p) for p in images], "checkpoint": str(checkpoint.resolve()),
                "checkpoint_sha256": _sha256(checkpoint), "predict": cfg.model_dump(mode="json"), "decode": wf.decode.model_dump(mode="json"),
                "decoder_source": used["source"], "inference_source": inference_source}
    done = completed("predict-singly", out, resolved)
    if done is not None:
        return done
    with computing_run("predict-singly", out, resolved, scheduler=scheduler, workers=workers, client=client) as run:
        say(used["line"])
        run.metrics = run_singly(run.client, images, out, spec, params, record=run.record, progress=progress)
    return run.metrics
