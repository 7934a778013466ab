"""Self-describing checkpoints: everything needed to rebuild and resume, loadable with ``weights_only=True``.

A checkpoint is a plain dict of tensors and JSON-like values (no pickled classes), so
``torch.load(path, weights_only=True)`` opens it safely:

``format`` ("emchunks-checkpoint"), ``format_version``, ``architecture`` (registry name), ``model_config``
(keyword arguments of :func:`build_model`), ``state_dict``, ``train_config`` (plain dict), ``iteration``,
``optimizer`` / ``scheduler`` / ``scaler`` state (or ``None``), ``metrics`` (plain dict), ``offsets``
(the affinity offsets the output channels mean), and in ``best.pt`` after training with validation data
``decoder``: the decode settings that scored best on the validation region, their scores and that
region (:func:`write_decoder`; ``predict`` uses it when no ``--config`` decode section is given).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from em_chunks.errors import InputError
from em_chunks.learn.models import build_model

FORMAT = "emchunks-checkpoint"
FORMAT_VERSION = 1


def plain(value: Any) -> Any:
    """Convert to JSON-like builtins (tuples -> lists, numpy scalars -> python) so weights_only can load it."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and not isinstance(value, torch.Tensor):
        return value.item()
    return value


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    architecture: str | None = None,
    model_config: Mapping[str, Any] | None = None,
    train_config: Mapping[str, Any] | None = None,
    iteration: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    metrics: Mapping[str, Any] | None = None,
    offsets: list | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file + rename: a crash never leaves a half-written file).

    ``architecture`` and ``model_config`` default to those recorded by :func:`build_model`.
    """
    module = getattr(model, "_orig_mod", model)  # torch.compile wraps the module
    module = getattr(module, "module", module)  # DistributedDataParallel too
    arch = architecture or getattr(module, "architecture", None)
    cfg = model_config if model_config is not None else getattr(module, "config", None)
    if arch is None or cfg is None:
        raise ValueError("save_checkpoint: pass architecture= and model_config= for a model not made by build_model")
    state = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": str(arch),
        "model_config": plain(cfg),
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "train_config": plain(train_config or {}),
        "iteration": int(iteration),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": plain(scheduler.state_dict()) if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "metrics": plain(metrics or {}),
        "offsets": plain(offsets) if offsets is not None else None,
        "torch_version": str(torch.__version__),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def write_decoder(path: str | Path, decoder: Mapping[str, Any]) -> Path:
    """Store the tuned ``decoder`` (plain data: ``decode``, ``scores``, ``validation``) in the checkpoint
    at ``path``, rewritten atomically; the weights are untouched."""
    state = read_checkpoint(path)
    state["decoder"] = plain(decoder)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def stored_decoder(info: Mapping[str, Any], path: str | Path) -> dict[str, Any] | None:
    """The checkpoint's tuned decoder (``None``: it has none), its ``decode`` settings checked against
    the decode config; a malformed entry is refused in one line naming the file."""
    from pydantic import ValidationError

    from em_chunks.config.decode import DecodeConfig
    from em_chunks.config.predict import TUNED_INFERENCE, PredictConfig

    entry = info.get("decoder")
    if entry is None:
        return None
    if not isinstance(entry, Mapping) or not isinstance(entry.get("decode"), Mapping):
        raise InputError(f"{path}: the checkpoint's 'decoder' entry is not a mapping with a 'decode' section")
    inference = entry.get("predict", {})
    if not isinstance(inference, Mapping) or set(inference) - set(TUNED_INFERENCE):
        raise InputError(f"{path}: the checkpoint's tuned decoder has predict settings {inference!r}; expected "
                         f"only {', '.join(TUNED_INFERENCE)}")
    try:
        PredictConfig(**inference)
    except ValidationError as err:
        raise InputError(f"{path}: the checkpoint's tuned decoder has predict settings {dict(inference)!r}: "
                         f"{err.errors()[0]['msg']}") from None
    try:
        DecodeConfig(**entry["decode"])
    except (ValidationError, TypeError) as err:
        first = str(err).splitlines()[-1].strip() if isinstance(err, TypeError) else err.errors()[0]["msg"]
        raise InputError(f"{path}: the checkpoint's tuned decoder is not valid: {first}") from None
    return dict(entry)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The raw checkpoint dict, checked; :class:`InputError` for a missing, corrupt or foreign file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: checkpoint file not found")
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, random bytes, a pickled class: all "not a checkpoint"
        reason = type(err).__name__
        raise InputError(f"{p}: not a readable emchunks checkpoint ({reason})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError(f"{p}: not an emchunks checkpoint (no 'format: {FORMAT}' entry)")
    if int(state.get("format_version", 0)) > FORMAT_VERSION:
        raise InputError(
            f"{p}: checkpoint format_version {state['format_version']} is newer than this emchunks reads ({FORMAT_VERSION})"
        )
    for key in ("architecture", "model_config", "state_dict"):
        if key not in state:
            raise InputError(f"{p}: checkpoint lacks the '{key}' entry")
    return state


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from a checkpoint; returns ``(model in eval mode, info)``.

    ``info`` is the checkpoint dict without ``state_dict`` (architecture, model_config, train_config,
    iteration, optimizer/scheduler state, metrics, offsets). Raises :class:`InputError` for a missing
    file, a file that is not an emchunks checkpoint, or an unknown architecture.
    """
    state = read_checkpoint(path, map_location)
    try:
        model = build_model(state["architecture"], **state["model_config"])
    except InputError as err:
        raise InputError(f"{path}: {err}") from None
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as err:
        raise InputError(f"{path}: weights do not fit architecture {state['architecture']!r}: {str(err).splitlines()[0]}") from None
    model.to(map_location)
    model.eval()
    info = {k: v for k, v in state.items() if k != "state_dict"}
    return model, info
