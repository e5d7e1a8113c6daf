import math

import pytest
import torch

from twin import star
from twin.errors import ConfigError
from twin.signal import effective_channel as p1_effective_channel


def _channels(g, B, V, N, M, K, dtype=torch.complex128):
    return (
        torch.randn(B, V, N, M, generator=g, dtype=dtype),
        torch.randn(B, V, V, N, N, generator=g, dtype=dtype) / math.sqrt(N),
        torch.randn(B, V, K, N, generator=g, dtype=dtype),
        torch.randn(B, K, M, generator=g, dtype=dtype),
    )


def _es_state(g, B, V, N, p_on=0.7):
    beta_R = torch.rand(B, V, N, generator=g, dtype=torch.float64)
    theta_R = torch.rand(B, V, N, generator=g, dtype=torch.float64) * 2 * math.pi
    t_sign = torch.where(torch.rand(B, V, N, generator=g) < 0.5, -1, 1)
    on = torch.rand(B, V, N, generator=g) < p_on
    return beta_R, theta_R, t_sign, on


def test_es_energy_conservation_and_phase_coupling():
    g = torch.Generator().manual_seed(0)
    beta_R, theta_R, t_sign, on = _es_state(g, 8, 3, 16)
    R, T = star.es_coefficients(beta_R, theta_R, t_sign, on)
    power = R.abs().square() + T.abs().square()
    torch.testing.assert_close(power, on.double())  # 1 per ON element, 0 per OFF (2a, 1c)
    both = on & (beta_R > 0.01) & (beta_R < 0.99)
    # theta_T - theta_R = +-pi/2 with the chosen sign (2b): T / R is +-j times a positive real.
    ratio = (T / R)[both]
    torch.testing.assert_close(torch.angle(ratio), (t_sign[both] * math.pi / 2).double())


def test_ms_and_ris_modes():
    g = torch.Generator().manual_seed(1)
    theta = torch.rand(2, 2, 10, generator=g, dtype=torch.float64) * 6
    reflect = torch.rand(2, 2, 10, generator=g) < 0.5
    on = torch.rand(2, 2, 10, generator=g) < 0.8
    R, T = star.ms_coefficients(theta, reflect, on)
    assert bool(((R == 0) | (T == 0)).all())
    torch.testing.assert_close(R.abs().square() + T.abs().square(), on.double())
    R, T = star.ris_coefficients(theta, on)
    assert bool((T == 0).all())
    torch.testing.assert_close(R.abs(), on.double())


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_single_surface_reduces_to_p1_model(dtype):
    """V = 1: region 0 gets the reflected path, region 1 the transmitted path, each the P1 model."""
    g = torch.Generator().manual_seed(2)
    B, N, M, K = 4, 12, 3, 2
    G_BS, G_SS, h_SU, h_BU = _channels(g, B, 1, N, M, K, dtype)
    beta_R, theta_R, t_sign, on = _es_state(g, B, 1, N)
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    R, T = star.es_coefficients(beta_R.to(real), theta_R.to(real), t_sign, on)
    region = torch.tensor([[0, 1]] * B)
    omega = star.effective_channel(G_BS, G_SS, h_SU, h_BU, R, T, region)
    assert omega.dtype == dtype
    ref_R = p1_effective_channel(G_BS, h_SU, h_BU, R)
    ref_T = p1_effective_channel(G_BS, h_SU, h_BU, T)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.complex64 else {}
    torch.testing.assert_close(omega[:, 0], ref_R[:, 0], **tol)
    torch.testing.assert_close(omega[:, 1], ref_T[:, 1], **tol)


def _omega_by_chain_enumeration(G_BS, G_SS, h_SU, h_BU, R, T, region):
    """Eq. (4a)-(4b) written literally: loop over every ascending chain, one user at a time."""
    B, V, N, M = G_BS.shape
    K = h_BU.shape[1]
    out = h_BU.conj().clone()
    for b in range(B):
        for k in range(K):
            i = int(region[b, k])
            for c in star.chains(V):
                f = G_BS[b, c[0]]
                for prev, nxt in zip(c[:-1], c[1:]):
                    f = G_SS[b, prev, nxt] @ torch.diag(T[b, prev]) @ f
                last = c[-1]
                theta = T[b, last] if last < i else R[b, last]
                out[b, k] += h_SU[b, last, k].conj() @ torch.diag(theta) @ f
    return out


@pytest.mark.parametrize("V", [2, 3, 4])
def test_recursion_equals_literal_chain_sum(V):
    g = torch.Generator().manual_seed(3 + V)
    B, N, M, K = 2, 6, 3, V + 1
    G_BS, G_SS, h_SU, h_BU = _channels(g, B, V, N, M, K)
    R, T = star.es_coefficients(*_es_state(g, B, V, N))
    region = torch.arange(V + 1).repeat(B, 1)  # one user per region
    assert len(star.chains(V)) == 2**V - 1
    omega = star.effective_channel(G_BS, G_SS, h_SU, h_BU, R, T, region)
    torch.testing.assert_close(omega, _omega_by_chain_enumeration(G_BS, G_SS, h_SU, h_BU, R, T, region))


def test_plain_ris_serves_only_reflect_side_and_no_surface_is_direct():
    g = torch.Generator().manual_seed(4)
    B, V, N, M = 2, 2, 8, 2
    G_BS, G_SS, h_SU, h_BU = _channels(g, B, V, N, M, 3)
    theta = torch.rand(B, V, N, generator=g, dtype=torch.float64) * 6
    R, T = star.ris_coefficients(theta, torch.ones(B, V, N, dtype=torch.bool))
    region = torch.tensor([[0, 1, 2]] * B)
    omega = star.effective_channel(G_BS, G_SS, h_SU, h_BU, R, T, region)
    # Region-2 user is behind both surfaces: only the direct link.
    torch.testing.assert_close(omega[:, 2], h_BU[:, 2].conj())
    # Region-1 user: reflection from surface 1 of the BS's own field (no forwarding through 0).
    ref = h_BU[:, 1].conj() + torch.einsum("bn,bnm->bm", h_SU[:, 1, 1].conj() * R[:, 1], G_BS[:, 1])
    torch.testing.assert_close(omega[:, 1], ref)
    R0, T0 = star.no_surface_coefficients((B, V, N), torch.complex128)
    torch.testing.assert_close(star.effective_channel(G_BS, G_SS, h_SU, h_BU, R0, T0, region), h_BU.conj())


def test_metrics_single_user_closed_form():
    """One user, MRT at full power: SINR = P ||omega||^2 / sigma^2; EE = B log2(1+SINR) / (p n_on + P)."""
    g = torch.Generator().manual_seed(5)
    B, V, N, M = 3, 2, 4, 5
    G_BS, G_SS, h_SU, h_BU = _channels(g, B, V, N, M, 1)
    beta_R, theta_R, t_sign, on = _es_state(g, B, V, N)
    R, T = star.es_coefficients(beta_R, theta_R, t_sign, on)
    region = torch.tensor([[1]] * B)
    omega = star.effective_channel(G_BS, G_SS, h_SU, h_BU, R, T, region)
    p_max = 2.0
    W = star.normalize_precoder(omega.conj().transpose(-2, -1), p_max)
    torch.testing.assert_close(W.abs().square().sum((-2, -1)), torch.full((B,), p_max, dtype=torch.float64))
    bw = 100e6
    noise = star.noise_power_w(bw)
    assert math.isclose(10 * math.log10(noise * 1e3), -174 + 80, rel_tol=1e-12)
    out = star.evaluate(G_BS, G_SS, h_SU, h_BU, R, T, on, W, region, noise, bw, element_power_w=0.05)
    snr = p_max * omega[:, 0].abs().square().sum(-1) / noise
    torch.testing.assert_close(out["sinr"][:, 0], snr)
    p_total = 0.05 * on.sum((1, 2)).double() + p_max
    torch.testing.assert_close(out["power_w"], p_total)
    torch.testing.assert_close(out["ee_bit_per_j"], bw * torch.log2(1 + snr) / p_total)


def test_intra_and_inter_region_interference_count():
    """Eq. (6): interference is every other stream, whichever region it serves."""
    g = torch.Generator().manual_seed(6)
    B, V, N, M, K = 1, 2, 4, 3, 3
    G_BS, G_SS, h_SU, h_BU = _channels(g, B, V, N, M, K)
    R, T = star.es_coefficients(*_es_state(g, B, V, N))
    region = torch.tensor([[0, 0, 2]])
    W = torch.randn(B, M, K, generator=g, dtype=torch.complex128)
    omega = star.effective_channel(G_BS, G_SS, h_SU, h_BU, R, T, region)
    out = star.evaluate(G_BS, G_SS, h_SU, h_BU, R, T, torch.ones(B, V, N, dtype=torch.bool), W, region, 1e-3, 1.0, 0.0)
    a = (omega[0] @ W[0]).abs().square()
    k = 0
    intra = a[k, 1]  # user 1 is in region 0 too
    inter = a[k, 2]  # user 2 in region 2
    torch.testing.assert_close(out["sinr"][0, k], a[k, k] / (intra + inter + 1e-3))


def test_batch_of_one_equals_batch_member_and_bad_region():
    g = torch.Generator().manual_seed(7)
    B, V, N, M, K = 16, 3, 4, 2, 4
    G_BS, G_SS, h_SU, h_BU = _channels(g, B, V, N, M, K, torch.complex64)
    beta_R, theta_R, t_sign, on = _es_state(g, B, V, N)
    R, T = star.es_coefficients(beta_R.float(), theta_R.float(), t_sign, on)
    region = torch.randint(0, V + 1, (B, K), generator=g)
    full = star.effective_channel(G_BS, G_SS, h_SU, h_BU, R, T, region)
    b = 9
    one = star.effective_channel(G_BS[b : b + 1], G_SS[b : b + 1], h_SU[b : b + 1], h_BU[b : b + 1], R[b : b + 1], T[b : b + 1], region[b : b + 1])
    torch.testing.assert_close(one[0], full[b], rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="user_region"):
        star.effective_channel(G_BS, G_SS, h_SU, h_BU, R, T, region + V + 1)


def test_signal_energy_efficiency_matches_star_ee():
    from twin.signal import energy_efficiency

    g = torch.Generator().manual_seed(8)
    B, V, N, M, K = 2, 2, 4, 3, 2
    G_BS, G_SS, h_SU, h_BU = _channels(g, B, V, N, M, K)
    beta_R, theta_R, t_sign, on = _es_state(g, B, V, N)
    R, T = star.es_coefficients(beta_R, theta_R, t_sign, on)
    W = star.normalize_precoder(torch.randn(B, M, K, generator=g, dtype=torch.complex128), 2.0)
    out = star.evaluate(G_BS, G_SS, h_SU, h_BU, R, T, on, W, torch.tensor([[0, 2]] * B), 1e-2, 1e6, 0.05)
    surface_w = 0.05 * on.sum((1, 2)).double()
    tx_w = W.abs().square().sum((-2, -1))
    torch.testing.assert_close(energy_efficiency(out["sum_rate_bps"], tx_w, surface_w), out["ee_bit_per_j"])


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_single_env_equals_env_inside_batch_of_1024(dtype):
    g = torch.Generator().manual_seed(9)
    B, V, N, M, K = 1024, 2, 4, 3, 3
    G_BS, G_SS, h_SU, h_BU = _channels(g, B, V, N, M, K, dtype)
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    beta_R, theta_R, t_sign, on = _es_state(g, B, V, N)
    R, T = star.es_coefficients(beta_R.to(real), theta_R.to(real), t_sign, on)
    W = torch.randn(B, M, K, generator=g, dtype=dtype)
    region = torch.randint(0, V + 1, (B, K), generator=g)
    args = (G_BS, G_SS, h_SU, h_BU, R, T, on, W, region)
    full = star.evaluate(*args, 1e-2, 1e8, 0.05)
    for i in (0, 1, 511, 1023):
        one = star.evaluate(*(a[i : i + 1] for a in args), 1e-2, 1e8, 0.05)
        for key in one:
            assert torch.equal(one[key], full[key][i : i + 1]), (i, key)
