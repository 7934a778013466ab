"""The compiled merging loop makes exactly the Python reference's decisions."""

import numpy as np
import pytest

from em_chunks.geometry import ChunkGrid
from em_chunks.ops.agglomerate import merge_graph
from em_chunks.ops.decode_reference import fragments_volume, region_graph_volume
from em_chunks.ops.merging import MergeGraph, merge_regions_python
from em_chunks.ops.params import DecodeParams
from test_ops_synth import fib_crop, synthetic

compiled = pytest.importorskip("em_chunks.ops.merging_compiled")
FIELDS = ("merge_a", "merge_b", "merge_level", "root", "frozen", "edge_index")
EDGE_FIELDS = ("u", "v", "count", "aff_sum", "ident", "hist_edge", "hist_bin", "hist_count", "combined")


@pytest.mark.parametrize("data", ["synthetic", "fib_uint8"])
@pytest.mark.parametrize("fn,init", [("aff85_his256", True), ("aff75_his256", False), ("aff50_mean", True)])
def test_compiled_loop_equals_the_python_merger(data, fn, init):
    if data == "synthetic":
        _, affs = synthetic(shape=(16, 40, 36), noise=0.15, seed=3)
    else:
        _, affs = fib_crop()
        affs = (np.round(affs * 255) / 255).astype(np.float32)  # ties
    params = DecodeParams(init_with_max=init)
    grid = ChunkGrid(affs.shape[1:], (1, 1, 1), 1)
    labels, table = fragments_volume(affs, grid, params)
    edges = region_graph_volume(affs, labels, table, grid, params, full_histograms=not init)
    params = params.replace(merge_function=fn, thresholds=(0.7,))
    scoring = params.scoring
    g = merge_graph(table, edges, params)
    rng = np.random.default_rng(1)
    with_open = MergeGraph(rng.random(g.n) > 0.2, *(getattr(g, f) for f in EDGE_FIELDS))  # open regions too
    frozen = rng.random(g.n) > 0.97
    for graph, fr in ((g, None), (with_open, frozen)):
        a = merge_regions_python(graph, scoring, 0.7, fr)
        b = compiled.merge_regions_compiled(graph, scoring, 0.7, fr)
        for f in FIELDS:
            assert np.array_equal(getattr(a, f), getattr(b, f)), f
        for f in EDGE_FIELDS:
            assert np.array_equal(getattr(a.edges, f), getattr(b.edges, f)), f
        assert a.merge_a.size > 50
