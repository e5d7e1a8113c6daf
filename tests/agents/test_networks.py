import math

import numpy as np
import pytest
import torch

from agents.networks import (MLP, BeamformerActor, GaussianHead, HybridIRSActor, orthogonal_init, phase_from_index,
                             quantize_phase, scale_to_power)
from twin.envs.spaces import IRSActionSpace
from twin.errors import ConfigError


def test_quantize_phase_picks_the_nearest_grid_point_per_environment():
    g = torch.Generator().manual_seed(0)
    theta = (torch.rand(64, 12, generator=g, dtype=torch.float64) - 0.5) * 8 * math.pi  # any real angle
    bits = torch.randint(1, 5, (64,), generator=g)
    idx = quantize_phase(theta, bits)
    levels = (2 ** bits).unsqueeze(-1)
    assert bool(((idx >= 0) & (idx < levels)).all())
    err = torch.remainder(theta - phase_from_index(idx, bits).double() + math.pi, 2 * math.pi) - math.pi
    assert bool((err.abs() <= math.pi / levels + 1e-6).all())  # within half a grid step
    assert torch.equal(quantize_phase(theta, 3), quantize_phase(theta, torch.full((64,), 3)))


def test_scale_to_power_full_and_ball():
    g = torch.Generator().manual_seed(1)
    V = torch.randn(32, 2, 4, 3, generator=g) * torch.logspace(-3, 1, 32).view(-1, 1, 1, 1)
    power = lambda X: X.pow(2).sum(dim=(1, 2, 3))  # sum_k ||v_k||^2 with real and imaginary parts
    assert torch.allclose(power(scale_to_power(V, 0.5, "full")), torch.full((32,), 0.5), rtol=1e-5)
    ball = scale_to_power(V, 0.5, "ball")
    inside = power(V) <= 0.5
    assert inside.any() and (~inside).any()
    assert torch.equal(ball[inside], V[inside])
    assert torch.allclose(power(ball[~inside]), torch.full((int((~inside).sum()),), 0.5), rtol=1e-5)
    with pytest.raises(ConfigError, match="power_mode"):
        scale_to_power(V, 0.5, "max")


def test_irs_actor_actions_lie_in_the_p1_action_space():
    torch.manual_seed(0)
    actor = HybridIRSActor(obs_dim=5, n_elements=8, bit_choices=(1, 2, 3), hidden=(16,))
    with torch.no_grad():
        for p in actor.parameters():
            p.add_(torch.randn(p.shape))
        out = actor(torch.randn(200, 5) * 3)
    space = IRSActionSpace(8, (1, 2, 3))
    assert set(torch.unique(out["bits"]).tolist()) <= {1, 2, 3} and len(torch.unique(out["bits"])) > 1
    for i in range(200):
        assert space.contains({"bits": int(out["bits"][i]), "phase_idx": out["phase_idx"][i].numpy().astype(np.int64),
                               "on": out["on"][i].numpy().astype(np.int8)})
    # a fixed resolution from a high-level agent overrides the network's choice
    bits = torch.full((200,), 1)
    fixed = actor.discretize(*actor.net(torch.randn(200, 5)), bits=bits)
    assert torch.equal(fixed["bits"], bits) and int(fixed["phase_idx"].max()) <= 1


def test_beamformer_actor_meets_the_power_budget_and_rebuilds_from_kwargs():
    actor = BeamformerActor(obs_dim=4, n_antennas=4, n_users=3, p_max_w=2e-3)
    V = actor(torch.randn(10, 4))["V"]
    assert V.shape == (10, 2, 4, 3)
    assert torch.allclose(V.pow(2).sum(dim=(1, 2, 3)), torch.full((10,), 2e-3), rtol=1e-5)
    twin = BeamformerActor(**actor.arch_kwargs())
    twin.load_state_dict(actor.state_dict())
    x = torch.randn(3, 4)
    assert torch.equal(twin(x)["V"], actor(x)["V"])


def test_orthogonal_init_gaussian_head_and_bad_sizes():
    layer = orthogonal_init(torch.nn.Linear(16, 16), gain=2.0)
    assert torch.allclose(layer.weight @ layer.weight.T, 4.0 * torch.eye(16), atol=1e-5)
    assert torch.count_nonzero(layer.bias) == 0
    head = GaussianHead(3, 2, hidden=(8,), init_log_std=-1.0)
    dist = head(torch.zeros(5, 3))
    assert dist.mean.shape == (5, 2) and torch.allclose(dist.stddev, torch.full((5, 2), math.exp(-1.0)))
    with pytest.raises(ConfigError, match="activation"):
        MLP(3, 2, activation="swish")
    with pytest.raises(ConfigError, match="positive"):
        MLP(0, 2)
