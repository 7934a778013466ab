"""tune: one region graph per watershed setting, exact metrics per trial, best setting as a valid workflow."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
import zarr
from scipy.ndimage import gaussian_filter

from em_chunks.api.decode import decode
from em_chunks.api.tune import best_workflow_yaml, tune
from em_chunks.api.workflow import Workflow
from em_chunks.config.decode import DecodeConfig
from em_chunks.synthetic import make_synthetic_em, synthetic_affinities


@pytest.fixture(scope="module")
def blurred(tmp_path_factory):
    d = tmp_path_factory.mktemp("tune")
    _, labels = make_synthetic_em((16, 48, 48), seed=5)
    affs = synthetic_affinities(labels, noise=0.0)
    rng = np.random.default_rng(1)
    affs = np.clip(np.stack([gaussian_filter(a, 1.2) for a in affs]) + rng.normal(0, 0.15, affs.shape), 0, 1).astype(np.float32)
    zarr.save_array(str(d / "affs.zarr"), affs, zarr_format=3)
    zarr.save_array(str(d / "gt.zarr"), labels.astype(np.uint32), zarr_format=3)
    return d / "affs.zarr", d / "gt.zarr"


def test_tune_trials_equal_a_full_decode(blurred, cluster_client, tmp_path):
    affs, gt = blurred
    result = tune(affs, gt, tmp_path / "tune.zarr", "2,2,2", merge_functions=("aff85_his256", "aff50_his256"),
                  thresholds=(0.2, 0.5, 0.8), client=cluster_client, progress=False)
    trials = result["trials"]
    assert len(trials) == 6
    assert [t["adapted_rand_error"] for t in trials] == sorted(t["adapted_rand_error"] for t in trials)
    assert len({round(t["adapted_rand_error"], 12) for t in trials}) > 1  # settings make a difference
    pick = next(t for t in trials if t["merge_function"] == "aff50_his256" and t["threshold"] == 0.5)
    m = decode(affs, tmp_path / "check.zarr", "1,2,2", DecodeConfig(merge_function="aff50_his256", thresholds=(0.5,)), gt,
               client=cluster_client, progress=False)
    assert m["adapted_rand_error"] == pytest.approx(pick["adapted_rand_error"], abs=1e-12)
    assert m["voi_split"] == pytest.approx(pick["voi_split"], abs=1e-12)
    doc = yaml.safe_load(best_workflow_yaml(result["best"]))
    wf = Workflow.model_validate(doc)
    assert wf.decode.merge_function == result["best"]["merge_function"]
    assert wf.decode.thresholds == (result["best"]["threshold"],)
