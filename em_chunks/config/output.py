"""The ``output:`` section of a workflow: what is written for people to look at
(docs/outputs.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from em_chunks.config.base import FrozenModel


class OutputConfig(FrozenModel):
    """Multiscale pyramids of the output image and segmentation, so large outputs can be browsed."""

    pyramid: Literal["auto", "on", "off"] = Field(
        "auto",
        description="auto: a pyramid when the volume has more than pyramid_min_voxels voxels",
    )
    pyramid_min_voxels: int = Field(
        1 << 24, ge=1, description="auto's size threshold (voxels per channel)"
    )
    pyramid_tile: int = Field(
        256, ge=1, description="add levels until every axis fits this many voxels"
    )
    keep_intermediates: bool = Field(
        False, description="keep work/ and the global steps' files after a complete run (resume needs "
        "them only until then; engine/cleanup.py)")

    def wants_pyramid(self, shape: tuple[int, ...]) -> bool:
        """Whether a volume of ``shape`` (z, y, x) gets a pyramid."""
        if self.pyramid != "auto":
            return self.pyramid == "on"
        voxels = 1
        for s in shape[-3:]:
            voxels *= int(s)
        return voxels > self.pyramid_min_voxels
