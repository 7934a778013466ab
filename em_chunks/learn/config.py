"""The ``train:`` section of a workflow YAML, as strict frozen pydantic models.

The same object drives the CLI, the Python API and the run record (it is saved, as a plain dict, in every
checkpoint). Other top-level sections of a workflow (``predict:``, ``decode:``) belong to other stages and
are ignored here; the lead's ``Workflow`` model composes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Union

from pydantic import Field, field_validator, model_validator

from em_chunks.config.base import FrozenModel, apply_overrides, load_yaml, named_overrides, validate
from em_chunks.config.predict import TTAMode
from em_chunks.errors import InputError

FORMAT_VERSION = 1
#: top-level workflow sections; an override not starting with one of them is taken as ``train.<key>``
SECTIONS = ("train", "predict", "decode", "evaluate", "tune", "workflow", "format_version")

Triple = tuple[int, int, int]


class ModelSection(FrozenModel):
    """Architecture by registry name; ``config`` goes to ``build_model`` (channels are filled in from the
    data: 1 input channel, one output per affinity offset)."""

    architecture: str = "unet"
    config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("architecture")
    @classmethod
    def _known(cls, v: str) -> str:
        from em_chunks.learn.models import list_models

        if v not in list_models():
            raise ValueError(f"unknown architecture {v!r}, expected one of {', '.join(list_models())}")
        return v


class VolumeSection(FrozenModel):
    """One training volume; ``weight`` is its share of samples (several volumes, as SKOOTS allows)."""

    image: str
    label: Optional[str] = None
    valid_mask: Optional[str] = None
    weight: float = Field(1.0, gt=0)
    #: [[z0, y0, x0], [z1, y1, x1]]: use only this part (e.g. the rest is the validation split)
    roi: Optional[tuple[Triple, Triple]] = None


class RejectionSection(FrozenModel):
    """PyTC ``REJECT_SAMPLING``: fewer than ``size_thres`` foreground voxels -> rejected with prob. ``p``."""

    size_thres: int = Field(-1, ge=-1)
    p: float = Field(0.95, ge=0, le=1)
    min_valid_ratio: float = Field(0.5, ge=0, le=1)


class ValidationSplit(FrozenModel):
    """Hold out the last ``fraction`` of every training volume (or its roi) along ``axis`` for validation:
    those voxels are never read for a training batch (the training chunks and their context end before
    them). CREMI/SNEMI practice: the last sections (``axis: z``) are the validation set."""

    fraction: float = Field(0.0, ge=0, lt=1)
    axis: Literal["z", "y", "x"] = "z"


class DecoderSearchSection(FrozenModel):
    """The decoder search at the end of training: the kept checkpoints' affinities on the validation
    region, decoded with every merge function x threshold x aff_threshold and scored exactly (adapted
    Rand, VOI) against its labels; the winner is stored in ``best.pt`` and used by ``predict``."""

    enabled: bool = True
    #: "kept": every kept checkpoint (``keep_best``), best.pt becomes the one decoding best; "best": only best.pt
    checkpoints: Literal["kept", "best"] = "kept"
    merge_functions: tuple[str, ...] = ("aff85_his256", "aff75_his256", "aff50_his256", "aff25_his256",
                                        "aff15_his256", "mean")
    thresholds: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))
    aff_thresholds: tuple[tuple[float, float], ...] = ((0.1, 0.999), (0.3, 0.999), (0.01, 0.999))
    #: pieces per axis for the validation region's inference and decoding
    chunks: Triple = (1, 1, 1)
    #: how the validation region is predicted (predict.tta's modes; the window, default the training
    #: patch); stored with the decoder, so predict makes the affinities it was tuned on (unless
    #: predict.tta / predict.window are given)
    tta: TTAMode = "none"
    window: Optional[Triple] = None

    @field_validator("merge_functions")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from em_chunks.config.decode import DecodeConfig

        for mf in v:
            DecodeConfig(merge_function=mf)  # type: ignore[arg-type]
        if not v:
            raise ValueError("at least one merge function is needed")
        return v

    @field_validator("thresholds")
    @classmethod
    def _unit(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v or any(not 0 <= t <= 1 for t in v):
            raise ValueError("thresholds: one or more values in [0, 1]")
        return v


class DataSection(FrozenModel):
    volumes: list[VolumeSection] = Field(default_factory=list)
    validation: list[VolumeSection] = Field(default_factory=list)
    validation_split: ValidationSplit = ValidationSplit()
    #: the model's input/output patch (z, y, x); for dims=2 the z size must be 1
    patch: Triple = (32, 128, 128)
    batch_size: int = Field(1, ge=1)
    #: pieces per axis (PyTC DATA_CHUNK_NUM), overridden by --chunks
    chunks: Triple = (1, 1, 1)
    #: patches drawn from a loaded chunk before moving on (PyTC DATA_CHUNK_ITER)
    chunk_iter: int = Field(256, ge=1)
    #: "aff3", "aff12", "aff2" or an explicit list of offsets
    target: Union[str, list[list[int]]] = "aff3"
    rejection: RejectionSection = RejectionSection()
    #: widen label boundaries by this many voxels per side before the targets (PyTC LABEL_EROSION): an
    #: int, or one per axis z, y, x (e.g. [0, 1, 1] for anisotropic sections); 0 keeps the labels
    label_erosion: Union[int, Triple] = 0
    #: batch tasks in flight at most (backpressure bound)
    window: int = Field(6, ge=1)
    dims: Literal[2, 3] = 3
    voxel_size: Optional[tuple[float, float, float]] = None
    validation_batches: int = Field(4, ge=1)

    @field_validator("patch", "chunks")
    @classmethod
    def _positive(cls, v: Triple) -> Triple:
        if any(x < 1 for x in v):
            raise ValueError(f"{v}: every entry must be a positive integer")
        return v

    @model_validator(mode="after")
    def _check(self) -> "DataSection":
        from em_chunks.learn.targets import affinity_offsets

        offsets = affinity_offsets(self.target)
        if len(offsets[0]) != self.dims:
            raise ValueError(f"target {self.target!r} has {len(offsets[0])}-axis offsets but dims is {self.dims}")
        radius = (self.label_erosion,) if isinstance(self.label_erosion, int) else self.label_erosion
        if any(r < 0 for r in radius):
            raise ValueError(f"label_erosion {self.label_erosion}: expected voxels >= 0")
        if self.dims == 2 and self.patch[0] != 1:
            raise ValueError(f"dims 2 trains on sections: patch z must be 1, got {self.patch}")
        return self

    @property
    def erosion_radius(self) -> tuple[int, int, int]:
        """``label_erosion`` per axis; 2D training never erodes across sections."""
        r = (self.label_erosion,) * 3 if isinstance(self.label_erosion, int) else tuple(self.label_erosion)
        return (0, r[1], r[2]) if self.dims == 2 else r  # type: ignore[return-value]

    @property
    def offsets(self) -> list[tuple[int, ...]]:
        from em_chunks.learn.targets import affinity_offsets

        return affinity_offsets(self.target)


class LossTerm(FrozenModel):
    """A loss by name with its weight and the iteration it starts at (e.g. Dice joining after warmup)."""

    name: Literal["bce", "weighted_bce", "dice", "tversky"]
    weight: float = Field(1.0, ge=0)
    start: int = Field(0, ge=0)
    params: dict[str, float] = Field(default_factory=dict)


class OptimizerSection(FrozenModel):
    """AdamW with a warmup + cosine schedule (optionally with warm restarts every ``restart_period``)."""

    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    scheduler: Literal["constant", "warmup_cosine", "cosine_restarts"] = "warmup_cosine"
    warmup: int = Field(100, ge=0)
    min_lr_ratio: float = Field(0.01, ge=0, le=1)
    restart_period: int = Field(1000, ge=1)
    restart_mult: float = Field(1.0, ge=1)
    grad_clip: Optional[float] = Field(1.0, gt=0)


class TrainConfig(FrozenModel):
    """Everything a training run needs; saved in every checkpoint as a plain dict."""

    format_version: int = FORMAT_VERSION
    iterations: int = Field(1000, ge=1)
    seed: int = 0
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    #: transform name -> {p, enabled, ...params}; see em_chunks.learn.augment.TRANSFORMS
    augment: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"flip": {"p": 1.0}, "grayscale": {"p": 0.5}})
    loss: list[LossTerm] = Field(default_factory=lambda: [LossTerm(name="weighted_bce")])
    optimizer: OptimizerSection = OptimizerSection()
    #: decoder search on the validation region after training (needs validation data)
    decoder_search: DecoderSearchSection = DecoderSearchSection()
    #: optional wall-clock cap (a recipe is defined by ``iterations``): the cosine decays over whichever of
    #: iterations and time runs out first, and training stops when the time is up
    time_limit_minutes: Optional[float] = Field(None, gt=0)
    #: stochastic weight averaging from this iteration on (None = off); written as swa.pt
    swa_start: Optional[int] = Field(None, ge=0)
    #: iterations between checkpoints (last.pt + a numbered one); None: about ten per run, at most every 500
    checkpoint_every: Optional[int] = Field(None, ge=1)
    #: also checkpoint when this many minutes passed since the last one (None: off), so a crash loses
    #: little; Ctrl-C and a time limit always save
    checkpoint_minutes: Optional[float] = Field(10.0, gt=0)
    keep_best: int = Field(3, ge=1)
    log_every: int = Field(10, ge=1)
    validate_every: int = Field(0, ge=0)
    #: mixed precision (bfloat16) and torch.compile: used only when CUDA is present
    amp: bool = True
    compile: bool = False
    device: str = "auto"

    @field_validator("format_version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v > FORMAT_VERSION:
            raise ValueError(f"format_version {v} is newer than this emchunks reads ({FORMAT_VERSION})")
        return v

    @field_validator("augment")
    @classmethod
    def _augment(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from em_chunks.learn.augment import build_augmentor

        build_augmentor(v)  # unknown names and bad parameters fail here, at load time
        return v

    @field_validator("loss")
    @classmethod
    def _some_loss(cls, v: list[LossTerm]) -> list[LossTerm]:
        if not v or all(t.start > 0 for t in v):
            raise ValueError("at least one loss term must start at iteration 0")
        return v

    @model_validator(mode="after")
    def _patch_fits_augment(self) -> "TrainConfig":
        if self.data.dims == 2:
            for name in ("misalignment", "missing_section"):
                if self.augment.get(name, {}).get("enabled", name in self.augment):
                    raise ValueError(f"augment.{name} needs 3D patches; disable it for dims 2")
        return self


def load_train_config(path: str | Path | None = None, overrides: list[str] | None = None, source: str | None = None,
                      override_names: Mapping[str, str] | None = None) -> TrainConfig:
    """Read the ``train:`` section of a workflow YAML (others are ignored), apply ``key=value`` overrides
    (``iterations=5`` means ``train.iterations=5``) and validate; bad input -> one-line :class:`InputError`
    naming the file, or the override that set the bad field (``override_names``: how to name some
    overrides, e.g. by the flag that made them)."""
    data: dict = {}
    if path is not None:
        raw = load_yaml(path)
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise InputError(f"{path}: a workflow must be a mapping with a 'train:' section")
        data = raw
    fixed, names = [], {}
    for item in overrides or []:
        key = item.split("=", 1)[0].strip()
        full = item if (not key or key.split(".")[0] in SECTIONS) else f"train.{item.strip()}"
        fixed.append(full)
        names[full] = (override_names or {}).get(item) or f"command-line override {item.strip()!r}"
    data = apply_overrides(data, fixed)
    section = data.get("train") or {}
    if not isinstance(section, dict):
        raise InputError(f"{source or path}: 'train' must be a mapping")
    return validate(TrainConfig, section, f"{source or path or 'train config'} (train)",
                    named_overrides(fixed, ("train",), names))
