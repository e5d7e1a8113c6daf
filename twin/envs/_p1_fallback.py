"""TEMPORARY stand-in for H1's twin.scenarios (preset p1) and twin.scene (sample_p1/evolve_p1).

TODO(H1): delete once twin/scenarios.py and twin/scene.py land; P1Env then imports those.
Minimal P1 geometry and channels so the environment mechanics can be built and tested.
"""

from __future__ import annotations

import math

import torch


def default_p1():
    from twin.scenarios import get_scenario
    return get_scenario("p1")


def _cn(shape, gen, device, dtype):
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    z = torch.randn(*shape, 2, generator=gen, device=device, dtype=real) * math.sqrt(0.5)
    return torch.view_as_complex(z).to(dtype)


def sample_p1(cfg, B, gen, device, dtype):
    L, K, N, M = cfg.n_irs, cfg.n_users, cfg.n_elements, cfg.n_bs_antennas
    a = torch.rand(B, L, generator=gen, device=device) * 2 * math.pi
    irs_pos = 100.0 * torch.stack([a.cos(), a.sin()], -1)
    r = 100.0 + 20.0 * torch.rand(B, K, generator=gen, device=device)
    u = torch.rand(B, K, generator=gen, device=device) * 2 * math.pi
    user_pos = torch.stack([r * u.cos(), r * u.sin()], -1)
    d_br = irs_pos.norm(dim=-1)
    d_ru = (irs_pos.unsqueeze(-2) - user_pos.unsqueeze(-3)).norm(dim=-1)
    d_bu = user_pos.norm(dim=-1)
    amp = lambda d, k: (10 ** ((-30 - 10 * k * torch.log10(d)) / 20)).to(dtype)
    return {
        "H_BR": _cn((B, L, N, M), gen, device, dtype) * amp(d_br, 2.0)[..., None, None],
        "h_RU": _cn((B, L, K, N), gen, device, dtype) * amp(d_ru, 2.8)[..., None],
        "h_BU": _cn((B, K, M), gen, device, dtype) * amp(d_bu, 3.5)[..., None],
        "irs_pos": irs_pos, "user_pos": user_pos,
        "r_req": torch.full((B, K), cfg.rate_req_bps_hz, device=device),
        "_gain": (amp(d_br, 2.0), amp(d_ru, 2.8), amp(d_bu, 3.5)),
    }


def evolve_p1(cfg, scene, gen):
    rho = cfg.fading_correlation
    s = math.sqrt(1 - rho * rho)
    out = dict(scene)
    g_br, g_ru, g_bu = scene["_gain"]
    H = scene["H_BR"]
    out["H_BR"] = rho * H + s * _cn(H.shape, gen, H.device, H.dtype) * g_br[..., None, None]
    h = scene["h_RU"]
    out["h_RU"] = rho * h + s * _cn(h.shape, gen, h.device, h.dtype) * g_ru[..., None]
    h = scene["h_BU"]
    out["h_BU"] = rho * h + s * _cn(h.shape, gen, h.device, h.dtype) * g_bu[..., None]
    return out
