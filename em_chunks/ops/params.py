"""The decode vocabulary and the one parameter object every decode kernel takes whole.

This module is where each decode option lives (docs/architecture.md, "Adding a decode option"):

* the names the options may take: :data:`MERGE_FUNCTIONS`, :data:`SEGMENT_ID_MODES`,
  :data:`BACKENDS`, :data:`WATERZ_QUANTILES`, and :func:`parse_merge_function`;
* :class:`DecodeParams`: the frozen values, validated once, in ``__post_init__`` (the pydantic
  ``DecodeConfig`` builds it through :meth:`~em_chunks.config.decode.DecodeConfig.params` and reports
  these errors against the YAML field), and the values derived from them (``scoring``,
  ``max_threshold``, ``full_histograms``, ``dust_limit``, ``naming``, ``backend``).

It imports nothing of the kernels, so every kernel may import it (no import circle), and no pydantic.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from em_chunks.errors import InputError

#: the named merge functions (``emchunks tune`` tries these by default); ``aff{Q}_his256`` with any Q in
#: 1..99 and waterz's C++ spellings parse too (:func:`parse_merge_function`)
MERGE_FUNCTIONS = ("aff85_his256", "aff75_his256", "aff50_his256", "aff25_his256", "aff15_his256", "aff50_mean")
#: what a workflow's ``decode.merge_function`` may say
MERGE_FUNCTION_NAMES = MERGE_FUNCTIONS + ("mean",)
#: ``decode.segment_ids``: packed (chunk index in the high bits), first_voxel (1 + flat index of the
#: segment's first voxel), consecutive (1..N: packed ids renumbered after the decode)
SEGMENT_ID_MODES = ("packed", "first_voxel", "consecutive")
#: ``decode.agglomeration``: auto = distributed (the octree on the workers), or the whole graph in one
#: task by the python reference or waterz's C++ merging
BACKENDS = ("auto", "distributed", "python", "waterz")
#: quantiles waterz ships compiled with discretize_queue=256 (others need a C++ toolchain + witty)
WATERZ_QUANTILES = frozenset(range(10, 100, 5))

_SHORT = re.compile(r"^aff(\d{1,2})_his256$")
_WATERZ_Q = re.compile(
    r"^OneMinus<HistogramQuantileAffinity<RegionGraphType,(\d{1,2}),ScoreValue,256(?:,(true|false))?>>$"
)
_WATERZ_MEAN = re.compile(r"^OneMinus<MeanAffinity<RegionGraphType,ScoreValue>>$")


@dataclass(frozen=True)
class Scoring:
    """How an edge is scored: ``kind`` "quantile" (with ``quantile`` Q) or "mean"."""

    kind: str
    quantile: int = 50


@dataclass(frozen=True)
class MergeFunction:
    """A parsed merge function: its scoring, and waterz's InitWithMax flag when the name spells it."""

    kind: str
    quantile: int = 50
    init_with_max: bool | None = None

    @property
    def scoring(self) -> Scoring:
        return Scoring(self.kind, self.quantile)


def parse_merge_function(name: str) -> MergeFunction:
    """Parse ``aff85_his256``, ``aff50_mean``/``mean`` or the waterz C++ spelling of either."""
    text = re.sub(r"\s+", "", str(name))
    if text in ("mean", "aff50_mean") or _WATERZ_MEAN.match(text):
        return MergeFunction("mean")
    m = _SHORT.match(text)
    if m and 0 < int(m.group(1)) < 100:
        return MergeFunction("quantile", int(m.group(1)))
    m = _WATERZ_Q.match(text)
    if m and 0 < int(m.group(1)) < 100:
        flag = None if m.group(2) is None else m.group(2) == "true"
        return MergeFunction("quantile", int(m.group(1)), flag)
    raise InputError(
        f"decode.merge_function {name!r}: expected aff<Q>_his256 with Q in 1..99 (e.g. aff85_his256) or "
        "aff50_mean"
    )


def _floats(value) -> tuple[float, ...]:
    return tuple(float(t) for t in (value if hasattr(value, "__iter__") else [value]))


@dataclass(frozen=True)
class DecodeParams:
    """What the decoder needs; the defaults are the SNEMI3D waterz recipe.

    aff_threshold: fragment rule bounds [low, high] (waterz ``aff_threshold_low/high``).
    thresholds: agglomeration thresholds, one segmentation each, ascending.
    merge_function: ``aff{Q}_his256`` (Q in 1..99, waterz ``OneMinus<HistogramQuantileAffinity<.., Q,
    ScoreValue, 256>>``) or ``aff50_mean`` / ``mean`` (``OneMinus<MeanAffinity>``).
    init_with_max: waterz's ``InitWithMax`` template flag (default true in waterz): an edge's initial
    histogram holds one count, at its maximal affinity. False: every voxel-edge affinity is counted.
    (A waterz spelling of ``merge_function`` that names the flag sets it.)
    dust_merge_size: segments smaller than this merge into their best-scoring neighbour (0 = off).
    dust_remove_size: segments smaller than this (after dust merging) become background 0 (0 = off).
    channels: the three short-range affinity channels (z, y, x) to read.
    segment_ids / agglomeration: one of :data:`SEGMENT_ID_MODES` / :data:`BACKENDS`.
    """

    aff_threshold: tuple[float, float] = (0.1, 0.999)
    thresholds: tuple[float, ...] = (0.5,)
    merge_function: str = "aff85_his256"
    init_with_max: bool = True
    dust_merge_size: int = 0
    dust_remove_size: int = 0
    channels: tuple[int, int, int] = (0, 1, 2)
    segment_ids: str = "packed"
    agglomeration: str = "auto"

    def __post_init__(self) -> None:
        ths = _floats(self.thresholds)
        if not ths:
            raise InputError("decode.thresholds: expected at least one threshold")
        if any(not 0.0 <= t <= 1.0 for t in ths):
            raise InputError(f"decode.thresholds {list(ths)}: expected values in [0, 1]")
        if list(ths) != sorted(ths):
            raise InputError(f"decode.thresholds {list(ths)}: expected ascending values")
        bounds = _floats(self.aff_threshold)
        if len(bounds) != 2 or not 0.0 <= bounds[0] < bounds[1] <= 1.0:
            raise InputError(
                f"decode.aff_threshold {list(bounds)}: expected [low, high] with 0 <= low < high <= 1 "
                "(e.g. [0.1, 0.999])"
            )
        fn = parse_merge_function(self.merge_function)  # raises InputError naming the field
        init = bool(self.init_with_max if fn.init_with_max is None else fn.init_with_max)
        for name in ("dust_merge_size", "dust_remove_size"):
            if int(getattr(self, name)) < 0:
                raise InputError(f"decode.{name} {getattr(self, name)}: expected a non-negative voxel count")
        ch = tuple(int(c) for c in self.channels)
        if len(ch) != 3 or any(c < 0 for c in ch):
            raise InputError(f"decode.channels {list(self.channels)}: expected three channel indices (z, y, x)")
        if self.segment_ids not in SEGMENT_ID_MODES:
            raise InputError(f"decode.segment_ids {self.segment_ids!r}: expected one of {', '.join(SEGMENT_ID_MODES)}")
        if self.agglomeration not in BACKENDS:
            raise InputError(f"decode.agglomeration {self.agglomeration!r}: expected one of {', '.join(BACKENDS)}")
        if self.agglomeration == "waterz" and not _waterz_supports(fn.scoring, init):
            raise InputError(
                f"decode.agglomeration 'waterz': merge function {self.merge_function!r} "
                f"(init_with_max={init}) is not supported; expected aff<Q>_his256 with Q in "
                "10, 15, .., 95 and init_with_max=true (or use python)"
            )
        for name, value in (("thresholds", ths), ("aff_threshold", bounds), ("init_with_max", init),
                            ("dust_merge_size", int(self.dust_merge_size)),
                            ("dust_remove_size", int(self.dust_remove_size)), ("channels", ch)):
            object.__setattr__(self, name, value)

    # ---- derived values (what the kernels read) ---------------------------------------------------
    @property
    def aff_threshold_low(self) -> float:
        return self.aff_threshold[0]

    @property
    def aff_threshold_high(self) -> float:
        return self.aff_threshold[1]

    @property
    def scoring(self) -> Scoring:
        return parse_merge_function(self.merge_function).scoring

    @property
    def max_threshold(self) -> float:
        return max(self.thresholds)

    @property
    def full_histograms(self) -> bool:
        """Whether edges need every voxel-edge's bin (a quantile without InitWithMax)."""
        return self.scoring.kind == "quantile" and not self.init_with_max

    @property
    def dust_limit(self) -> int:
        """Segments below this size take part in dust handling (0: none)."""
        return max(self.dust_merge_size, self.dust_remove_size) if self.dust_merge_size > 0 else 0

    @property
    def naming(self) -> str:
        """How agglomeration names segments: "consecutive" starts from packed ids (renumbered later)."""
        return "packed" if self.segment_ids == "consecutive" else self.segment_ids

    @property
    def backend(self) -> str:
        """The agglomeration backend that runs: "auto" is "distributed"."""
        return "distributed" if self.agglomeration == "auto" else self.agglomeration

    @property
    def waterz_supported(self) -> bool:
        """True when the waterz backend reproduces this merge function exactly."""
        return _waterz_supports(self.scoring, self.init_with_max)

    def replace(self, **changes) -> "DecodeParams":
        """A copy with ``changes``, validated again (e.g. one merge function of a tune)."""
        return dataclasses.replace(self, **changes)


def _waterz_supports(scoring: Scoring, init_with_max: bool) -> bool:
    return scoring.kind == "quantile" and bool(init_with_max) and scoring.quantile in WATERZ_QUANTILES
