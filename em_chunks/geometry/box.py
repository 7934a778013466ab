"""An immutable axis-aligned box of voxels (offset + shape), the one geometry word every layer speaks.

Coordinates are integer voxels in (z, y, x) order. A box may reach outside a volume (negative offsets or
an end past the shape): that is how halos at the borders are described before padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence, Union

IntOrSeq = Union[int, Sequence[int]]


def _per_axis(value: IntOrSeq, ndim: int, name: str) -> tuple[int, ...]:
    """Broadcast an int to ``ndim`` axes, or check a sequence has ``ndim`` entries."""
    if isinstance(value, int):
        return (int(value),) * ndim
    out = tuple(int(v) for v in value)
    if len(out) != ndim:
        raise ValueError(f"{name} needs {ndim} values, got {len(out)}: {out}")
    return out


@dataclass(frozen=True, slots=True)
class Box:
    """A box of voxels: ``offset`` (first voxel, inclusive) and ``shape`` per axis, ZYX."""

    offset: tuple[int, ...]
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        offset = tuple(int(v) for v in self.offset)
        shape = tuple(int(v) for v in self.shape)
        if len(offset) != len(shape):
            raise ValueError(f"offset {offset} and shape {shape} differ in dimensions")
        if any(s < 0 for s in shape):
            raise ValueError(f"a box cannot have a negative shape: {shape}")
        # frozen dataclass: normalise through object.__setattr__ once, at construction only
        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "shape", shape)

    # ---- constructors -------------------------------------------------------------------------
    @classmethod
    def from_bounds(cls, begin: Sequence[int], end: Sequence[int]) -> "Box":
        """The box ``[begin, end)``; an ``end`` before ``begin`` gives an empty axis."""
        return cls(tuple(begin), tuple(max(0, e - b) for b, e in zip(begin, end)))

    @classmethod
    def from_shape(cls, shape: Sequence[int]) -> "Box":
        """The box of a whole array of this shape, at the origin."""
        return cls((0,) * len(shape), tuple(shape))

    @classmethod
    def from_slices(cls, slices: Sequence[slice]) -> "Box":
        """The box selected by ``slices`` (each with start and stop, step 1)."""
        return cls.from_bounds([s.start for s in slices], [s.stop for s in slices])

    # ---- properties ---------------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def begin(self) -> tuple[int, ...]:
        return self.offset

    @property
    def end(self) -> tuple[int, ...]:
        """One past the last voxel, per axis."""
        return tuple(o + s for o, s in zip(self.offset, self.shape))

    @property
    def size(self) -> int:
        """Number of voxels."""
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def empty(self) -> bool:
        return any(s == 0 for s in self.shape)

    # ---- operations (each returns a new box) --------------------------------------------------
    def grow(self, before: IntOrSeq, after: IntOrSeq | None = None) -> "Box":
        """Grow by ``before`` voxels at the start of each axis and ``after`` (default: same) at the end."""
        b = _per_axis(before, self.ndim, "grow")
        a = b if after is None else _per_axis(after, self.ndim, "grow")
        return Box(
            tuple(o - x for o, x in zip(self.offset, b)),
            tuple(max(0, s + x + y) for s, x, y in zip(self.shape, b, a)),
        )

    def shift(self, by: IntOrSeq) -> "Box":
        d = _per_axis(by, self.ndim, "shift")
        return Box(tuple(o + x for o, x in zip(self.offset, d)), self.shape)

    def intersect(self, other: "Box") -> "Box":
        """The common part; empty (shape 0 on some axis) when they do not overlap."""
        begin = tuple(max(a, b) for a, b in zip(self.begin, other.begin))
        end = tuple(min(a, b) for a, b in zip(self.end, other.end))
        return Box.from_bounds(begin, tuple(max(b, e) for b, e in zip(begin, end)))

    def contains(self, other: "Box") -> bool:
        return all(
            sb <= ob and oe <= se
            for sb, se, ob, oe in zip(self.begin, self.end, other.begin, other.end)
        )

    def contains_point(self, point: Sequence[int]) -> bool:
        return all(b <= p < e for b, p, e in zip(self.begin, point, self.end))

    def relative_to(self, origin: "Box | Sequence[int]") -> "Box":
        """This box in the coordinates of ``origin`` (a box's offset or a point)."""
        o = origin.offset if isinstance(origin, Box) else tuple(origin)
        return Box(tuple(a - b for a, b in zip(self.offset, o)), self.shape)

    def slices(self, relative_to: "Box | Sequence[int] | None" = None) -> tuple[slice, ...]:
        """Slices that cut this box out of an array whose first voxel is ``relative_to``."""
        box = self if relative_to is None else self.relative_to(relative_to)
        return tuple(slice(b, e) for b, e in zip(box.begin, box.end))

    def iter_points(self) -> Iterable[tuple[int, ...]]:
        """Every voxel coordinate, C order (for small boxes and tests)."""
        import itertools

        return itertools.product(*(range(b, e) for b, e in zip(self.begin, self.end)))

    def __str__(self) -> str:
        span = ", ".join(f"{b}:{e}" for b, e in zip(self.begin, self.end))
        return f"[{span}]"
