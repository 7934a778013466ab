"""emchunks: chunked, distributed neuron segmentation of electron-microscopy volumes on Dask.

The public API is imported lazily so ``import em_chunks`` stays cheap (no torch, no dask until used).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "Box": "em_chunks.geometry",
    "Chunk": "em_chunks.geometry",
    "ChunkGrid": "em_chunks.geometry",
    "parse_chunks": "em_chunks.geometry",
    "InputError": "em_chunks.errors",
    "TileSet": "em_chunks.io.tileset",
    "open_volume": "em_chunks.io.volume",
    "make_synthetic_em": "em_chunks.synthetic",
    "synthetic_affinities": "em_chunks.synthetic",
    "TrainConfig": "em_chunks.learn.config",
    "train": "em_chunks.learn.trainer",
    "build_model": "em_chunks.learn.models",
    "load_checkpoint": "em_chunks.learn.checkpoint",
    "voxel_size_of": "em_chunks.io.volume",
    "make_tileset": "em_chunks.io.tileset_make",
    "SlidingWindow": "em_chunks.geometry.window",
    "InferenceOptions": "em_chunks.config.inference",
    "predict_box": "em_chunks.learn.inference",
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'em_chunks' has no attribute {name!r}")
    return getattr(import_module(module), name)
