"""The registry's real architectures on real EM data: chunked == whole, also on CUDA with AMP (if present)."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from em_chunks.geometry import ChunkGrid
from em_chunks.io.padding import read_padded
from em_chunks.learn.inference import SlidingWindow, predict_box, predict_volume, prepare_model
from em_chunks.learn.models import build_model



@pytest.fixture(autouse=True)
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def raw() -> np.ndarray:
    import tifffile

    from _data import require

    return np.ascontiguousarray(tifffile.imread(require("fib_medulla_250", "image.tif"))[100:116, 60:124, 60:124])


def chunked(model, vol, sw, pieces, **options):
    out = None
    for chunk in ChunkGrid(vol.shape, pieces):
        ctx = sw.context_for(chunk.core)
        core = predict_box(model, read_padded(vol, ctx, sw.boundary), ctx, chunk.core, sw, **options)
        out = np.zeros((core.shape[0],) + vol.shape, core.dtype) if out is None else out
        out[(slice(None),) + chunk.core.slices()] = core
    return out


@pytest.mark.parametrize("name", ["rsunet", "unet"])
def test_registry_models_chunk_exactly_on_real_data(raw, name):
    torch.manual_seed(0)
    config = {"widths": [4, 8], "out_channels": 3}
    if name == "rsunet":
        config["pooling"] = [1, 2, 2]
    model = prepare_model(build_model(name, **config), "cpu")
    sw = SlidingWindow(raw.shape, (8, 32, 32), pad=(2, 8, 8))
    whole = predict_volume(model, raw, sw)
    assert whole.min() >= 0 and whole.max() <= 1  # sigmoid of the model's logits
    np.testing.assert_array_equal(chunked(model, raw, sw, (2, 2, 3)), whole)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_amp_chunked_equals_whole(raw):
    torch.manual_seed(0)
    model = prepare_model(build_model("rsunet", widths=[8, 12], pooling=[1, 2, 2], out_channels=3), "cuda")
    sw = SlidingWindow(raw.shape, (8, 32, 32), pad=(2, 8, 8), sw_batch_size=4)
    opts = dict(device="cuda", amp=True)
    whole = predict_volume(model, raw, sw, **opts)
    np.testing.assert_array_equal(chunked(model, raw, sw, (2, 2, 3), **opts), whole)
    cpu = predict_volume(prepare_model(model.float(), "cpu"), raw, sw)
    assert np.abs(cpu - whole).max() < 0.05  # bf16 against float32: close, not equal
