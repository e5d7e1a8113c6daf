"""`ristwin twin ...`: sample and evaluate channel snapshots."""

from __future__ import annotations

import click


def register(root: click.Group) -> None:
    root.add_command(twin_group)


@click.group("twin")
def twin_group() -> None:
    """Inspect the twin: sample channel snapshots and evaluate any snapshot."""
