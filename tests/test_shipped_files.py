"""Every file shipped in workflows/, tilesets/ and the package's built-in workflows is validated."""

from pathlib import Path

import pytest

from em_chunks.api.workflow import load_workflow
from em_chunks.geometry import Box
from em_chunks.io.tileset import TileSet

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.yaml")) + sorted((ROOT / "em_chunks" / "resources").glob("*.yaml"))
TILESETS = sorted((ROOT / "tilesets").glob("**/*.json"))


def test_there_is_something_to_validate():
    assert len(WORKFLOWS) >= 3 and any("quick" in p.name for p in WORKFLOWS)
    assert TILESETS


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_validates(path):
    wf = load_workflow(path)
    assert wf.format_version == 1
    if wf.train is not None:
        cfg = wf.train_config()
        assert cfg.iterations >= 1
    wf.predict_config()  # defaults or the file's predict: section, validated


@pytest.mark.parametrize("path", TILESETS, ids=lambda p: p.parent.name)
def test_tileset_validates_and_every_tile_reads(path):
    ts = TileSet.from_json(path)
    assert ts.check(decode=True) == []
    assert ts.read(Box.from_shape(ts.shape)).shape == tuple(ts.shape)


def test_builtin_workflow_by_name():
    assert load_workflow("demo").name == "demo"
