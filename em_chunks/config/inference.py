"""The resolved inference settings: built ONCE from the workflow's ``predict:`` section (plus what the
checkpoint decides) and passed intact from the client to the model runner.

Where each inference option lives (docs/architecture.md, "Where each inference option lives"):

* :class:`~em_chunks.config.predict.PredictConfig` -- the user's spelling (YAML / ``--set predict.x=...``);
* window grid settings (``window``, ``overlap``, ``stride``, ``pad``, ``crop``, ``blending``,
  ``sw_batch_size``, ``boundary``) -> :class:`~em_chunks.geometry.window.SlidingWindow`, built by
  :func:`sliding_window` (pure numpy: the client plans windows without torch);
* how the model is run (``device``, ``amp``, ``tta``, ``offsets``, ``select_channel``, ``activation``,
  ``output_dtype``, ``torch_threads``) -> :class:`InferenceOptions`, read by
  ``em_chunks.learn.inference._Runner`` and the blending step.

Both are copied from the config *by field name*, so a new option is a field in ``PredictConfig``, a field
here (or in ``SlidingWindow``) and the code that uses it -- nothing in between re-spells it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from em_chunks.geometry.window import SlidingWindow

#: the SlidingWindow fields a config may set (volume comes from the input, window may come from the checkpoint)
WINDOW_FIELDS = tuple(f.name for f in dataclasses.fields(SlidingWindow) if f.init and f.name != "volume")


@dataclass(frozen=True)
class InferenceOptions:
    """How the model is applied to the windows (everything but the window grid).

    ``device``: ``auto`` | ``cpu`` | ``cuda[:n]`` (``auto`` is resolved on the worker). ``amp``: bfloat16
    autocast, CUDA only. ``tta``: a mode of :func:`em_chunks.learn.tta.transforms_for` or a sequence of
    its transforms. ``offsets``: the affinity offset of each model channel (re-anchoring under TTA).
    ``select_channel``: channels kept after TTA. ``activation``: ``sigmoid`` | ``none``. ``output_dtype``:
    ``float32`` | ``uint8``. ``torch_threads``: per worker (part of the numerics on CPU).
    """

    device: str = "cpu"
    amp: bool = False
    tta: Any = "none"
    offsets: Optional[tuple[tuple[int, ...], ...]] = None
    select_channel: Optional[tuple[int, ...]] = None
    activation: str = "sigmoid"
    output_dtype: str = "float32"
    torch_threads: int = 1

    def __post_init__(self) -> None:
        if self.offsets is not None:
            object.__setattr__(self, "offsets", tuple(tuple(int(v) for v in o) for o in self.offsets))
        if self.select_channel is not None:
            object.__setattr__(self, "select_channel", tuple(int(c) for c in self.select_channel))
        if self.tta is None:
            object.__setattr__(self, "tta", "none")
        elif not isinstance(self.tta, str):
            object.__setattr__(self, "tta", tuple(self.tta))

    @classmethod
    def from_config(cls, cfg: Any, **resolved: Any) -> "InferenceOptions":
        """Every field of this class that ``cfg`` (a PredictConfig) has, then ``resolved`` on top
        (values the checkpoint decides, such as ``offsets``)."""
        names = [f.name for f in dataclasses.fields(cls)]
        values = {n: getattr(cfg, n) for n in names if hasattr(cfg, n)}
        values.update(resolved)
        return cls(**values)

    def replace(self, **changes: Any) -> "InferenceOptions":
        return dataclasses.replace(self, **changes) if changes else self


def sliding_window(cfg: Any, volume: Sequence[int], **resolved: Any) -> SlidingWindow:
    """The window grid of a volume from a PredictConfig's window fields (``resolved`` on top, e.g. the
    ``window`` the checkpoint's training patch gives)."""
    values = {n: getattr(cfg, n) for n in WINDOW_FIELDS if getattr(cfg, n, None) is not None}
    values.update(resolved)
    return SlidingWindow(volume=tuple(volume), **values)


__all__ = ["InferenceOptions", "WINDOW_FIELDS", "sliding_window"]
