"""Pure per-chunk kernels (numpy in, numpy out): decoding and evaluation. No dask, zarr or pydantic."""

from em_chunks.ops.agglomerate import agglomerate
from em_chunks.ops.decode_reference import decode_volume, zero_padded_crop
from em_chunks.ops.exact_sum import ExactSum
from em_chunks.ops.fragments import (
    FragmentSummary,
    FragmentTable,
    fragment_chunk,
    link_chunk,
    resolve_fragments,
)
from em_chunks.ops.ids import IdLookup, pack_ids, relabel_chunk
from em_chunks.ops.metric_sums import MetricSums
from em_chunks.ops.metrics import (
    Contingency,
    aggregate_contingency,
    contingency,
    merge_contingency,
    scores,
)
from em_chunks.ops.params import MERGE_FUNCTIONS, DecodeParams, parse_merge_function
from em_chunks.ops.region_graph import EdgeHistograms, merge_histograms, region_graph_chunk, stage_c_chunks
from em_chunks.ops.tune import score_agglomerations

__all__ = [
    "MERGE_FUNCTIONS", "Contingency", "DecodeParams", "EdgeHistograms", "ExactSum", "FragmentSummary",
    "FragmentTable", "MetricSums",
    "IdLookup", "agglomerate", "aggregate_contingency", "contingency", "decode_volume", "fragment_chunk",
    "link_chunk", "merge_contingency", "merge_histograms", "pack_ids", "parse_merge_function", "zero_padded_crop",
    "region_graph_chunk", "relabel_chunk", "resolve_fragments", "score_agglomerations", "scores", "stage_c_chunks",
]
