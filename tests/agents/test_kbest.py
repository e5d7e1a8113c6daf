"""agents.runtime.kbest: the rank-space k-nearest search against brute-force enumeration of
the whole action set (set, order, distances), its dominance table against every possible k
best, and its batched form against the merge of agents.knn."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from agents import knn
from agents.runtime.kbest import TOL, RankSpace, dominance_table


def brute_force(u: np.ndarray, w: np.ndarray, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Every action of A_b (2^(bN) phase vectors x 2^N ON masks) as (2N,) option values, and
    its squared distance (agents.knn's metric), sorted by distance (stable)."""
    n, L = u.size, 1 << b
    acts = np.array(list(itertools.product(*([range(L)] * n + [range(2)] * n))), dtype=np.int64)
    d = u - acts[:, :n] / L
    d2 = ((d - np.round(d)) ** 2).sum(1) + ((w - acts[:, n:]) ** 2).sum(1)
    order = np.argsort(d2, kind="stable")
    return acts[order], d2[order]


CASES = [(3, 1), (3, 2), (3, 3), (4, 1), (4, 2), (4, 3), (5, 1), (5, 2)]    # (N, b): up to 65536 actions


@pytest.mark.parametrize("n,b", CASES)
def test_row_returns_the_brute_force_k_best_in_order(n: int, b: int) -> None:
    rng = np.random.default_rng(100 * n + b)
    accepted = 0
    for trial in range(12):
        k = int(rng.integers(2, 51))
        u, w = rng.random(n), rng.random(n)
        truth, d2 = brute_force(u, w, b)
        got = RankSpace(n, k, 3).row(np.r_[u, w], b)
        if got is None:
            continue
        accepted += 1
        acts, dist = got
        assert np.array_equal(acts, truth[:k]), (k, u, w)          # the same k actions, nearest first
        np.testing.assert_allclose(dist, d2[:k], rtol=0, atol=1e-12)
        assert (np.diff(d2[:k + 1]) > TOL).all()                   # accepted only when unambiguous
        # and the same as agents.knn's reference merge
        idx, on, _, _ = knn._k_nearest_merge_np(u[None], w[None], np.array([b]), k, 3)
        assert np.array_equal(acts, np.concatenate([idx[0], on[0].astype(np.int64)], 1))
    assert accepted >= 6        # the fast path is what ran (it declines only ties / too few actions)


@pytest.mark.parametrize("n,b", [(3, 2), (4, 3), (5, 1)])
def test_ties_are_declined_or_unambiguous(n: int, b: int) -> None:
    """Saturated proto-actions (phases on the grid or half-way, ON scores 0 / 0.5 / 1) tie
    exactly: the search either declines (the caller runs the tie-exact merge) or returns
    the k best with no tie among the k + 1 nearest."""
    rng = np.random.default_rng(7 * n + b)
    for _ in range(30):
        k = int(rng.integers(2, 51))
        u = rng.integers(0, 2 << b, n) / float(2 << b)
        w = rng.choice([0.0, 0.5, 1.0, rng.random()], n)
        got = RankSpace(n, k, 3).row(np.r_[u, w], b)
        if got is not None:
            truth, d2 = brute_force(u, w, b)
            assert (np.diff(d2[:k + 1]) > TOL).all() and np.array_equal(got[0], truth[:k])


def test_dominance_table_holds_every_possible_k_best() -> None:
    """The k best of any rank-space cost table (rows ascending from 0, first changes
    ascending over coordinates) are rows of the table, found by enumerating all R^C sets."""
    rng = np.random.default_rng(0)
    C, R = 6, 4
    grid = np.array(list(itertools.product(range(R), repeat=C)))               # option rank per coordinate
    for trial in range(40):
        k = int(rng.integers(2, 51))
        E = np.cumsum(np.c_[np.zeros(C), rng.exponential(1.0, (C, R - 1))], 1)
        E[:, 1] = np.sort(E[:, 1])
        E[:, 2:] = np.maximum(E[:, 2:], E[:, 1:2] + np.cumsum(rng.exponential(1.0, (C, R - 2)), 1))
        sums = E[np.arange(C), grid].sum(1)
        best = grid[np.argsort(sums)[:k]]
        coords, ranks = dominance_table(C, R, k)
        table = {tuple((int(c), int(o)) for c, o in zip(cr, orr) if c >= 0) for cr, orr in zip(coords, ranks)}
        for row in best:
            assert tuple((c, int(o)) for c, o in enumerate(row) if o > 0) in table, (k, row)


def test_tables_do_not_grow_with_n() -> None:
    # coordinate ranks >= k - 1 never enter the k best: N = 1000 has the rows of N = 25
    a, b = dominance_table(50, 8, 50), dominance_table(2000, 8, 50)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    rs = RankSpace(1000, 50, 3)
    rng = np.random.default_rng(1)
    u, w = rng.random(1000), rng.random(1000)
    got = rs.row(np.r_[u, w], 3)
    ref = knn._k_nearest_merge_np(u[None], w[None], np.array([3]), 50, 3)
    assert got is not None and np.array_equal(got[0][:, :1000], ref[0][0]) and np.array_equal(got[0][:, 1000:], ref[1][0])


@pytest.mark.parametrize("B", [3, 12])
def test_agents_knn_equals_its_merge_on_mixed_batches(B: int) -> None:
    """agents.knn._k_nearest_np (rank space where it accepts, row by row below 8 rows,
    batched above) gives the merge's actions, order and validity, ties included."""
    rng = np.random.default_rng(B)
    for trial in range(40):
        n, k = int(rng.integers(1, 11)), int(rng.integers(2, 51))
        u, w = rng.random((B, n)) * 3 - 1, rng.random((B, n))
        tie = rng.random(B) < 0.3                                   # some rows saturated
        u[tie], w[tie] = np.round(u[tie] * 4) / 4, np.round(w[tie])
        if trial % 5 == 0:
            w = w * 1.6 - 0.3                                       # ON scores outside [0, 1]: merge rows
        bits = rng.integers(1, 4, B)
        got, ref = knn._k_nearest_np(u, w, bits, k, 3), knn._k_nearest_merge_np(u, w, bits, k, 3)
        for g, r in zip((got[0], got[1], got[3]), (ref[0], ref[1], ref[3])):
            assert g.dtype == r.dtype and np.array_equal(g, r), (trial, n, k)
        np.testing.assert_allclose(got[2][got[3]], ref[2][ref[3]], rtol=0, atol=1e-12)
    rs = RankSpace(10, 50, 3)
    u, w, bits = rng.random((16, 10)), rng.random((16, 10)), rng.integers(1, 4, 16)
    acts, dist, ok = rs.batch(u, w, bits)
    assert ok.sum() >= 14
    for i in np.nonzero(ok)[0]:                                     # batch == row where both accept
        row = rs.row(np.r_[u[i], w[i]], int(bits[i]))
        assert row is not None and np.array_equal(acts[i], row[0])
