import math

import numpy as np
import pytest
import torch

from twin import surfaces as S
from twin.errors import ActionError, ConfigError
from twin.signal import effective_channel
from twin.surface_config import SurfaceConfig


def test_quantize_nearest_grid_point_per_surface_bits():
    # Surface 0 has b=1 (grid 0, pi), surface 1 has b=2 (grid 0, pi/2, pi, 3pi/2).
    theta = torch.tensor([[[0.4, 1.2, 3.0, -0.3, 6.2], [0.4, 1.2, 3.0, -0.3, 6.2]]])
    bits = torch.tensor([[1, 2]])
    idx = S.quantize_phase(theta, bits)
    assert idx.tolist() == [[[0, 0, 1, 0, 0], [0, 1, 2, 0, 0]]]
    q = S.quantize(theta, bits)
    # The quantized phase is within half a step of the original, on the circle.
    step = torch.tensor([math.pi, math.pi / 2]).view(1, 2, 1)
    err = torch.remainder(theta - q + math.pi, 2 * math.pi) - math.pi
    assert bool((err.abs() <= step / 2 + 1e-6).all())


def test_quantize_matches_surface_config_from_phases():
    g = torch.Generator().manual_seed(3)
    theta = (torch.rand(1, 3, 40, generator=g, dtype=torch.float64) - 0.5) * 20
    bits = torch.tensor([[1, 2, 3]])
    idx = S.quantize_phase(theta, bits)
    for l in range(3):
        cfg = SurfaceConfig.from_phases(theta[0, l].numpy(), bits=int(bits[0, l]))
        assert np.array_equal(cfg.phase_idx, idx[0, l].numpy())


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_coefficients_mirror_surface_config(dtype):
    g = torch.Generator().manual_seed(4)
    bits = torch.tensor([[1, 3]])
    idx = torch.stack([torch.randint(0, 2, (8,), generator=g), torch.randint(0, 8, (8,), generator=g)]).unsqueeze(0)
    on = torch.rand(1, 2, 8, generator=g) > 0.3
    phi = S.coefficients(bits, idx, on, dtype=dtype)
    assert phi.dtype == dtype
    for l in range(2):
        ref = SurfaceConfig(bits=int(bits[0, l]), phase_idx=idx[0, l].numpy(), on=on[0, l].numpy()).coefficients()
        np.testing.assert_allclose(phi[0, l].numpy(), ref, atol=1e-6)
    assert bool((phi[~on] == 0).all())


def test_element_power_sums():
    table = S.power_table({1: 0.5e-3, 2: 1.0e-3, **S.P1_CITED_ELEMENT_POWER_W})
    bits = torch.tensor([[3, 5], [1, 4]])
    on = torch.zeros(2, 2, 10, dtype=torch.bool)
    on[0, 0, :7] = True  # 7 elements at 3 bits -> 7 * 1.5 mW
    on[0, 1, :] = True  # 10 at 5 bits -> 60 mW
    on[1, 0, :2] = True  # 2 at 1 bit -> 1 mW
    # surface (1,1) all OFF -> 0 W regardless of 4 bits
    p = S.irs_power_w(bits, on, table)
    torch.testing.assert_close(p, torch.tensor([[10.5e-3, 60e-3], [1.0e-3, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(S.total_irs_power_w(bits, on, table), torch.tensor([70.5e-3, 1.0e-3], dtype=torch.float64))


def test_unsupported_resolution():
    table = S.power_table(S.P1_CITED_ELEMENT_POWER_W)
    S.check_bits(torch.tensor([[3, 4]]), table)
    with pytest.raises(ActionError, match="bits"):
        S.check_bits(torch.tensor([[2, 4]]), table)
    with pytest.raises(ConfigError, match="element_power_w"):
        S.power_table({9: 1.0})


def test_action_roundtrip_and_validation():
    g = torch.Generator().manual_seed(5)
    action = {"bits": torch.tensor([2, 1]), "phase_idx": torch.stack([torch.randint(0, 4, (6,), generator=g), torch.randint(0, 2, (6,), generator=g)]), "on": torch.rand(2, 6, generator=g) > 0.5}
    S.validate_action(action, 6, [1, 2, 3])
    configs = S.action_to_configs(action)
    assert [c.bits for c in configs] == [2, 1]
    back = S.configs_to_action(configs)
    for k in action:
        assert torch.equal(back[k], action[k].to(back[k].dtype))
    bad = dict(action, phase_idx=action["phase_idx"].clone())
    bad["phase_idx"][1, 0] = 2  # b=1 allows only 0, 1
    with pytest.raises(ActionError, match="phase_idx"):
        S.validate_action(bad, 6, [1, 2, 3])
    with pytest.raises(ActionError, match="bits"):
        S.validate_action(dict(action, bits=torch.tensor([4, 1])), 6, [1, 2, 3])
    with pytest.raises(ActionError, match="on"):
        S.validate_action(dict(action, on=action["on"][:, :5]), 6, [1, 2, 3])


def test_stack_unstack():
    acts = [{"bits": torch.tensor([l + 1]), "phase_idx": torch.zeros(1, 4, dtype=torch.long), "on": torch.ones(1, 4, dtype=torch.bool)} for l in range(3)]
    st = S.stack_surfaces(acts)
    assert st["bits"].shape == (1, 3) and st["phase_idx"].shape == (1, 3, 4)
    assert [int(a["bits"]) for a in S.unstack_surfaces(st)] == [1, 2, 3]


@pytest.mark.parametrize("bits", [1, 2, 3])
def test_discrete_phase_loss_factor_large_n(bits):
    """Single user, one IRS, no direct link: aligned b-bit SNR / aligned continuous SNR ->
    (sin(pi/2^b)/(pi/2^b))^2 as N grows. Rayleigh cascaded channel, N = 4096, averaged over a
    batch of 32 draws; relative fluctuation is O(1/sqrt(N B)) ~ 0.3 %, tolerance 2 %."""
    g = torch.Generator().manual_seed(10 + bits)
    B, N, M = 32, 4096, 1
    H_BR = torch.randn(B, 1, N, M, generator=g, dtype=torch.complex128)
    h_RU = torch.randn(B, 1, 1, N, generator=g, dtype=torch.complex128)
    h_BU = torch.zeros(B, 1, M, dtype=torch.complex128)
    cascade = h_RU[:, 0, 0].conj() * H_BR[:, 0, :, 0]  # (B, N)
    theta = (-torch.angle(cascade)).unsqueeze(1)  # continuous alignment (B, 1, N)
    on = torch.ones(B, 1, N, dtype=torch.bool)
    b = torch.full((B, 1), bits)
    snr_cont = effective_channel(H_BR, h_RU, h_BU, S.continuous_coefficients(theta)).abs().square().squeeze()
    phi_q = S.coefficients(b, S.quantize_phase(theta, b), on, dtype=torch.complex128)
    snr_q = effective_channel(H_BR, h_RU, h_BU, phi_q).abs().square().squeeze()
    ratio = (snr_q.mean() / snr_cont.mean()).item()
    expected = S.discrete_phase_loss_factor(bits).item()
    assert abs(ratio / expected - 1) < 0.02, (ratio, expected)
