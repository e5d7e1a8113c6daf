"""Independent learners (IL), P1's lowest baseline: every agent learns alone.

Each agent trains its own actor and its own critic Q_i(o_i, a_i) on its local observation
and its own action, from the shared reward, treating the other agents as part of the
environment (P1 section IV: "each agent only cares about itself and learns independently").
It is MADDPG (``agents.maddpg``) with the one choice that differs, ``critic = "local"``;
relaxation, quantization, exploration and targets are the same.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.maddpg import MADDPG, MADDPGConfig


@dataclass(frozen=True)
class ILConfig(MADDPGConfig):
    critic: str = "local"               # the agent's own observation and action only


class IndependentLearners(MADDPG):
    name = "il"
    config_cls = ILConfig
