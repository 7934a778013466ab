"""Sliding-window inference on ONE global window grid, so chunk-by-chunk affinities equal a whole-volume pass
bit for bit.

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
:meth:`SlidingWindow.context_for`. Predictions are blended with integer weights in exact fixed point
(:mod:`em_chunks.learn.blend`), so the sum over windows does not depend on order or grouping.

The other source of difference is the model itself. On CPU (oneDNN) a window's prediction can change in
the last bit with the batch *size*, with the window's *slot* in the batch (seen with odd window shapes)
and with the number of torch threads -- not with the content of the other slots. So the model always
receives batches of exactly ``sw_batch_size`` slots, each batch a fixed block of the global grid with
every window in a fixed slot (:meth:`SlidingWindow.batches`; empty slots get zeros): every window is
computed by the same kernels whichever chunk asks for it. ``sw_batch_size`` and the torch thread count
are therefore part of the configuration (different values agree to ~1e-7, not bitwise).
On CUDA, :func:`prepare_model` turns off cuDNN autotuning for the same reason.

Two ways to use it from a chunked engine:

* :func:`predict_box` -- self-contained: a chunk computes every window meeting its core (windows straddling
  chunk borders are computed by each chunk they touch; cost ratio ~ prod(1 + W/C) per axis).
* :func:`predict_partial` + :func:`blend_partials` -- each window is computed once, by the chunk that owns
  its centre; a chunk returns integer partial sums over a box a little larger than its core, and a second
  step adds the partial sums of the neighbours that reach into a core. Exact integer sums make this
  bit-identical to :func:`predict_box` with no redundant model work.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Iterable, Sequence, Union

import numpy as np
import torch
from torch import nn

from em_chunks.errors import InputError
from em_chunks.geometry import Box, Chunk, ChunkGrid
from em_chunks.learn import blend, tta as tta_mod

IntOrSeq = Union[int, Sequence[int]]
ACTIVATIONS = ("sigmoid", "none")


def _triple(value: IntOrSeq, name: str) -> tuple[int, int, int]:
    if isinstance(value, (int, np.integer)):
        return (int(value),) * 3  # type: ignore[return-value]
    try:
        out = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"sliding_window.{name} {value!r}: expected an integer or three integers Z,Y,X") from None
    if len(out) != 3:
        raise InputError(f"sliding_window.{name} {value!r}: expected three integers Z,Y,X")
    return out  # type: ignore[return-value]


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
        from em_chunks.io.padding import normalize_boundary

        vol = _triple(self.volume, "volume")
        win = _triple(self.window, "window")
        pad = _triple(self.pad, "pad")
        crop = _triple(self.crop, "crop")
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
            stride = _triple(self.stride, "stride")
            if self.overlap is not None and _triple(self.overlap, "overlap") != tuple(o - s for o, s in zip(out, stride)):
                raise InputError(f"sliding_window: overlap {self.overlap} and stride {stride} disagree; give one")
        else:
            overlap = tuple(o // 2 for o in out) if self.overlap is None else _triple(self.overlap, "overlap")
            stride = tuple(o - v for o, v in zip(out, overlap))
        if any(s <= 0 or s > o for s, o in zip(stride, out)):
            raise InputError(
                f"sliding_window: stride {stride} must be between 1 and the output window {out} per axis "
                "(a larger stride leaves gaps, overlap must be smaller than the output window)"
            )
        cover = int(np.prod([-(-o // s) for o, s in zip(out, stride)]))
        if cover > blend.MAX_COVER:
            raise InputError(
                f"sliding_window: stride {stride} makes {cover} windows overlap at a voxel; at most "
                f"{blend.MAX_COVER} are supported (use a larger stride)"
            )
        if self.blending not in blend.BLENDINGS:
            raise InputError(f"sliding_window.blending {self.blending!r}: expected one of {', '.join(blend.BLENDINGS)}")
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
        return blend.window_weights(self.window, self.blending)

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
        return _union([w.input for w in self.windows_for(core)], core)

    def owned_windows(self, core: Box) -> list[Window]:
        """The windows ``core`` computes in the partial scheme: each window belongs to exactly one core of
        any partition of the volume (the one holding the centre of its batch block, clamped into the
        volume), and whole batch blocks go together so no model slot is wasted."""
        self._check_core(core)
        if core.empty:
            return []
        return self._windows([self._axis_owned(a, b, e) for a, (b, e) in enumerate(zip(core.begin, core.end))])

    def owned_context(self, core: Box) -> Box:
        """The input box :func:`predict_partial` needs for ``core``."""
        return _union([w.input for w in self.owned_windows(core)], core)

    def partial_box(self, core: Box) -> Box:
        """The box :func:`predict_partial` returns sums for: its windows' output boxes, within the volume."""
        box = _union([w.output for w in self.owned_windows(core)], core)
        return box.intersect(Box.from_shape(self.volume))

    def partial_sources(self, grid: ChunkGrid, core: Box) -> list[Chunk]:
        """The chunks of ``grid`` whose partial sums reach into ``core`` (those :func:`blend_partials`
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


def _union(boxes: Sequence[Box], fallback: Box) -> Box:
    if not boxes:
        return Box(fallback.offset, (0,) * fallback.ndim)
    begin = tuple(min(b.begin[a] for b in boxes) for a in range(3))
    end = tuple(max(b.end[a] for b in boxes) for a in range(3))
    return Box.from_bounds(begin, end)


# ---- the model side ------------------------------------------------------------------------------
def prepare_model(model: nn.Module, device: str | torch.device = "cpu") -> nn.Module:
    """Eval mode on ``device``; on CUDA also channels-last 3-D and deterministic cuDNN (no autotuning,
    whose choice of kernel can change the last bit between runs)."""
    device = torch.device(device)
    model = model.eval().to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        if getattr(model, "dims", 3) == 3:
            model = model.to(memory_format=torch.channels_last_3d)
    return model


def normalize_input(raw: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Raw voxels as float32 in [0, 1]: ``uint8 / 255``, other unsigned/signed integers divided by their
    dtype's maximum, booleans as 0/1, floats unchanged (already normalised by the caller)."""
    t = torch.as_tensor(raw)
    if t.dtype == torch.uint8:
        return t.float() / 255.0
    if t.dtype == torch.bool:
        return t.float()
    if not t.is_floating_point():
        top = float(torch.iinfo(t.dtype).max) if t.dtype != torch.uint16 else 65535.0
        return t.float() / top
    return t.float()


class _Runner:
    """Runs the model on batches of windows: AMP, 2-D models, activation, TTA, channel selection."""

    def __init__(self, model, device, *, amp, tta, offsets, select_channel, activation, dims) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r}: expected one of {', '.join(ACTIVATIONS)}")
        self.model, self.device, self.dims = model, torch.device(device), dims
        self.amp = bool(amp) and self.device.type == "cuda"  # AMP is a CUDA feature; ignored on CPU
        self.transforms = tta_mod.transforms_for(tta, dims)
        self.offsets, self.select, self.activation = offsets, select_channel, activation

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dims == 2:
            x = x[:, :, 0]
        elif self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            y = self.model(x)
        y = y.float()
        if self.dims == 2:
            y = y.unsqueeze(2)
        if tuple(y.shape[2:]) != tuple(x.shape[2:]) and self.dims == 3:
            raise ValueError(f"the model maps a window of {tuple(x.shape[2:])} to {tuple(y.shape[2:])}; "
                             "sliding-window inference needs outputs of the input's size")
        return torch.sigmoid(y) if self.activation == "sigmoid" else y

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.transforms) == 1:
            y = self._forward(x)
        else:
            y = tta_mod.average(self._forward, x, self.transforms, self.offsets)
        if self.select is not None:
            if max(self.select) >= y.shape[1] or min(self.select) < -y.shape[1]:
                raise InputError(f"select_channel {list(self.select)}: the model has {y.shape[1]} output channels")
            y = y[:, list(self.select)]
        return y


def _accumulate(
    model: nn.Module,
    raw_ctx: np.ndarray,
    ctx_box: Box,
    windows: Sequence[Window],
    target: Box,
    sw: SlidingWindow,
    *,
    device,
    amp,
    tta,
    offsets,
    select_channel,
    activation,
) -> np.ndarray:
    """Integer sums ``sum_w q(pred_w) * weight_w`` over ``target`` (int64, (C, *target.shape))."""
    raw = np.asarray(raw_ctx)
    if raw.ndim == 3:
        raw = raw[None]
    if raw.ndim != 4 or tuple(raw.shape[1:]) != tuple(ctx_box.shape):
        raise ValueError(f"raw_ctx of shape {np.shape(raw_ctx)} does not match its box {ctx_box}")
    in_channels = getattr(model, "in_channels", None)
    if in_channels is not None and raw.shape[0] != in_channels:
        raise InputError(f"the input has {raw.shape[0]} channel(s) but the model expects {in_channels}")
    if model.training:
        raise ValueError("the model is in training mode (batch statistics would tie windows together): "
                         "call prepare_model(model) or model.eval() first")
    dims = int(getattr(model, "dims", 3))
    if dims == 2 and sw.window[0] != 1:
        raise InputError(f"sliding_window.window {sw.window}: a 2-D model needs a window of 1 section (1,Y,X)")
    multiple = getattr(model, "size_multiple", None)
    if multiple is not None and any(w % m for w, m in zip(sw.window[3 - dims:], tuple(multiple)[-dims:])):
        raise InputError(f"sliding_window.window {sw.window}: the model needs sizes that are multiples of {tuple(multiple)}")
    device = torch.device(device)
    if not windows:
        return np.zeros((0,) + target.shape, np.int64)
    needed = _union([w.input for w in windows], target)
    if not ctx_box.contains(needed):
        raise ValueError(f"raw_ctx box {ctx_box} does not contain the windows' input {needed} (use context_for)")
    # upload the raw dtype (uint8: 4x fewer bytes than float32), normalise on the device
    ctx = normalize_input(torch.from_numpy(np.ascontiguousarray(raw[(slice(None),) + needed.slices(ctx_box)])).to(device))
    weights = torch.from_numpy(np.array(sw.weights)).to(device)
    run = _Runner(model, device, amp=amp, tta=tta, offsets=offsets, select_channel=select_channel,
                  activation=activation, dims=dims)
    acc: torch.Tensor | None = None
    finite = torch.ones((), dtype=torch.bool, device=device)
    filler = torch.zeros((ctx.shape[0],) + tuple(sw.window), dtype=ctx.dtype, device=device)
    with torch.inference_mode():
        for group in sw.batches(windows):
            x = torch.stack([filler if w is None else ctx[(slice(None),) + w.input.slices(needed)] for w in group])
            pred = run(x)
            q = blend.quantize(pred)
            if acc is None:
                acc = torch.zeros((pred.shape[1],) + target.shape, dtype=torch.int64, device=device)
            for i, w in enumerate(group):
                if w is None:
                    continue
                finite &= torch.isfinite(pred[i]).all()
                part = w.output.intersect(target)
                if part.empty:
                    continue
                src = part.slices(w.input)
                acc[(slice(None),) + part.slices(target)] += q[(i, slice(None)) + src] * weights[src]
    if not bool(finite):
        raise ValueError("the model produced NaN or infinite values")
    assert acc is not None
    return acc.cpu().numpy()


def predict_box(
    model: nn.Module,
    raw_ctx: np.ndarray,
    ctx_box: Box,
    core: Box,
    sw: SlidingWindow,
    *,
    device: str | torch.device = "cpu",
    amp: bool = False,
    tta: str | Sequence[tta_mod.Transform] | None = None,
    offsets: Sequence[Sequence[int]] | None = None,
    select_channel: Sequence[int] | None = None,
    activation: str = "sigmoid",
    output_dtype: str = "float32",
) -> np.ndarray:
    """Blended predictions for ``core`` (C, *core.shape), identical whatever chunking ``core`` comes from.

    ``raw_ctx`` holds the voxels of ``ctx_box`` (z, y, x) or (channels, z, y, x), padded outside the
    volume with ``sw.boundary``; ``ctx_box`` must contain ``sw.context_for(core)``. ``activation``
    ``sigmoid`` turns the logits of our models into probabilities (``none`` if the model ends with one).
    ``tta`` is a mode of :func:`em_chunks.learn.tta.transforms_for`; ``offsets`` are the affinity offsets
    of the model's channels (default: nearest-neighbour for 3 or 2 channels), needed to re-anchor them.
    ``select_channel`` keeps those channels (after TTA), e.g. ``[6, 9, 4]``. ``amp`` (bf16 autocast) only
    acts on CUDA. ``output_dtype`` ``uint8`` stores ``round(p * 255)``.
    """
    acc = _accumulate(model, raw_ctx, ctx_box, sw.windows_for(core), core, sw, device=device, amp=amp, tta=tta,
                      offsets=offsets, select_channel=select_channel, activation=activation)
    return blend.finish(acc, sw.normaliser(core), output_dtype)


def predict_partial(
    model: nn.Module,
    raw_ctx: np.ndarray,
    ctx_box: Box,
    core: Box,
    sw: SlidingWindow,
    *,
    device: str | torch.device = "cpu",
    amp: bool = False,
    tta: str | Sequence[tta_mod.Transform] | None = None,
    offsets: Sequence[Sequence[int]] | None = None,
    select_channel: Sequence[int] | None = None,
    activation: str = "sigmoid",
) -> tuple[Box, np.ndarray]:
    """Step 1 of the no-redundancy scheme: run only the windows ``core`` owns; return ``(box, sums)`` with
    the exact integer sums (int64, (C, *box.shape)) over ``box = sw.partial_box(core)``.

    ``ctx_box`` must contain ``sw.owned_context(core)``. Options as for :func:`predict_box`; the output
    dtype is chosen in :func:`blend_partials`.
    """
    target = sw.partial_box(core)
    acc = _accumulate(model, raw_ctx, ctx_box, sw.owned_windows(core), target, sw, device=device, amp=amp,
                      tta=tta, offsets=offsets, select_channel=select_channel, activation=activation)
    return target, acc


def blend_partials(
    core: Box, partials: Iterable[tuple[Box, np.ndarray]], sw: SlidingWindow, output_dtype: str = "float32"
) -> np.ndarray:
    """Step 2: add the partial sums that reach into ``core`` (any order: the sums are exact) and normalise.

    Give it the partials of every chunk whose ``partial_box`` meets ``core`` (its own and its neighbours').
    """
    acc: np.ndarray | None = None
    for box, sums in partials:
        part = box.intersect(core)
        if part.empty or sums.shape[0] == 0:
            continue
        if acc is None:
            acc = np.zeros((sums.shape[0],) + core.shape, np.int64)
        acc[(slice(None),) + part.slices(core)] += sums[(slice(None),) + part.slices(box)]
    if acc is None:
        raise ValueError(f"no partial sums reach into {core}")
    return blend.finish(acc, sw.normaliser(core), output_dtype)


def predict_volume(
    model: nn.Module, volume: np.ndarray, sw: SlidingWindow, **options
) -> np.ndarray:
    """The whole-volume reference: one :func:`predict_box` over the whole in-memory volume."""
    from em_chunks.io.padding import read_padded

    spatial = tuple(np.shape(volume)[-3:])
    if spatial != tuple(sw.volume):
        raise ValueError(f"volume of shape {spatial} but the sliding window was set up for {sw.volume}")
    core = Box.from_shape(spatial)
    ctx = sw.context_for(core)
    arr = np.asarray(volume)
    raw = read_padded(arr, ctx, sw.boundary) if arr.ndim == 3 else np.stack(
        [read_padded(a, ctx, sw.boundary) for a in arr])
    return predict_box(model, raw, ctx, core, sw, **options)


__all__ = [
    "SlidingWindow",
    "Window",
    "axis_origins",
    "prepare_model",
    "normalize_input",
    "predict_box",
    "predict_partial",
    "blend_partials",
    "predict_volume",
]
