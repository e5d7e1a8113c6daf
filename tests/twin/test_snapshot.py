"""Snapshot format: round trip, closed-form evaluation, every bad input named, CLI."""

import json
import math
import os

import numpy as np
import pytest

from controller.cli import main as cli_main
from twin.errors import SnapshotError
from twin.scenarios import get_scenario
from twin.snapshot import evaluate_snapshot, load_snapshot, sample_p1_snapshot, save_snapshot, validate_snapshot


def random_snapshot(L=2, N=6, M=3, K=2, seed=0, bits=None):
    rng = np.random.default_rng(seed)

    def cn(*shape):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / math.sqrt(2)

    snap = dict(H_BR=cn(L, N, M), h_RU=cn(L, K, N), h_BU=cn(K, M), V=cn(M, K),
                theta=rng.uniform(0, 2 * math.pi, (L, N)), on=(rng.uniform(size=(L, N)) > 0.3).astype(np.uint8),
                noise_w=np.float64(0.1))
    if bits is not None:
        snap["bits"] = np.asarray(bits, dtype=np.int64)
    return snap


def hand_metrics(s, theta):
    """SINR by the textbook sum, element by element (P1 eqs. 1, 4, 5)."""
    L, N, M = s["H_BR"].shape
    K = s["h_BU"].shape[0]
    g = np.zeros((K, M), complex)
    for k in range(K):
        g[k] = s["h_BU"][k].conj()
        for l in range(L):
            for n in range(N):
                g[k] += s["h_RU"][l, k, n].conj() * s["on"][l, n] * np.exp(1j * theta[l, n]) * s["H_BR"][l, n]
    sinr = []
    for k in range(K):
        powers = [abs(g[k] @ s["V"][:, j]) ** 2 for j in range(K)]
        sinr.append(powers[k] / (sum(powers) - powers[k] + s["noise_w"]))
    return np.array(sinr)


def test_round_trip_and_closed_form(tmp_path):
    snap = random_snapshot(seed=1)
    path = tmp_path / "s.npz"
    save_snapshot(path, **snap)
    loaded = load_snapshot(path)
    for key in ("H_BR", "h_RU", "h_BU", "V", "theta"):
        assert np.array_equal(loaded[key], snap[key])
    assert loaded["noise_w"] == 0.1 and np.array_equal(loaded["on"], snap["on"].astype(bool))
    out = evaluate_snapshot(loaded)
    sinr = hand_metrics(snap, snap["theta"])
    assert np.allclose(out["sinr"], sinr, rtol=1e-12)
    assert np.allclose(out["rate_bps_hz"], np.log2(1 + sinr), rtol=1e-12)
    assert out["sum_rate_bps_hz"] == pytest.approx(np.log2(1 + sinr).sum(), rel=1e-12)
    assert out["tx_power_w"] == pytest.approx(float((np.abs(snap["V"]) ** 2).sum()), rel=1e-12)
    assert "irs_power_w" not in out
    assert not [p for p in os.listdir(tmp_path) if p != "s.npz"]  # no temp file left behind


def test_bits_round_phases_and_report_irs_power():
    snap = random_snapshot(seed=2, bits=[1, 3])
    out = evaluate_snapshot(snap)
    grid = [2 * math.pi / 2, 2 * math.pi / 8]
    rounded = np.stack([np.mod(np.round(snap["theta"][l] / grid[l]), 2 ** b) * grid[l] for l, b in enumerate([1, 3])])
    assert np.allclose(out["theta_applied"], rounded)
    assert np.allclose(out["sinr"], hand_metrics(snap, rounded), rtol=1e-12)
    p1 = get_scenario("p1")
    expected = [snap["on"][0].sum() * p1.element_power_w(1), snap["on"][1].sum() * p1.element_power_w(3)]
    assert out["irs_power_w"] == pytest.approx(expected)


def _bad(key, value=None, drop=False):
    snap = random_snapshot(seed=3, bits=[2, 2])
    if drop:
        del snap[key]
    else:
        snap[key] = value
    return snap


@pytest.mark.parametrize(
    "snap, key, fragment",
    [
        (_bad("H_BR", drop=True), "H_BR", "missing"),
        (_bad("noise_w", drop=True), "noise_w", "missing"),
        (_bad("h_RU", np.zeros((2, 2, 5), complex)), "h_RU", "(2, 2, 6)"),
        (_bad("h_BU", np.zeros((2, 4), complex)), "h_BU", "(2, 3)"),
        (_bad("V", np.zeros((3, 3), complex)), "V", "(3, 2)"),
        (_bad("theta", np.zeros((2, 5))), "theta", "(2, 6)"),
        (_bad("on", np.full((2, 6), 2)), "on", "0 or 1"),
        (_bad("H_BR", np.full((2, 6, 3), np.nan, complex)), "H_BR", "NaN"),
        (_bad("theta", np.full((2, 6), np.inf)), "theta", "NaN or inf"),
        (_bad("theta", np.zeros((2, 6), complex)), "theta", "real number"),
        (_bad("noise_w", np.float64(-1e-3)), "noise_w", "> 0"),
        (_bad("noise_w", np.zeros(3)), "noise_w", "single number"),
        (_bad("bits", np.array([2, 9])), "bits", "unsupported resolution"),
        (_bad("bits", np.array([2.0, 2.0])), "bits", "integers"),
        (_bad("bits", np.array([2, 2, 2])), "bits", "(2,)"),
        (_bad("extra_thing", np.zeros(1)), "extra_thing", "unknown snapshot key"),
    ],
)
def test_bad_snapshot_names_the_key(snap, key, fragment):
    with pytest.raises(SnapshotError) as err:
        validate_snapshot(snap)
    msg = str(err.value)
    assert msg.startswith(key + ":") and fragment in msg


def test_resolution_without_element_power_is_an_error_at_evaluation():
    with pytest.raises(SnapshotError, match="^bits: resolution 7 has no element power"):
        evaluate_snapshot(random_snapshot(seed=4, bits=[7, 1]))


@pytest.mark.parametrize("content", [b"garbage", b"PK\x03\x04 truncated zip"])
def test_corrupt_files_become_snapshot_errors(tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(SnapshotError, match="^snapshot: "):
        load_snapshot(path)


def test_truncated_real_snapshot(tmp_path):
    good = tmp_path / "good.npz"
    save_snapshot(good, **random_snapshot())
    data = good.read_bytes()
    bad = tmp_path / "trunc.npz"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(SnapshotError, match="^snapshot: "):
        load_snapshot(bad)


def test_sampled_snapshot_is_mrt_at_p_max_with_aligned_phases():
    scn = get_scenario("p1")
    snap = sample_p1_snapshot(scn, seed=5)
    out = evaluate_snapshot(snap)
    assert out["tx_power_w"] == pytest.approx(scn.p_max_w, rel=1e-12)
    # Aligned phases help: zero phases give a lower sum rate on the same channel and beamformers.
    zero = dict(snap, theta=np.zeros_like(snap["theta"]))
    assert evaluate_snapshot(zero)["sum_rate_bps_hz"] < out["sum_rate_bps_hz"]


def test_cli_sample_then_evaluate(tmp_path, capsys):
    out = tmp_path / "snap.npz"
    assert cli_main(["twin", "sample", "--scenario", "p1", "--seed", "3", "--out", str(out), "--set", "n_irs=3"]) == 0
    capsys.readouterr()
    assert cli_main(["twin", "evaluate", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["sinr"]) == 4 and len(result["irs_power_w"]) == 3
    assert result["sum_rate_bps_hz"] == pytest.approx(sum(result["rate_bps_hz"]))
    assert "info" in np.load(out).files


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["twin", "evaluate", "{tmp}/missing.npz", "--json"], "snapshot: file"),
        (["twin", "sample", "--out", "{tmp}/x.npz", "--set", "n_elements=-1"], "n_elements:"),
        (["twin", "sample", "--out", "{tmp}/x.npz", "--set", "p_max_dbm=nan"], "p_max_dbm:"),
        (["twin", "sample", "--out", "{tmp}/x.npz", "--bits", "7"], "bits:"),
        (["twin", "sample", "--scenario", "p3", "--out", "{tmp}/x.npz"], "scenario:"),
        (["twin", "sample", "--out", "{tmp}/nodir/x.npz"], "out:"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, fragment):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("ristwin: error: ") and fragment in err


def test_fuzzed_snapshots_fail_only_with_snapshot_error():
    # Any mutation of any key either validates or raises SnapshotError naming that key.
    from hypothesis import given, settings
    from hypothesis import strategies as st

    base = random_snapshot(seed=6, bits=[1, 2])
    junk = st.one_of(
        st.just(np.array("text")), st.just(np.zeros((0,))), st.just(np.float64(np.nan)),
        st.just(np.array([[1 + 1j]])), st.just(np.array(True)), st.just(np.ones((2, 6, 3, 1))),
        st.just(np.array([None], dtype=object)), st.integers(-3, 3).map(np.int64),
        st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=4).map(np.array),
    )

    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(key=st.sampled_from(sorted(base)), value=junk)
    def check(key, value):
        snap = dict(base, **{key: value})
        try:
            validate_snapshot(snap)
        except SnapshotError as exc:
            assert str(exc).startswith(key + ":")

    check()
