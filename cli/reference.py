"""The CLI reference (docs/cli.md), generated from the click commands so it cannot drift."""

from __future__ import annotations

import click


def cli_reference() -> str:
    from hsimap.cli.main import _register, cli

    _register()
    ctx = click.Context(cli, info_name="hsimap")
    parts = ["# CLI reference", "",
             "Generated from the commands themselves by "
             "`python -m hsimap.cli.reference > docs/cli.md`; a test checks it is current.", "",
             "```", cli.get_help(ctx), "```", ""]
    for name in cli.list_commands(ctx):
        cmd = cli.get_command(ctx, name)
        sub = click.Context(cmd, info_name=name, parent=ctx)
        parts += [f"## hsimap {name}", "", "```", cmd.get_help(sub), "```", ""]
    return "\n".join(parts)


if __name__ == "__main__":
    print(cli_reference(), end="")
