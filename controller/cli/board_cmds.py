"""`ristwin board ...`: identify a board, self-test it, or emulate one on a pty / TCP port."""

from __future__ import annotations

import json
import signal
import sys
import time

import click
import numpy as np

from twin.errors import ConfigError


def register(root: click.Group) -> None:
    root.add_command(board_group)


@click.group("board")
def board_group() -> None:
    """Surface boards: info, self-test and a protocol emulator.

    URLs: sim://?elements=N&bits=1,2,3 | serial:///dev/ttyUSB0?baud=921600 |
    socket://127.0.0.1:PORT | emu://?elements=N&bits=1 (an emulator on a private pty).
    """


def _trace(enabled: bool) -> None:
    if enabled:
        import logging

        logging.basicConfig(level=logging.WARNING, format="%(relativeCreated)9.1f ms %(message)s")
        logging.getLogger("drivers.serial").setLevel(logging.DEBUG)


@board_group.command("info")
@click.argument("url")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--trace", is_flag=True, help="Log every frame in hex to stderr.")
def info_cmd(url: str, as_json: bool, trace: bool) -> None:
    """Identify the board behind URL and print its status."""
    import drivers

    _trace(trace)
    with drivers.open(url) as drv:
        info = drv.info().to_dict()
        status = drv.status().to_dict()
    if as_json:
        click.echo(json.dumps({"info": info, "status": status}))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=url, show_header=False)
    for key, value in {**info, **status}.items():
        table.add_row(key, str(value))
    Console().print(table)


def _random_config(rng: np.random.Generator, n: int, bits: int, on_prob: float):
    from twin.surface_config import SurfaceConfig

    return SurfaceConfig(bits, rng.integers(0, 1 << bits, n), rng.random(n) < on_prob)


@board_group.command("test")
@click.argument("url")
@click.option("--count", default=100, show_default=True, help="Random configurations to apply.")
@click.option("--seed", default=0, show_default=True, help="Seed of the random configurations.")
@click.option("--on-prob", default=0.8, show_default=True, help="Probability an element is ON.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--trace", is_flag=True, help="Log every frame in hex to stderr.")
def test_cmd(url: str, count: int, seed: int, on_prob: float, as_json: bool, trace: bool) -> None:
    """Apply COUNT random valid configurations with readback and report what latched.

    After every apply an independent full READBACK (for emu://, the emulator's own state)
    is compared with what the driver reported: wrong_latched counts disagreements and must
    be 0; unchecked counts applies whose independent readback itself failed. failed counts
    applies the driver reported as not (verifiably) latched, state_unknown those among them
    where the link was down. Exit status 1 when any apply failed, mismatched or latched wrongly.
    """
    import drivers
    from drivers import protocol
    from drivers.base import ApplyError
    from twin.errors import DriverError

    if count < 1:
        raise ConfigError("count: must be >= 1")
    if not 0.0 <= on_prob <= 1.0:  # also rejects nan
        raise ConfigError(f"--on-prob: probability must lie in [0, 1], got {on_prob}")
    _trace(trace)
    rng = np.random.default_rng(seed)
    res = dict(applied=0, verified=0, mismatched=0, failed=0, state_unknown=0, retries=0,
               wrong_latched=0, unchecked=0)
    times, wires = [], []
    with drivers.open(url) as drv:
        info = drv.info()
        baud = getattr(drv, "baud", 0)
        r0 = drv.stats.get("retries", 0)
        emulator = getattr(drv, "emulator", None)  # emu:// exposes the board's true state
        for _ in range(count):
            config = _random_config(rng, info.n_elements, int(rng.choice(info.resolutions)), on_prob)
            if baud:
                ex = protocol.set_exchange_bytes(config, info.max_payload)
                wires.append(protocol.wire_seconds(ex.request_bytes + ex.response_bytes, baud))
            t0 = time.perf_counter()
            try:
                reported = drv.apply(config, on_mismatch="return")
            except ApplyError as exc:
                res["failed"] += 1
                reported = exc.latched
                if reported is None:  # the driver said so: nothing to hold it to
                    res["state_unknown"] += 1
                    continue
            else:
                times.append(time.perf_counter() - t0)
                res["applied"] += 1
                if reported == config:
                    res["verified"] += 1
                else:
                    res["mismatched"] += 1
            if emulator is not None:
                truth = emulator.latched
            else:
                try:
                    truth = drv.readback()  # an independent full readback
                except DriverError:
                    res["unchecked"] += 1
                    continue
            if truth != reported:
                res["wrong_latched"] += 1
        res["retries"] = drv.stats.get("retries", 0) - r0
    ms = np.asarray(times) * 1000.0
    res.update(
        p50_ms=round(float(np.percentile(ms, 50)), 3) if ms.size else None,
        p99_ms=round(float(np.percentile(ms, 99)), 3) if ms.size else None,
        wire_ms=round(float(np.median(wires)) * 1000.0, 3) if wires else 0.0,
    )
    if as_json:
        click.echo(json.dumps(res))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"board test {url}", show_header=False)
        for key, value in res.items():
            table.add_row(key, str(value))
        Console().print(table)
    if res["failed"] or res["mismatched"] or res["wrong_latched"]:
        sys.exit(1)


@board_group.command("emulate")
@click.option("--elements", default=256, show_default=True, help="Number of surface elements (1..65535).")
@click.option("--bits", default="1", show_default=True, help="Supported resolutions, e.g. 1,2,3.")
@click.option("--baud", default=115200, show_default=True, help="Wire-time model: 10 bits per byte.")
@click.option("--no-wire", is_flag=True, help="Do not model wire time (as fast as the pty allows).")
@click.option("--latch-us", default=100.0, show_default=True, help="Shift-and-latch time per update.")
@click.option("--drop", default=0.0, show_default=True, help="Probability a byte is dropped.")
@click.option("--corrupt", default=0.0, show_default=True, help="Probability a byte is corrupted.")
@click.option("--stuck", default="", help="Stuck element indices, e.g. 3,17.")
@click.option("--slow-ms", default=0.0, show_default=True, help="Extra delay before every response.")
@click.option("--reboot-every", default=0, show_default=True, help="Reboot on every N-th frame (0 = never).")
@click.option("--watchdog-ms", default=0, show_default=True, help="Watchdog armed from power-on (0 = off).")
@click.option("--energy", is_flag=True, help="Emulate a harvested-energy buffer (reported in STATUS).")
@click.option("--harvest-uw", default=2000.0, show_default=True, help="Harvested power into the buffer (with --energy).")
@click.option("--capacity-uj", default=5000.0, show_default=True, help="Energy buffer capacity (with --energy).")
@click.option("--switch-nj", default=50.0, show_default=True, help="Energy per element switched.")
@click.option("--seed", default=0, show_default=True, help="Seed of the fault injection.")
@click.option("--tcp", "tcp_port", type=int, default=None, help="Serve on 127.0.0.1:PORT instead of a pty.")
def emulate_cmd(
    elements, bits, baud, no_wire, latch_us, drop, corrupt, stuck, slow_ms, reboot_every,
    watchdog_ms, energy, harvest_uw, capacity_uj, switch_nj, seed, tcp_port,
) -> None:
    """Emulate a board speaking protocol v1; print its device path and serve until SIGINT/SIGTERM."""
    from drivers.emulator import BoardEmulator, EnergyModel, Faults, parse_bits

    try:
        resolutions = parse_bits(bits)
    except ValueError as exc:
        raise ConfigError(f"{exc}") from None
    try:
        stuck_idx = tuple(int(x) for x in stuck.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--stuck: {stuck!r} is not a comma-separated list of element indices, e.g. 3,17") from None
    for name, prob in (("drop", drop), ("corrupt", corrupt)):
        if not 0.0 <= prob < 1.0:
            raise ConfigError(f"--{name}: probability must lie in [0, 1), got {prob}")
    # `not value >= 0` also rejects nan; a negative time or energy would only misbehave later.
    for name, value in (("latch-us", latch_us), ("slow-ms", slow_ms), ("reboot-every", reboot_every),
                        ("watchdog-ms", watchdog_ms), ("harvest-uw", harvest_uw), ("switch-nj", switch_nj)):
        if not value >= 0:
            raise ConfigError(f"--{name}: must be >= 0, got {value}")
    for name, value in (("baud", baud), ("capacity-uj", capacity_uj)):
        if not value > 0:
            raise ConfigError(f"--{name}: must be > 0, got {value}")
    if not 1 <= elements <= 65535:
        raise ConfigError(f"--elements: must lie in 1..65535, got {elements}")
    if tcp_port is not None and not 0 <= tcp_port <= 65535:
        raise ConfigError(f"--tcp: port must lie in 0..65535 (0 picks a free one), got {tcp_port}")
    try:
        emu = BoardEmulator(
            elements, resolutions, baud=baud, model_wire=not no_wire, latch_us=latch_us,
            faults=Faults(drop, corrupt, stuck_idx, slow_ms, reboot_every, seed),
            energy=EnergyModel(capacity_uj, harvest_uw, switch_nj) if energy else None,
            tcp_port=tcp_port, boot_watchdog_ms=watchdog_ms,
        )
    except ValueError as exc:
        raise ConfigError(f"{exc}") from None
    except OSError as exc:
        raise ConfigError(f"--tcp: cannot listen on 127.0.0.1:{tcp_port} ({exc})") from None
    signal.signal(signal.SIGTERM, lambda *_: emu.request_stop())
    signal.signal(signal.SIGINT, lambda *_: emu.request_stop())
    click.echo(emu.path)
    click.echo(f"url: {emu.url}", err=True)
    sys.stdout.flush()
    try:
        emu.serve_forever()
    finally:
        emu.stop()
