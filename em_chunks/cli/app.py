"""The ``emchunks`` typer application: every command is a thin wrapper over a library function."""

from __future__ import annotations

from typing import Optional

import typer
from typer.core import TyperGroup

from em_chunks import __version__

#: the order commands are listed in ``--help`` and docs/cli.md: the order a user runs them in
PIPELINE_ORDER = ("tileset", "train", "predict", "decode", "evaluate", "tune", "demo", "view", "clean")


class _PipelineOrder(TyperGroup):
    """Lists commands in pipeline order (typer would list sub-apps like ``tileset`` last)."""

    def list_commands(self, ctx) -> list[str]:  # type: ignore[no-untyped-def]
        names = super().list_commands(ctx)
        rank = {n: i for i, n in enumerate(PIPELINE_ORDER)}
        return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


app = typer.Typer(
    name="emchunks",
    cls=_PipelineOrder,
    help="Chunked, distributed neuron segmentation of EM volumes on Dask.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"emchunks {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Chunked, distributed neuron segmentation of EM volumes on Dask."""


# ---- command registration (one line per command module) ---------------------------------------
from em_chunks.cli.tileset import tileset_app; app.add_typer(tileset_app, name="tileset")
from em_chunks.cli.decode import decode_command, evaluate_command  # noqa: E402
from em_chunks.cli.options import LEGACY_ARGS  # noqa: E402

app.command("decode", context_settings=LEGACY_ARGS)(decode_command)
app.command("evaluate")(evaluate_command)
from em_chunks.cli.train import train_command; app.command("train", context_settings=LEGACY_ARGS)(train_command)
from em_chunks.cli.tune import tune_command  # noqa: E402

app.command("tune")(tune_command)
from em_chunks.cli.predict import demo_command, predict_command  # noqa: E402

app.command("predict")(predict_command)
app.command("demo")(demo_command)
from em_chunks.cli.view import view_command; app.command("view")(view_command)  # noqa: E402
from em_chunks.cli.clean import clean_command; app.command("clean")(clean_command)  # noqa: E402
