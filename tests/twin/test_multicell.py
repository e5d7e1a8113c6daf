import pytest
import torch

from twin import multicell as mc
from twin.errors import ActionError
from twin.signal import effective_channel as p1_channel
from twin.signal import sinr as p1_sinr


def _scene(g, B, n_bs, L, N_l, N_b, K, dtype=torch.complex128):
    H_BI = torch.randn(B, n_bs, L, N_l, N_b, generator=g, dtype=dtype)
    h_IU = torch.randn(B, L, K, N_l, generator=g, dtype=dtype)
    h_BU = torch.randn(B, n_bs, K, N_b, generator=g, dtype=dtype) * 0.3
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    phi = torch.polar(torch.ones(B, L, N_l, dtype=real), torch.rand(B, L, N_l, generator=g, dtype=real) * 6.283)
    W = torch.randn(B, n_bs, N_b, K, generator=g, dtype=dtype)
    return H_BI, h_IU, h_BU, phi, W


def test_resolve_claims_cases():
    # 3 BSs, 5 IRSs: IRS0 by BS1 only; IRS1 by BS0 and BS2 (collision); IRS2 nobody;
    # IRS3 by all three (collision); IRS4 by BS2 only.
    claims = torch.tensor(
        [[[0, 1, 0, 1, 0], [1, 0, 0, 1, 0], [0, 1, 0, 1, 1]]], dtype=torch.bool
    )
    assert mc.resolve_claims(claims).tolist() == [[1, -1, -1, -1, 2]]
    assert mc.collisions(claims).tolist() == [[False, True, False, True, False]]


def test_resolve_claims_batched_exhaustive_two_bs():
    # All 4 claim patterns of 2 BSs on one IRS, in one batch.
    claims = torch.tensor([[[0], [0]], [[1], [0]], [[0], [1]], [[1], [1]]], dtype=torch.bool)
    assert mc.resolve_claims(claims).squeeze(-1).tolist() == [-1, 0, 1, -1]


def test_claims_from_user_irs():
    user_cell = torch.tensor([[0, 0, 1, 1]])
    user_irs = torch.tensor([[1, -1, 1, 0]])
    claims = mc.claims_from_user_irs(user_irs, user_cell, n_bs=2, n_irs=3)
    assert claims.int().tolist() == [[[0, 1, 0], [1, 1, 0]]]


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_one_bs_one_irs_equals_p1_model(dtype):
    g = torch.Generator().manual_seed(0)
    B, N_l, N_b, K = 5, 8, 4, 3
    H_BI, h_IU, h_BU, phi, W = _scene(g, B, 1, 1, N_l, N_b, K, dtype)
    claims = torch.ones(B, 1, 1, dtype=torch.bool)
    user_cell = torch.zeros(B, K, dtype=torch.long)
    user_irs = torch.zeros(B, K, dtype=torch.long)
    out = mc.evaluate(H_BI, h_IU, h_BU, phi, claims, user_cell, user_irs, W, 0.1)
    G = p1_channel(H_BI[:, 0], h_IU, h_BU[:, 0], phi)
    ref = p1_sinr(G, W[:, 0], 0.1)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.complex64 else {}
    torch.testing.assert_close(out["sinr"], ref, **tol)
    torch.testing.assert_close(out["sum_rate_bps_hz"], torch.log2(1 + ref).sum(-1), **tol)
    torch.testing.assert_close(out["bs_power_w"][:, 0], W[:, 0].abs().square().sum((-2, -1)), **tol)


def test_collision_zeroes_reflected_paths_of_every_claimant():
    g = torch.Generator().manual_seed(1)
    B, N_l, N_b, K = 2, 6, 3, 4
    H_BI, h_IU, h_BU, phi, W = _scene(g, B, 2, 1, N_l, N_b, K)
    user_cell = torch.tensor([[0, 0, 1, 1]] * B)
    user_irs = torch.zeros(B, K, dtype=torch.long)
    both = torch.ones(B, 2, 1, dtype=torch.bool)
    out = mc.evaluate(H_BI, h_IU, h_BU, phi, both, user_cell, user_irs, W, 0.1)
    direct_only = mc.evaluate(H_BI, h_IU, h_BU, phi, both, user_cell, torch.full_like(user_irs, -1), W, 0.1)
    torch.testing.assert_close(out["sinr"], direct_only["sinr"])
    assert out["owner"].tolist() == [[-1]] * B
    # Only BS 1 claims: BS 1's users get the IRS, BS 0's users do not.
    only1 = torch.tensor([[[False], [True]]] * B)
    g1 = mc.effective_channel(H_BI, h_IU, h_BU, phi, mc.resolve_claims(only1), user_cell, user_irs)
    g_direct = mc.effective_channel(H_BI, h_IU, h_BU, phi, torch.full((B, 1), -1), user_cell, user_irs)
    torch.testing.assert_close(g1[:, :2], g_direct[:, :2])
    refl = torch.einsum("bkn,bnq->bkq", h_IU[:, 0, 2:].conj() * phi[:, 0:1], H_BI[:, 1, 0])
    torch.testing.assert_close(g1[:, 2:], h_BU[:, 1, 2:].conj() + refl)


def test_no_inter_cell_interference():
    """Changing BS 1's beamformers leaves every rate of BS 0's users unchanged, and vice versa."""
    g = torch.Generator().manual_seed(2)
    B, N_l, N_b, K = 3, 4, 3, 5
    H_BI, h_IU, h_BU, phi, W = _scene(g, B, 2, 2, N_l, N_b, K)
    user_cell = torch.tensor([[0, 1, 0, 1, 1]] * B)
    user_irs = torch.tensor([[0, 1, 1, 1, -1]] * B)
    claims = mc.claims_from_user_irs(user_irs, user_cell, 2, 2)
    a = mc.evaluate(H_BI, h_IU, h_BU, phi, claims, user_cell, user_irs, W, 0.1)
    W2 = W.clone()
    W2[:, 1] = torch.randn(B, N_b, K, generator=g, dtype=W.dtype) * 5
    b = mc.evaluate(H_BI, h_IU, h_BU, phi, claims, user_cell, user_irs, W2, 0.1)
    cell0 = user_cell[0] == 0
    torch.testing.assert_close(a["rate_bps_hz"][:, cell0], b["rate_bps_hz"][:, cell0])
    assert not torch.allclose(a["rate_bps_hz"][:, ~cell0], b["rate_bps_hz"][:, ~cell0])
    torch.testing.assert_close(a["bs_power_w"][:, 0], b["bs_power_w"][:, 0])


def test_intra_cell_sinr_closed_form():
    g = torch.Generator().manual_seed(3)
    B, N_l, N_b, K = 1, 4, 2, 3
    H_BI, h_IU, h_BU, phi, W = _scene(g, B, 2, 1, N_l, N_b, K)
    user_cell = torch.tensor([[0, 1, 0]])
    user_irs = torch.tensor([[0, 0, -1]])
    claims = torch.tensor([[[True], [False]]])
    out = mc.evaluate(H_BI, h_IU, h_BU, phi, claims, user_cell, user_irs, W, 0.5)
    g0 = h_BU[0, 0, 0].conj() + (h_IU[0, 0, 0].conj() * phi[0, 0]) @ H_BI[0, 0, 0]
    sig = (g0 @ W[0, 0, :, 0]).abs().square()
    intf = (g0 @ W[0, 0, :, 2]).abs().square()  # user 2 is BS 0's other user
    torch.testing.assert_close(out["sinr"][0, 0], sig / (intf + 0.5))
    # User 1 is alone in cell 1 and its IRS belongs to BS 0: direct link, no interference.
    g1 = h_BU[0, 1, 1].conj()
    torch.testing.assert_close(out["sinr"][0, 1], (g1 @ W[0, 1, :, 1]).abs().square() / 0.5)
    torch.testing.assert_close(out["bs_sum_rate_bps_hz"][0], torch.stack([out["rate_bps_hz"][0, [0, 2]].sum(), out["rate_bps_hz"][0, 1]]))


def test_bad_indices():
    g = torch.Generator().manual_seed(4)
    H_BI, h_IU, h_BU, phi, W = _scene(g, 1, 2, 1, 2, 2, 2)
    owner = torch.tensor([[0]])
    with pytest.raises(ActionError, match="user_irs"):
        mc.effective_channel(H_BI, h_IU, h_BU, phi, owner, torch.tensor([[0, 1]]), torch.tensor([[0, 3]]))
    with pytest.raises(ActionError, match="user_cell"):
        mc.effective_channel(H_BI, h_IU, h_BU, phi, owner, torch.tensor([[0, 2]]), torch.tensor([[0, 0]]))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_single_env_equals_env_inside_batch_of_1024(dtype):
    g = torch.Generator().manual_seed(5)
    B, n_bs, L, N_l, N_b, K = 1024, 2, 3, 4, 2, 5
    H_BI, h_IU, h_BU, phi, W = _scene(g, B, n_bs, L, N_l, N_b, K, dtype)
    user_cell = torch.randint(0, n_bs, (B, K), generator=g)
    user_irs = torch.randint(-1, L, (B, K), generator=g)
    claims = torch.rand(B, n_bs, L, generator=g) < 0.5
    args = (H_BI, h_IU, h_BU, phi, claims, user_cell, user_irs, W)
    full = mc.evaluate(*args, 0.1)
    for i in (0, 1, 511, 1023):
        one = mc.evaluate(*(a[i : i + 1] for a in args), 0.1)
        for key in one:
            assert torch.equal(one[key], full[key][i : i + 1]), (i, key)
