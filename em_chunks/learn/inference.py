"""Sliding-window inference on ONE global window grid, so chunk-by-chunk affinities equal a whole-volume pass
bit for bit.

The grid itself (where windows lie, which a chunk computes, what it reads) is
:class:`em_chunks.geometry.window.SlidingWindow`: pure numpy, so the client plans without torch. How the
model is applied (device, AMP, TTA, channels, activation, output dtype) is one frozen
:class:`em_chunks.config.inference.InferenceOptions`, handed intact to :class:`_Runner`. Predictions are
blended with integer weights in exact fixed point (:mod:`em_chunks.learn.blend`), so the sum over windows
does not depend on order or grouping.

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

from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from em_chunks.config.inference import InferenceOptions
from em_chunks.errors import InputError
from em_chunks.geometry import Box
from em_chunks.geometry.window import SlidingWindow, Window, axis_origins, union_box
from em_chunks.learn import blend, tta as tta_mod
from em_chunks.learn.device import pick_device

ACTIVATIONS = ("sigmoid", "none")


# ---- the model side ------------------------------------------------------------------------------
def prepare_model(model: nn.Module, device: str | torch.device = "cpu") -> nn.Module:
    """Eval mode on ``device``; on CUDA also channels-last 3-D and deterministic cuDNN (no autotuning,
    whose choice of kernel can change the last bit between runs)."""
    device = pick_device(device)
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

    def __init__(self, model: nn.Module, options: InferenceOptions, dims: int) -> None:
        if options.activation not in ACTIVATIONS:
            raise ValueError(f"activation {options.activation!r}: expected one of {', '.join(ACTIVATIONS)}")
        self.model, self.options, self.dims = model, options, dims
        self.device = pick_device(options.device)
        self.amp = bool(options.amp) and self.device.type == "cuda"  # AMP is a CUDA feature; ignored on CPU
        self.transforms = tta_mod.transforms_for(options.tta, dims)
        self.offsets = [list(o) for o in options.offsets] if options.offsets else None
        self.select, self.activation = options.select_channel, options.activation

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
    options: InferenceOptions,
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
    run = _Runner(model, options, dims)
    device = run.device
    if not windows:
        return np.zeros((0,) + target.shape, np.int64)
    needed = union_box([w.input for w in windows], target)
    if not ctx_box.contains(needed):
        raise ValueError(f"raw_ctx box {ctx_box} does not contain the windows' input {needed} (use context_for)")
    # upload the raw dtype (uint8: 4x fewer bytes than float32), normalise on the device
    ctx = normalize_input(torch.from_numpy(np.ascontiguousarray(raw[(slice(None),) + needed.slices(ctx_box)])).to(device))
    weights = torch.from_numpy(np.array(sw.weights)).to(device)
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


def _options(options: Optional[InferenceOptions], changes: dict[str, Any]) -> InferenceOptions:
    """The options a caller gave, with keyword ``changes`` (a convenience of the Python API) on top."""
    return (options or InferenceOptions()).replace(**changes)


def predict_box(
    model: nn.Module,
    raw_ctx: np.ndarray,
    ctx_box: Box,
    core: Box,
    sw: SlidingWindow,
    options: Optional[InferenceOptions] = None,
    **changes: Any,
) -> np.ndarray:
    """Blended predictions for ``core`` (C, *core.shape), identical whatever chunking ``core`` comes from.

    ``raw_ctx`` holds the voxels of ``ctx_box`` (z, y, x) or (channels, z, y, x), padded outside the
    volume with ``sw.boundary``; ``ctx_box`` must contain ``sw.context_for(core)``. ``options`` (an
    :class:`~em_chunks.config.inference.InferenceOptions`; keywords such as ``tta="all"`` change single
    fields of it) say how the model is run: ``activation`` ``sigmoid`` turns the logits of our models into
    probabilities (``none`` if the model ends with one); ``tta`` is a mode of
    :func:`em_chunks.learn.tta.transforms_for`; ``offsets`` are the affinity offsets of the model's channels
    (default: nearest-neighbour for 3 or 2 channels), needed to re-anchor them; ``select_channel`` keeps
    those channels (after TTA), e.g. ``[6, 9, 4]``; ``amp`` (bf16 autocast) only acts on CUDA;
    ``output_dtype`` ``uint8`` stores ``round(p * 255)``.
    """
    opts = _options(options, changes)
    acc = _accumulate(model, raw_ctx, ctx_box, sw.windows_for(core), core, sw, opts)
    return blend.finish(acc, sw.normaliser(core), opts.output_dtype)


def predict_partial(
    model: nn.Module,
    raw_ctx: np.ndarray,
    ctx_box: Box,
    core: Box,
    sw: SlidingWindow,
    options: Optional[InferenceOptions] = None,
    **changes: Any,
) -> tuple[Box, np.ndarray]:
    """Step 1 of the no-redundancy scheme: run only the windows ``core`` owns; return ``(box, sums)`` with
    the exact integer sums (int64, (C, *box.shape)) over ``box = sw.partial_box(core)``.

    ``ctx_box`` must contain ``sw.owned_context(core)``. Options as for :func:`predict_box`; the output
    dtype is applied in :func:`blend_partials`.
    """
    target = sw.partial_box(core)
    acc = _accumulate(model, raw_ctx, ctx_box, sw.owned_windows(core), target, sw, _options(options, changes))
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
    model: nn.Module, volume: np.ndarray, sw: SlidingWindow, options: Optional[InferenceOptions] = None,
    **changes: Any,
) -> np.ndarray:
    """The whole-volume reference: one :func:`predict_box` over the whole in-memory volume."""
    from em_chunks.io.padding import read_padded

    spatial = tuple(np.shape(volume)[-3:])
    if spatial != tuple(sw.volume):
        raise ValueError(f"volume of shape {spatial} but the sliding window was set up for {sw.volume}")
    core = Box.from_shape(spatial)
    ctx = sw.context_for(core)
    raw = read_padded(np.asarray(volume), ctx, sw.boundary)
    return predict_box(model, raw, ctx, core, sw, options, **changes)


__all__ = [
    "InferenceOptions",
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
