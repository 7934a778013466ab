"""Dependency-free geometry: boxes and chunk grids (no dask, zarr, or pydantic here)."""

from em_chunks.geometry.box import Box
from em_chunks.geometry.grid import Chunk, ChunkGrid, parse_chunks, snapped_split, split_axis, storage_aligned

__all__ = ["Box", "Chunk", "ChunkGrid", "parse_chunks", "snapped_split", "split_axis", "storage_aligned"]
