"""Monotonic mixing networks (QMIX-style hypernetworks) for MAQ's two levels (P1 Fig. 2).

A mixer turns the individual values Q_1..Q_n of n agents into Q_tot, conditioned on side
information c:

    Q_tot = w2(c)^T elu(W1(c)^T q + b1(c)) + b2(c),   W1 = |hyper_1(c)|, w2 = |hyper_2(c)|

The hypernetworks' weights pass through abs(), and elu is increasing, so dQ_tot/dQ_i >= 0
for every agent and every c: the greedy per-agent choice maximizes Q_tot (what lets each
IRS pick its own b_l with argmax Q_high_l at execution).

MAQ uses two instances (P1 section III-B):
- high level: n = L IRS values, c = [global state s, joint low-level action x] (eq. 24);
- low level: n = L + 1 (IRSs + BS), c = [global state s, resolution vector b] (eq. 25).
Widths are open in the paper (only the weight counts are given); defaults are named in
the MAQ config.
"""

from __future__ import annotations

import torch
from torch import nn

from agents.networks import MLP


class MonotonicMixer(nn.Module):
    """Q_tot(q (B, n), c (B, cond_dim)) -> (B,), non-decreasing in every q_i."""

    def __init__(self, n_agents: int, cond_dim: int, embed_dim: int = 32, hyper_hidden: int = 64) -> None:
        super().__init__()
        self.n_agents, self.embed_dim = n_agents, embed_dim
        self.hyper_w1 = MLP(cond_dim, n_agents * embed_dim, (hyper_hidden,), out_gain=1.0)
        self.hyper_b1 = nn.Linear(cond_dim, embed_dim)
        self.hyper_w2 = MLP(cond_dim, embed_dim, (hyper_hidden,), out_gain=1.0)
        self.hyper_b2 = MLP(cond_dim, 1, (embed_dim,), out_gain=1.0)  # state-dependent bias V(c)

    def weights(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The non-negative mixing weights W1 (B, n, E) and w2 (B, E, 1) for condition c."""
        w1 = self.hyper_w1(cond).abs().view(-1, self.n_agents, self.embed_dim)
        w2 = self.hyper_w2(cond).abs().view(-1, self.embed_dim, 1)
        return w1, w2

    def forward(self, q: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        w1, w2 = self.weights(cond)
        hidden = nn.functional.elu(torch.bmm(q.unsqueeze(1), w1) + self.hyper_b1(cond).unsqueeze(1))
        return (torch.bmm(hidden, w2).view(-1, 1) + self.hyper_b2(cond)).squeeze(-1)
