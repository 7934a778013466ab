"""The decoder search at the end of training: which checkpoint and decode settings segment the
validation region best.

A model trained for a short while needs other decode settings than the generic default (a low
threshold, the ``mean`` score), and which ones depends on the model: so training ends by predicting
the validation region's affinities with the chunked engine (``predict``), searching merge functions x
thresholds x aff_thresholds on them with the tune machinery (scored exactly: adapted Rand, VOI) and
storing the winner in ``best.pt``. With ``train.decoder_search.checkpoints: kept`` every kept checkpoint is
searched and ``best.pt`` becomes the one that decodes best: "best" means best on validation.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import zarr

from em_chunks.learn.data import TrainingVolume
from em_chunks.geometry import Box
from em_chunks.learn.data.volumes import open_ref, read_box

#: what ``best_checkpoint.score`` means once the search has chosen best.pt
SCORE_TUNED = "validation adapted Rand error (tuned decoder)"
WORK = "validation"


def _copy_slab(ref: Any, box: Box, target: str, z0: int) -> None:
    """Worker task: one z-slab of ``box`` from ``ref`` into the zarr array ``target`` at z offset ``z0``."""
    data = read_box(ref, box)
    zarr.open_array(target, mode="r+")[z0:z0 + data.shape[0]] = data


def write_region(vol: TrainingVolume, work: Path, client: Any, slab: int = 64) -> tuple[Path, Path]:
    """The validation region's image and labels as zarr arrays in ``work`` (what predict and tune read),
    copied slab by slab on the workers: the region (a fifth of a training volume) never passes
    through this process. Slabs follow the storage chunks, so no two tasks write one chunk."""
    work.mkdir(parents=True, exist_ok=True)
    box, paths, tasks = vol.box, [], []
    for name, ref in (("image.zarr", vol.image), ("labels.zarr", vol.label)):
        dtype = open_ref(ref).dtype
        path = work / name
        zarr.open_array(str(path), mode="w", shape=box.shape, dtype=dtype,
                        chunks=tuple(min(slab, s) for s in box.shape))
        for z in range(0, box.shape[0], slab):
            part = Box((box.begin[0] + z,) + tuple(box.begin[1:]), (min(slab, box.shape[0] - z),) + tuple(box.shape[1:]))
            tasks.append(client.submit(_copy_slab, ref, part, str(path), z, pure=False))
        paths.append(path)
    client.gather(tasks)
    return paths[0], paths[1]


def candidates(config: Any, out: Path) -> list[tuple[Path, Optional[int]]]:
    """The checkpoints to search: best.pt alone, or every kept numbered checkpoint (best first)."""
    if config.decoder_search.checkpoints == "kept":
        try:
            records = json.loads((out / "metrics.json").read_text()).get("checkpoints") or []
        except (OSError, ValueError):
            records = []
        kept = [(out / r["path"], int(r["iteration"])) for r in records if (out / r["path"]).is_file()]
        if kept:
            return kept
    return [(out / "best.pt", None)]


def score_checkpoint(ckpt: Path, image: Path, labels: Path, work: Path, config: Any, client: Any) -> dict[str, Any]:
    """Predict the validation region with ``ckpt`` and search the decoder grid on its affinities."""
    from em_chunks.api.predict import predict
    from em_chunks.api.tune import tune
    from em_chunks.api.workflow import Workflow
    from em_chunks.io import layout

    t = config.decoder_search
    pred = work / f"{ckpt.stem}.zarr"
    predict(image, ckpt, pred, tuple(t.chunks), Workflow(predict={"preview": False, **inference_settings(config)}),
            client=client, progress=False)
    found = tune(layout.image_array(pred), labels, work / f"tune-{ckpt.stem}", tuple(t.chunks),
                 merge_functions=t.merge_functions, thresholds=t.thresholds, aff_thresholds=t.aff_thresholds,
                 client=client, progress=False)
    return {"path": ckpt, "best": found["best"], "trials": found["trials"]}


def inference_settings(config: Any) -> dict[str, Any]:
    """The predict settings of the search (stored with its winner): TTA, and the window when one is set."""
    t = config.decoder_search
    return {"tta": t.tta, **({"window": list(t.window)} if t.window is not None else {})}


def _rank(row: dict[str, Any]) -> tuple[float, float]:
    b = row["best"]
    return float(b["adapted_rand_error"]), float(b["voi_split"] + b["voi_merge"])


def decoder_entry(row: dict[str, Any], iteration: Optional[int], vol: TrainingVolume, config: Any,
                  searched: list[dict[str, Any]]) -> dict[str, Any]:
    """What best.pt stores: the decode settings, their validation scores, the region and the search."""
    b = row["best"]
    scores = {k: float(v) for k, v in b.items() if isinstance(v, (int, float, np.floating)) and k != "threshold"}
    t = config.decoder_search
    return {
        "decode": {"merge_function": b["merge_function"], "thresholds": [float(b["threshold"])],
                   "aff_threshold": [float(v) for v in b["aff_threshold"]]},
        "scores": scores,
        "predict": inference_settings(config),  # how the affinities the settings were tuned on were made
        "validation": {"image": str(vol.image.path), "labels": str(vol.label), "box": [list(vol.box.begin), list(vol.box.end)]},
        "iteration": iteration,
        "searched": {"merge_functions": list(t.merge_functions), "thresholds": list(t.thresholds),
                     "aff_thresholds": [list(a) for a in t.aff_thresholds], "checkpoints": searched},
    }


def search_decoder(config: Any, out: Path, val_volumes: list[TrainingVolume], client: Any,
                   log: Callable[[str], None]) -> Optional[dict[str, Any]]:
    """Run the search (the first validation volume is the region), make best.pt the winning checkpoint
    carrying its decoder, and add ``tuned_decoder`` to metrics.json; ``None`` when there is nothing to
    search on (no validation data, or ``train.decoder_search.enabled: false``)."""
    from em_chunks.learn.checkpoint import write_decoder

    if not config.decoder_search.enabled or not val_volumes:
        return None
    vol = val_volumes[0]
    work = out / WORK
    shutil.rmtree(work, ignore_errors=True)  # a search interrupted before starts over
    log(f"decoder search on the validation region {vol.box} of {vol.image}")
    image, labels = write_region(vol, work, client)
    rows = []
    for path, iteration in candidates(config, out):
        row = score_checkpoint(path, image, labels, work, config, client)
        row["iteration"] = iteration
        b = row["best"]
        log(f"  {path.name}: adapted Rand {b['adapted_rand_error']:.4f} with {b['merge_function']} at "
            f"threshold {b['threshold']:g}, aff_threshold {list(b['aff_threshold'])}")
        rows.append(row)
    win = min(rows, key=_rank)
    searched = [{"path": r["path"].name, "iteration": r["iteration"], "adapted_rand_error": _rank(r)[0]} for r in rows]
    entry = decoder_entry(win, win["iteration"], vol, config, searched)
    if win["path"] != out / "best.pt":
        shutil.copyfile(win["path"], out / "best.pt")
    write_decoder(out / "best.pt", entry)
    _update_metrics(out, entry, win)
    shutil.rmtree(work, ignore_errors=True)
    d = entry["decode"]
    log(f"best.pt = {win['path'].name}: decoder {d['merge_function']}, threshold {d['thresholds'][0]:g}, "
        f"aff_threshold {d['aff_threshold']} ({', '.join(f'{k} {v}' for k, v in entry['predict'].items())}); validation adapted Rand {entry['scores']['adapted_rand_error']:.4f}, "
        f"VOI {entry['scores']['voi_split'] + entry['scores']['voi_merge']:.3f}")
    return entry


def _update_metrics(out: Path, entry: dict[str, Any], win: dict[str, Any]) -> None:
    from em_chunks.learn.trainer import write_metrics

    path = out / "metrics.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data["tuned_decoder"] = entry
    data["validation_trials"] = win["trials"][:20]
    if win["iteration"] is not None:
        data["best_checkpoint"] = {"iteration": win["iteration"], "score": entry["scores"]["adapted_rand_error"],
                                   "score_is": SCORE_TUNED}
    write_metrics(out, data, {})
