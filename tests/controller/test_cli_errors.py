"""Bad input on the `ristwin` command line: one line naming the field, exit status 2, no traceback.

Each case runs the real console entry point in-process (`controller.cli.main`) on inputs a new
user plausibly types; none of them loads torch-heavy work, so the file stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc: int, err: str, *needles: str) -> None:
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ristwin: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, err)


@pytest.mark.parametrize("argv, needles", [
    (["board", "emulate", "--tcp", "99999"], ["--tcp", "65535"]),
    (["board", "emulate", "--stuck", "3,x"], ["--stuck", "3,x"]),
    (["board", "emulate", "--baud", "0"], ["--baud"]),
    (["board", "emulate", "--latch-us", "nan"], ["--latch-us"]),
    (["board", "emulate", "--slow-ms", "-1"], ["--slow-ms"]),
    (["board", "emulate", "--reboot-every", "-1"], ["--reboot-every"]),
    (["board", "emulate", "--energy", "--capacity-uj", "-1"], ["--capacity-uj"]),
    (["board", "emulate", "--elements", "0"], ["--elements"]),
    (["board", "emulate", "--drop", "nan"], ["--drop"]),
    (["board", "test", "sim://?elements=8", "--on-prob", "2"], ["--on-prob"]),
    (["board", "test", "sim://?elements=8", "--on-prob", "nan"], ["--on-prob"]),
    (["board", "info", "foo://x"], ["url", "foo"]),
    (["twin", "scenario", "p9"], ["p9", "p1"]),
    (["twin", "scenario", "p1", "--set", "nope=1"], ["nope", "known fields", "n_irs"]),
    (["train", "--algo", "maq-pg", "--out", "unused", "--set", "scenario.nope=1"], ["nope", "known fields"]),
    (["twin", "scenario", "p1", "--set", "p_max_dbm=nan"], ["p_max_dbm"]),
])
def test_bad_option_is_one_line_naming_the_field(capsys, argv, needles):
    rc, _, err = run_cli(capsys, *argv)
    assert_one_line_error(rc, err, *needles)


def test_keys_into_unwritable_dir_and_negative_server_slots(capsys, tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc, _, err = run_cli(capsys, "keys", "hub", "--dir", str(blocker / "keys"))
    assert_one_line_error(rc, err, "--dir")
    toml = tmp_path / "dep.toml"
    toml.write_text(_DEPLOY.format(bundle=tmp_path, extra="", driver="sim://?elements=10", emulate=""))
    rc, _, err = run_cli(capsys, "twin-server", str(toml), "--slots", "-1")
    assert rc == 2 and "--slots" in err and "Traceback" not in err  # a click usage error


def test_snapshot_garbage_and_missing_file(capsys, tmp_path: Path):
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    rc, _, err = run_cli(capsys, "twin", "evaluate", str(bad))
    assert_one_line_error(rc, err, "bad.npz")
    rc, _, err = run_cli(capsys, "twin", "evaluate", str(tmp_path / "missing.npz"))
    assert_one_line_error(rc, err, "missing.npz")


@pytest.mark.parametrize("content", ["{}", "[]", '{"train": {"scenario": "p1"}, "scenario": {}}',
                                     '{"train": {"scenario": "p1", "algo": "maq-pg"}}'])
def test_foreign_config_json_is_a_config_error(capsys, tmp_path: Path, content: str):
    (tmp_path / "config.json").write_text(content)
    for argv in (["evaluate", str(tmp_path), "--no-upper"], ["compare", str(tmp_path)]):
        rc, _, err = run_cli(capsys, *argv)
        assert_one_line_error(rc, err, "config.json")


def test_train_into_unwritable_out_is_a_config_error(capsys, tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a regular file where a parent directory must go
    rc, _, err = run_cli(capsys, "train", "--algo", "maq-pg", "--quiet", "--out", str(blocker / "run"))
    assert rc == 2, err
    assert err.strip().splitlines()[-1].startswith("ristwin: error: --out:"), err
    assert "Traceback" not in err


def _fake_run(path: Path, algo: str, final: dict[str, float], step: int) -> Path:
    """A run directory as `ristwin train` leaves it after fewer steps than --eval-every."""
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"train": {"scenario": "p1", "algo": algo}, "scenario": {}}))
    (path / "eval.csv").write_text("step,env_steps\n")  # header only: no periodic evaluation ran
    (path / "final_eval.json").write_text(json.dumps({"step": step, **final}))
    return path


def test_compare_short_runs_uses_their_final_evaluation(capsys, tmp_path: Path):
    a = _fake_run(tmp_path / "a", "maq-pg", {"eval_reward": -1.0, "eval_sum_rate": 2.0}, 5)
    b = _fake_run(tmp_path / "b", "maq-pg", {"eval_reward": -3.0, "eval_sum_rate": 4.0}, 5)
    rc, out, err = run_cli(capsys, "compare", str(a), str(b), "--json")
    assert rc == 0, err
    report = json.loads(out)
    assert report["metrics"] == ["eval_reward", "eval_sum_rate"]
    assert report["final"]["maq-pg"]["eval_reward"] == {"mean": -2.0, "std": 1.0, "runs": 2}
    assert report["final"]["maq-pg"]["eval_sum_rate"]["mean"] == 3.0


# --------------------------------------------------------------------------- deployment files

_DEPLOY = """
[deployment]
bundle = "{bundle}"
{extra}
[[agent]]
id = "bs0"
[[agent]]
id = "irs0"
driver = "{driver}"
{emulate}
[[agent]]
id = "irs1"
driver = "sim://?elements=10&bits=1,2,3"
"""


@pytest.mark.parametrize("extra, driver, emulate, needle", [
    ('slots = "many"', "sim://?elements=10&bits=1,2,3", "", "deployment.slots"),
    ("slots = 2.5", "sim://?elements=10&bits=1,2,3", "", "deployment.slots"),
    ("slots = -3", "sim://?elements=10&bits=1,2,3", "", "deployment.slots"),
    ("deadline_ms = nan", "sim://?elements=10&bits=1,2,3", "", "deployment.deadline_ms"),
    ("period_ms = -1", "sim://?elements=10&bits=1,2,3", "", "deployment.period_ms"),
    ("heartbeat_ms = 0", "sim://?elements=10&bits=1,2,3", "", "deployment.heartbeat_ms"),
    ("cpu_latency_us = -1", "sim://?elements=10&bits=1,2,3", "", "deployment.cpu_latency_us"),
    ("cpu_latency_us = 0.5", "sim://?elements=10&bits=1,2,3", "", "deployment.cpu_latency_us"),
    ('cpu_latency_us = "low"', "sim://?elements=10&bits=1,2,3", "", "deployment.cpu_latency_us"),
    # The emulator listens on loopback only: a remote address would hang the agent, not fail.
    ("", "socket://10.1.1.1:7711", "[agent.emulate]\nelements = 10", "agent[1].driver"),
])
def test_bad_deployment_file_is_one_line(capsys, tmp_path: Path, extra, driver, emulate, needle):
    toml = tmp_path / "dep.toml"
    toml.write_text(_DEPLOY.format(bundle=tmp_path, extra=extra, driver=driver, emulate=emulate))
    rc, _, err = run_cli(capsys, "deploy", str(toml))
    assert_one_line_error(rc, err, needle)


def test_deploy_systemd_into_unwritable_dir(capsys, tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    toml = tmp_path / "dep.toml"
    toml.write_text(_DEPLOY.format(bundle=tmp_path, extra="", driver="sim://?elements=10", emulate=""))
    rc, _, err = run_cli(capsys, "deploy", str(toml), "--systemd", str(blocker / "units"))
    assert_one_line_error(rc, err, "--systemd")


def test_deploy_without_a_trained_bundle_fails_before_starting(capsys, tmp_path: Path):
    toml = tmp_path / "dep.toml"
    toml.write_text(_DEPLOY.format(bundle="run/bundle", extra="", driver="sim://?elements=10", emulate=""))
    rc, _, err = run_cli(capsys, "deploy", str(toml))
    assert_one_line_error(rc, err, "deployment.bundle", str(tmp_path / "run" / "bundle"), "ristwin train")


def test_deploy_refuses_an_emulator_port_someone_else_answers_on(capsys, tmp_path: Path, p1_bundle: Path):
    import socket

    with socket.socket() as squatter:  # e.g. a second quickstart still running
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        toml = tmp_path / "dep.toml"
        toml.write_text(_DEPLOY.format(bundle=p1_bundle, extra="", driver=f"socket://127.0.0.1:{port}",
                                       emulate="[agent.emulate]\nelements = 10"))
        rc, _, err = run_cli(capsys, "deploy", str(toml))
    assert_one_line_error(rc, err, f"127.0.0.1:{port}", "already in use")


def _children(pid: int) -> set[int]:
    """Direct children of pid, from /proc (the supervisor starts them in their own sessions)."""
    kids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.add(int(stat.parent.name))
    return kids


def test_sigterm_to_deploy_stops_its_children_and_crash_reasons_are_shown(tmp_path: Path, p1_bundle: Path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.controller.conftest import free_port

    toml = tmp_path / "dep.toml"
    extra = (f'slots = 0\nperiod_ms = 100\ndeadline_ms = 300\nrunlog = "run.jsonl"\n'
             f'[transport]\nkind = "zmq"\npub_port = {free_port()}\nsub_port = {free_port()}\n')
    # irs0's board has 12 elements where the bundle's scenario has 10: that agent exits with a
    # ConfigError and is restarted; the supervisor must say why, not only count restarts.
    toml.write_text(_DEPLOY.format(bundle=p1_bundle, extra=extra, driver="sim://?elements=12&bits=1,2,3",
                                   emulate=""))
    log = open(tmp_path / "deploy.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "controller", "deploy", str(toml)], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    kids: set[int] = set()
    try:
        deadline = time.monotonic() + 90
        while "irs0 exited" not in (tmp_path / "deploy.log").read_text():
            assert proc.poll() is None, (tmp_path / "deploy.log").read_text()
            assert time.monotonic() < deadline, "irs0 did not fail within 90 s"
            time.sleep(0.2)
        time.sleep(2.0)  # a few restarts more: the reason is still said only once
        kids = _children(proc.pid)
        assert len(kids) >= 4  # twin server and three agents (plus the warm spare)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 130
        time.sleep(0.5)
        said = (tmp_path / "deploy.log").read_text()
        assert said.count("irs0 exited with status 2: ristwin: error: n_elements") == 1, said
        alive = {k for k in kids if Path(f"/proc/{k}").exists()
                 and Path(f"/proc/{k}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"}
        assert not alive, f"orphaned children {alive}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for k in kids:  # only if the test failed: never leave the deployment running
            try:
                os.kill(k, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()


def test_evaluate_json_stdout_is_pure_json_with_progress_elsewhere(capsys, tmp_path: Path, p1_bundle: Path):
    import shutil

    run = tmp_path / "run"
    run.mkdir()
    shutil.copytree(p1_bundle, run / "bundle")
    (run / "config.json").write_text(json.dumps({"train": {"scenario": "p1", "algo": "maq-wp"}, "scenario": {}}))
    rc, out, err = run_cli(capsys, "evaluate", str(run), "--no-upper", "--episodes", "2", "--max-steps", "3", "--json")
    assert rc == 0, err
    report = json.loads(out)  # the progress bar must not leak into stdout
    names = list(report["policies"])
    assert names[0] == "maq-wp (bundle)" and "random" in names and not any("upper" in n for n in names)
    assert all(m["reward"]["episodes"] == 2 for m in report["policies"].values())


def _commands(group, path=()):
    import click

    for name, cmd in group.commands.items():
        yield path + (name,), cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, path + (name,))


def test_every_command_has_help_and_every_option_says_what_it_does(capsys):
    from controller.cli import cli

    undocumented = []
    for path, cmd in _commands(cli):
        rc, out, err = run_cli(capsys, *path, "--help")
        assert rc == 0 and out.startswith("Usage: ristwin " + " ".join(path)), (path, err)
        assert cmd.help, path
        undocumented += [f"{' '.join(path)} {p.opts[0]}" for p in cmd.params
                         if getattr(p, "opts", [""])[0].startswith("--") and not getattr(p, "help", None)]
    assert not undocumented, undocumented


def test_status_rate_is_shown_in_each_scenarios_unit():
    from controller.deploy import rate_text
    assert rate_text({"sum_rate": 0.1234}).split() == ["0.123", "bit/s/Hz"]
    assert rate_text({"sum_rate_bps": 2.5e8, "ee_bit_per_j": 1.0}).split() == ["250.00", "Mbit/s"]
    assert rate_text({}) == "-"
