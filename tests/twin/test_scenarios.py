"""Scenario presets: paper values, documented open choices, and validated overrides."""

import json
import math

import pytest

from twin.errors import ConfigError
from twin.scenarios import SCENARIOS, get_scenario, parse_overrides, scenario_dict, validate


def test_p1_paper_values():
    s = get_scenario("p1")
    assert (s.n_bs_antennas, s.n_users, s.n_irs, s.n_elements) == (4, 4, 2, 10)
    assert s.p_max_dbm == 5.0 and s.noise_dbm == -80.0
    assert s.noise_w == pytest.approx(1e-11) and s.p_max_w == pytest.approx(10 ** 0.5 * 1e-3)
    assert (s.user_ring_inner_m, s.user_ring_outer_m, s.irs_radius_m) == (100.0, 120.0, 100.0)
    assert (s.rician_factor, s.pl_ref_db, s.pl_exp_bs_irs, s.pl_exp_irs_user) == (10.0, 30.0, 2.0, 2.8)
    assert s.energy_arrival_mean_units == 2.2 and s.episode_steps == 100
    # cited hardware powers for 3, 4, 5 bits
    assert [s.element_power_w(b) for b in (3, 4, 5)] == pytest.approx([1.5e-3, 4.5e-3, 6.0e-3])


def test_p1_energy_constraint_binds_for_3_bits_not_for_1_bit():
    # The documented open choice: consumption per slot of an all-on IRS, in energy units,
    # against the Poisson mean of 2.2 units.
    s = get_scenario("p1")

    def units_per_slot(bits):
        return s.n_elements * s.element_power_w(bits) * s.slot_s / s.energy_unit_j

    assert units_per_slot(3) > s.energy_arrival_mean_units > units_per_slot(1)


def test_p3_values_and_noise():
    s = get_scenario("p3")
    assert (s.n_bs_antennas, s.n_elements, s.n_users, s.n_surfaces, s.spacing_m) == (5, 16, 10, 2, 10.0)
    assert s.carrier_ghz == 28.0 and s.bandwidth_hz == 100e6
    assert s.noise_dbm == pytest.approx(-174 + 80)  # -174 + 10 log10(1e8)
    assert s.p_max_w == pytest.approx(10 ** 0.3, rel=1e-12)  # 33 dBm ~ 2 W
    assert s.element_power_w == pytest.approx(10 ** -1.3, rel=1e-12)  # 17 dBm ~ 50 mW
    assert (s.global_period, s.epsilon, s.q_lambda, s.gamma) == (20, 0.3, 0.1, 0.9)


def test_p2_p4_values():
    p2, p4 = get_scenario("p2"), get_scenario("p4")
    assert p2.n_bs == 2 and (p2.pl_exp_bs_irs, p2.pl_exp_irs_user) == (2.5, 2.4) and p2.episode_steps == 800
    assert (p4.n_users, p4.n_scheduled, p4.n_ris) == (4, 2, 2) and p4.n_elements == p4.n_rows * p4.n_cols


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_presets_validate_and_serialize(name):
    validate(SCENARIOS[name])
    d = scenario_dict(SCENARIOS[name])
    assert json.loads(json.dumps(d))["name"] == name


@pytest.mark.parametrize(
    "name, overrides, field",
    [
        ("p1", {"bogus": 1}, "bogus"),
        ("p1", {"n_elements": -2}, "n_elements"),
        ("p1", {"n_users": 0}, "n_users"),
        ("p1", {"n_irs": 2.5}, "n_irs"),
        ("p1", {"p_max_dbm": math.nan}, "p_max_dbm"),
        ("p1", {"noise_dbm": math.inf}, "noise_dbm"),
        ("p1", {"energy_unit_j": -1e-3}, "energy_unit_j"),
        ("p1", {"power_table_mw": (0.5, -1.0, 1.5, 4.5, 6.0)}, "power_table_mw"),
        ("p1", {"resolutions": (1, 9)}, "resolutions"),
        ("p1", {"resolutions": (6,)}, "resolutions"),  # no element power for 6 bits
        ("p1", {"fading_correlation": 1.5}, "fading_correlation"),
        ("p1", {"name": "p9"}, "name"),
        ("p2", {"n_bs_antennas": -4}, "n_bs_antennas"),
        ("p3", {"element_power_dbm": "17"}, "element_power_dbm"),
        ("p3", {"n_surfaces": 6}, "n_surfaces"),
        ("p4", {"n_scheduled": 5}, "n_scheduled"),
        ("p4", {"c0_db": math.nan}, "c0_db"),
    ],
)
def test_bad_overrides_name_the_field(name, overrides, field):
    with pytest.raises(ConfigError) as err:
        get_scenario(name, **overrides)
    assert str(err.value).startswith(field + ":")


def test_unknown_scenario():
    with pytest.raises(ConfigError, match="^scenario: unknown scenario 'p7'"):
        get_scenario("p7")


def test_overrides_apply_and_parse_from_strings():
    parsed = parse_overrides("p1", ["n_irs=4", "p_max_dbm=30", "resolutions=1,3"])
    assert parsed == {"n_irs": 4, "p_max_dbm": 30.0, "resolutions": (1, 3)}
    s = get_scenario("p1", **parsed)
    assert (s.n_irs, s.p_max_dbm, s.resolutions) == (4, 30.0, (1, 3))
    assert SCENARIOS["p1"].n_irs == 2  # presets are not mutated
    with pytest.raises(ConfigError, match="^n_irs: cannot parse"):
        parse_overrides("p1", ["n_irs=four"])
    with pytest.raises(ConfigError, match="^--set: expected field=value"):
        parse_overrides("p1", ["n_irs"])


def test_element_power_outside_table_is_a_clear_error():
    with pytest.raises(ConfigError, match="^bits: resolution 7 has no element power"):
        get_scenario("p1").element_power_w(7)


def test_cli_scenario_prints_resolved_preset(capsys):
    from controller.cli import main as cli_main

    assert cli_main(["twin", "scenario", "p3", "--set", "n_surfaces=3"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["n_surfaces"] == 3 and shown["carrier_ghz"] == 28.0
    assert cli_main(["twin", "scenario", "p3", "--set", "n_surfaces=-1"]) == 2
    assert capsys.readouterr().err.startswith("ristwin: error: n_surfaces:")
