"""`emchunks tileset make|info` and the shipped example tile grids under tilesets/."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from _tile_helpers import DATA, real_crop, requires_data
from em_chunks import TileSet, open_volume
from em_chunks.cli.main import main
from em_chunks.geometry import Box

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "tilesets").glob("*/tiles.json"))


@requires_data
def test_make_then_info_on_real_tiffs(tmp_path, capsys):
    code = main(["tileset", "make", str(DATA / "isbi2012" / "image.tif"), str(tmp_path / "isbi"),
                 "--labels", str(DATA / "isbi2012" / "labels2d.tif"), "--tile-size", "100",
                 "--crop", "0:4,0:256,0:256"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "(4, 256, 256)" in out and "3x3 tiles" in out
    ts = TileSet.from_json(tmp_path / "isbi" / "tiles.json")
    assert (ts.read(Box.from_shape(ts.shape)) == real_crop("isbi2012", "image", 4, 256, 256)).all()
    assert (ts.read(Box.from_shape(ts.shape), layer="label") == real_crop("isbi2012", "labels2d", 4, 256, 256)).all()
    assert ts.voxel_size == (50.0, 4.0, 4.0)

    code = main(["tileset", "info", str(tmp_path / "isbi" / "tiles.json")])
    out = capsys.readouterr().out
    assert code == 0
    assert "shape:      (4, 256, 256)" in out
    assert "3 rows x 3 columns of 100x100" in out
    assert "72 checked (decoded), 0 missing or unreadable" in out


@requires_data
def test_info_quick_checks_headers(tmp_path, capsys):
    main(["tileset", "make", str(DATA / "isbi2012" / "image.tif"), str(tmp_path), "--tile-size", "200",
          "--crop", "0:2,0:300,0:300"])
    capsys.readouterr()
    # tile 0_1 must be 200 high and 100 (cropped) to 200 (padded) wide; put the 100x200 tile 1_0 there
    (tmp_path / "image/1/0_1.png").write_bytes((tmp_path / "image/1/1_0.png").read_bytes())
    code = main(["tileset", "info", "--quick", str(tmp_path / "tiles.json")])
    cap = capsys.readouterr()
    assert code == 2
    assert "1 missing or unreadable" in cap.out
    assert "0_1.png: tile is 100x200; expected 200x100 up to 200x200" in cap.err


@requires_data
@pytest.mark.parametrize("args,needle", [
    (["--crop", "0:8,0:96"], "--crop"),
    (["--crop", "300:310,:,:"], "axis z range 300:310 is outside the volume of shape (30, 512, 512)"),
    (["--crop", "0:4,0:600,0:100"], "axis y range 0:600 is outside"),
    (["--tile-size", "0"], "tile-size"),
])
def test_make_refuses_bad_options(tmp_path, capsys, args, needle):
    code = main(["tileset", "make", str(DATA / "isbi2012" / "image.tif"), str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err


def test_make_refuses_float_volume_and_huge_ids(tmp_path, capsys):
    import tifffile

    tifffile.imwrite(tmp_path / "f.tif", np.zeros((2, 8, 8), np.float32))
    assert main(["tileset", "make", str(tmp_path / "f.tif"), str(tmp_path / "o")]) == 2
    assert "expected uint8 or uint16" in capsys.readouterr().err
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((2, 8, 8), np.uint8))
    tifffile.imwrite(tmp_path / "lab.tif", np.full((2, 8, 8), 1 << 25, np.uint32))
    assert main(["tileset", "make", str(tmp_path / "img.tif"), str(tmp_path / "o"), "--labels", str(tmp_path / "lab.tif")]) == 2
    assert "24-bit" in capsys.readouterr().err


def test_there_is_a_shipped_example():
    assert SHIPPED, "tilesets/ must hold at least one example made by `tileset make`"
    assert (REPO / "tilesets" / "README.md").is_file()


@pytest.mark.parametrize("path", SHIPPED, ids=[p.parent.name for p in SHIPPED])
def test_shipped_example_is_valid_and_matches_its_source(path, capsys):
    """Every shipped tile grid validates, has no bad tile, and equals the crop of the data it came from."""
    assert main(["tileset", "info", str(path)]) == 0
    assert "0 missing or unreadable" in capsys.readouterr().out
    ts = TileSet.from_json(path)
    meta = json.loads(path.read_text())
    assert all(not Path(p).is_absolute() for p in meta["image"])  # relocatable
    if path.parent.name == "fib_medulla_8x96x96":
        img = real_crop("fib_medulla_250", "image", 8, 96, 96)
        lab = real_crop("fib_medulla_250", "labels", 8, 96, 96)
        assert (open_volume(path).compute() == img).all()
        assert (open_volume(path, key="label").compute() == lab).all()
        assert ts.voxel_size == (10.0, 10.0, 10.0)
