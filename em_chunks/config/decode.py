"""The ``decode:`` section of a workflow: waterz-style watershed + agglomeration parameters.

Defaults are the PyTC SNEMI3D recipe's: aff85_his256, aff_threshold [0.1, 0.999], threshold 0.5.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from em_chunks.config.base import FrozenModel

MergeFunction = Literal[
    "aff85_his256", "aff75_his256", "aff50_his256", "aff25_his256", "aff15_his256", "aff50_mean", "mean"
]


class DecodeConfig(FrozenModel):
    """How affinities become a segmentation."""

    aff_threshold: tuple[float, float] = Field((0.1, 0.999), description="watershed [low, high] affinity thresholds")
    thresholds: tuple[float, ...] = Field((0.5,), description="agglomeration thresholds; the first is written")
    merge_function: MergeFunction = "aff85_his256"
    dust_merge_size: int = Field(0, ge=0, description="merge segments smaller than this into their best neighbour")
    dust_remove_size: int = Field(0, ge=0, description="set segments smaller than this (after merging) to 0")
    channels: tuple[int, ...] = Field((0, 1, 2), description="affinity channels used: z, y, x short range")
    segment_ids: Literal["packed", "first_voxel", "consecutive"] = Field(
        "packed", description="packed: chunk index in the high bits; first_voxel: 1 + flat index of the "
        "segment's first voxel (bit-identical output for any chunk grid); consecutive: 1..N, for tools that "
        "index by label (renumbered on the workers, no serial pass)")
    agglomeration: Literal["auto", "distributed", "python", "waterz"] = Field(
        "auto", description="distributed (auto): exact merging on the workers, block by block; python / waterz: "
        "the whole region graph in one worker task (the single-process reference; waterz breaks ties its own way)")

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v:
            raise ValueError("at least one threshold is needed")
        if any(not 0.0 <= t <= 1.0 for t in v):
            raise ValueError("thresholds must lie in [0, 1]")
        return v

    @model_validator(mode="after")
    def _check(self) -> "DecodeConfig":
        low, high = self.aff_threshold
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"aff_threshold must be [low, high] with 0 <= low < high <= 1, got [{low}, {high}]")
        if len(self.channels) != 3:
            raise ValueError("channels must name three affinity channels (z, y, x)")
        return self
