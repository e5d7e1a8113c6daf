"""`ristwin board test / info / emulate` end to end."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import drivers
from controller.cli import cli
from twin.surface_config import SurfaceConfig

pytestmark = pytest.mark.timeout(40)


def run(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_board_test_json_on_faulty_emulator():
    url = "emu://?elements=64&bits=1,2,3&wire=0&drop=0.005&corrupt=0.005&timeout_ms=5&retries=20"
    res = run(["board", "test", url, "--count", "200", "--json"])
    out = json.loads(res.output)
    assert set(out) >= {"applied", "verified", "mismatched", "retries", "wrong_latched", "p50_ms", "p99_ms", "wire_ms"}
    assert out["wrong_latched"] == 0 and out["applied"] + out["failed"] == 200
    assert out["verified"] == out["applied"] and out["retries"] > 0
    assert out["wire_ms"] > 0 and out["p50_ms"] <= out["p99_ms"]
    assert res.exit_code == (1 if out["failed"] else 0)


def test_board_test_reports_stuck_element_and_fails():
    res = run(["board", "test", "emu://?elements=32&bits=1&wire=0&stuck=3", "--count", "30", "--json"])
    out = json.loads(res.output)
    assert out["mismatched"] > 0 and out["wrong_latched"] == 0 and res.exit_code == 1


def test_board_info_sim():
    res = run(["board", "info", "sim://?elements=8&bits=1,2", "--json"])
    out = json.loads(res.output)
    assert out["info"]["n_elements"] == 8 and out["info"]["resolutions"] == [1, 2]


def test_bad_url_is_one_line_error():
    from controller.cli import main

    assert main(["board", "test", "nope://x"]) == 2
    assert main(["board", "info", "serial:///dev/ristwin-no-such-port?baud=115200"]) == 2


def test_emulate_command_serves_a_pty_until_sigterm():
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller", "board", "emulate", "--elements", "20", "--bits", "1,2",
         "--no-wire", "--stuck", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=os.getcwd(),
    )
    try:
        path = proc.stdout.readline().strip()
        assert path.startswith("/dev/")
        with drivers.open(f"serial://{path}?baud=115200&timeout_ms=50") as drv:
            assert drv.info().n_elements == 20
            config = SurfaceConfig(2, np.full(20, 3), np.ones(20, bool))
            applied = drv.apply(config, on_mismatch="return")
            assert config.mismatched_elements(applied).tolist() == [4]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
