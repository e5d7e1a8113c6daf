"""agents.knn: the k nearest discrete hybrid IRS actions, checked against brute force."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from agents.knn import embed, k_nearest, nearest
from twin.errors import ConfigError


def brute_force(u: list[float], w: list[float], bits: int) -> list[tuple[float, tuple[int, ...], tuple[int, ...]]]:
    """Every action of A_b (2^(bN) phases x 2^N ON masks) with its squared distance, sorted."""
    n, levels = len(u), 1 << bits
    out = []
    for idx in itertools.product(range(levels), repeat=n):
        for on in itertools.product(range(2), repeat=n):
            d = 0.0
            for j in range(n):
                t = u[j] - idx[j] / levels
                d += (t - round(t)) ** 2 + (w[j] - on[j]) ** 2
            out.append((d, idx, on))
    return sorted(out)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 3),
    bits=st.lists(st.integers(1, 2), min_size=1, max_size=3),
    k=st.integers(1, 50),
    seed=st.integers(0, 2**31 - 1),
)
def test_matches_brute_force(n: int, bits: list[int], k: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    B = len(bits)
    u = torch.rand(B, n, generator=g, dtype=torch.float64) * 3 - 1     # phases wrap
    w = torch.rand(B, n, generator=g, dtype=torch.float64) * 1.6 - 0.3
    b = torch.tensor(bits)
    nb = k_nearest(u, w, b, k, max_bits=2)
    for i in range(B):
        truth = brute_force(u[i].tolist(), w[i].tolist(), bits[i])
        want = [d for d, _, _ in truth[:k]]
        got = nb.dist2[i][nb.valid[i]].tolist()
        assert len(got) == min(k, len(truth))
        assert got == pytest.approx(want, abs=1e-12)
        # The returned actions really have those distances, are distinct and valid.
        table = {(idx, on): d for d, idx, on in truth}
        seen = set()
        for j in range(len(got)):
            key = (tuple(nb.phase_idx[i, j].tolist()), tuple(int(x) for x in nb.on[i, j].tolist()))
            assert table[key] == pytest.approx(got[j], abs=1e-12)
            seen.add(key)
        assert len(seen) == len(got)
        assert int(nb.phase_idx[i].max()) < (1 << bits[i])
    # k = 1 is plain per-element rounding.
    idx, on = nearest(u, w, b)
    assert torch.equal(idx, nb.phase_idx[:, 0]) and torch.equal(on, nb.on[:, 0])


def test_phase_metric_is_circular() -> None:
    # 0.97 turns is 0.03 turns from index 0 and far from index 3 (0.75 turns) at b = 2.
    idx, _ = nearest(torch.tensor([[0.97]]), torch.tensor([[1.0]]), torch.tensor([2]))
    assert int(idx) == 0


def test_large_surface_is_fast_and_exact_on_its_structure() -> None:
    # N = 1024: 2^(3*1024) actions; the search must only touch the cheapest changes.
    g = torch.Generator().manual_seed(0)
    B, N, k = 4, 1024, 50
    u, w = torch.rand(B, N, generator=g), torch.rand(B, N, generator=g)
    bits = torch.tensor([1, 2, 3, 3])
    nb = k_nearest(u, w, bits, k, max_bits=3)
    assert nb.phase_idx.shape == (B, k, N) and bool(nb.valid.all())
    assert bool((nb.dist2[:, 1:] >= nb.dist2[:, :-1]).all())            # nearest first
    # Every neighbour differs from the rounding in few coordinates; recompute its distance.
    uu, ww = embed(nb.phase_idx, nb.on, bits)
    t = u.unsqueeze(1).double() - uu.double()
    d = ((t - torch.round(t)) ** 2 + (w.unsqueeze(1).double() - ww.double()) ** 2).sum(-1)
    assert torch.allclose(d, nb.dist2, atol=1e-9)


def test_too_few_actions_are_padded_invalid() -> None:
    nb = k_nearest(torch.tensor([[0.1]]), torch.tensor([[0.8]]), torch.tensor([1]), k=10)
    assert int(nb.valid.sum()) == 4 and math.isinf(float(nb.dist2[0, -1]))


def test_rejects_bad_k() -> None:
    with pytest.raises(ConfigError, match="k:"):
        k_nearest(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([1]), k=0)
