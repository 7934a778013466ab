"""The model registry: architectures by name, so checkpoints and workflows can name them.

``build_model(name, **config)`` returns a ``torch.nn.Module`` exposing ``in_channels``,
``out_channels``, ``dims`` (2 or 3 spatial axes) and ``size_multiple`` (each spatial input size must be a
multiple of it). The config dict is exactly what a checkpoint stores to rebuild the model.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from em_chunks.errors import InputError
from em_chunks.learn.models.rsunet import RSUNet
from em_chunks.learn.models.unet import UNet

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "unet": UNet,
    "unet2d": lambda **kw: UNet(**{"dims": 2, **kw}),
    "rsunet": RSUNet,
    "rsunet2d": lambda **kw: RSUNet(**{"dims": 2, "pooling": 2, "embed_kernel": 5, **kw}),
}


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return sorted(_REGISTRY)


def register_model(name: str, factory: Callable[..., nn.Module]) -> None:
    """Add an architecture (e.g. from a plugin); checkpoints then load it by name."""
    _REGISTRY[name] = factory


def build_model(name: str, **config: Any) -> nn.Module:
    """Build the architecture registered as ``name`` with keyword ``config``.

    Unknown names and bad config keys raise :class:`InputError` (a user typo, not a bug).
    """
    factory = _REGISTRY.get(name)
    if factory is None:
        raise InputError(f"model {name!r}: unknown architecture, expected one of {', '.join(list_models())}")
    try:
        model = factory(**config)
    except (TypeError, ValueError) as err:
        raise InputError(f"model {name!r}: bad config {config}: {err}") from None
    model.architecture = name  # type: ignore[assignment]
    model.config = dict(config)  # type: ignore[assignment]
    return model


__all__ = ["build_model", "list_models", "register_model", "UNet", "RSUNet"]
