"""open_volume: tile JSON, TIFF stacks and zarr (arrays, groups, OME-Zarr, (C,Z,Y,X)) as lazy dask arrays,
with the voxel size each source records."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from _tile_helpers import DATA, real_crop, requires_data, synthetic
from em_chunks import make_tileset, open_volume, voxel_size_of
from em_chunks.errors import InputError
from em_chunks.io.tiles import decode_count


@requires_data
def test_real_tiff_is_lazy_and_exact():
    path = DATA / "isbi2012" / "image.tif"
    arr = open_volume(path)
    assert isinstance(arr, da.Array) and arr.shape == (30, 512, 512) and arr.dtype == np.uint8
    assert arr.chunks == ((30,), (512,), (512,))  # 7.5 MiB < the 64 MiB block target: one page-run task
    assert (arr[2:4, 100:200, 50:60].compute() == real_crop("isbi2012", "image", 4, 512, 512)[2:4, 100:200, 50:60]).all()
    assert voxel_size_of(path) == (50.0, 4.0, 4.0)


def test_tiff_reads_only_the_pages_it_needs(tmp_path):
    vol = synthetic((40, 64, 64))
    tifffile.imwrite(tmp_path / "v.tif", vol, compression="zlib")
    arr = open_volume(tmp_path / "v.tif")
    assert (arr.compute() == vol).all()
    from em_chunks.io import volume as vmod

    part = vmod._read_pages(str(tmp_path / "v.tif"), 10, 3, (64, 64), "uint8")
    assert (part == vol[10:13]).all()


def test_big_tiff_is_split_into_page_blocks(tmp_path, monkeypatch):
    from em_chunks.io import volume as vmod

    monkeypatch.setattr(vmod, "TARGET_BYTES", 64 * 64 * 5)
    vol = synthetic((12, 64, 64))
    tifffile.imwrite(tmp_path / "v.tif", vol)
    arr = open_volume(tmp_path / "v.tif")
    assert arr.chunks[0] == (5, 5, 2)
    assert (arr.compute(scheduler="threads") == vol).all()


def test_single_page_uncompressed_volume_is_memory_mapped(tmp_path):
    """A volume stored as one (planar) page cannot be read page by page: it is memory-mapped instead."""
    vol = synthetic((3, 20, 20))
    tifffile.imwrite(tmp_path / "planar.tif", vol, photometric="rgb", planarconfig="separate")
    with tifffile.TiffFile(tmp_path / "planar.tif") as tif:
        assert len(tif.pages) == 1
    assert (open_volume(tmp_path / "planar.tif").compute() == vol).all()


def test_tiff_czyx_affinities(tmp_path):
    aff = np.random.default_rng(0).random((3, 6, 20, 24), dtype=np.float32)
    tifffile.imwrite(tmp_path / "aff.tif", aff, metadata={"axes": "CZYX"}, imagej=False)
    arr = open_volume(tmp_path / "aff.tif")
    assert arr.shape == (3, 6, 20, 24) and arr.dtype == np.float32
    assert (arr.compute() == aff).all()


def test_tiff_imagej_voxel_size(tmp_path):
    vol = synthetic((4, 16, 16))
    tifffile.imwrite(tmp_path / "ij.tif", vol, imagej=True, resolution=(1 / 4.0, 1 / 4.0),
                     metadata={"spacing": 40.0, "unit": "nm", "axes": "ZYX"})
    assert voxel_size_of(tmp_path / "ij.tif") == pytest.approx((40.0, 4.0, 4.0))
    assert (open_volume(tmp_path / "ij.tif").compute() == vol).all()


def test_tiff_without_metadata_has_no_voxel_size(tmp_path):
    tifffile.imwrite(tmp_path / "plain.tif", synthetic((2, 8, 8)), metadata=None)
    assert voxel_size_of(tmp_path / "plain.tif") is None


def test_zarr_array_and_group_with_key(tmp_path):
    vol = synthetic((6, 30, 40), np.uint16)
    root = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    a = root.create_array("raw", shape=vol.shape, dtype=vol.dtype, chunks=(3, 16, 16))
    a[:] = vol
    a.attrs["voxel_size"] = [30, 8, 8]
    root.create_array("other", shape=(2, 2, 2), dtype="uint8")
    arr = open_volume(tmp_path / "g.zarr", key="raw")
    assert arr.chunks[0] == (3, 3) and (arr.compute() == vol).all()
    assert (open_volume(tmp_path / "g.zarr" / "raw").compute() == vol).all()
    assert voxel_size_of(tmp_path / "g.zarr", key="raw") == (30.0, 8.0, 8.0)
    with pytest.raises(InputError, match="expected key= naming one of other, raw"):
        open_volume(tmp_path / "g.zarr")
    with pytest.raises(InputError, match="no array 'nope'"):
        open_volume(tmp_path / "g.zarr", key="nope")


def test_ome_zarr_czyx_affinities_and_voxel_size(tmp_path):
    aff = np.random.default_rng(1).random((3, 4, 16, 16), dtype=np.float32)
    root = zarr.open_group(str(tmp_path / "out.zarr"), mode="w", zarr_format=3)
    img = root.create_group("affinities")
    img.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": "c", "type": "channel"}] + [{"name": n, "type": "space"} for n in "zyx"],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 40, 4, 4]}]}],
    }]}
    a = img.create_array("0", shape=aff.shape, dtype=aff.dtype, chunks=(3, 2, 16, 16))
    a[:] = aff
    arr = open_volume(tmp_path / "out.zarr", key="affinities")
    assert arr.shape == aff.shape and (arr.compute() == aff).all()
    assert voxel_size_of(tmp_path / "out.zarr", key="affinities") == (40.0, 4.0, 4.0)
    assert voxel_size_of(tmp_path / "out.zarr" / "affinities") == (40.0, 4.0, 4.0)


def test_ome_zarr_v04_multiscales(tmp_path):
    vol = synthetic((4, 8, 8))
    root = zarr.open_group(str(tmp_path / "v2.zarr"), mode="w", zarr_format=2)
    root.attrs["multiscales"] = [{"version": "0.4", "datasets": [
        {"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [10, 5, 5]}]}]}]
    root.create_array("s0", shape=vol.shape, dtype=vol.dtype)[:] = vol
    assert (open_volume(tmp_path / "v2.zarr").compute() == vol).all()
    assert voxel_size_of(tmp_path / "v2.zarr") == (10.0, 5.0, 5.0)


def test_tile_json_opens_lazily_with_tile_aligned_blocks(tmp_path):
    img = real_crop("fib_medulla_250", "image", 8, 96, 96)
    lab = real_crop("fib_medulla_250", "labels", 8, 96, 96)
    p = make_tileset(img, tmp_path, labels=lab, tile_size=64, voxel_size=(10, 10, 10))
    before = decode_count()
    arr = open_volume(p)
    assert decode_count() == before  # nothing decoded to build it
    assert arr.chunks[1:] == ((64, 32), (64, 32))
    assert (arr.compute() == img).all()
    assert (open_volume(p, key="label").compute() == lab).all()
    assert voxel_size_of(p) == (10.0, 10.0, 10.0)


def test_make_tileset_from_a_tiff_keeps_voxel_size(tmp_path):
    vol = synthetic((3, 20, 20))
    tifffile.imwrite(tmp_path / "v.tif", vol, photometric="minisblack", metadata={"voxel_size": [50, 4, 4]})
    p = make_tileset(tmp_path / "v.tif", tmp_path / "tiles", tile_size=16)
    assert voxel_size_of(p) == (50.0, 4.0, 4.0)
    assert (open_volume(p).compute() == vol).all()


@pytest.mark.parametrize("name,needle", [("missing.tif", "file not found"), ("x.h5", "file not found"),
                                         ("nothing.zarr", "zarr store not found")])
def test_bad_paths(tmp_path, name, needle):
    with pytest.raises(InputError, match=needle):
        open_volume(tmp_path / name)


def test_unknown_format(tmp_path):
    (tmp_path / "v.raw").write_bytes(b"123")
    with pytest.raises(InputError, match="unknown volume format"):
        open_volume(tmp_path / "v.raw")


def test_corrupt_tiff(tmp_path):
    (tmp_path / "bad.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(InputError, match="bad.tif"):
        open_volume(tmp_path / "bad.tif")
