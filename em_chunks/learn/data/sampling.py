"""Drawing training samples from a loaded chunk: random positions, rejection sampling, valid masks.

Pure numpy, run on the loader workers next to the chunk. PyTC semantics:

* rejection sampling (``size_thres``, ``p``): a patch with fewer than ``size_thres`` foreground (label > 0)
  voxels is rejected with probability ``p``; ``size_thres = -1`` turns it off;
* valid masks: a patch whose valid ratio is below ``min_valid_ratio`` (0.5) is always rejected; the
  loss mask then ignores every edge touching an invalid voxel.

After ``max_tries`` rejections the last candidate is kept, so a pathological volume slows nothing down
forever (and the statistic is still right for any threshold that is met now and then).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from em_chunks.geometry import Box


@dataclass(frozen=True)
class Rejection:
    size_thres: int = -1
    p: float = 0.95
    min_valid_ratio: float = 0.5
    max_tries: int = 50

    def accept(self, label: np.ndarray, valid: Optional[np.ndarray], rng: np.random.Generator) -> bool:
        """Whether to keep a candidate patch (judged on the voxels the model will be trained on)."""
        if valid is not None and np.count_nonzero(valid) < self.min_valid_ratio * valid.size:
            return False
        if self.size_thres >= 0 and np.count_nonzero(label) < self.size_thres:
            return rng.random() >= self.p
        return True


def patch_origin(core: Box, context: Box, in_shape: Sequence[int], rng: np.random.Generator) -> tuple[int, ...]:
    """A random input-patch origin: centre uniform over the chunk's core, patch kept inside ``context``.

    Centres are drawn over the core so that every voxel of the volume is a centre in exactly one chunk;
    the patch is then slid (not padded) to fit the loaded context, so augmentations see real data.
    """
    out = []
    for cb, cs, xb, xs, n in zip(core.begin, core.shape, context.begin, context.shape, in_shape):
        centre = cb + int(rng.integers(0, max(cs, 1)))
        start = centre - n // 2
        start = min(max(start, xb), xb + max(xs - n, 0))
        out.append(start)
    return tuple(out)


def draw_patch(
    arrays: Mapping[str, np.ndarray],
    core: Box,
    context: Box,
    in_shape: Sequence[int],
    out_shape: Sequence[int],
    rejection: Rejection,
    rng: np.random.Generator,
) -> tuple[dict[str, np.ndarray], int]:
    """Cut one accepted input patch from a chunk's ``arrays`` (indexed in ``context`` coordinates).

    Returns the patch and the number of tries it took. Acceptance looks at the centre ``out_shape``
    region, the part the loss will see.
    """
    tries = 0
    while True:
        tries += 1
        origin = patch_origin(core, context, in_shape, rng)
        box = Box(origin, tuple(in_shape))
        patch = {k: v[box.slices(context)] for k, v in arrays.items()}
        inner = tuple(slice((a - b) // 2, (a - b) // 2 + b) for a, b in zip(in_shape, out_shape))
        valid = patch.get("valid")
        if rejection.accept(patch["label"][inner], None if valid is None else valid[inner], rng) or tries >= rejection.max_tries:
            return patch, tries


@dataclass(frozen=True)
class BatchSpec:
    """Everything a worker needs to make a batch: shapes, augmentations, targets, rejection (plain data)."""

    out_shape: tuple[int, int, int]
    batch_size: int
    offsets: tuple[tuple[int, ...], ...]
    augment: Mapping[str, Any] = field(default_factory=dict)
    rejection: Rejection = Rejection()
    dims: int = 3
    #: per-axis radius by which label boundaries are widened before the targets (0: labels as they are)
    label_erosion: tuple[int, int, int] = (0, 0, 0)
