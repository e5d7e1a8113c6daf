"""Gymnasium spaces with a dependency between fields (P1's hybrid IRS action).

A P1 IRS action is (b, phase indices on the b-bit grid, ON/OFF). The valid range of the
phase indices depends on b, which a plain ``Dict`` cannot express: its ``sample()`` would
produce indices >= 2^b for small b. ``IRSActionSpace`` keeps the ``Dict`` layout (so
every tool that walks spaces still understands it) and fixes ``sample`` and ``contains``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np


class IRSActionSpace(gym.spaces.Dict):
    """{"bits": Discrete over the contiguous resolution set, "phase_idx": MultiDiscrete(2^b_max)
    restricted to [0, 2^bits), "on": MultiBinary(N)}."""

    def __init__(self, n_elements: int, bit_choices: Sequence[int], seed: int | None = None) -> None:
        bits = sorted(int(b) for b in bit_choices)
        self.bit_choices = tuple(bits)
        self.n_elements = int(n_elements)
        super().__init__(
            {
                "bits": gym.spaces.Discrete(len(bits), start=bits[0]),
                "phase_idx": gym.spaces.MultiDiscrete(np.full(n_elements, 1 << bits[-1], dtype=np.int64)),
                "on": gym.spaces.MultiBinary(n_elements),
            },
            seed=seed,
        )

    def sample(self, mask: Any = None, probability: Any = None) -> dict[str, Any]:
        s = super().sample(mask=mask, probability=probability) if (mask is not None or probability is not None) else super().sample()
        # 2^b divides 2^b_max, so the remainder stays uniform on [0, 2^b).
        s["phase_idx"] = (s["phase_idx"] % (1 << int(s["bits"]))).astype(np.int64)
        return s

    def contains(self, x: Any) -> bool:
        if not super().contains(x):
            return False
        return bool(np.all(np.asarray(x["phase_idx"]) < (1 << int(x["bits"]))))

    def __repr__(self) -> str:
        return f"IRSActionSpace(N={self.n_elements}, bits={list(self.bit_choices)})"
