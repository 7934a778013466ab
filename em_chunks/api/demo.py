"""``demo``: the whole pipeline on a built-in synthetic EM-like volume, nothing to download.

Makes the volume as a PNG tile grid with a PyTC tile JSON (ground truth included), trains the small
model briefly on the local cluster, predicts with a chunk grid, decodes and evaluates.
The assets are kept in the demo folder, so ``emchunks predict --chunks 2,4,4`` (no INPUT) reuses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

DEMO_DIR = Path("emchunks-demo")
DEMO_SHAPE = (32, 128, 128)


@dataclass(frozen=True)
class DemoAssets:
    tiles: Path  # tile JSON with image + label layers
    checkpoint: Path


def make_demo_data(root: Path, shape: tuple[int, int, int] = DEMO_SHAPE, seed: int = 0) -> Path:
    """The synthetic volume as 64-pixel PNG tiles + tile JSON (made once, then reused)."""
    tiles = root / "data" / "tiles.json"
    if tiles.exists():
        return tiles
    from em_chunks.io.tileset_make import make_tileset
    from em_chunks.synthetic import make_synthetic_em

    image, labels = make_synthetic_em(shape, seed=seed)
    return make_tileset(image, root / "data", labels=labels, tile_size=64, voxel_size=(20, 10, 10))


def ensure_demo_assets(root: Path = DEMO_DIR, *, client: Any = None, iterations: Optional[int] = None,
                       progress: bool = True) -> DemoAssets:
    """The demo's tile JSON and a trained checkpoint, made on first use (the model trains briefly)."""
    from em_chunks.api.workflow import load_workflow

    root = Path(root)
    tiles = make_demo_data(root)
    ckpt = root / "model" / "best.pt"
    last = root / "model" / "last.pt"
    wf = load_workflow("demo")
    cfg = dict(wf.train or {})
    previous = _metrics(root / "model")
    unfinished = last.exists() and previous.get("stopped_by") == "interrupt"  # Ctrl-C while training
    if unfinished and iterations is None:
        iterations = previous.get("iterations_planned")  # finish what that run set out to do
    if not ckpt.exists() or unfinished:
        from em_chunks.engine.cluster import connect
        from em_chunks.engine.log import say
        from em_chunks.errors import Interrupted
        from em_chunks.learn.config import TrainConfig
        from em_chunks.learn.trainer import train

        cfg["data"] = {**cfg["data"], "volumes": [{"image": str(tiles)}]}
        config = TrainConfig.model_validate(cfg)
        import torch

        # the local workers share these cores: one torch thread in the trainer avoids oversubscription
        # (measured ~5x faster per step on 2 busy cores than torch's default)
        torch.set_num_threads(1)
        resume = last.exists()
        verb = f"continuing the small model's training from iteration {_iteration(last)}" if resume else "training the small model"
        say(f"demo: {verb} ({iterations or config.iterations} iterations) ...")
        kw = dict(iterations=iterations, progress=progress, resume=resume, overwrite=not resume, log=say,
                  quiet_log=lambda m: say(m, console=False))
        try:
            if client is None:
                with connect(None, 2, gpu="never") as c:
                    train(config, root / "model", client=c, **kw)
            else:
                train(config, root / "model", client=client, **kw)
        except Interrupted as err:
            raise Interrupted(f"{str(err).split(';')[0]}; the model is saved, and the same demo command "
                              f"continues its training") from None
    return DemoAssets(tiles, ckpt)


def _metrics(folder: Path) -> dict:
    import json

    try:
        return json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}


def _iteration(checkpoint: Path) -> int:
    from em_chunks.learn.checkpoint import read_checkpoint

    return int(read_checkpoint(checkpoint).get("iteration", 0))


@dataclass(frozen=True)
class PredictPaths:
    """What ``predict`` is called with once the workflow's ``demo`` names are resolved."""

    input: Optional[str]
    checkpoint: Optional[str]
    labels: Optional[str]
    out: Optional[Path]


def demo_paths(input: Any, checkpoint: Any, labels: Any, out: Any, chunks: Any, *, client: Any = None,
               progress: bool = True, root: Path = DEMO_DIR) -> PredictPaths:
    """Replace the ``demo`` sentinel (:data:`~em_chunks.config.predict.DEMO_SENTINEL`) by the demo's
    assets, made on first use (the model trains briefly); other values pass through. Done here, in the
    demo layer, so ``predict()`` takes real paths only and never trains a model."""
    from em_chunks.config.predict import DEMO_SENTINEL
    from em_chunks.geometry import parse_chunks

    def real(value: Any) -> Optional[str]:
        return None if value is None else str(value)

    if DEMO_SENTINEL not in (real(input), real(checkpoint), real(labels)):
        return PredictPaths(real(input), real(checkpoint), real(labels), Path(out) if out is not None else None)
    assets = ensure_demo_assets(root, client=client, progress=progress)

    def pick(value: Any, asset: Path) -> Optional[str]:
        return str(asset) if real(value) == DEMO_SENTINEL else real(value)

    if out is None:
        out = Path(root) / f"predict-{'-'.join(str(p) for p in parse_chunks(chunks))}.zarr"
    return PredictPaths(pick(input, assets.tiles), pick(checkpoint, assets.checkpoint), pick(labels, assets.tiles),
                        Path(out))


def run_demo(out: str | Path = DEMO_DIR, chunks: str = "1,2,2", *, iterations: Optional[int] = None,
             scheduler: Optional[str] = None, workers: int = 2) -> dict[str, Any]:
    """Make the data, train, predict with ``chunks``, decode and evaluate; returns the metrics."""
    from em_chunks.api.predict import predict
    from em_chunks.engine.cluster import connect

    root = Path(out)
    with connect(scheduler, workers, gpu="never") as client:
        assets = ensure_demo_assets(root, client=client, iterations=iterations)
        result = root / f"predict-{chunks.replace(',', '-')}.zarr"
        metrics = predict(assets.tiles, assets.checkpoint, result, chunks, "demo", assets.tiles, client=client)
    return {**metrics, "out": str(result)}
