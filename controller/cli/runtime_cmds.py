"""Runtime commands: `ristwin keys`, `ristwin deploy`, `ristwin agent`, `ristwin twin-server`."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("keys")
@click.argument("names", nargs=-1, required=True)
@click.option("--dir", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("keys"),
              show_default=True, help="Directory for the key files.")
@click.option("--force", is_flag=True, help="Overwrite existing key files.")
def keys_cmd(names: tuple[str, ...], out_dir: Path, force: bool) -> None:
    """Generate ZeroMQ CURVE key pairs: NAME.key (public) and NAME.key_secret (mode 600).

    Make one for the hub (e.g. `hub`) and one per agent host; copy the agents' .key files
    into the hub's curve_allowed_dir and the hub's .key to every agent.
    """
    from controller.security import generate_curve_keys

    for name in names:
        public, secret = generate_curve_keys(out_dir, name, force=force)
        click.echo(f"{name}: public {public}  secret {secret} (mode 600)")


def register(root: click.Group) -> None:
    root.add_command(keys_cmd)
