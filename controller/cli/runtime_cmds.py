"""Runtime commands: `ristwin keys`, `ristwin deploy`, `ristwin agent`, `ristwin twin-server`."""

from __future__ import annotations

import json
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
    from twin.errors import ConfigError

    for name in names:
        try:
            public, secret = generate_curve_keys(out_dir, name, force=force)
        except OSError as exc:
            raise ConfigError(f"--dir: cannot write keys into {out_dir} ({exc.strerror}); choose a writable directory") from None
        click.echo(f"{name}: public {public}  secret {secret} (mode 600)")


@click.command("deploy")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--systemd", "systemd_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write systemd unit files for this host's processes into DIR instead of running.")
@click.option("--print-slots", is_flag=True, help="Print one line per slot (sum rate, reward, latency, misses).")
@click.option("--no-restart", is_flag=True, help="Do not restart agents that exit.")
def deploy_cmd(file: Path, systemd_dir: Path | None, print_slots: bool, no_restart: bool) -> None:
    """Start and supervise a deployment locally: broker (if asked), emulated boards, the twin
    server and one daemon per agent, with a live status line; stops when the run is done."""
    from controller.deploy import Supervisor, check_security, load_deployment, write_systemd_units

    dep = load_deployment(file)
    check_security(dep)
    if systemd_dir is not None:
        try:
            units = write_systemd_units(dep, systemd_dir)
        except OSError as exc:
            from twin.errors import ConfigError

            raise ConfigError(f"--systemd: cannot write unit files into {systemd_dir} ({exc.strerror})") from None
        for unit in units:
            click.echo(str(unit))
        return
    if not (Path(dep.bundle) / "manifest.json").is_file():  # fail before starting anything
        from twin.errors import ConfigError

        raise ConfigError(f"deployment.bundle: {dep.bundle} is not an actor bundle (no manifest.json); train one "
                          "with `ristwin train ... --out RUN` and set bundle = \"RUN/bundle\" (relative to the file)")
    rc = Supervisor(dep, print_slots=print_slots, restart_agents=not no_restart).run()
    if rc:  # stopped by Ctrl-C or SIGTERM: say so in the exit status, as `ristwin train` does
        raise SystemExit(rc)


@click.command("agent")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--id", "agent_id", default=None, help="Agent id from the deployment file, e.g. irs0.")
@click.option("--standby", is_flag=True,
              help="Warm spare: load everything, then become the agent whose id arrives on stdin.")
def agent_cmd(file: Path, agent_id: str | None, standby: bool) -> None:
    """Run one agent daemon of a deployment (e.g. on the machine wired to its board)."""
    from controller.daemon import run_daemon
    from controller.daemon import standby as run_standby
    from controller.deploy import check_security, load_deployment

    dep = load_deployment(file)
    check_security(dep)
    if standby:
        summary = run_standby({a.id: dep.daemon_config(a.id) for a in dep.agents}, dep.bundle)
    elif agent_id is None:
        raise click.UsageError("give --id AGENT (or --standby)")
    else:
        summary = run_daemon(dep.daemon_config(agent_id))
    click.echo(json.dumps(summary, sort_keys=True))


@click.command("twin-server")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--slots", type=int, default=None, help="Override deployment.slots.")
def twin_server_cmd(file: Path, slots: int | None) -> None:
    """Run the twin server (environment + slot clock, and the ZeroMQ hub) of a deployment."""
    import dataclasses

    from controller.deploy import check_security, load_deployment
    from controller.twin_server import serve

    if slots is not None and slots < 0:
        raise click.BadParameter(f"must be >= 0 (0 = run until stopped), got {slots}", param_hint="--slots")
    dep = load_deployment(file)
    check_security(dep)
    cfg = dep.server_config()
    if slots is not None:
        cfg = dataclasses.replace(cfg, slots=slots)
    summary = serve(cfg)
    click.echo(json.dumps(summary, sort_keys=True))


def register(root: click.Group) -> None:
    for command in (keys_cmd, deploy_cmd, agent_cmd, twin_server_cmd):
        root.add_command(command)
