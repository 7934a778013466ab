"""Render the CLI reference (docs/cli.md) from the typer app itself, so the docs cannot drift.

    python -m em_chunks.cli.reference > docs/cli.md
"""

from __future__ import annotations

from typing import Any

import typer

# typer vendors its own click: duck-type its commands and parameters instead of isinstance checks


def _command_doc(name: str, cmd: Any, ctx: Any) -> list[str]:
    out = [f"## `{name}`", ""]
    sub_ctx = type(ctx)(cmd, info_name=name.split()[-1], parent=ctx)
    usage = cmd.collect_usage_pieces(sub_ctx)
    out += ["```", f"{name} {' '.join(usage)}", "```", ""]
    if cmd.help:
        out += [cmd.help.strip(), ""]
    rows = []
    for param in cmd.params:
        kind = getattr(param, "param_type_name", "")
        if kind == "argument":
            rows.append(((param.name or "").upper(), (getattr(param, "help", "") or "").strip(), "argument"))
        elif kind == "option" and not param.hidden:
            default = param.default if param.show_default is not False and param.default not in (None, False, ()) else ""
            rows.append((", ".join(param.opts), (param.help or "").strip(), f"default: {default}" if default != "" else ""))
    if rows:
        out += ["| parameter | description | |", "|---|---|---|"]
        out += [f"| `{a}` | {b.replace('|', '/')} | {c} |" for a, b, c in rows]
        out.append("")
    return out


def render() -> str:
    from em_chunks.cli.app import app

    root = typer.main.get_command(app)
    ctx = root.context_class(root, info_name="emchunks")
    lines = ["# CLI reference", "", "Generated from the typer app by `python -m em_chunks.cli.reference`; a test keeps it in sync.", ""]
    for name in root.list_commands(ctx):  # pipeline order, as --help lists them
        cmd = root.commands[name]  # type: ignore[attr-defined]
        if hasattr(cmd, "commands"):
            for sub in sorted(cmd.commands):
                lines += _command_doc(f"emchunks {name} {sub}", cmd.commands[sub], ctx)
        else:
            lines += _command_doc(f"emchunks {name}", cmd, ctx)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
