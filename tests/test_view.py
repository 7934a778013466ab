"""``emchunks view`` serves a neuroglancer state whose layers point at the output's arrays, checked
over its HTTP endpoints on loopback (the state stream the browser reads, the files it fetches), no
browser."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import urllib.request
import zlib

import numpy as np
import pytest
import tifffile
import zarr

from em_chunks.api.decode import decode
from em_chunks.synthetic import make_synthetic_em, synthetic_affinities

pytest.importorskip("neuroglancer")


def _get(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        assert r.status == 200, url
        return r.read()


def _state(viewer_url: str) -> dict:
    """The viewer state, read from the event stream neuroglancer's page subscribes to."""
    base, token = viewer_url.rstrip("/").rsplit("/v/", 1)
    with urllib.request.urlopen(f"{base}/events/{token}?c=test&gc=&gs=", timeout=10) as stream:
        for line in stream:
            line = line.decode().strip()
            if line.startswith("data:"):
                msg = json.loads(line[5:])
                if msg["k"] == "s":
                    return msg["s"]
    raise AssertionError("no state in the event stream")


@pytest.fixture(scope="module")
def output(tmp_path_factory, cluster_client):
    d = tmp_path_factory.mktemp("view")
    image, labels = make_synthetic_em((10, 48, 40), seed=1)
    affs = synthetic_affinities(labels, noise=0.05, seed=0).astype(np.float32)
    arr = zarr.create_array(
        str(d / "affs.zarr"), shape=affs.shape, dtype=affs.dtype, chunks=(3, 5, 24, 20)
    )
    arr[:] = affs
    arr.attrs["voxel_size"] = [30, 6, 6]
    tifffile.imwrite(d / "raw.tif", image, description=json.dumps({"voxel_size": [30, 6, 6]}))
    decode(d / "affs.zarr", d / "out.zarr", "1,2,2", client=cluster_client, progress=False)
    return d, image


def test_view_serves_layers_that_point_at_the_arrays(output):
    d, image = output
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "em_chunks",
            "view",
            str(d / "out.zarr"),
            "--raw",
            str(d / "raw.tif"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("neuroglancer: http://127.0.0.1:"), line + proc.stderr.read()
        url = line.split(": ", 1)[1].strip()
        assert b"neuroglancer" in _get(url).lower()  # the viewer page
        state = _state(url)
        layers = {layer["name"]: layer for layer in state["layers"]}
        assert [layer["type"] for layer in state["layers"]] == ["image", "image", "segmentation"]
        assert state["dimensions"] == {"x": [6e-09, "m"], "y": [6e-09, "m"], "z": [3e-08, "m"]}
        # the output's arrays: the browser reads them itself from the file server (zarr3:// sources)
        image_src = layers["mean affinity"]["source"][0]["url"]
        seg_src = layers["segmentation"]["source"][0]["url"]
        assert (
            image_src.startswith("zarr3://http://127.0.0.1:")
            and seg_src == image_src + "labels/segmentation/"
        )
        root = json.loads(_get(image_src[len("zarr3://") :] + "zarr.json"))
        assert root["attributes"]["ome"]["multiscales"][0]["name"] == "mean_affinity"
        seg = json.loads(_get(seg_src[len("zarr3://") :] + "zarr.json"))
        assert seg["attributes"]["ome"]["image-label"]["source"]["image"] == "../../"
        level0 = json.loads(_get(seg_src[len("zarr3://") :] + "0/zarr.json"))
        assert level0["data_type"] == "uint64" and level0["shape"] == list(image.shape)
        base = image_src[len("zarr3://") :].rsplit("/", 2)[0]
        with pytest.raises(urllib.error.HTTPError):  # nothing outside the token's folder is served
            _get(base + "/zarr.json")
        # the raw image: served by the viewer's own server, read lazily from the TIFF
        raw_src = (
            layers["raw"]["source"][0]["url"]
            if isinstance(layers["raw"]["source"], list)
            else layers["raw"]["source"]
        )
        raw_src = raw_src["url"] if isinstance(raw_src, dict) else raw_src
        assert raw_src.startswith("python://volume/")
        key = raw_src[len("python://volume/") :]
        server = url.rstrip("/").rsplit("/v/", 1)[0]
        info = json.loads(_get(f"{server}/neuroglancer/info/{key}"))
        assert info["dataType"] == "uint8" and info["volumeType"] == "image"
        assert {k: (pytest.approx(v[0]), v[1]) for k, v in info["coordinateSpace"].items()} == {
            "z": (30e-9, "m"),
            "y": (6e-9, "m"),
            "x": (6e-9, "m"),
        }
        assert info["shape"] == list(image.shape)
        box = _get(
            f"{server}/neuroglancer/npz/{key}/1,1,1/2,3,4/5,20,30"
        )  # the voxels, as the page asks
        voxels = np.load(io.BytesIO(zlib.decompress(box)))
        assert np.array_equal(voxels, image[2:5, 3:20, 4:30])
        proc.send_signal(signal.SIGINT)  # Ctrl-C: stops quietly
        code = proc.wait(timeout=30)
        err = proc.stderr.read()
        assert code == 0 and "Traceback" not in err, err
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_without_neuroglancer_one_line_says_how_to_install(output, tmp_path):
    d, _ = output
    code = (
        "import sys; sys.modules['neuroglancer'] = None; from em_chunks.cli.main import main; "
        f"sys.exit(main(['view', {str(d / 'out.zarr')!r}]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install" in lines[0] and "view" in lines[0]


def test_view_refuses_what_is_not_an_output(tmp_path, capsys):
    from em_chunks.cli.main import main

    (tmp_path / "x").mkdir()
    assert main(["view", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not an emchunks output" in err[0]


def test_affinities_show_as_rgb_and_older_outputs_open(tmp_path):
    """A predict-like output (4D affinities at the root) and a layout-1 output, served
    in-process."""
    from em_chunks.api.view import serve
    from em_chunks.io import layout
    from em_chunks.io.ome_zarr import create_label, create_root_image, open_root

    out = tmp_path / "p.zarr"
    root = open_root(out)
    create_root_image(root, "affinities", (3, 4, 16, 16), np.float32, (3, 4, 16, 16), (20, 10, 10))[
        :
    ] = 0.5
    create_label(root, layout.SEGMENTATION, (4, 16, 16), np.uint64, (4, 16, 16), (20, 10, 10))[
        :
    ] = 1
    old = tmp_path / "old.zarr"
    legacy = zarr.open_group(str(old), mode="w", zarr_format=3)
    for name, group in (
        ("affinities", legacy.require_group("affinities")),
        ("segmentation", legacy.require_group("labels").require_group("segmentation")),
    ):
        group.attrs["ome"] = {
            "version": "0.5",
            "multiscales": [
                {
                    "name": name,
                    "axes": [],
                    "datasets": [
                        {
                            "path": "0",
                            "coordinateTransformations": [
                                {"type": "scale", "scale": [1.0, 30.0, 6.0, 6.0]}
                            ],
                        }
                    ],
                }
            ],
        }
    legacy["affinities"].create_array(
        "0", shape=(3, 4, 16, 16), dtype=np.float32, chunks=(3, 4, 16, 16)
    )
    legacy["labels/segmentation"].create_array(
        "0", shape=(4, 16, 16), dtype=np.uint64, chunks=(4, 16, 16)
    )
    for path, scales, image_path in (
        (out, [20e-9, 10e-9, 10e-9], "/"),
        (old, [30e-9, 6e-9, 6e-9], "/affinities/"),
    ):
        session = serve(path)
        try:
            state = json.loads(json.dumps(session.viewer.state.to_json()))
            layers = {layer["name"]: layer for layer in state["layers"]}
            assert list(layers) == ["affinities", "segmentation"]
            aff = layers["affinities"]
            source = aff["source"] if isinstance(aff["source"], dict) else aff["source"][0]
            assert source["url"] == f"zarr3://{session.data_url}{image_path}"
            assert list(source["transform"]["outputDimensions"]) == [
                "c^",
                "z",
                "y",
                "x",
            ]  # channels -> RGB
            assert "emitRGB" in aff["shader"]
            assert [state["dimensions"][a][0] for a in "zyx"] == pytest.approx(scales)
            assert json.loads(_get(source["url"][len("zarr3://") :] + "0/zarr.json"))["shape"] == [
                3,
                4,
                16,
                16,
            ]
        finally:
            session.stop()
