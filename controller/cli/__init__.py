"""The `ristwin` command line: one click group, one module of commands per area.

Each area module (twin_cmds, board_cmds, train_cmds, runtime_cmds) exposes a ``register``
function that adds its commands to the root group; a module that is missing or fails to
import is a bug, not something to hide, so imports are explicit.
"""

from __future__ import annotations

import sys

import click

from twin import __version__
from twin.errors import RistwinError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="ristwin")
def cli() -> None:
    """ristwin: train multi-agent policies for intelligent surfaces on a twin, then run them
    as daemons that drive simulated, emulated or real PIN-diode boards."""


def _register_all() -> None:
    from controller.cli import twin_cmds, runtime_cmds, train_cmds, board_cmds

    for module in (twin_cmds, runtime_cmds, train_cmds, board_cmds):
        module.register(cli)


_register_all()


def main(argv: list[str] | None = None) -> int:
    """Console entry point: user errors print one line and exit 2; bugs keep their traceback."""
    try:
        cli.main(args=argv, prog_name="ristwin", standalone_mode=False)
    except RistwinError as exc:
        click.echo(f"ristwin: error: {exc}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("ristwin: aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
