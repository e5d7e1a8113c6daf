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
    (["twin", "scenario", "p1", "--set", "nope=1"], ["nope"]),
    (["twin", "scenario", "p1", "--set", "p_max_dbm=nan"], ["p_max_dbm"]),
])
def test_bad_option_is_one_line_naming_the_field(capsys, argv, needles):
    rc, _, err = run_cli(capsys, *argv)
    assert_one_line_error(rc, err, *needles)


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
