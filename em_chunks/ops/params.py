"""Decoding parameters as a plain frozen dataclass (the ops layer does not use pydantic)."""

from __future__ import annotations

from dataclasses import dataclass, field

from em_chunks.errors import InputError


@dataclass(frozen=True)
class DecodeParams:
    """What the decoder needs; the defaults are the SNEMI3D waterz recipe.

    aff_threshold_low / high: fragment rule bounds (waterz ``aff_threshold_low/high``).
    thresholds: agglomeration thresholds, one segmentation each, ascending.
    merge_function: ``aff{Q}_his256`` (Q in 1..99, waterz ``OneMinus<HistogramQuantileAffinity<.., Q,
    ScoreValue, 256>>``) or ``aff50_mean`` / ``mean`` (``OneMinus<MeanAffinity>``).
    init_with_max: waterz's ``InitWithMax`` template flag (default true in waterz): an edge's initial
    histogram holds one count, at its maximal affinity. False: every voxel-edge affinity is counted.
    dust_merge_size: segments smaller than this merge into their best-scoring neighbour (0 = off).
    dust_remove_size: segments smaller than this (after dust merging) become background 0 (0 = off).
    channels: the three short-range affinity channels (z, y, x) to read.
    agglomeration: "auto" = "distributed" (octree of blocks on the workers) | "python" | "waterz"
    (the whole graph in one task; see engine/decode.py).
    segment_ids: "packed" (chunk index in the high bits), "consecutive" (1..N, renumbered after the
    decode: engine/consecutive.py) or "first_voxel" (1 + C-order index of the
    segment's first voxel: identical numbers for every chunk grid).
    """

    aff_threshold_low: float = 0.1
    aff_threshold_high: float = 0.999
    thresholds: tuple[float, ...] = (0.5,)
    merge_function: str = "aff85_his256"
    init_with_max: bool = True
    dust_merge_size: int = 0
    dust_remove_size: int = 0
    channels: tuple[int, int, int] = field(default=(0, 1, 2))
    segment_ids: str = "packed"
    agglomeration: str = "auto"

    def __post_init__(self) -> None:
        from em_chunks.ops.agglomerate import SEGMENT_ID_MODES, parse_merge_function

        ths = tuple(float(t) for t in (self.thresholds if hasattr(self.thresholds, "__iter__") else [self.thresholds]))
        if not ths:
            raise InputError("decode.thresholds: expected at least one threshold")
        if list(ths) != sorted(ths):
            raise InputError(f"decode.thresholds {list(ths)}: expected ascending values")
        object.__setattr__(self, "thresholds", ths)
        lo, hi = float(self.aff_threshold_low), float(self.aff_threshold_high)
        if not (0.0 <= lo < hi):
            raise InputError(
                f"decode.aff_threshold [{lo}, {hi}]: expected 0 <= low < high (e.g. [0.1, 0.999])"
            )
        object.__setattr__(self, "aff_threshold_low", lo)
        object.__setattr__(self, "aff_threshold_high", hi)
        parse_merge_function(self.merge_function)  # raises InputError naming the field
        for name in ("dust_merge_size", "dust_remove_size"):
            if int(getattr(self, name)) < 0:
                raise InputError(f"decode.{name}: expected a non-negative voxel count")
            object.__setattr__(self, name, int(getattr(self, name)))
        ch = tuple(int(c) for c in self.channels)
        if len(ch) != 3 or any(c < 0 for c in ch):
            raise InputError(f"decode.channels {self.channels!r}: expected three channel indices (z, y, x)")
        object.__setattr__(self, "channels", ch)
        if self.segment_ids not in SEGMENT_ID_MODES + ("consecutive",):
            raise InputError(f"decode.segment_ids {self.segment_ids!r}: expected one of {', '.join(SEGMENT_ID_MODES)}")
