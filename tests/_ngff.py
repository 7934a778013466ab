"""What a new user's tools see in an emchunks output: ome-zarr-py's Reader (napari's reader) and the
ome-zarr-models NGFF 0.5 validators, on the path the CLI prints."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import zarr

ome_zarr_reader = pytest.importorskip("ome_zarr.reader")
pytest.importorskip("ome_zarr_models")


def reader_nodes(path: Path) -> list:
    """(spec names, level shapes, node path) of every node ome-zarr-py's Reader yields for
    ``path``."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    location = parse_url(str(path))
    assert location is not None, f"ome-zarr-py cannot open {path}"
    return [
        ([type(s).__name__ for s in n.specs], [tuple(d.shape) for d in n.data], str(n.zarr))
        for n in Reader(location)()
    ]


def validate_output(path: Path) -> None:
    """Every group emchunks wrote validates (root image, labels, each label), and listing the root's
    members meets only zarr nodes (no warning about stray files)."""
    from ome_zarr_models.v05.image import Image
    from ome_zarr_models.v05.image_label import ImageLabel
    from ome_zarr_models.v05.labels import Labels

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any zarr warning fails the check
        root = zarr.open_group(str(path), mode="r")
        list(root.keys())
        list(root["labels"].keys())
    Image.from_zarr(root)
    Labels.from_zarr(root["labels"])
    for name in dict(root["labels"].attrs)["ome"]["labels"]:
        ImageLabel.from_zarr(root["labels"][name])
