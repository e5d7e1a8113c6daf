"""Channel models, geometry and scene sampling against closed forms."""

import dataclasses
import math

import pytest
import torch

from twin import geometry as geo
from twin.channels import (gauss_markov, log_distance_gain, rayleigh, rician, ula_steering, umi_los_gain,
                           upa_steering)
from twin.scenarios import get_scenario
from twin.scene import evolve_p1, evolve_p2, realize_p4, sample_p1, sample_p2, sample_p3, sample_p4


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---- path loss at hand-computed distances -------------------------------------------------
@pytest.mark.parametrize(
    "d, pl0, kappa, expected_db",
    [
        (1.0, 30.0, 2.0, -30.0),  # reference distance
        (100.0, 30.0, 2.0, -70.0),  # P1 BS-IRS: -30 - 20*2
        (10.0, 30.0, 2.8, -58.0),  # P1 IRS-user: -30 - 28*1
        (1000.0, 30.0, 3.5, -135.0),  # -30 - 35*3
        (50.0, 30.0, 2.5, -30.0 - 25.0 * 1.6989700043),  # P2 BS-IRS
    ],
)
def test_log_distance_gain(d, pl0, kappa, expected_db):
    got = log_distance_gain(torch.tensor([d], dtype=torch.float64), pl0, kappa)
    assert 10 * math.log10(float(got)) == pytest.approx(expected_db, abs=1e-9)


@pytest.mark.parametrize(
    "d, f_ghz, expected_loss_db",
    [
        (1.0, 28.0, 32.4 + 28.9431606),  # 20 log10 28 = 28.9431606
        (20.0, 28.0, 32.4 + 28.9431606 + 27.3216299),  # 21 log10 20 = 27.3216299
        (100.0, 28.0, 32.4 + 28.9431606 + 42.0),
        (10.0, 1.0, 32.4 + 21.0),
    ],
)
def test_umi_los_gain(d, f_ghz, expected_loss_db):
    got = umi_los_gain(torch.tensor([d], dtype=torch.float64), f_ghz)
    assert -10 * math.log10(float(got)) == pytest.approx(expected_loss_db, abs=1e-6)


def test_p1_scene_path_gains_match_geometry():
    scn = get_scenario("p1")
    s = sample_p1(scn, 256, gen(), dtype=torch.complex128)
    # IRSs sit on the 100 m circle: BS-IRS gain is exactly -70 dB.
    assert torch.allclose(s.d_BR, torch.full_like(s.d_BR, 100.0))
    assert torch.allclose(s.amp_BR.square(), torch.full_like(s.amp_BR, 1e-7))
    assert ((s.d_BU >= 100.0 - 1e-9) & (s.d_BU <= 120.0 + 1e-9)).all()
    # IRS-user gain -30 - 28 log10 d at each sampled distance.
    expected = 10 ** ((-30.0 - 28.0 * torch.log10(s.d_RU)) / 10)
    assert torch.allclose(s.amp_RU.square(), expected, rtol=1e-12)
    # Mean channel power of the unit-power Rician H_BR equals the path gain.
    assert float(s.H_BR.abs().square().mean()) == pytest.approx(1e-7, rel=0.03)


# ---- fading statistics ----------------------------------------------------------------------
def test_rayleigh_moments():
    x = rayleigh((400_000,), gen(1), torch.complex128)
    assert float(x.abs().square().mean()) == pytest.approx(1.0, abs=0.01)
    assert abs(complex(x.mean())) < 0.01
    assert float(x.real.var()) == pytest.approx(0.5, abs=0.01)
    assert float(x.imag.var()) == pytest.approx(0.5, abs=0.01)
    assert float(x.abs().pow(4).mean()) == pytest.approx(2.0, abs=0.04)  # |x|^2 ~ Exp(1)


@pytest.mark.parametrize("k_factor", [10.0, 1.0, 0.0])
def test_rician_power_split_and_k_factor(k_factor):
    n = 400_000
    angles = torch.rand(n, generator=gen(2), dtype=torch.float64) * 2 * math.pi
    los = torch.polar(torch.ones(n, dtype=torch.float64), angles)
    x = rician(los, rayleigh((n,), gen(3), torch.complex128), k_factor)
    # Mean power 1; LoS fraction |E[x conj(los)]|^2 = K/(K+1); scatter power 1/(K+1).
    assert float(x.abs().square().mean()) == pytest.approx(1.0, abs=0.01)
    aligned = x * los.conj()
    los_power = abs(complex(aligned.mean())) ** 2
    assert los_power == pytest.approx(k_factor / (k_factor + 1), abs=0.01)
    scatter = float((aligned - aligned.mean()).abs().square().mean())
    assert scatter == pytest.approx(1 / (k_factor + 1), abs=0.01)
    if k_factor > 0:
        assert los_power / scatter == pytest.approx(k_factor, rel=0.05)


# ---- steering vectors -------------------------------------------------------------------------
def test_ula_known_phase_progression():
    sin_x = torch.tensor([0.0, 1.0, 0.5, -0.3], dtype=torch.float64)
    a = ula_steering(sin_x, 8, 0.5, torch.complex128)
    assert torch.allclose(a.abs(), torch.ones_like(a.abs()))
    assert torch.allclose(a[0], torch.ones(8, dtype=torch.complex128))  # broadside: in phase
    alternating = torch.tensor([(-1.0) ** n for n in range(8)], dtype=torch.complex128)
    assert torch.allclose(a[1], alternating, atol=1e-12)  # endfire at d = lambda/2
    ratio = a[:, 1:] / a[:, :-1]  # constant step e^{-j pi sin x}
    expected = torch.exp(-1j * math.pi * sin_x.to(torch.complex128)).unsqueeze(-1).expand_as(ratio)
    assert torch.allclose(ratio, expected, atol=1e-12)


def test_upa_is_kron_of_row_and_column_ulas():
    cr = torch.tensor([0.2, -0.7], dtype=torch.float64)
    cc = torch.tensor([0.9, 0.1], dtype=torch.float64)
    a = upa_steering(cr, cc, 3, 4, 0.5, torch.complex128)
    assert a.shape == (2, 12)
    assert torch.allclose(a.abs(), torch.ones(2, 12, dtype=torch.float64))
    for r in range(3):
        for c in range(4):
            phase = -math.pi * (r * cr + c * cc)
            assert torch.allclose(a[:, r * 4 + c], torch.polar(torch.ones(2, dtype=torch.float64), phase))


# ---- time evolution ---------------------------------------------------------------------------
@pytest.mark.parametrize("rho", [0.9, 0.5, 0.0])
def test_gauss_markov_variance_and_correlation(rho):
    g = gen(4)
    x0 = rayleigh((200_000,), g, torch.complex128)
    x1 = gauss_markov(x0, rho, g)
    x3 = gauss_markov(gauss_markov(x1, rho, g), rho, g)
    assert float(x1.abs().square().mean()) == pytest.approx(1.0, abs=0.015)
    assert float(x3.abs().square().mean()) == pytest.approx(1.0, abs=0.015)
    assert complex((x1 * x0.conj()).mean()).real == pytest.approx(rho, abs=0.01)
    assert complex((x3 * x0.conj()).mean()).real == pytest.approx(rho**3, abs=0.01)


def test_evolve_p1_keeps_los_and_path_loss_and_decorrelates_scatter():
    scn = get_scenario("p1", fading_correlation=0.8)
    s0 = sample_p1(scn, 2048, gen(5), dtype=torch.complex128)
    s1 = evolve_p1(s0, scn, gen(6))
    assert torch.equal(s1.user_pos, s0.user_pos) and torch.equal(s1.amp_RU, s0.amp_RU)
    corr = complex((s1.h_BU_nlos * s0.h_BU_nlos.conj()).mean()).real
    assert corr == pytest.approx(0.8, abs=0.02)
    # Channel power is stationary: E|h_BU|^2 / amp^2 stays 1.
    assert float((s1.h_BU.abs().square() / s1.amp_BU[..., None].square()).mean()) == pytest.approx(1.0, abs=0.02)


# ---- geometry and mobility -----------------------------------------------------------------
def test_ring_sampling_is_uniform_in_area():
    pts = geo.uniform_ring(1, 200_000, 100.0, 120.0, gen(7), torch.float64)[0]
    r = torch.linalg.vector_norm(pts, dim=-1)
    assert float(r.min()) >= 100.0 and float(r.max()) <= 120.0
    r_half_area = math.sqrt((100.0**2 + 120.0**2) / 2)  # circle splitting the ring's area in two
    assert float((r < r_half_area).double().mean()) == pytest.approx(0.5, abs=0.005)


def test_random_waypoint_moves_exact_step_and_stays_in_area():
    g = gen(8)
    pos = torch.tensor([[[0.0, 0.0], [10.0, 10.0]]], dtype=torch.float64)
    wp = torch.tensor([[[3.0, 4.0], [10.5, 10.0]]], dtype=torch.float64)
    new_pos, new_wp = geo.random_waypoint_step(pos, wp, 1.0, (0.0, 0.0), (20.0, 20.0), g)
    assert torch.allclose(new_pos[0, 0], torch.tensor([0.6, 0.8], dtype=torch.float64))
    assert torch.equal(new_wp[0, 0], wp[0, 0])  # not there yet: same waypoint
    assert torch.equal(new_pos[0, 1], wp[0, 1])  # within one step: arrives
    assert not torch.equal(new_wp[0, 1], wp[0, 1])  # and draws a fresh one
    assert ((new_wp >= 0) & (new_wp <= 20)).all()


def test_p2_mobility_changes_cells_and_cells_follow_x():
    scn = get_scenario("p2", user_speed_mps=5.0)
    g = gen(9)
    s = sample_p2(scn, 16, g, dtype=torch.complex128)
    cells0 = s.user_cell.clone()
    lo, hi = (0.0, 0.0), (2 * scn.region_side_m, scn.region_side_m)
    for _ in range(60):
        s = evolve_p2(s, scn, g)
        assert ((s.user_pos[..., 0] >= lo[0]) & (s.user_pos[..., 0] <= hi[0])).all()
        assert torch.equal(s.user_cell, (s.user_pos[..., 0] >= scn.region_side_m).long())
    assert (s.user_cell != cells0).any()
    # Rayleigh with path loss: E|h_BU|^2 = gain(d) = d^-3.5 (P2 preset: no reference loss).
    assert scn.pl_ref_db == 0.0 and scn.pl_exp_bs_user == 3.5
    gain = s.d_BU ** -3.5
    assert float((s.h_BU.abs().square().mean(-1) / gain).mean()) == pytest.approx(1.0, abs=0.1)


def test_p3_layout_regions_and_umi_gain():
    scn = get_scenario("p3")
    s = sample_p3(scn, 64, gen(10), dtype=torch.complex128)
    assert torch.allclose(s.d_BS[:, 0], torch.full((64,), 10.0, dtype=torch.float64))  # BS to first wall
    assert torch.allclose(s.d_BS[:, 1], torch.full((64,), 20.0, dtype=torch.float64))
    expected_region = (s.user_pos[..., 0] > 10.0).long() + (s.user_pos[..., 0] > 20.0).long()
    assert torch.equal(s.user_region, expected_region)
    assert float(s.G_SS[:, 0, 0].abs().max()) == 0.0 and float(s.G_SS[:, 1, 1].abs().max()) == 0.0
    gain_10m = 10 ** (-(32.4 + 28.9431606 + 21.0) / 10)
    assert float(s.amps[0][:, 0].square().mean()) == pytest.approx(gain_10m, rel=1e-5)
    assert float(s.amps[1][:, 0, 1].square().mean()) == pytest.approx(gain_10m, rel=1e-5)  # walls 10 m apart


def test_p4_statistical_csi_and_monte_carlo_power():
    scn = get_scenario("p4")
    s = sample_p4(scn, 8, gen(11), dtype=torch.complex128)
    d = math.sqrt(50.0**2 + 5.0**2)  # BS (0,0,10) to a RIS at 50 m, height 5
    assert torch.allclose(s.beta_G, torch.full_like(s.beta_G, 1e-3 * d**-2.2))
    assert torch.allclose(s.G_bar.abs(), torch.ones_like(s.G_bar.abs()))
    assert torch.allclose(s.h_bar.abs(), torch.ones_like(s.h_bar.abs()))
    assert torch.allclose(s.kappa_G, torch.full_like(s.kappa_G, 10.0))
    G, h = realize_p4(s, 2000, gen(12))
    power = G.abs().square().mean(dim=(0, -1, -2)) / s.beta_G
    assert torch.allclose(power, torch.ones_like(power), atol=0.02)


# ---- seeds ----------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler, name", [(sample_p1, "p1"), (sample_p2, "p2"), (sample_p3, "p3"), (sample_p4, "p4")])
def test_seeded_determinism(sampler, name):
    scn = get_scenario(name)
    a, b, c = sampler(scn, 4, gen(42)), sampler(scn, 4, gen(42)), sampler(scn, 4, gen(43))
    tensors = [f.name for f in dataclasses.fields(a) if isinstance(getattr(a, f.name), torch.Tensor)]
    assert all(torch.equal(getattr(a, f), getattr(b, f)) for f in tensors)
    assert not torch.equal(a.user_pos, c.user_pos)


def test_evolved_p1_channels_follow_the_rician_formula():
    # After a slot, every channel is still sqrt(g) (sqrt(K/(K+1)) LoS + sqrt(1/(K+1)) NLoS) (eq. 34).
    scn = get_scenario("p1", rician_factor=4.0, fading_correlation=0.5)
    s = evolve_p1(sample_p1(scn, 8, gen(13), dtype=torch.complex128), scn, gen(14))
    a, b = math.sqrt(4 / 5), math.sqrt(1 / 5)
    H = s.amp_BR[..., None, None] * (a * s.H_BR_los + b * s.H_BR_nlos)
    h = s.amp_RU[..., None] * (a * s.h_RU_los + b * s.h_RU_nlos)
    assert torch.allclose(s.H_BR, H, rtol=1e-12, atol=0) and torch.allclose(s.h_RU, h, rtol=1e-12, atol=0)
    assert torch.allclose(s.h_BU, s.amp_BU[..., None] * s.h_BU_nlos, rtol=1e-12, atol=0)


def test_p3_wall_loss_attenuates_direct_link_per_wall():
    base = sample_p3(get_scenario("p3"), 64, gen(15), dtype=torch.complex128)
    walled = sample_p3(get_scenario("p3", wall_loss_db=20.0), 64, gen(15), dtype=torch.complex128)
    expected = base.h_BU * (10.0 ** (-20.0 * base.user_region.double() / 20.0))[..., None]
    assert torch.allclose(walled.h_BU, expected, rtol=1e-12, atol=0)
    assert torch.equal(walled.h_SU, base.h_SU)
