"""The global window grid of sliding-window inference (pure numpy, no torch): where every model window
lies, which windows a chunk computes and what it must read, so the client plans a run without torch.

The grid (a function of the volume shape and the config only, never of a chunk):
per axis of length ``L``, the volume is padded symmetrically by ``pad`` (PyTC ``PAD_SIZE``; the padding is
read with ``boundary``, default ``mirror`` = numpy's ``reflect`` as PyTC pads). Window inputs of size ``W``
start at ``-pad + k*S`` (``S`` = stride) for ``k = 0 .. n-1`` with ``n = 1 + ceil((L + 2 pad - W) / S)``;
the LAST window is snapped back so that it ends exactly at ``L + pad``. A padded volume shorter than the
window gets one window at ``-pad`` that overhangs the end (the reader pads it). Each window contributes its
*output box*: the window shrunk by ``crop`` on both sides (DeepEM's "output centre cropping"; PyTC's
``crop_pad`` of the padding itself is implicit: outputs are always in volume coordinates). So
``S = W - 2 crop - overlap``, and ``crop <= pad`` keeps the volume borders covered.

For an output box (a chunk's core) the windows are those whose output box meets it, in C order of their
grid index; its context (what the reader must deliver, padded) is the union of their input boxes:
:meth:`SlidingWindow.context_for`. Batches are fixed blocks of the grid (:meth:`SlidingWindow.batches`),
why is told in :mod:`em_chunks.learn.inference`, which runs the model on these windows.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Sequence, Union

import numpy as np

from em_chunks.errors import InputError
from em_chunks.geometry.axes import per_axis
from em_chunks.geometry.boundary import normalize_boundary
from em_chunks.geometry.box import Box
from em_chunks.geometry.grid import Chunk, ChunkGrid
from em_chunks.geometry.weights import BLENDINGS, MAX_COVER, window_weights

IntOrSeq = Union[int, Sequence[int]]


def _axes(value: IntOrSeq, name: str) -> tuple[int, int, int]:
    return per_axis(value, f"sliding_window.{name}")


def axis_origins(length: int, window: int, stride: int, pad: int) -> tuple[int, ...]:
    """Input origins of the windows along one axis (see the module doc: last one snapped to the end)."""
    span = length + 2 * pad
    if span <= window:
        return (-pad,)
    n = -(-(span - window) // stride) + 1
    return tuple(-pad + min(k * stride, span - window) for k in range(n))


@dataclass(frozen=True)
class Window:
    """One window of the global grid: its grid ``index``, ``input`` box (model input) and ``output`` box."""

    index: tuple[int, int, int]
    input: Box
    output: Box


@dataclass(frozen=True)
class SlidingWindow:
    """The global window grid and blending of a volume of shape ``volume`` (z, y, x).

    ``overlap`` (voxels between neighbouring windows' output boxes; default half the output box) or
    ``stride`` (default ``W - 2 crop - overlap``) fix the spacing; give one of them.
    """

    volume: tuple[int, int, int]
    window: tuple[int, int, int]
    overlap: IntOrSeq | None = None
    stride: IntOrSeq | None = None
    pad: IntOrSeq = 0
    crop: IntOrSeq = 0
    blending: str = "gaussian"
    sw_batch_size: int = 4
    boundary: str = "mirror"
    _origins: tuple[tuple[int, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        vol = _axes(self.volume, "volume")
        win = _axes(self.window, "window")
        pad = _axes(self.pad, "pad")
        crop = _axes(self.crop, "crop")
        if any(v <= 0 for v in vol):
            raise InputError(f"volume shape {vol}: every axis must have at least one voxel")
        if any(w <= 0 for w in win):
            raise InputError(f"sliding_window.window {win}: expected positive sizes")
        if any(p < 0 for p in pad) or any(c < 0 for c in crop):
            raise InputError(f"sliding_window.pad {pad} / crop {crop}: expected non-negative integers")
        out = tuple(w - 2 * c for w, c in zip(win, crop))
        if any(o <= 0 for o in out):
            raise InputError(f"sliding_window.crop {crop}: leaves no output in a window of {win}")
        if any(c > p for c, p in zip(crop, pad)):
            raise InputError(
                f"sliding_window.crop {crop}: must not exceed pad {pad}, or the volume borders get no prediction"
            )
        if self.stride is not None:
            stride = _axes(self.stride, "stride")
            if self.overlap is not None and _axes(self.overlap, "overlap") != tuple(o - s for o, s in zip(out, stride)):
                raise InputError(f"sliding_window: overlap {self.overlap} and stride {stride} disagree; give one")
        else:
            overlap = tuple(o // 2 for o in out) if self.overlap is None else _axes(self.overlap, "overlap")
            stride = tuple(o - v for o, v in zip(out, overlap))
        if any(s <= 0 or s > o for s, o in zip(stride, out)):
            raise InputError(
                f"sliding_window: stride {stride} must be between 1 and the output window {out} per axis "
                "(a larger stride leaves gaps, overlap must be smaller than the output window)"
            )
        cover = int(np.prod([-(-o // s) for o, s in zip(out, stride)]))
        if cover > MAX_COVER:
            raise InputError(
                f"sliding_window: stride {stride} makes {cover} windows overlap at a voxel; at most "
                f"{MAX_COVER} are supported (use a larger stride)"
            )
        if self.blending not in BLENDINGS:
            raise InputError(f"sliding_window.blending {self.blending!r}: expected one of {', '.join(BLENDINGS)}")
        if int(self.sw_batch_size) < 1:
            raise InputError(f"sliding_window.sw_batch_size {self.sw_batch_size}: expected a positive integer")
        boundary = normalize_boundary(self.boundary, "sliding_window.boundary")
        if boundary == "none":
            raise InputError("sliding_window.boundary 'none': windows reaching outside the volume need padding")
        for name, value in (("volume", vol), ("window", win), ("pad", pad), ("crop", crop), ("stride", stride)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "overlap", tuple(o - s for o, s in zip(out, stride)))
        object.__setattr__(self, "sw_batch_size", int(self.sw_batch_size))
        object.__setattr__(self, "boundary", boundary)
        origins = tuple(axis_origins(L, w, s, p) for L, w, s, p in zip(vol, win, stride, pad))
        object.__setattr__(self, "_origins", origins)

    def config(self) -> dict:
        """The user-facing fields as plain values, e.g. for a run record or a resume check (the results of
        two runs agree bit for bit only if these, the model, the device type and the thread count agree)."""
        names = ("volume", "window", "stride", "pad", "crop", "blending", "sw_batch_size", "boundary")
        return {n: (list(v) if isinstance(v, tuple) else v) for n, v in ((n, getattr(self, n)) for n in names)}

    # ---- the grid -------------------------------------------------------------------------------
    @property
    def output_size(self) -> tuple[int, int, int]:
        """Size of a window's output box (the window less ``crop`` on each side)."""
        return tuple(w - 2 * c for w, c in zip(self.window, self.crop))  # type: ignore[return-value]

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        """Number of windows per axis."""
        return tuple(len(o) for o in self._origins)  # type: ignore[return-value]

    @property
    def origins(self) -> tuple[tuple[int, ...], ...]:
        """Per axis, the input origin of every window (volume coordinates; negative = in the padding)."""
        return self._origins

    @property
    def weights(self) -> np.ndarray:
        """Integer blending weights of one window's input box (int64, read-only)."""
        return window_weights(self.window, self.blending)

    def window_at(self, index: Sequence[int]) -> Window:
        begin = tuple(o[k] for o, k in zip(self._origins, index))
        inp = Box(begin, self.window)
        return Window(tuple(int(k) for k in index), inp, inp.grow([-c for c in self.crop]))  # type: ignore[arg-type]

    def _check_core(self, core: Box) -> None:
        if core.ndim != 3 or not Box.from_shape(self.volume).contains(core):
            raise ValueError(f"box {core} is not inside the volume {self.volume}")

    def _axis_meeting(self, axis: int, begin: int, end: int) -> range:
        """Window indices along ``axis`` whose output box meets ``[begin, end)`` (a contiguous range)."""
        o = np.asarray(self._origins[axis])
        c, w = self.crop[axis], self.window[axis]
        ks = np.nonzero((o + w - c > begin) & (o + c < end))[0]
        return range(int(ks[0]), int(ks[-1]) + 1) if len(ks) else range(0)

    @property
    def group_shape(self) -> tuple[int, int, int]:
        """Windows per batch along each grid axis: ``sw_batch_size`` split into a block of the grid.

        Batches are fixed blocks of the global grid (see :meth:`batches`). Prime factors of the batch size
        go, largest first, to the axis with the most windows per block so far (x before y before z on ties).
        """
        g = [1, 1, 1]
        factors, n, p = [], self.sw_batch_size, 2
        while n > 1:
            while n % p == 0:
                factors.append(p)
                n //= p
            p += 1
        for f in sorted(factors, reverse=True):
            axis = max((2, 1, 0), key=lambda a: self.grid_shape[a] / g[a])
            g[axis] *= f
        return tuple(g)  # type: ignore[return-value]

    def _axis_owned(self, axis: int, begin: int, end: int) -> range:
        """Window indices along ``axis`` owned by ``[begin, end)``: the windows of every batch block whose
        centre (clamped into the volume) lies there, less those whose output misses the volume."""
        o = np.asarray(self._origins[axis])
        c, w, length, g = self.crop[axis], self.window[axis], self.volume[axis], self.group_shape[axis]
        k = np.arange(len(o))
        first = o[(k // g) * g]
        last = o[np.minimum((k // g) * g + g - 1, len(o) - 1)]
        anchor = np.clip((first + last + w) // 2, 0, length - 1)
        useful = (o + w - c > 0) & (o + c < length)
        ks = np.nonzero(useful & (anchor >= begin) & (anchor < end))[0]
        return range(int(ks[0]), int(ks[-1]) + 1) if len(ks) else range(0)

    def batches(self, windows: Sequence[Window]) -> list[list[Window | None]]:
        """Model batches of exactly ``sw_batch_size`` slots: one per block of the global grid
        (:attr:`group_shape`) that ``windows`` touch, each window in the slot of its place in its block;
        absent windows are ``None`` (the caller fills them with zeros).

        Why: CPU kernels (oneDNN) split a batch between threads, and a window's result can change in the
        last bit with the batch size and with its slot in the batch (seen with odd window shapes); the
        content of the other slots does not matter. A fixed block and slot per window make its prediction
        the same in every chunk that computes it (given the same number of torch threads). The whole volume
        and the owned windows of :meth:`owned_windows` are whole blocks, so they waste no slots.
        """
        g = self.group_shape
        blocks: dict[tuple[int, ...], list[Window | None]] = {}
        for w in windows:
            key = tuple(k // n for k, n in zip(w.index, g))
            slot = ((w.index[0] % g[0]) * g[1] + w.index[1] % g[1]) * g[2] + w.index[2] % g[2]
            blocks.setdefault(key, [None] * self.sw_batch_size)[slot] = w
        return [blocks[key] for key in sorted(blocks)]

    def _windows(self, ranges: Sequence[range]) -> list[Window]:
        return [self.window_at(k) for k in itertools.product(*ranges)]

    def windows_for(self, core: Box) -> list[Window]:
        """The windows whose output box meets ``core``, in global grid order (C order of the index)."""
        self._check_core(core)
        if core.empty:
            return []
        return self._windows([self._axis_meeting(a, b, e) for a, (b, e) in enumerate(zip(core.begin, core.end))])

    def context_for(self, core: Box) -> Box:
        """The input box ``predict_box`` needs for ``core``: the union of its windows' input boxes.

        It may reach outside the volume; the reader pads it with :attr:`boundary` relative to the whole
        volume (never relative to the chunk), so every window sees the same voxels in every chunking.
        """
        return union_box([w.input for w in self.windows_for(core)], core)

    def owned_windows(self, core: Box) -> list[Window]:
        """The windows ``core`` computes in the partial scheme: each window belongs to exactly one core of
        any partition of the volume (the one holding the centre of its batch block, clamped into the
        volume), and whole batch blocks go together so no model slot is wasted."""
        self._check_core(core)
        if core.empty:
            return []
        return self._windows([self._axis_owned(a, b, e) for a, (b, e) in enumerate(zip(core.begin, core.end))])

    def owned_context(self, core: Box) -> Box:
        """The input box :func:`~em_chunks.learn.inference.predict_partial` needs for ``core``."""
        return union_box([w.input for w in self.owned_windows(core)], core)

    def partial_box(self, core: Box) -> Box:
        """The box :func:`~em_chunks.learn.inference.predict_partial` returns sums for: its windows' output boxes, within the volume."""
        box = union_box([w.output for w in self.owned_windows(core)], core)
        return box.intersect(Box.from_shape(self.volume))

    def partial_sources(self, grid: ChunkGrid, core: Box) -> list[Chunk]:
        """The chunks of ``grid`` whose partial sums reach into ``core`` (those :func:`~em_chunks.learn.inference.blend_partials`
        needs), found axis by axis: with chunks at least a window wide they are among its neighbours."""
        per_axis = []
        for a, bounds in enumerate(grid.bounds):
            keep = []
            for i in range(len(bounds) - 1):
                owned = self._axis_owned(a, bounds[i], bounds[i + 1])
                if not owned:
                    continue
                lo = self._origins[a][owned[0]] + self.crop[a]
                hi = self._origins[a][owned[-1]] + self.window[a] - self.crop[a]
                if lo < core.end[a] and hi > core.begin[a]:
                    keep.append(i)
            per_axis.append(keep)
        return [grid.chunk(idx) for idx in itertools.product(*per_axis)]

    def normaliser(self, core: Box) -> np.ndarray:
        """Sum of the integer weights of all windows over ``core`` (int64, ``core.shape``): grid-only."""
        norm = np.zeros(core.shape, np.int64)
        weights = self.weights
        for w in self.windows_for(core):
            part = w.output.intersect(core)
            norm[part.slices(core)] += weights[part.slices(w.input)]
        return norm


def union_box(boxes: Sequence[Box], fallback: Box) -> Box:
    """The bounding box of ``boxes``; an empty box at ``fallback`` when there are none."""
    if not boxes:
        return Box(fallback.offset, (0,) * fallback.ndim)
    begin = tuple(min(b.begin[a] for b in boxes) for a in range(3))
    end = tuple(max(b.end[a] for b in boxes) for a in range(3))
    return Box.from_bounds(begin, end)


__all__ = ["SlidingWindow", "Window", "axis_origins", "union_box"]
