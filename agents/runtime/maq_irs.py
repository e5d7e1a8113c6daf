"""One MAQ-WP IRS decision (B = 1) without the graph interpreter's glue.

``agents.runtime.describe._maq_irs`` writes the MAQ-WP actor as 11 generic steps (divide,
resolution feature, concatenations, the high-level Q net, argmax, the policy net, sigmoid,
k-nearest ranking). For one observation, what is not the networks or the ranking — the
concatenations, the feature ops, the register list — costs ~10 us of ~95. ``fuse``
recognizes exactly that step list and returns a runner that writes the network inputs into
preallocated rows instead (the same float32 values: x = obs / scale, b / max_bits) and calls
the same sigmoid and ranker code, and the two one-row nets as ``agents.runtime.maq_pg``'s
fused MLPs (bit for bit graph.Net), so every output is bit for bit the generic program's. Any other graph (another describer version, MAQ-PG, k = 1) gets None and keeps
the generic interpreter.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from agents.runtime.knn import KNNRanker
from agents.runtime.maq_pg import MAQ_IRS_HEAD, FusedMLP

F32 = np.float32

# (op, inputs, outputs) of describe._maq_irs for the WP mapping, in order
TEMPLATE = MAQ_IRS_HEAD + [
    ("sigmoid", ["z"], ["e"]),
    ("knn_rank", ["e", "bits", "ctx"], ["idx", "on"]),
    ("state_write", ["bits"], [None]),
]


def _as_list(v: Any) -> list:
    return v if isinstance(v, list) else [v]


def fuse(graph: Mapping[str, Any], arrays: Mapping[str, np.ndarray], nets: Mapping[str, Callable],
         sigmoid: Callable[[np.ndarray], np.ndarray]) -> Callable | None:
    """A runner ``(obs (1, d) float32, state) -> outputs`` for the MAQ-WP template, else None."""
    steps = list(graph.get("steps", []))
    if len(steps) != len(TEMPLATE) or graph.get("outputs") != {"bits": "bits", "phase_idx": "idx", "on": "on"}:
        return None
    for st, (op, ins, outs) in zip(steps, TEMPLATE):
        if st.get("op") != op or _as_list(st.get("in")) != ins or _as_list(st.get("out")) != outs:
            return None
    if steps[-1].get("state") != "prev_bits" or steps[1]["max_bits"] != steps[6]["max_bits"]:
        return None
    knn = steps[10]
    if int(knn["k"]) < 2:
        return None
    # the two one-row nets over preallocated rows where they are plain linear / relu / tanh stacks
    # (agents.runtime.maq_pg.FusedMLP: the same bits as graph.Net); Q_low stays the ranker's
    high_q, policy = (FusedMLP.of(nets[steps[i]["net"]]) or nets[steps[i]["net"]] for i in (3, 8))
    return _Runner(arrays, high_q, policy, nets[knn["net"]], float(steps[1]["max_bits"]),
                   KNNRanker(int(knn["n"]), int(knn["k"]), int(knn["max_bits"]), nets[knn["net"]], unit=True), sigmoid)


class _Runner:
    """The template's decision for one observation (see the module docstring). Not thread-safe."""

    def __init__(self, arrays: Mapping[str, np.ndarray], high_q: Callable, policy: Callable, low_q: Callable,
                 max_bits: float, ranker: KNNRanker, sigmoid: Callable) -> None:
        self.scale = arrays["obs_scale"]
        self.bit_values = arrays["bit_values"]
        one_hot = np.asarray(arrays["one_hot"], dtype=F32).reshape(-1)
        d = self.d = self.scale.shape[-1]
        self.mb = F32(max_bits)
        self.hi_in = np.zeros((1, d + 1 + one_hot.size), dtype=F32)     # [x, prev b / max, one-hot]
        self.hi_in[0, d + 1:] = one_hot
        self.ctx = np.zeros((1, d + 1), dtype=F32)                       # [x, b / max]
        self.high_q, self.policy, self.ranker, self.sigmoid = high_q, policy, ranker, sigmoid

    def __call__(self, obs: np.ndarray, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        d, hi_in, ctx = self.d, self.hi_in, self.ctx
        np.divide(obs, self.scale, out=hi_in[:, :d])
        hi_in[0, d] = F32(state["prev_bits"][0]) / self.mb                 # as bits_feature: float32 b / max
        b_i = self.high_q(hi_in).argmax(-1)
        bits = self.bit_values[b_i]
        ctx[:, :d] = hi_in[:, :d]
        ctx[0, d] = F32(bits[0]) / self.mb
        e = self.sigmoid(self.policy(ctx))
        idx, on = self.ranker(e, bits, ctx)
        state["prev_bits"] = bits
        return {"bits": bits, "phase_idx": idx, "on": on}
