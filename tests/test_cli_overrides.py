"""One override syntax for every command: ``--set SECTION.KEY=VALUE``. The old positional spellings
(decode ``decode.x=...``, train ``x=...``) still work for one release, with a deprecation line."""

import pytest

from em_chunks.cli.main import main


@pytest.mark.parametrize("command", ["train", "predict", "decode"])
def test_every_command_takes_set(command, capsys):
    assert main([command, "--help"]) == 0
    assert "--set" in capsys.readouterr().out


@pytest.mark.parametrize("argv, new", [
    (["decode", "affs.zarr", "--out", "{out}", "decode.merge_function=aff99_nonsense"], "--set decode.merge_function=aff99_nonsense"),
    (["train", "image.tif", "--out", "{out}", "iterations=-5"], "--set train.iterations=-5"),
])
def test_old_positional_spelling_warns_and_still_applies(argv, new, tmp_path, capsys):
    """Still applied (the bad value is refused, naming the override), with a line naming the new spelling."""
    capsys.readouterr()
    assert main([a.format(out=tmp_path / "o") for a in argv]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert "positional overrides are deprecated" in err[0] and new in err[0]
    assert err[-1].startswith("error: ") and argv[-1].split("=")[0].split(".")[-1] in err[-1]
    assert not (tmp_path / "o").exists()


def test_a_stray_argument_is_refused_with_the_syntax(tmp_path, capsys):
    assert main(["decode", "affs.zarr", "--out", str(tmp_path / "o"), "merge_function"]) == 2
    err = capsys.readouterr().err
    assert "unexpected argument 'merge_function'" in err and "--set SECTION.KEY=VALUE" in err
