"""Every bad tile input is one line naming the file/field and what was expected: from the API (InputError)
and from the CLI (`emchunks tileset info` exits 2, one line on stderr, no traceback)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _tile_helpers import edit_json, save_png, synthetic
from em_chunks import TileSet, make_tileset
from em_chunks.cli.main import main
from em_chunks.errors import InputError
from em_chunks.geometry import Box


@pytest.fixture()
def good(tmp_path) -> Path:
    return make_tileset(synthetic((3, 20, 20)), tmp_path / "set", tile_size=8)


def read_all(path: Path) -> np.ndarray:
    ts = TileSet.from_json(path)
    return ts.read(Box.from_shape(ts.shape))


def cli_info(capsys, path: Path) -> tuple[int, str, str]:
    code = main(["tileset", "info", str(path)])
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line_error(capsys, path: Path, *needles: str) -> None:
    code, _out, err = cli_info(capsys, path)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# ---- the JSON ----------------------------------------------------------------------------------
def test_malformed_json(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"dtype": "uint8", "image": [')
    with pytest.raises(InputError, match=r"bad\.json: malformed JSON at line 1"):
        TileSet.from_json(bad)
    assert_one_line_error(capsys, bad, "bad.json", "malformed JSON")


def test_json_not_an_object(tmp_path, capsys):
    bad = tmp_path / "list.json"
    bad.write_text("[1, 2]")
    with pytest.raises(InputError, match="expected a JSON object"):
        TileSet.from_json(bad)
    assert_one_line_error(capsys, bad, "list.json", "JSON object")


def test_json_file_not_found(tmp_path, capsys):
    with pytest.raises(InputError, match="file not found"):
        TileSet.from_json(tmp_path / "nope.json")
    assert_one_line_error(capsys, tmp_path / "nope.json", "nope.json", "not found")


def test_missing_key(good, capsys):
    edit_json(good, height=...)
    with pytest.raises(InputError, match=r"tiles\.json: field 'height': Field required"):
        TileSet.from_json(good)
    assert_one_line_error(capsys, good, "tiles.json", "'height'", "required")


@pytest.mark.parametrize("field,value,needle", [
    ("height", "20", "valid integer"),
    ("width", 20.5, "valid integer"),
    ("tile_size", -8, "greater than 0"),
    ("image", "one/path.png", "valid list"),
    ("tile_st", [0], "tile_st.1"),
    ("dtype", "uint9", "numpy dtype"),
    ("tile_ratio", "2", "valid number"),
])
def test_wrong_type(good, capsys, field, value, needle):
    edit_json(good, **{field: value})
    with pytest.raises(InputError, match=f"field '{field}"):
        TileSet.from_json(good)
    assert_one_line_error(capsys, good, "tiles.json", field, needle)


def test_unknown_key_is_refused(good, capsys):
    edit_json(good, hieght=20)
    assert_one_line_error(capsys, good, "hieght", "not permitted")


def test_paths_do_not_match_depth(good, capsys):
    meta = json.loads(good.read_text())
    edit_json(good, image=meta["image"][:2])
    with pytest.raises(InputError, match="field 'image': 2 paths but depth is 3"):
        TileSet.from_json(good)
    assert_one_line_error(capsys, good, "'image'", "depth is 3")


def test_grid_does_not_cover_the_volume(good, capsys):
    edit_json(good, n_rows=2)
    assert_one_line_error(capsys, good, "'n_rows'", "height 20")


# ---- the tiles ---------------------------------------------------------------------------------
def test_missing_tile(good, capsys):
    victim = good.parent / "image/1/2_0.png"
    victim.unlink()
    with pytest.raises(InputError, match=r"image/1/2_0\.png: tile file not found \(section 1, row 2, column 0\)"):
        read_all(good)
    with pytest.raises(InputError, match="2_0.png"):  # also lazily, when the block is computed
        TileSet.from_json(good).to_dask((1, 2, 2), 1).compute(scheduler="sync")
    assert_one_line_error(capsys, good, "2_0.png", "not found")


def test_truncated_png(good, capsys):
    victim = good.parent / "image/2/1_1.png"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"1_1\.png: truncated PNG"):
        read_all(good)
    assert_one_line_error(capsys, good, "1_1.png", "truncated")


def test_truncated_png_even_when_pillow_allows_truncation(good, monkeypatch):
    """PyTC sets ImageFile.LOAD_TRUNCATED_IMAGES globally; we still refuse a truncated tile."""
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    victim = good.parent / "image/2/1_1.png"
    data = victim.read_bytes()
    victim.write_bytes(data[:-20])
    with pytest.raises(InputError, match="truncated"):
        read_all(good)


def test_corrupt_png(good, capsys):
    victim = good.parent / "image/0/0_1.png"
    data = bytearray(victim.read_bytes())
    start = data.index(b"IDAT") + 4
    data[start:start + 12] = b"\xff" * 12  # garbage in the compressed stream, file length unchanged
    victim.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"0_1\.png: corrupt PNG"):
        read_all(good)
    assert_one_line_error(capsys, good, "0_1.png", "corrupt")


def test_not_a_png(good, capsys):
    (good.parent / "image/0/0_0.png").write_bytes(b"GIF89a not a png at all")
    with pytest.raises(InputError, match="not a PNG"):
        read_all(good)
    assert_one_line_error(capsys, good, "0_0.png", "not a PNG")


def test_wrong_tile_size(good, capsys):
    save_png(good.parent / "image/1/0_0.png", np.zeros((8, 6), np.uint8))
    with pytest.raises(InputError, match=r"0_0\.png: tile is 8x6; expected 8x8"):
        read_all(good)
    assert_one_line_error(capsys, good, "0_0.png", "tile is 8x6", "expected 8x8")


def test_edge_tile_too_small(good, capsys):
    save_png(good.parent / "image/0/2_2.png", np.zeros((3, 4), np.uint8))
    with pytest.raises(InputError, match=r"tile is 3x4; expected 4x4 \(cropped\) up to 8x8"):
        read_all(good)
    assert_one_line_error(capsys, good, "2_2.png", "expected 4x4")


def test_wrong_tile_dtype(good, capsys):
    save_png(good.parent / "image/2/0_1.png", np.full((8, 8), 1000, np.uint16))
    with pytest.raises(InputError, match=r"0_1\.png: tile pixels are uint16.*declared dtype uint8"):
        read_all(good)
    assert_one_line_error(capsys, good, "0_1.png", "uint16", "uint8")


def test_cli_subprocess_exit_code_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    proc = subprocess.run([sys.executable, "-m", "em_chunks", "tileset", "info", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "bad.json" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_fill_missing_still_reports_in_info(good, capsys):
    (good.parent / "image/1/1_1.png").unlink()
    filled = TileSet.from_json(good, fill_missing=7).read(Box.from_shape((3, 20, 20)))
    assert (filled[1, 8:16, 8:16] == 7).all()
    assert_one_line_error(capsys, good, "1_1.png", "1 bad tile")
