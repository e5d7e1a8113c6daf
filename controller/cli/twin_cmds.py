"""`ristwin twin ...`: sample and evaluate channel snapshots, show scenario presets."""

from __future__ import annotations

import json

import click

from twin.errors import ConfigError


def register(root: click.Group) -> None:
    root.add_command(twin_group)


@click.group("twin")
def twin_group() -> None:
    """Inspect the twin: sample channel snapshots and evaluate any snapshot."""


@twin_group.command("sample")
@click.option("--scenario", default="p1", show_default=True, help="Preset (snapshots use the single-cell P1 model).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the scene's generator.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Snapshot file (.npz) to write.")
@click.option("--set", "assignments", multiple=True, metavar="FIELD=VALUE", help="Override a preset field (repeatable).")
@click.option("--bits", type=int, default=None,
              help="Phase resolution written to the snapshot (default: the preset's highest resolution).")
@click.option("--continuous", is_flag=True, help="Write continuous phases and no bits key.")
def sample_cmd(scenario: str, seed: int, out: str, assignments: tuple[str, ...], bits: int | None, continuous: bool) -> None:
    """Write one sampled scene as a snapshot: aligned phases, all elements ON, MRT at P_max."""
    from twin.scenarios import get_scenario, parse_overrides, scenario_dict
    from twin.snapshot import info_json, sample_p1_snapshot, save_snapshot

    if scenario != "p1":
        raise ConfigError(f"scenario: snapshots use the single-cell P1 signal model; got {scenario!r}, use --scenario p1")
    overrides = parse_overrides(scenario, assignments)
    scn = get_scenario(scenario, **overrides)
    if continuous and bits is not None:
        raise ConfigError("bits: --bits and --continuous exclude each other")
    use_bits = None if continuous else (bits if bits is not None else max(scn.resolutions))
    snap = sample_p1_snapshot(scn, seed, use_bits)
    snap["info"] = info_json(source="ristwin twin sample", scenario=scenario, seed=seed,
                             overrides={k: (list(v) if isinstance(v, tuple) else v) for k, v in overrides.items()},
                             config=scenario_dict(scn))
    save_snapshot(out, **snap)
    click.echo(f"wrote {out} (L={scn.n_irs}, N={scn.n_elements}, M={scn.n_bs_antennas}, K={scn.n_users}, "
               f"bits={use_bits if use_bits is not None else 'continuous'})")


@twin_group.command("evaluate")
@click.argument("snapshot", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def evaluate_cmd(snapshot: str, as_json: bool) -> None:
    """Evaluate a snapshot (docs/SNAPSHOT.md): SINR, rates, transmit and surface power."""
    from twin.snapshot import evaluate_snapshot, load_snapshot

    result = evaluate_snapshot(load_snapshot(snapshot))
    if as_json:
        click.echo(json.dumps(result))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"snapshot {snapshot}")
    table.add_column("user")
    table.add_column("SINR (dB)", justify="right")
    table.add_column("rate (bit/s/Hz)", justify="right")
    table.add_column("tx power (mW)", justify="right")
    import math

    for k, (g, r, p) in enumerate(zip(result["sinr"], result["rate_bps_hz"], result["tx_power_per_user_w"])):
        table.add_row(str(k), f"{10 * math.log10(g) if g > 0 else float('-inf'):.2f}", f"{r:.4f}", f"{p * 1e3:.3f}")
    console = Console()
    console.print(table)
    console.print(f"sum rate {result['sum_rate_bps_hz']:.4f} bit/s/Hz, tx power {result['tx_power_w'] * 1e3:.3f} mW")
    if "irs_power_w" in result:
        console.print("IRS power (mW): " + ", ".join(f"{p * 1e3:.2f}" for p in result["irs_power_w"]))


@twin_group.command("scenario")
@click.argument("name")
@click.option("--set", "assignments", multiple=True, metavar="FIELD=VALUE", help="Override a preset field (repeatable).")
def scenario_cmd(name: str, assignments: tuple[str, ...]) -> None:
    """Print a resolved scenario preset as JSON (p1..p4)."""
    from twin.scenarios import get_scenario, parse_overrides, scenario_dict

    click.echo(json.dumps(scenario_dict(get_scenario(name, **parse_overrides(name, assignments))), indent=2))
