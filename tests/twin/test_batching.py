"""One environment alone equals the same environment inside a batch of 1024."""

import pytest
import torch

from twin import signal
from twin.scenarios import get_scenario
from twin.scene import evolve_p1, sample_p1


def metrics(H_BR, h_RU, h_BU, phi, V, noise_w):
    G = signal.effective_channel(H_BR, h_RU, h_BU, phi)
    gamma = signal.sinr(G, V, noise_w)
    return torch.cat([G.flatten(1).abs(), gamma, signal.rate_bps_hz(gamma), signal.tx_power_w(V)], dim=-1)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_single_env_equals_env_inside_batch_of_1024(dtype):
    scn = get_scenario("p1")
    g = torch.Generator().manual_seed(0)
    scene = evolve_p1(sample_p1(scn, 1024, g, dtype=dtype), scn, g)
    B, L, N, M = scene.H_BR.shape
    K = scene.h_BU.shape[1]
    rdt = scene.irs_pos.dtype
    phi = torch.polar((torch.rand(B, L, N, generator=g, dtype=rdt) > 0.3).to(rdt),
                      torch.rand(B, L, N, generator=g, dtype=rdt) * 6.283)
    V = torch.randn(B, M, K, generator=g, dtype=dtype) * 0.03
    batched = metrics(scene.H_BR, scene.h_RU, scene.h_BU, phi, V, scn.noise_w)
    for i in (0, 1, 511, 1023):
        one = scene.index(i)
        alone = metrics(one.H_BR, one.h_RU, one.h_BU, phi[i:i + 1], V[i:i + 1], scn.noise_w)
        assert torch.equal(alone, batched[i:i + 1]), f"environment {i} differs alone vs in the batch"
