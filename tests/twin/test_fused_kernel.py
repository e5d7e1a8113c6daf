"""The fused C kernels of twin/kernels against the torch path and a textbook numpy loop;
their fallbacks (switched off, no compiler, corrupted cache) never crash and give the torch
results."""

import hashlib
import logging
import math

import numpy as np
import pytest
import torch

from twin import kernels, signal, surfaces
from twin.scenarios import get_scenario
from twin.scene import sample_p1

HAVE_CC = kernels._compiler() is not None


@pytest.fixture
def fused(monkeypatch):
    """The fused path on (skip on a machine without a C compiler: the fallback tests still run)."""
    if not HAVE_CC:
        pytest.skip("no C compiler: the fused path is unavailable here (fallback tests cover this)")
    monkeypatch.setenv("RISTWIN_FUSED", "1")
    assert kernels.load() is not None, "a C compiler is present, so the kernel must build"


@pytest.fixture
def private_cache(monkeypatch, tmp_path):
    """A fresh cache dir and a fresh loader state; the shared state is restored afterwards."""
    monkeypatch.setenv("RISTWIN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("RISTWIN_FUSED", "1")
    kernels.reset()
    yield tmp_path
    monkeypatch.undo()
    kernels.reset()


def torch_path(monkeypatch, fn, *args):
    monkeypatch.setenv("RISTWIN_FUSED", "0")
    try:
        return fn(*args)
    finally:
        monkeypatch.setenv("RISTWIN_FUSED", "1")


def numpy_one(H, h, hb, bits, idx, on, V, noise_w, mu):
    """Textbook P1 eqs. 2, 1, 4, 5, 7 for one environment in float64 / complex128."""
    phi = on * np.exp(1j * 2 * np.pi * idx / (2.0 ** bits)[:, None])
    G = hb.conj().astype(np.complex128)
    for l in range(H.shape[0]):
        G = G + (h[l].conj() * phi[l]) @ H[l]
    A = np.abs(G @ V) ** 2
    sig = np.diag(A)
    rate = np.log2(1 + sig / (A.sum(-1) - sig + noise_w))
    return rate, (np.abs(V) ** 2).sum(0), on.sum(-1) * mu[bits]


def random_case(B, L, N, M, K, dtype, seed, broadcast=False):
    g = torch.Generator().manual_seed(seed)
    # unit-power channels scaled like P1 (tiny amplitudes: float32 must still be accurate)
    H = torch.randn(1 if broadcast else B, L, N, M, generator=g, dtype=dtype) * 1e-3
    h = torch.randn(B, L, K, N, generator=g, dtype=dtype) * 1e-3
    hb = torch.randn(B, K, M, generator=g, dtype=dtype) * 1e-6
    if broadcast:
        H = H.expand(B, L, N, M)
    bits = torch.randint(1, 4, (B, L), generator=g)
    idx = torch.randint(0, 8, (B, L, N), generator=g) % (1 << bits).unsqueeze(-1)
    on = torch.rand(B, L, N, generator=g) > 0.3
    V = torch.randn(B, M, K, generator=g, dtype=dtype) * 0.1
    return H, h, hb, bits, idx, on, V


MU = surfaces.power_table({1: 1e-3, 2: 2e-3, 3: 3e-3})
SHAPES = [(1, 1, 1, 1), (1, 3, 4, 1), (2, 10, 4, 4), (3, 5, 2, 3), (2, 7, 4, 1), (3, 1, 5, 4), (1, 4, 1, 6)]


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("L,N,M,K", SHAPES)
def test_fused_metrics_equal_torch_path_and_textbook(fused, monkeypatch, dtype, L, N, M, K):
    B, noise = 9, 1e-13
    case = random_case(B, L, N, M, K, dtype, seed=L * 100 + N * 10 + M + K)
    got = kernels.p1_eval(*case, noise, surfaces._unit_circle(dtype, "cpu"), surfaces.MAX_PHASE_BITS, MU)
    assert got is not None, "the fused path must take this case"
    ref = torch_path(monkeypatch, signal.p1_metrics, *case, noise, MU)
    assert torch.equal(signal.p1_metrics(*case, noise, MU)[0], got[0])  # p1_metrics takes the fused path
    tol = dict(rtol=2e-4, atol=1e-5) if dtype == torch.complex64 else dict(rtol=1e-10, atol=1e-12)
    for a, b in zip(got, ref):
        assert a.dtype == b.dtype and a.shape == b.shape
        torch.testing.assert_close(a, b, **tol)
    H, h, hb, bits, idx, on, V = (t.numpy() for t in case)
    for i in range(B):
        rate, txp, irs = numpy_one(H[i], h[i], hb[i], bits[i], idx[i], on[i], V[i], noise, MU.numpy())
        np.testing.assert_allclose(got[0][i].numpy(), rate, **tol)
        np.testing.assert_allclose(got[1][i].numpy(), txp, rtol=tol["rtol"])
        np.testing.assert_allclose(got[2][i].numpy(), irs, rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("L,N,M,K", SHAPES)
def test_fused_effective_channel_equals_einsum(fused, dtype, L, N, M, K):
    H, h, hb, bits, idx, on, V = random_case(5, L, N, M, K, dtype, seed=7, broadcast=True)
    phi = surfaces.coefficients(bits, idx, on, dtype=dtype)
    G = kernels.p1_cascade(H, h.conj(), hb, phi)  # a conj view and a broadcast H_BR are taken too
    assert G is not None
    ref = torch.einsum("blkn,blnm->bkm", h * phi.unsqueeze(-2), H) + hb.conj()
    scale = ref.abs().max()
    torch.testing.assert_close(G / scale, ref / scale, rtol=0, atol=1e-6 if dtype == torch.complex64 else 1e-14)
    assert torch.equal(signal.effective_channel(H, h.conj(), hb, phi), G)


def test_discrete_bits_off_elements_and_out_of_grid_indices(fused, monkeypatch):
    """b = 1..3 per surface, all-OFF and all-ON surfaces, indices beyond 2^b (wrapped as torch does)."""
    H, h, hb, bits, idx, on, V = random_case(6, 3, 8, 4, 4, torch.complex64, seed=3)
    bits = torch.tensor([[1, 2, 3]] * 6)
    idx = torch.randint(0, 32, idx.shape, generator=torch.Generator().manual_seed(1))
    on[0] = False
    on[1] = True
    on[2, 1] = False
    case = (H, h, hb, bits, idx, on, V)
    got = signal.p1_metrics(*case, 1e-13, MU)
    ref = torch_path(monkeypatch, signal.p1_metrics, *case, 1e-13, MU)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=2e-4, atol=1e-6)
    assert float(got[2][0].sum()) == 0.0 and math.isclose(float(got[2][1].sum()), 8 * (1e-3 + 2e-3 + 3e-3))
    # all surfaces OFF: only the direct link is left
    direct = signal.sinr(hb[:1].conj(), V[:1], 1e-13)
    torch.testing.assert_close(got[0][0], signal.rate_bps_hz(direct)[0], rtol=1e-5, atol=1e-6)


def test_p1_preset_batch_env_alone_equals_env_in_batch_of_1024(fused):
    scn = get_scenario("p1")
    g = torch.Generator().manual_seed(0)
    s = sample_p1(scn, 1024, g)
    L, N, M, K = scn.n_irs, scn.n_elements, scn.n_bs_antennas, scn.n_users
    bits = torch.randint(1, 4, (1024, L), generator=g)
    idx = torch.randint(0, 8, (1024, L, N), generator=g) % (1 << bits).unsqueeze(-1)
    on = torch.rand(1024, L, N, generator=g) > 0.2
    V = torch.randn(1024, M, K, generator=g, dtype=torch.complex64) * 0.05
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the kernel splits the batch over threads: results must not depend on it
    try:
        batched = signal.p1_metrics(s.H_BR, s.h_RU, s.h_BU, bits, idx, on, V, scn.noise_w, MU)
    finally:
        torch.set_num_threads(threads)
    for i in (0, 511, 1023):
        alone = signal.p1_metrics(s.H_BR[i:i + 1], s.h_RU[i:i + 1], s.h_BU[i:i + 1], bits[i:i + 1], idx[i:i + 1],
                                  on[i:i + 1], V[i:i + 1], scn.noise_w, MU)
        assert all(torch.equal(a[0], b[i]) for a, b in zip(alone, batched)), i


def test_not_applicable_cases_take_the_torch_path(fused):
    H, h, hb, bits, idx, on, V = random_case(3, 2, 4, 4, 4, torch.complex64, seed=5)
    phi = surfaces.coefficients(bits, idx, on).requires_grad_(True)
    assert kernels.p1_cascade(H, h, hb, phi) is None  # autograd needs the torch ops
    G = signal.effective_channel(H, h, hb, phi)
    G.abs().sum().backward()
    assert phi.grad is not None and phi.grad.abs().sum() > 0
    assert kernels.p1_cascade(H, h, hb.to(torch.complex128), phi.detach()) is None  # mixed precision
    assert kernels.p1_cascade(H.unsqueeze(0), h.unsqueeze(0), hb.unsqueeze(0), phi.detach().unsqueeze(0)) is None
    assert kernels.p1_eval(H.real.contiguous(), h, hb, bits, idx, on, V, 1e-13, surfaces._unit_circle(torch.complex64, "cpu"),
                           8, MU) is None  # real channels
    on_amp = on.to(torch.float32) * 0.5  # a non-bool mask is an amplitude on the torch path: not fused
    assert kernels.p1_eval(H, h, hb, bits, idx, on_amp, V, 1e-13, surfaces._unit_circle(torch.complex64, "cpu"), 8, MU) is None
    half = signal.p1_metrics(H, h, hb, bits, idx, on_amp, V, 1e-13, MU)
    torch.testing.assert_close(half[2], signal.p1_metrics(H, h, hb, bits, idx, on, V, 1e-13, MU)[2] * 0.5)
    i32 = signal.p1_metrics(H, h, hb, bits.int(), idx.int(), on, V, 1e-13, MU)  # int32 indices: converted, fused
    assert all(torch.equal(x, y) for x, y in zip(i32, signal.p1_metrics(H, h, hb, bits, idx, on, V, 1e-13, MU)))
    big = random_case(1, 1, 4096, 4, 4, torch.complex64, seed=6)  # work arrays beyond the C stack budget
    phi_big = surfaces.coefficients(*big[3:6])
    assert kernels.p1_cascade(big[0], big[1], big[2], phi_big) is None
    ref = torch.einsum("blkn,blnm->bkm", big[1].conj() * phi_big.unsqueeze(-2), big[0]) + big[2].conj()
    torch.testing.assert_close(signal.effective_channel(big[0], big[1], big[2], phi_big), ref, rtol=1e-4, atol=1e-9)


def test_bits_outside_the_tables_defer_to_the_torch_path(fused, monkeypatch):
    """b = 4 has no entry in MU (NaN power, as torch); b = 9 exceeds the phase lookup: the torch
    path decides (fused returns None there), so both paths agree on the outcome."""
    case = list(random_case(2, 1, 4, 2, 2, torch.complex64, seed=9))
    case[3] = torch.tensor([[4], [2]])
    got = signal.p1_metrics(*case, 1e-13, MU)
    assert torch.isnan(got[2][0]).all() and not torch.isnan(got[2][1]).any()
    case[3] = torch.tensor([[9], [2]])
    assert kernels.p1_eval(*case, 1e-13, surfaces._unit_circle(torch.complex64, "cpu"), 8, MU) is None


def test_switched_off_returns_none_and_signal_still_works(monkeypatch):
    monkeypatch.setenv("RISTWIN_FUSED", "0")
    case = random_case(4, 2, 3, 2, 2, torch.complex128, seed=11)
    assert kernels.p1_eval(*case, 1e-13, surfaces._unit_circle(torch.complex128, "cpu"), 8, MU) is None
    rate, txp, irs = signal.p1_metrics(*case, 1e-13, MU)
    H, h, hb, bits, idx, on, V = (t.numpy() for t in case)
    for i in range(4):
        ref = numpy_one(H[i], h[i], hb[i], bits[i], idx[i], on[i], V[i], 1e-13, MU.numpy())
        np.testing.assert_allclose(rate[i].numpy(), ref[0], rtol=1e-10)
        np.testing.assert_allclose(txp[i].numpy(), ref[1], rtol=1e-12)


def test_failing_compiler_falls_back_with_one_warning(private_cache, monkeypatch, caplog):
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    case = random_case(4, 2, 3, 4, 4, torch.complex64, seed=12)
    with caplog.at_level(logging.WARNING, logger="twin.kernels"):
        first = signal.p1_metrics(*case, 1e-13, MU)
        again = signal.p1_metrics(*case, 1e-13, MU)
        assert signal.effective_channel(case[0], case[1], case[2], surfaces.coefficients(*case[3:6])) is not None
    assert kernels.load() is None
    warnings = [r for r in caplog.records if r.name == "twin.kernels"]
    assert len(warnings) == 1 and "torch path" in warnings[0].getMessage()
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not list(private_cache.glob("*.so")), "a failed build must not leave a library behind"


def test_missing_compiler_falls_back(private_cache, monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.setenv("PATH", "/nonexistent")
    assert kernels.load() is None
    assert signal.p1_metrics(*random_case(2, 1, 2, 2, 2, torch.complex64, seed=1), 1e-13, MU)[0].shape == (2, 2)


@pytest.mark.skipif(not HAVE_CC, reason="needs a C compiler to rebuild")
@pytest.mark.parametrize("matching_checksum", [False, True])
def test_corrupted_cached_library_is_rebuilt(private_cache, matching_checksum):
    """Garbage at the cache path (with a stale or with a matching checksum) is rebuilt, not loaded."""
    path = kernels.library_path(kernels._compiler())
    path.parent.mkdir(parents=True, exist_ok=True)
    junk = b"\x7fELF this is not a shared library" * 10
    path.write_bytes(junk)
    path.with_suffix(".so.sha256").write_text(hashlib.sha256(junk).hexdigest() if matching_checksum else "0" * 64)
    assert kernels.load() is not None
    assert path.read_bytes() != junk
    assert path.with_suffix(".so.sha256").read_text() == hashlib.sha256(path.read_bytes()).hexdigest()
    case = random_case(3, 2, 4, 4, 4, torch.complex64, seed=2)
    assert kernels.p1_eval(*case, 1e-13, surfaces._unit_circle(torch.complex64, "cpu"), 8, MU) is not None


@pytest.mark.skipif(not HAVE_CC, reason="needs a C compiler")
def test_corrupted_library_without_compiler_falls_back(private_cache, monkeypatch):
    path = kernels.library_path(kernels._compiler())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"garbage")
    path.with_suffix(".so.sha256").write_text(hashlib.sha256(b"garbage").hexdigest())
    monkeypatch.setenv("CC", "false")
    monkeypatch.setattr(kernels, "library_path", lambda cc: path)  # same file whatever the "compiler"
    assert kernels.load() is None
    case = random_case(2, 1, 3, 2, 2, torch.complex64, seed=4)
    assert signal.p1_metrics(*case, 1e-13, MU)[0].shape == (2, 2)
