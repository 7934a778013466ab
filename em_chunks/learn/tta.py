"""Test-time augmentation: flips and y/x transposes of each window, undone on the prediction with the
affinity channels *re-anchored*, then averaged.

Why re-anchoring: in our (waterz) convention, channel ``c`` with offset ``o_c`` holds at voxel ``v`` the edge
``{v, v - o_c}``. Run the model on a transformed window (coordinates ``v' = A v + t``, ``A`` a signed
permutation) and undo the transform: channel ``c`` now holds at ``v`` the edge ``{v, v - A^-1 o_c}``.

* ``A^-1 o_c == o'`` for the wanted offset ``o'``: the values are already right (y/x transposes swap the
  y and x channels this way);
* ``A^-1 o_c == -o'`` (a flip along the offset's axis): the value at ``v`` is the edge ``{v, v + o'}``, which
  belongs to voxel ``u = v + o'``; so ``out(u) = back(u - o')`` -- a shift by the offset (1 voxel for the
  nearest-neighbour channels, 3/9/27 for long-range ones).

Border choice: the shift leaves ``|o'|`` voxels at one face of the window without a value. We do not
invent one: those voxels are *invalid* for that transform and the average there is taken over the
transforms that are valid (the identity always is). So at window faces TTA falls back to fewer views,
and an exactly equivariant model gives exactly its direct prediction everywhere (tested with an oracle).
The averaging is done in float64, so averaging identical float32 views returns them bit for bit.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Sequence, Union

import torch

Offset = tuple[int, int, int]

#: defaults when no offsets are given: the nearest-neighbour sets of ``em_chunks.learn.targets``
DEFAULT_OFFSETS: dict[int, tuple[Offset, ...]] = {
    3: ((1, 0, 0), (0, 1, 0), (0, 0, 1)),
    2: ((0, 1, 0), (0, 0, 1)),
}
MODES = ("none", "flip", "xy", "all")


@dataclass(frozen=True)
class Transform:
    """Flip the axes marked in ``flip`` (z, y, x), then swap y and x if ``transpose``."""

    flip: tuple[bool, bool, bool] = (False, False, False)
    transpose: bool = False

    @property
    def is_identity(self) -> bool:
        return not any(self.flip) and not self.transpose

    def _flip_dims(self, ndim: int) -> list[int]:
        return [ndim - 3 + a for a in range(3) if self.flip[a]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Transform a tensor whose last three axes are z, y, x."""
        dims = self._flip_dims(x.ndim)
        if dims:
            x = torch.flip(x, dims)
        if self.transpose:
            x = x.transpose(-1, -2)
        return x

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`forward` on the spatial axes (channels untouched)."""
        if self.transpose:
            y = y.transpose(-1, -2)
        dims = self._flip_dims(y.ndim)
        if dims:
            y = torch.flip(y, dims)
        return y.contiguous()

    def pull_offset(self, offset: Offset) -> Offset:
        """``A^-1 o``: the offset a transformed-space channel has once the transform is undone."""
        z, y, x = offset
        if self.transpose:
            y, x = x, y
        return tuple(-v if f else v for v, f in zip((z, y, x), self.flip))  # type: ignore[return-value]

    def __str__(self) -> str:
        name = "".join(a for a, f in zip("zyx", self.flip) if f)
        return (("flip " + name) if name else "id") + (" +T" if self.transpose else "")


def transforms_for(spec: Union[str, Sequence[Transform], None], dims: int = 3) -> list[Transform]:
    """The transforms of a TTA mode, identity first.

    ``none``: identity only. ``flip``: all flips of z, y, x (8). ``xy``: the 8 symmetries of the square
    section (flips of y/x and the y/x transpose; 90-degree rotations are a flip plus a transpose). ``all``:
    ``xy`` times the z flip (16). For 2-D models z is never flipped (a section has no z extent).
    """
    if spec is None:
        spec = "none"
    if not isinstance(spec, str):
        return [Transform()] + [t for t in spec if not t.is_identity]
    mode = spec.strip().lower()
    if mode not in MODES:
        raise ValueError(f"tta {spec!r}: expected one of {', '.join(MODES)}")
    if mode == "none":
        return [Transform()]
    z_flips = (False,) if dims == 2 or mode == "xy" else (False, True)
    transposes = (False,) if mode == "flip" else (False, True)
    return [
        Transform((fz, fy, fx), tr)
        for tr, fz, fy, fx in itertools.product(transposes, z_flips, (False, True), (False, True))
    ]


def normalize_offsets(offsets: Sequence[Sequence[int]] | None, channels: int) -> list[Offset]:
    """Offsets as 3-tuples (2-D ones get dz = 0); the nearest-neighbour default for 3 or 2 channels."""
    if offsets is None:
        if channels not in DEFAULT_OFFSETS:
            raise ValueError(
                f"test-time augmentation of a {channels}-channel output needs the affinity offsets of each "
                "channel (give offsets=..., e.g. from the checkpoint)"
            )
        return list(DEFAULT_OFFSETS[channels])
    out = [tuple(int(v) for v in ((0,) * (3 - len(o)) + tuple(o))) for o in offsets]
    if len(out) != channels or any(len(o) != 3 for o in out):
        raise ValueError(f"offsets {list(offsets)}: need one 2- or 3-vector per output channel ({channels})")
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class Plan:
    """For one transform: per wanted channel, the model channel to take and the shift (or None)."""

    transform: Transform
    sources: tuple[int, ...]
    shifts: tuple[Offset | None, ...]


def plan(transform: Transform, offsets: Sequence[Offset]) -> Plan:
    """Match every wanted channel with the transformed-space channel that holds its edges."""
    pulled = [transform.pull_offset(o) for o in offsets]
    sources, shifts = [], []
    for want in offsets:
        neg = tuple(-v for v in want)
        if want in pulled:
            sources.append(pulled.index(want))
            shifts.append(None)
        elif neg in pulled:
            sources.append(pulled.index(neg))
            shifts.append(want)
        else:
            raise ValueError(
                f"tta transform '{transform}' maps the offsets {list(offsets)} outside themselves (nothing "
                f"gives {want}); use a TTA mode the offset set is symmetric under"
            )
    return Plan(transform, tuple(sources), tuple(shifts))


def _shift_slices(shape: Sequence[int], offset: Offset) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Slices with ``out[dst] = back[src]`` for ``out(u) = back(u - offset)``."""
    dst, src = [], []
    for n, d in zip(shape, offset):
        if d >= 0:
            dst.append(slice(d, n))
            src.append(slice(0, max(n - d, 0)))
        else:
            dst.append(slice(0, max(n + d, 0)))
            src.append(slice(-d, n))
    return tuple(dst), tuple(src)


def undo(p: Plan, pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Bring a prediction (N, C, z', y', x') made on transformed input back: values and validity (C, z, y, x).

    The validity is ``None`` when no channel needed a shift (everything valid).
    """
    back = p.transform.inverse(pred)
    if all(s is None for s in p.shifts) and list(p.sources) == list(range(back.shape[1])):
        return back, None
    spatial = tuple(back.shape[2:])
    out = torch.zeros_like(back)
    valid = torch.ones((back.shape[1],) + spatial, dtype=torch.bool, device=back.device)
    for c, (src_c, shift) in enumerate(zip(p.sources, p.shifts)):
        if shift is None:
            out[:, c] = back[:, src_c]
            continue
        dst, src = _shift_slices(spatial, shift)
        out[(slice(None), c) + dst] = back[(slice(None), src_c) + src]
        valid[c] = False
        valid[(c,) + dst] = True
    return out, valid


def average(
    run: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    transforms: Sequence[Transform],
    offsets: Sequence[Sequence[int]] | None,
) -> torch.Tensor:
    """Mean over ``transforms`` (identity first) of ``run`` on transformed ``x`` (N, C, z, y, x), undone
    and re-anchored for ``offsets`` (see :func:`normalize_offsets`); float32.

    The sum runs in float64 over valid views only, so identical views average to themselves exactly.
    """
    if not transforms or not transforms[0].is_identity:
        raise ValueError("the first TTA transform must be the identity (it is valid everywhere)")
    total = run(x).double()
    count = torch.ones(total.shape[1:], dtype=torch.float64, device=total.device)
    offs = normalize_offsets(offsets, total.shape[1])
    for t in transforms[1:]:
        out, valid = undo(plan(t, offs), run(t.forward(x)).float())
        total += out
        count += 1.0 if valid is None else valid
    return (total / count).float()


__all__ = ["Transform", "transforms_for", "normalize_offsets", "plan", "undo", "average", "MODES"]
