"""The numpy execution paths: agents.knn's numpy search against its torch reference, and
MAQIRSActor.forward (numpy) against MAQIRSActor.decide (torch), on perturbed weights."""

from __future__ import annotations

import pytest
import torch

from agents import knn
from agents.maq import MAQPG, MAQWP, MAQPGConfig, MAQWPConfig
from twin.envs.p1 import P1Env
from twin.scenarios import get_scenario


@pytest.mark.parametrize("seed", range(4))
def test_numpy_search_equals_torch_reference(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(25):
        B, N = int(torch.randint(1, 5, (1,), generator=g)), int(torch.randint(1, 12, (1,), generator=g))
        k = int(torch.randint(1, 51, (1,), generator=g))
        u = torch.rand(B, N, generator=g, dtype=torch.float64) * 3 - 1
        w = torch.rand(B, N, generator=g, dtype=torch.float64) * 1.6 - 0.3
        bits = torch.randint(1, 4, (B,), generator=g)
        a, t = knn.k_nearest(u, w, bits, k, max_bits=3), knn._k_nearest_torch(u, w, bits, k, max_bits=3)
        assert torch.equal(a.valid, t.valid)
        assert torch.allclose(a.dist2[a.valid], t.dist2[t.valid], atol=1e-12)
        # continuous random inputs have no ties: the same actions in the same order
        assert torch.equal(a.phase_idx, t.phase_idx) and torch.equal(a.on, t.on)
    idx, on = knn.nearest_np(u.numpy(), w.numpy(), bits.numpy())
    ti, to = knn.nearest(u, w, bits)
    assert (idx == ti.numpy()).all() and (on == to.numpy()).all()


@pytest.mark.parametrize("algo_cls,cfg", [(MAQWP, MAQWPConfig(k=20)), (MAQWP, MAQWPConfig(k=50)), (MAQWP, MAQWPConfig(k=1)),
                                          (MAQPG, MAQPGConfig())])
def test_numpy_forward_equals_torch_decide(algo_cls, cfg) -> None:
    env = P1Env(32, get_scenario("p1", observation="csi"), seed=3)
    obs = env.reset(seed=3)
    algo = algo_cls(env, cfg, seed=0)
    with torch.no_grad():
        for p in algo.online.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    actor = algo.actors()["irs1"]
    assert actor._np_nets() is not None                      # the fast path is taken
    for t in range(3):
        prev = torch.randint(1, 4, (32,), generator=torch.Generator().manual_seed(t))
        actor.prev_bits = prev.clone()
        fast, ref = actor(obs["irs1"]), actor.decide(obs["irs1"], prev)
        for key in ("bits", "phase_idx", "on"):
            assert fast[key].dtype == ref[key].dtype and torch.equal(fast[key], ref[key]), key
        obs = env.step(env.sample_actions(torch.Generator().manual_seed(t))).obs
    # an optimizer-style in-place update refreshes the numpy copies
    with torch.no_grad():
        for p in actor.policy.parameters():
            p.mul_(-1.0)
    prev = actor.prev_bits.clone()
    fast, ref = actor(obs["irs1"]), actor.decide(obs["irs1"], prev)
    assert all(torch.equal(fast[k], ref[k]) for k in ("bits", "phase_idx", "on"))
