"""The output a user opens: an NGFF image with its segmentation label, readable in one go from the
path the CLI prints; the run's own files out of zarr's way; outputs of the older layout refused on
resume."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from _ngff import reader_nodes, validate_output
from em_chunks.api.decode import decode
from em_chunks.api.evaluate import evaluate
from em_chunks.cli.main import main
from em_chunks.config.output import OutputConfig
from em_chunks.io import layout
from em_chunks.synthetic import make_synthetic_em, synthetic_affinities


@pytest.fixture(scope="module")
def affinities(tmp_path_factory):
    d = tmp_path_factory.mktemp("outputs")
    _, labels = make_synthetic_em((12, 40, 48), seed=2)
    affs = synthetic_affinities(labels, noise=0.05, seed=1).astype(np.float32)
    arr = zarr.create_array(
        str(d / "affs.zarr"), shape=affs.shape, dtype=affs.dtype, chunks=(3, 6, 20, 24)
    )
    arr[:] = affs
    arr.attrs["voxel_size"] = [40, 8, 8]
    zarr.save_array(str(d / "gt.zarr"), labels.astype(np.uint32), zarr_format=3)
    return d / "affs.zarr", d / "gt.zarr", labels


def test_decode_output_opens_with_its_label_and_validates(
    affinities, cluster_client, tmp_path, capsys
):
    affs, gt, labels = affinities
    out = tmp_path / "seg.zarr"
    decode(
        affs,
        out,
        "2,2,2",
        labels=gt,
        output=OutputConfig(pyramid="on", pyramid_tile=16),
        client=cluster_client,
        progress=False,
    )
    nodes = reader_nodes(out)
    kinds = [k for k, _, _ in nodes]
    assert kinds == [
        ["Multiscales"],
        ["Labels"],
        ["Label", "Multiscales"],
    ]  # image, labels, the label
    (_, image_levels, _), _, (_, label_levels, where) = nodes
    assert "seg.zarr/labels/segmentation" in where
    assert (
        image_levels[0] == labels.shape and label_levels == image_levels and len(image_levels) == 3
    )
    validate_output(out)
    # the label names an image that exists (no "no parent found"): the root, the mean affinity
    seg_group = zarr.open_group(layout.label_group(out), mode="r")
    assert dict(seg_group.attrs)["ome"]["image-label"]["source"]["image"] == "../../"
    image = zarr.open_array(layout.image_array(out), mode="r")
    assert image.dtype == np.uint8 and image.shape == labels.shape
    expected = np.floor(
        np.asarray(zarr.open_array(str(affs))[:], np.float64).mean(axis=0) * 255 + 0.5
    )
    assert np.array_equal(image[:], expected.astype(np.uint8))
    # the voxel size travelled into every level's scale
    ms = dict(zarr.open_group(str(out), mode="r").attrs)["ome"]["multiscales"][0]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [40.0, 8.0, 8.0]
    # the run's files sit in one group, out of the root; evaluate finds the segmentation from the
    # root
    assert json.loads(layout.metrics_json(out).read_text())["segments"] > 0
    assert {p.name for p in out.iterdir()} == {
        "zarr.json",
        "0",
        "1",
        "2",
        "labels",
        "emchunks",
    }  # no work/: a complete run removes its intermediates
    assert evaluate(out, gt, client=cluster_client)["adapted_rand_error"] < 0.1


def test_ome_zarr_info_reads_the_printed_path(affinities, tmp_path):
    affs, _, _ = affinities
    out = tmp_path / "cli.zarr"
    cmd = [
        sys.executable,
        "-m",
        "em_chunks",
        "decode",
        str(affs),
        "--chunks",
        "1,2,2",
        "--out",
        str(out),
        "--workers",
        "1",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"outputs: {out}" in done.stdout and f"emchunks view {out}" in done.stdout
    info = shutil.which("ome_zarr") or str(Path(sys.executable).with_name("ome_zarr"))
    shown = subprocess.run([info, "info", str(out)], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "segmentation" in shown.stdout + shown.stderr
    validate_output(out)


def _legacy_output(path):
    """An output as emchunks wrote it before layout 2."""
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    seg = root.require_group("labels").require_group("segmentation")
    seg.attrs["ome"] = {
        "version": "0.5",
        "image-label": {"version": "0.5", "source": {"image": "../../affinities"}},
        "multiscales": [
            {
                "name": "segmentation",
                "axes": [{"name": n, "type": "space"} for n in "zyx"],
                "datasets": [
                    {
                        "path": "0",
                        "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0, 1.0]}],
                    }
                ],
            }
        ],
    }
    return root, seg


def test_resuming_an_older_output_is_refused_in_one_line(affinities, tmp_path, capsys):
    affs, gt, labels = affinities
    old = tmp_path / "old.zarr"
    _, seg = _legacy_output(old)
    arr = seg.create_array("0", shape=labels.shape, dtype=np.uint64, chunks=(6, 20, 24))
    arr[:] = labels
    (old / ".emchunks").mkdir()
    (old / ".emchunks" / "fingerprint.json").write_text("{}")
    (old / "run.json").write_text("{}")
    before = sorted(p.name for p in old.rglob("*"))
    capsys.readouterr()
    assert (
        main(["decode", str(affs), "--chunks", "1,1,1", "--out", str(old), "--workers", "1"]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "older emchunks" in err[0] and "new --out" in err[0]
    assert sorted(p.name for p in old.rglob("*")) == before  # nothing written
    # an older output stays readable: evaluate finds its segmentation
    assert main(["evaluate", str(old), "--labels", str(gt), "--json", "--workers", "1"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["adapted_rand_error"] == 0.0
