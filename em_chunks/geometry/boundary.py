"""Names of the boundary modes (how a read outside a volume is filled), shared by the window grid and the
readers; their meaning and the numpy equivalents are in :mod:`em_chunks.io.padding`, which implements them.
Here so that :mod:`em_chunks.geometry.window` can check a boundary without importing the io layer."""

from __future__ import annotations

from typing import Union

import numpy as np

from em_chunks.errors import InputError

Boundary = Union[str, int, float]

MODES = ("reflect", "mirror", "nearest", "periodic", "none")
_ALIASES = {"symmetric": "reflect", "reflect-no-edge": "mirror"}


def normalize_boundary(boundary: Boundary, name: str = "boundary") -> Boundary:
    """Canonical form of a boundary: one of :data:`MODES` or a number; anything else is an InputError."""
    if isinstance(boundary, bool):
        raise InputError(f"{name} {boundary!r}: expected one of {', '.join(MODES)} or a number")
    if isinstance(boundary, (int, float, np.integer, np.floating)):
        return boundary.item() if isinstance(boundary, np.generic) else boundary
    if isinstance(boundary, str):
        mode = _ALIASES.get(boundary.strip().lower(), boundary.strip().lower())
        if mode in MODES:
            return mode
        try:  # a number given as text, e.g. from the command line
            return int(mode)
        except ValueError:
            try:
                return float(mode)
            except ValueError:
                pass
    raise InputError(f"{name} {boundary!r}: expected one of {', '.join(MODES)} or a number")


def is_constant(boundary: Boundary) -> bool:
    return not isinstance(boundary, str)


__all__ = ["MODES", "Boundary", "is_constant", "normalize_boundary"]
