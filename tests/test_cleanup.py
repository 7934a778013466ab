"""What a finished run keeps: intermediates removed (or kept on request), ``emchunks clean``, tune's stores."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from em_chunks.api.decode import decode
from em_chunks.api.tune import tune
from em_chunks.cli.main import main
from em_chunks.config.output import OutputConfig
from em_chunks.engine.cleanup import intermediates
from em_chunks.engine.state import RunState
from em_chunks.io import layout
from em_chunks.synthetic import make_synthetic_em, synthetic_affinities


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    d = tmp_path_factory.mktemp("cleanup")
    _, labels = make_synthetic_em((16, 48, 48), seed=2)
    affs = synthetic_affinities(labels, noise=0.1, seed=2)
    zarr.save_array(str(d / "affs.zarr"), affs, zarr_format=3)
    zarr.save_array(str(d / "gt.zarr"), labels.astype(np.uint32), zarr_format=3)
    return d / "affs.zarr", d / "gt.zarr"


def _seg(out):
    return zarr.open_array(layout.segmentation_array(out), mode="r")[:]


def test_kept_intermediates_are_freed_by_clean_and_the_results_stay(volume, cluster_client, tmp_path, capsys):
    affs, gt = volume
    out = tmp_path / "kept.zarr"
    decode(affs, out, "1,2,2", output=OutputConfig(keep_intermediates=True), client=cluster_client, progress=False)
    kept = intermediates(out)
    assert layout.work_group(out) in kept and RunState(out).dir / "data" in kept
    seg = _seg(out)
    capsys.readouterr()
    assert main(["clean", str(out)]) == 0
    said = capsys.readouterr().out
    assert said.startswith("freed ") and "MiB" in said
    assert intermediates(out) == []
    assert np.array_equal(_seg(out), seg)  # results untouched
    assert layout.metrics_json(out).exists() and layout.run_json(out).exists()
    capsys.readouterr()
    decode(affs, out, "1,2,2", output=OutputConfig(keep_intermediates=True), client=cluster_client, progress=False)
    assert "already complete" in capsys.readouterr().err  # still recognised as complete


def test_clean_refuses_a_folder_that_is_not_an_output(tmp_path, capsys):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "precious.txt").write_text("x")
    assert main(["clean", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err.strip()
    assert "not an emchunks output" in err and len(err.splitlines()) == 1
    assert (tmp_path / "other" / "precious.txt").exists()


def test_tune_removes_its_working_stores_unless_kept(volume, cluster_client, tmp_path):
    affs, gt = volume
    kw = dict(merge_functions=("aff50_his256",), thresholds=(0.5,), client=cluster_client, progress=False)
    a = tune(affs, gt, tmp_path / "t1.zarr", "1,2,2", **kw)
    assert not list((tmp_path / "t1.zarr").glob("aff-*.zarr"))
    b = tune(affs, gt, tmp_path / "t2.zarr", "1,2,2", keep=True, **kw)
    assert [p.name for p in (tmp_path / "t2.zarr").glob("aff-*.zarr")] == ["aff-0.1-0.999.zarr"]
    assert a["best"]["adapted_rand_error"] == b["best"]["adapted_rand_error"]
