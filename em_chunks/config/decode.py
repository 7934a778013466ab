"""The ``decode:`` section of a workflow: waterz-style watershed + agglomeration parameters.

Defaults are the PyTC SNEMI3D recipe's: aff85_his256, aff_threshold [0.1, 0.999], threshold 0.5.
This model is the schema (types, defaults, descriptions); the names an option may take and its
checks live in ``em_chunks/ops/params.py`` (the decode vocabulary), and :meth:`DecodeConfig.params`
is the one place that turns a config into the kernels' :class:`~em_chunks.ops.params.DecodeParams`.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from pydantic import Field, model_validator

from em_chunks.config.base import FrozenModel
from em_chunks.errors import InputError
from em_chunks.ops.params import BACKENDS, MERGE_FUNCTION_NAMES, SEGMENT_ID_MODES, DecodeParams

MergeFunction = Literal[MERGE_FUNCTION_NAMES]


class DecodeConfig(FrozenModel):
    """How affinities become a segmentation. Every field is a :class:`DecodeParams` field of the same name."""

    aff_threshold: tuple[float, float] = Field((0.1, 0.999), description="watershed [low, high] affinity thresholds")
    thresholds: tuple[float, ...] = Field((0.5,), description="agglomeration thresholds; the first is written")
    merge_function: MergeFunction = "aff85_his256"
    dust_merge_size: int = Field(0, description="merge segments smaller than this into their best neighbour")
    dust_remove_size: int = Field(0, description="set segments smaller than this (after merging) to 0")
    channels: tuple[int, ...] = Field((0, 1, 2), description="affinity channels used: z, y, x short range")
    segment_ids: Literal[SEGMENT_ID_MODES] = Field(
        "packed", description="packed: chunk index in the high bits; first_voxel: 1 + flat index of the "
        "segment's first voxel (bit-identical output for any chunk grid); consecutive: 1..N, for tools that "
        "index by label (renumbered on the workers, no serial pass)")
    agglomeration: Literal[BACKENDS] = Field(
        "auto", description="distributed (auto): exact merging on the workers, block by block; python / waterz: "
        "the whole region graph in one worker task (the single-process reference; waterz breaks ties its own way)")

    @model_validator(mode="after")
    def _check(self) -> "DecodeConfig":
        try:
            self.params()  # the checks are DecodeParams's: one set of rules for the YAML and the kernels
        except InputError as err:
            raise ValueError(str(err)) from None
        return self

    def params(self) -> DecodeParams:
        """The kernels' parameters: the fields of the same name, thresholds ascending (the first written)."""
        names = {f.name for f in dataclasses.fields(DecodeParams)}
        values = {k: getattr(self, k) for k in type(self).model_fields if k in names}
        return DecodeParams(**{**values, "thresholds": tuple(sorted(self.thresholds))})
