"""agents.runtime.lowq: MAQ-WP's fast Q_low evaluation picks the candidate of the
straightforward evaluation (KNNRanker.best_straight, the torch actor's arithmetic) on many
random decisions, near-ties in Q_low included (it defers those), and stays within its
error bound."""

from __future__ import annotations

import numpy as np
import pytest

from agents.runtime.graph import Net
from agents.runtime.knn import KNNRanker
from agents.runtime.lowq import relu_stack

N, K, MAX_BITS, CW, H = 10, 50, 3, 6, 64


def q_net(rng: np.random.Generator, x_scale: float = 1.0, act: str = "relu", depth: int = 3) -> Net:
    """A Q_low net (ctx + 3N -> ... -> 1); x_scale shrinks the candidate part of layer 1
    (x_scale ~ 1e-6: the candidates' Q values differ only in their last float32 bits)."""
    dims = [CW + 3 * N] + [H] * (depth - 1) + [1]
    arrays, layers = {}, []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        W = (rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32)
        if i == 0:
            W[CW:] *= np.float32(x_scale)
        arrays[f"l{i}.W"], arrays[f"l{i}.b"] = W, (0.3 * rng.normal(size=b)).astype(np.float32)
        layers.append({"linear": f"l{i}"})
        if i < depth - 1:
            layers.append({"act": act})
    return Net("low_q", layers, arrays)


def candidates(ranker: KNNRanker, rng: np.random.Generator, saturated: bool) -> tuple[np.ndarray, int, np.ndarray | None]:
    """k nearest actions of a random proto-action (saturated: exact distance ties, the merge)."""
    e = rng.random(2 * N)
    if saturated:
        e = np.round(e * 4) / 4
    b = int(rng.integers(1, MAX_BITS + 1))
    got = ranker.search.rank.row(e, b, True, False)
    if got is not None:
        return got[0], b, None
    acts, _, valid = ranker.search.exact(e[:N], e[N:], b)
    return acts, b, valid


@pytest.mark.parametrize("x_scale,depth", [(1.0, 3), (1.0, 2), (1.0, 4), (1e-6, 3), (0.0, 3)])
def test_fast_q_picks_the_straightforward_candidate(x_scale: float, depth: int) -> None:
    rng = np.random.default_rng(int(1e6 * x_scale) + depth)
    ranker = KNNRanker(N, K, MAX_BITS, q_net(rng, x_scale, depth=depth), unit=True)
    fq = ranker.fast_q
    assert fq is not None
    decided = 0
    for trial in range(400):
        acts, b, valid = candidates(ranker, rng, saturated=trial % 4 == 0)
        ctx = (rng.normal(size=(1, CW)) * rng.choice([0.1, 1.0, 30.0])).astype(np.float32)
        fast = fq.best(acts, fq.table(b, ranker._trig(b)), ctx, valid)
        ref = ranker.best_straight(acts, b, ctx[0], valid)
        if fast is not None:
            decided += 1
            assert fast == ref, (trial, fast, ref)
        assert ranker.best(acts, b, ctx, valid) == ref
    if x_scale == 1.0:
        assert decided >= 50            # clear leads: the fast path decides (the bound is worst-case, so not all)
    else:
        assert decided <= 10            # ties and near-ties (last-bit differences): deferred


def test_fast_values_are_within_the_error_bound() -> None:
    rng = np.random.default_rng(5)
    ranker = KNNRanker(N, K, MAX_BITS, q_net(rng), unit=True)
    fq = ranker.fast_q
    buf = np.empty((1, K, CW + 3 * N), dtype=np.float32)
    for _ in range(200):
        acts, b, _ = candidates(ranker, rng, saturated=False)
        ctx = (rng.normal(size=(1, CW)) * 10).astype(np.float32)
        q = fq.values(acts, fq.table(b, ranker._trig(b)), ctx)
        trig = ranker._trig(b)[acts[:, :N]]                          # the straightforward encoding
        buf[0, :, :CW], buf[0, :, CW:CW + N], buf[0, :, CW + N:CW + 2 * N] = ctx, trig[..., 0], trig[..., 1]
        buf[0, :, CW + 2 * N:] = acts[:, N:]
        ref = ranker.q_net(buf)[0, :, 0]
        err = fq.err_const + float(np.abs(ctx[0]) @ fq.err_ctx)
        diff = float(np.abs(q.astype(np.float64) - ref).max())
        assert diff <= 2 * err, (diff, err)


def test_other_nets_keep_the_straightforward_evaluation() -> None:
    rng = np.random.default_rng(0)
    assert relu_stack(q_net(rng, act="tanh").spec) is None
    assert KNNRanker(N, K, MAX_BITS, q_net(rng, act="tanh"), unit=True).fast_q is None
    two_out = Net("q", [{"linear": "a"}], {"a.W": np.ones((CW + 3 * N, 2), np.float32), "a.b": np.zeros(2, np.float32)})
    assert relu_stack(two_out.spec) is None
