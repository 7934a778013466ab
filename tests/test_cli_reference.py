"""docs/cli.md is generated from the typer app; this keeps it in sync, and checks --help and --version."""

from pathlib import Path

from em_chunks.cli.main import main
from em_chunks.cli.reference import render

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def test_cli_reference_is_in_sync():
    assert DOC.read_text() == render(), "run: python -m em_chunks.cli.reference > docs/cli.md"


def test_every_command_is_documented_with_an_example():
    text = render()
    for cmd in ("train", "predict", "decode", "evaluate", "tune", "demo", "tileset make", "tileset info"):
        assert f"## `emchunks {cmd}`" in text, cmd
    assert text.count("Example") >= 6


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert "emchunks 0.1.0" in capsys.readouterr().out
    assert main(["predict", "--help"]) == 0
    assert "--chunks" in capsys.readouterr().out
