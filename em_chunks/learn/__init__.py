"""Training and models (the only subpackage that imports torch).

Public entry points: :func:`build_model` (model registry), :func:`load_checkpoint` /
:func:`save_checkpoint` (self-describing checkpoints), :class:`TrainConfig` and :func:`train`.
Submodules are imported lazily so ``import em_chunks.learn`` does not pull torch in by itself.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_API = {
    "build_model": "em_chunks.learn.models",
    "list_models": "em_chunks.learn.models",
    "load_checkpoint": "em_chunks.learn.checkpoint",
    "save_checkpoint": "em_chunks.learn.checkpoint",
    "TrainConfig": "em_chunks.learn.config",
    "train": "em_chunks.learn.trainer",
    "affinity_offsets": "em_chunks.learn.targets",
    "affinities": "em_chunks.learn.targets",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'em_chunks.learn' has no attribute {name!r}")
    return getattr(import_module(module), name)
