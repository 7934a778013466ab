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


def test_help_lists_commands_in_pipeline_order(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[1] for line in out.splitlines() if line.startswith("│ ") and line[2:3].isalpha()]
    commands = [r for r in rows if r in ("tileset", "train", "predict", "decode", "evaluate", "tune", "demo")]
    assert commands == ["tileset", "train", "predict", "decode", "evaluate", "tune", "demo"]
    assert render().index("## `emchunks tileset info`") < render().index("## `emchunks train`") < render().index("## `emchunks demo`")


def test_train_help_shows_examples_and_the_run_folder_rules(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "Examples:" in out and "emchunks train tiles/tiles.json --config fib-quick --out model/" in out
    assert "--resume" in out and "--overwrite" in out


def test_workers_means_processes_everywhere(capsys):
    """Every --workers is a number of worker processes; tileset info checks tiles with --threads."""
    text = render()
    for section in text.split("## `")[1:]:
        for row in section.splitlines():
            if row.startswith("| `--workers`"):
                assert "process" in row, row
    assert main(["tileset", "info", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--threads" in out and "--workers" not in out
