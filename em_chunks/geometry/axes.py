"""The one parser of per-axis values (Z,Y,X): ``2``, ``(2, 4, 4)`` or the text ``"2,4,4"``.

Every per-axis setting (window, overlap, pad, crop, chunks, CLI triples) goes through :func:`per_axis`, so
they accept the same spellings and refuse bad ones with the same one-line message naming the setting.
"""

from __future__ import annotations

from typing import Sequence, Union

from em_chunks.errors import InputError

PerAxis = Union[int, str, Sequence[int]]


def per_axis(value: PerAxis, name: str, *, scalar: bool = True, minimum: int | None = None,
             example: str = "2,4,4", noun: str = "") -> tuple[int, int, int]:
    """``value`` as three integers Z,Y,X. ``scalar``: a single integer means the same on every axis;
    ``minimum``: refuse smaller values; ``noun`` names the values in messages (e.g. "pieces per axis").
    Text may separate with commas or ``x`` (``"2x4x4"``)."""
    kind = "positive " if minimum == 1 else ("non-negative " if minimum == 0 else "")
    what = f"an integer or three {kind}integers Z,Y,X" if scalar else f"three {kind}integers Z,Y,X"
    if isinstance(value, bool):
        raise InputError(f"{name} {value!r}: expected {what} such as {example}")
    if isinstance(value, str):
        parts = [p.strip() for p in value.replace("x", ",").split(",")]
        try:
            values = tuple(int(p) for p in parts)
        except ValueError:
            raise InputError(f"{name} {value!r}: expected {what} such as {example}") from None
    elif hasattr(value, "__index__"):
        values = (int(value),)  # type: ignore[arg-type]
    else:
        try:
            values = tuple(int(v) for v in value)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise InputError(f"{name} {value!r}: expected {what} such as {example}") from None
    if len(values) == 1 and scalar:
        values = values * 3
    if len(values) != 3:
        raise InputError(f"{name} {value!r}: expected three integers Z,Y,X{f' ({noun})' if noun else ''}, "
                         f"got {len(values)}")
    if minimum is not None and any(v < minimum for v in values):
        bound = kind.strip() or f">= {minimum}"
        raise InputError(f"{name} {value!r}: {noun or 'values'} must be {bound} integers")
    return values  # type: ignore[return-value]


__all__ = ["PerAxis", "per_axis"]
