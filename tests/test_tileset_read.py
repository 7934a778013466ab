"""TileSet.read: exact read-back of PyTC tile grids (synthetic and real), PyTC semantics, extensions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.ndimage import zoom

from _tile_helpers import edit_json, real_crop, save_png, synthetic, write_pytc_tiles
from em_chunks import TileSet, make_tileset
from em_chunks.geometry import Box
from em_chunks.io import padding
from em_chunks.io.tiles import ids_to_vast_rgb, vast_rgb_to_ids


def whole(ts, layer="image"):
    return ts.read(Box.from_shape(ts.shape), layer=layer)


@pytest.mark.parametrize("pad_edges", [False, True])
def test_make_tileset_reads_back_exactly(tmp_path, pad_edges):
    vol = synthetic((5, 45, 61))
    lab = synthetic((5, 45, 61), np.uint16, seed=3)
    ts = TileSet.from_json(make_tileset(vol, tmp_path, labels=lab, tile_size=16, pad_edges=pad_edges))
    assert ts.shape == vol.shape and ts.tile_grid() == (3, 4)
    assert (whole(ts) == vol).all()
    got = whole(ts, "label")
    assert got.dtype == np.uint16 and (got == lab).all()
    # edge tiles really are cropped (or padded) on disk
    from PIL import Image

    assert Image.open(tmp_path / "image/0/2_3.png").size == ((16, 16) if pad_edges else (13, 13))


def test_real_fib_crop_with_vast_labels(tmp_path):
    """fib_medulla body ids exceed 16 bits, so tileset make writes VAST RGB; ids come back exact."""
    img = real_crop("fib_medulla_250", "image", 16, 128, 128)
    lab = real_crop("fib_medulla_250", "labels", 16, 128, 128)
    assert lab.max() >= 1 << 16
    p = make_tileset(img, tmp_path, labels=lab, tile_size=48)
    from PIL import Image

    assert Image.open(tmp_path / "label/00/0_0.png").mode == "RGB"
    ts = TileSet.from_json(p)
    assert (whole(ts) == img).all()
    got = whole(ts, "label")
    assert got.dtype == np.uint32 and (got == lab).all()


def test_real_isbi_crop_pytc_written_json(tmp_path):
    """A JSON written by hand the PyTC way (absolute paths, zfill'd folders, tile_st=[1, 2], padded
    edge tiles) loads unchanged and reads back exactly, also any box inside."""
    img = real_crop("isbi2012", "image", 4, 256, 256)
    path = write_pytc_tiles(img, tmp_path, tile_size=100, tile_st=(1, 2))
    meta = json.loads(path.read_text())
    assert set(meta) == {"ndim", "dtype", "image", "height", "width", "depth", "n_columns", "n_rows",
                         "tile_size", "tile_ratio", "tile_st"}
    assert (tmp_path / "sections/0/1_2.png").is_file()  # first tile named row+1, column+2
    ts = TileSet.from_json(path)
    assert (whole(ts) == img).all()
    box = Box((1, 37, 150), (2, 120, 99))
    assert (ts.read(box) == img[box.slices()]).all()


def test_relative_paths_are_relative_to_the_json(tmp_path, monkeypatch):
    vol = synthetic((3, 20, 20))
    path = write_pytc_tiles(vol, tmp_path / "set", tile_size=8, absolute=False)
    monkeypatch.chdir(tmp_path)  # a working directory where the relative paths would not resolve
    assert (whole(TileSet.from_json("set/pytc.json")) == vol).all()


def test_plain_paths_one_image_per_section(tmp_path):
    vol = synthetic((4, 30, 22))
    for z in range(4):
        save_png(tmp_path / f"s{z}.png", vol[z])
    meta = {"ndim": 1, "dtype": "uint8", "image": [f"s{z}.png" for z in range(4)], "height": 30, "width": 22,
            "depth": 4, "n_rows": 1, "n_columns": 1, "tile_size": 30, "tile_st": [0, 0], "tile_ratio": 1}
    (tmp_path / "plain.json").write_text(json.dumps(meta))
    ts = TileSet.from_json(tmp_path / "plain.json")
    assert ts.tile_grid() == (1, 1)
    assert (whole(ts) == vol).all()
    assert (ts.read(Box((1, -3, 5), (2, 10, 30)), boundary="nearest") ==
            padding.read_padded(vol, Box((1, -3, 5), (2, 10, 30)), "nearest")).all()


@pytest.mark.parametrize("boundary", ["reflect", "mirror", "nearest", "periodic", 128, "none"])
def test_read_outside_the_volume(tmp_path, boundary):
    vol = synthetic((6, 40, 33))
    ts = TileSet.from_json(make_tileset(vol, tmp_path, tile_size=16))
    for box in [Box((-2, -5, -7), (10, 20, 20)), Box((3, 30, 20), (5, 19, 25)), Box((-3, -3, -3), (12, 46, 39))]:
        assert (ts.read(box, boundary=boundary) == padding.read_padded(vol, box, boundary)).all(), box


def test_mirror_is_what_pytc_pads_with(tmp_path):
    """PyTC's tile2volume pads with numpy 'reflect' = our 'mirror' (edge voxel not repeated)."""
    vol = synthetic((3, 20, 20))
    ts = TileSet.from_json(make_tileset(vol, tmp_path, tile_size=8))
    got = ts.read(Box((0, -4, 0), (3, 24, 20)), boundary="mirror")
    assert (got == np.pad(vol, ((0, 0), (4, 0), (0, 0)), mode="reflect")).all()
    assert not (got == ts.read(Box((0, -4, 0), (3, 24, 20)), boundary="reflect")).all()


def _scaled_reference(raw_tiles, ratio, order, shape, ts):
    out = np.zeros(shape, dtype=raw_tiles[0, 0, 0].dtype)
    for (z, r, c), tile in raw_tiles.items():
        s = zoom(tile, ratio, order=order)
        y0, x0 = r * ts, c * ts
        h, w = min(s.shape[0], shape[1] - y0), min(s.shape[1], shape[2] - x0)
        out[z, y0:y0 + h, x0:x0 + w] = s[:h, :w]
    return out


@pytest.mark.parametrize("ratio,raw", [(2.0, 10), (0.5, 40)])
def test_tile_ratio_scales_each_tile_after_decoding(tmp_path, ratio, raw):
    """tile_size is in scaled units: raw tiles of ``raw`` pixels scaled by ``ratio`` are 20 voxels apart;
    images are interpolated linearly, labels by nearest neighbour (no new ids)."""
    ts_size, shape = 20, (2, 50, 45)
    rng = np.random.default_rng(5)
    rows, cols = 3, 3
    img_tiles, lab_tiles = {}, {}
    for z in range(2):
        for r in range(rows):
            for c in range(cols):
                img_tiles[z, r, c] = rng.integers(0, 255, (raw, raw), dtype=np.uint8)
                lab_tiles[z, r, c] = rng.choice(np.array([3, 70000, 123456], np.uint32), (raw, raw))
                save_png(tmp_path / f"img/{z}/{r}_{c}.png", img_tiles[z, r, c])
                save_png(tmp_path / f"lab/{z}/{r}_{c}.png", ids_to_vast_rgb(lab_tiles[z, r, c]))
    meta = {"ndim": 1, "dtype": "uint8", "image": [f"img/{z}/{{row}}_{{column}}.png" for z in range(2)],
            "label": [f"lab/{z}/{{row}}_{{column}}.png" for z in range(2)], "height": shape[1],
            "width": shape[2], "depth": 2, "n_rows": rows, "n_columns": cols, "tile_size": ts_size,
            "tile_st": [0, 0], "tile_ratio": ratio}
    (tmp_path / "t.json").write_text(json.dumps(meta))
    ts = TileSet.from_json(tmp_path / "t.json")
    assert (whole(ts) == _scaled_reference(img_tiles, ratio, 1, shape, ts_size)).all()
    lab = whole(ts, "label")
    assert (lab == _scaled_reference(lab_tiles, ratio, 0, shape, ts_size)).all()
    assert set(np.unique(lab)) <= {3, 70000, 123456}
    if ratio == 2.0:  # linear interpolation really happened (values between neighbours appear)
        assert len(np.unique(whole(ts))) > 200


def test_vast_rgb_round_trip():
    ids = np.array([[0, 1, 255, 256], [65535, 65536, 135719, (1 << 24) - 1]], np.uint32)
    rgb = ids_to_vast_rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 4, 3)
    assert rgb[1, 2].tolist() == [135719 >> 16, (135719 >> 8) & 255, 135719 & 255]
    assert (vast_rgb_to_ids(rgb) == ids).all()


def test_fill_missing_fills_instead_of_failing(tmp_path):
    vol = synthetic((3, 20, 20))
    p = make_tileset(vol, tmp_path, tile_size=8)
    (tmp_path / "image/1/1_2.png").unlink()
    got = whole(TileSet.from_json(p, fill_missing=128))
    want = vol.copy()
    want[1, 8:16, 16:20] = 128
    assert (got == want).all()


def test_valid_mask_layer_and_voxel_size(tmp_path):
    vol = synthetic((3, 20, 20))
    mask = (synthetic((3, 20, 20), seed=9) > 128).astype(np.uint8)
    p = make_tileset(vol, tmp_path, tile_size=8, valid_mask=mask, voxel_size=(40, 4, 4))
    ts = TileSet.from_json(p)
    assert ts.layers == ("image", "valid_mask") and ts.voxel_size == (40.0, 4.0, 4.0)
    assert (whole(ts, "valid_mask") == mask).all()


def test_tile_size_as_height_width_pair(tmp_path):
    vol = synthetic((2, 30, 40))
    p = make_tileset(vol, tmp_path, tile_size=(16, 24))
    assert json.loads(p.read_text())["tile_size"] == [16, 24]
    ts = TileSet.from_json(p)
    assert ts.tile_grid() == (2, 2) and (whole(ts) == vol).all()


def test_extra_rows_in_json_are_allowed(tmp_path):
    """PyTC JSONs may list more rows/columns than the volume needs; they are never read."""
    vol = synthetic((2, 20, 20))
    p = edit_json(make_tileset(vol, tmp_path, tile_size=8), n_rows=5, n_columns=4)
    assert (whole(TileSet.from_json(p)) == vol).all()


def test_pytc_label_json_read_as_labels(tmp_path):
    """PyTC keeps labels in a second JSON whose `image` list holds the label tiles: as_labels=True decodes
    them as labels (VAST RGB ids, nearest scaling) instead of taking channel 0 as for images."""
    lab = real_crop("fib_medulla_250", "labels", 3, 70, 70)
    path = write_pytc_tiles(lab, tmp_path, tile_size=32, encode=ids_to_vast_rgb)
    edit_json(path, dtype="uint32")
    assert (whole(TileSet.from_json(path, as_labels=True)) == lab).all()
    as_image = whole(TileSet.from_json(path))  # read as an image: channel 0 only (PyTC's image semantics)
    assert (as_image == (lab >> 16)).all()


def test_mixed_plain_and_tiled_sections(tmp_path):
    """A plain path (one image for the section) may sit beside tiled sections."""
    vol = synthetic((3, 20, 28))
    path = make_tileset(vol, tmp_path, tile_size=8)
    save_png(tmp_path / "whole1.png", vol[1])
    meta = json.loads(path.read_text())
    meta["image"][1] = "whole1.png"
    path.write_text(json.dumps(meta))
    ts = TileSet.from_json(path)
    assert (whole(ts) == vol).all()
    import dask

    blocks = ts.to_dask((3, 2, 2), (1, 2, 2), "reflect")
    assert (dask.compute(blocks.blocks[1, 1, 0])[0] == padding.read_padded(vol, Box((0, 8, -2), (3, 14, 18)), "reflect")).all()


def test_printf_style_patterns_and_other_tile_formats(tmp_path):
    """`%d_%d.png` names (accepted by some PyTC helpers) and TIFF/JPEG tiles read like PNG ones."""
    vol = synthetic((2, 20, 20))
    for z in range(2):
        for r in range(3):
            for c in range(3):
                from PIL import Image

                Image.fromarray(vol[z, r * 8:(r + 1) * 8, c * 8:(c + 1) * 8]).save(tmp_path / f"s{z}_{r}_{c}.tif")
    meta = {"dtype": "uint8", "image": [f"s{z}_%d_%d.tif" for z in range(2)], "height": 20, "width": 20,
            "depth": 2, "n_rows": 3, "n_columns": 3, "tile_size": 8}
    (tmp_path / "p.json").write_text(json.dumps(meta))
    assert (whole(TileSet.from_json(tmp_path / "p.json")) == vol).all()
