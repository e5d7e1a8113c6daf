"""MAQ-PG's P1 roles (B = 1) without the graph interpreter's glue: the IRS actor and the BS actor.

Every daemon decides once per slot on the control loop's critical path. The generic program
pays one Python call per step plus fresh temporaries for every layer and feature; here the
exact step lists that ``agents.runtime.describe`` writes for

- the MAQ-PG IRS actor (``_maq_irs`` with the "pg" mapping: obs / scale, resolution feature,
  [x, b, one-hot] -> Q_high -> argmax -> bits, [x, b] -> policy -> (u, w + 1/2) -> per-element
  rounding in float64 and w > 1/2), and
- the scaled beamformer BS actor (``_beamformer(scaled=True)``: [obs / scale, 1] -> MLP ->
  (2, M, K) -> P1 eq. 10a power scaling)

run as straight code over preallocated rows: the network inputs are written in place, each
linear layer is ``np.dot(x, W, out=row)`` (the generic ``x @ W``'s BLAS call, verified bit for
bit per layer at load, else ``np.matmul``) then the bias added as a (1, m) row (the same
float32 additions as the generic ``y += b``), activations in place as the generic ones. Other
rewrites are exact by IEEE arithmetic, each noted where it is made (float32 -> float64
widening, multiplication by 2^b, ``np.rint`` for ``np.round``, ``z > 2^-25`` for
``float32(z + 1/2) > 1/2``, float32 scalar ops for (1,) array ops); the reductions (argmax,
the power sum) run on arrays of the same shape and layout. So every output is bit for bit the
generic program's (tests/agents/test_runtime_fused_pg.py). ``decide`` returns the B = 1
outputs already squeezed, which saves ``RuntimeBundle.decide`` the reshape and re-slicing.
Warm, this halves a decision or better (bench/daemon_slot.py: IRS 36 -> 14 us, BS 22 -> 8.5 us).

``fuse`` recognizes exactly those step lists (ops, registers, parameters, dtypes and widths);
any other graph gets None and keeps the generic interpreter. Runners are not thread-safe
(one per role; a daemon decides from one thread).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

F32 = np.float32
ZERO = F32(0.0)

# (op, inputs, outputs) of describe._maq_irs up to the policy's output z, in order: the same for
# both mappings (resolution from Q_high, then the policy over the context)
MAQ_IRS_HEAD = [
    ("div", ["obs", "@obs_scale"], ["x"]),
    ("bits_feature", ["state.prev_bits"], ["pbf"]),
    ("concat", ["x", "pbf", "@one_hot"], ["hi_in"]),
    ("mlp", ["hi_in"], ["q_high"]),
    ("argmax", ["q_high"], ["b_i"]),
    ("take", ["@bit_values", "b_i"], ["bits"]),
    ("bits_feature", ["bits"], ["bf"]),
    ("concat", ["x", "bf"], ["ctx"]),
    ("mlp", ["ctx"], ["z"]),
]

# ... and the rest for the PG mapping
IRS_TEMPLATE = MAQ_IRS_HEAD + [
    ("slice", ["z"], ["u"]),
    ("slice", ["z"], ["w0"]),
    ("add", ["w0"], ["w"]),
    ("nearest", ["u", "w", "bits"], ["idx", "on"]),
    ("state_write", ["bits"], [None]),
]

# (op, inputs, outputs) of describe._beamformer(scaled=True), in order
BS_TEMPLATE = [
    ("div", ["obs", "@obs_scale"], ["xs"]),
    ("concat", ["xs", "@one"], ["x"]),
    ("mlp", ["x"], ["raw"]),
    ("reshape", ["raw"], ["V0"]),
    ("scale_to_power", ["V0"], ["V"]),
]

_INPLACE_ACTS = {"relu": lambda y: np.maximum(y, ZERO, out=y),     # graph._relu / graph._tanh, in place
                 "tanh": lambda y: np.tanh(y, out=y)}


def _as_list(v: Any) -> list:
    return v if isinstance(v, list) else [v]


def _matches(steps: list, template: list) -> bool:
    if len(steps) != len(template):
        return False
    return all(st.get("op") == op and _as_list(st.get("in")) == ins and _as_list(st.get("out")) == outs
               for st, (op, ins, outs) in zip(steps, template))


def _f32_vector(arrays: Mapping[str, np.ndarray], name: str) -> np.ndarray | None:
    a = arrays.get(name)
    if a is None or a.dtype != F32 or a.ndim != 1:
        return None                    # another dtype would change the generic program's promotions
    return a


def _same_product(W: np.ndarray, rng: np.random.Generator) -> bool:
    """Whether ``np.dot(x, W, out=row)`` gives ``x @ W`` bit for bit on probe rows.

    For a (1, k) row times a C-contiguous (k, m) matrix both reach the same BLAS sgemv (numpy's
    matmul as "vector @ matrix", dot as "row @ matrix"); dot skips the ufunc machinery (~0.3 us
    a layer). Checked once per layer at load time on random and wide-range rows, because the
    claim is about numpy / BLAS builds: any mismatch keeps ``np.matmul`` (the generic's ufunc)."""
    k, m = W.shape
    out = np.empty((1, m), dtype=F32)
    for scale in (1.0, 1e-3, 1e3, 1e30):
        x = (rng.standard_normal((1, k)) * scale).astype(F32)
        with np.errstate(all="ignore"):
            np.dot(x, W, out=out)
            ref = x @ W
        if not np.array_equal(out.view(np.uint32), ref.view(np.uint32)):
            return False
    return True


class FusedMLP:
    """A graph ``Net`` of linear layers, each optionally followed by relu or tanh, over
    preallocated (1, width) rows; ``__call__`` returns the last row (overwritten next call)."""

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray, str | None]]) -> None:
        rng = np.random.default_rng(0)
        self.layers = []
        for W, b, act in layers:
            product = np.dot if _same_product(W, rng) else np.matmul
            y = np.zeros((1, W.shape[1]), dtype=F32)
            # relu as max(y, 0) against a row of +0.0 (contiguous operands: ~0.15 us less than
            # the generic's scalar 0) is the same bits unless y can be -0.0, which y = x W + b
            # (round to nearest) is only where b is -0.0: then keep the generic's scalar form
            zero = np.zeros_like(y) if act == "relu" and not np.any(np.signbit(b) & (b == 0)) else ZERO
            fn = None if act is None else (lambda y, z=zero: np.maximum(y, z, out=y)) if act == "relu" else _INPLACE_ACTS[act]
            # the bias as a (1, m) row: the same float32 additions as the generic y += b without
            # the broadcast (~0.4 us a layer)
            self.layers.append((product, W, b.reshape(1, -1), y, fn))
        self.in_dim, self.out_dim = int(layers[0][0].shape[0]), int(layers[-1][0].shape[1])
        self.out = self.layers[-1][3]

    @classmethod
    def of(cls, net: Any) -> "FusedMLP | None":
        layers: list[tuple[np.ndarray, np.ndarray, str | None]] = []
        for spec in getattr(net, "spec", ()):
            if spec[0] == "linear":
                W, b = spec[1], spec[2]
                if W.dtype != F32 or b.dtype != F32:
                    return None
                layers.append((np.ascontiguousarray(W), np.ascontiguousarray(b), None))
            elif spec[0] == "act" and spec[1] in _INPLACE_ACTS and layers and layers[-1][2] is None:
                layers[-1] = (*layers[-1][:2], spec[1])
            else:
                return None             # layer norms, other activations, two in a row: generic
        return cls(layers) if layers else None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        add = np.add
        for product, W, b, y, act in self.layers:
            product(x, W, out=y)
            add(y, b, out=y)
            if act is not None:
                act(y)
            x = y
        return x


def fuse(graph: Mapping[str, Any], arrays: Mapping[str, np.ndarray], nets: Mapping[str, Any]) -> Any:
    """A runner for the MAQ-PG IRS or the scaled beamformer BS step list, else None.

    A runner has ``__call__(obs (1, d) float32, state) -> outputs`` (batched, as
    ``Program.run_steps``) and ``decide(obs (d,) float32, state) -> outputs`` (squeezed)."""
    steps = list(graph.get("steps", []))
    try:
        if _matches(steps, IRS_TEMPLATE):
            return _irs(graph, steps, arrays, nets)
        if _matches(steps, BS_TEMPLATE):
            return _bs(graph, steps, arrays, nets)
    except (KeyError, TypeError, ValueError):
        return None
    return None


def _irs(graph: Mapping[str, Any], steps: list, arrays: Mapping[str, np.ndarray], nets: Mapping[str, Any]) -> Any:
    if graph.get("outputs") != {"bits": "bits", "phase_idx": "idx", "on": "on"} or steps[-1].get("state") != "prev_bits":
        return None
    if set(graph.get("state", {})) != {"prev_bits"}:
        return None
    mb = steps[1].get("max_bits")
    if not isinstance(mb, (int, float)) or steps[6].get("max_bits") != mb:
        return None
    high_q, policy = FusedMLP.of(nets.get(steps[3].get("net"))), FusedMLP.of(nets.get(steps[8].get("net")))
    scale, one_hot = _f32_vector(arrays, "obs_scale"), _f32_vector(arrays, "one_hot")
    bit_values = arrays.get("bit_values")
    if high_q is None or policy is None or scale is None or one_hot is None or bit_values is None:
        return None
    if bit_values.dtype != np.int64 or bit_values.ndim != 1 or bit_values.size == 0:
        return None
    d = scale.shape[0]
    if high_q.in_dim != d + 1 + one_hot.size or policy.in_dim != d + 1 or high_q.out_dim != bit_values.size:
        return None
    su, sw, add = steps[9], steps[10], steps[11]
    if any(st.get("step") is not None for st in (su, sw)) or su.get("start") != 0:
        return None
    n = su.get("stop")
    if not isinstance(n, int) or n < 1 or sw.get("start") != n or sw.get("stop") != 2 * n or policy.out_dim != 2 * n:
        return None
    if add.get("value") != 0.5 or not isinstance(add.get("value"), float):   # PG's w = z_w + 1/2 (float32)
        return None
    return _PGIRS(scale, one_hot, bit_values, float(mb), high_q, policy, n)


# fl(z + 1/2) > 1/2 in float32 (round to nearest even) exactly when z > 2^-25: z = 2^-25 is
# the tie between 1/2 and its successor and goes to 1/2 (even); NaN is neither
ON_ABOVE = F32(2.0 ** -25)


class _PGIRS:
    """The MAQ-PG IRS decision for one observation (see the module docstring)."""

    def __init__(self, scale: np.ndarray, one_hot: np.ndarray, bit_values: np.ndarray, max_bits: float,
                 high_q: FusedMLP, policy: FusedMLP, n: int) -> None:
        d = self.d = scale.shape[0]
        self.scale, self.bit_values, self.n = scale, bit_values, n
        self.mb = F32(max_bits)
        # one row for both nets' inputs: [x, prev b / max, one-hot] for Q_high, then its first
        # d + 1 entries, with b / max written over prev b / max, for the policy ([x, b / max])
        self.hi_in = np.zeros((1, d + 1 + one_hot.size), dtype=F32)
        self.hi_in[0, d + 1:] = one_hot
        self.hi_flat = self.hi_in.reshape(-1)
        self.ctx = self.hi_in[:, :d + 1]
        self.x_row, self.x_vec = self.hi_in[:, :d], self.hi_flat[:d]    # division targets for (1, d) / (d,) obs
        # bits_feature of each resolution of the table, as the generic step computes it (float32 b / max)
        self.bf = [F32(v) for v in bit_values.astype(F32) / self.mb]
        self.bf_of = {int(b): f for b, f in zip(bit_values, self.bf)}
        # agents.knn.nearest_np's levels 2^b (float64) per table entry, as _nearest computes them,
        # as 0-d arrays (cheaper ufunc operands than numpy scalars)
        self.levels = [np.array(v) for v in np.power(2.0, bit_values.astype(np.float64))]
        self.high_q, self.policy = high_q, policy
        self.z_u, self.z_w = policy.out[0, :n], policy.out[0, n:]         # views of the policy's output row
        self.u = np.zeros(n, dtype=np.float64)

    def _run(self, state: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        d, hi_flat = self.d, self.hi_flat
        prev = state["prev_bits"][0]
        pbf = self.bf_of.get(prev)
        hi_flat[d] = F32(prev) / self.mb if pbf is None else pbf           # as bits_feature: float32 b / max
        b_i = self.high_q(self.hi_in).argmax(-1)
        bits = self.bit_values[b_i]
        i = int(b_i[0])
        hi_flat[d] = self.bf[i]                                             # the row is now [x, b / max]
        self.policy(self.ctx)                                               # writes z_u, z_w
        u, lev = self.u, self.levels[i]
        u[...] = self.z_u                                                   # float32 -> float64, exact
        np.multiply(u, lev, out=u)                                          # exact (2^b)
        np.rint(u, out=u)                                                   # what np.round does for decimals=0
        np.remainder(u, lev, out=u)
        state["prev_bits"] = bits
        return bits, u.astype(np.int64), np.greater(self.z_w, ON_ABOVE)   # on = float32(z_w + 1/2) > 1/2

    def __call__(self, obs: np.ndarray, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        np.divide(obs, self.scale, out=self.x_row)
        bits, idx, on = self._run(state)
        return {"bits": bits, "phase_idx": idx.reshape(1, -1), "on": on.reshape(1, -1)}

    def decide(self, obs: np.ndarray, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        np.divide(obs, self.scale, out=self.x_vec)
        bits, idx, on = self._run(state)
        return {"bits": bits[0, ...], "phase_idx": idx, "on": on}


def _bs(graph: Mapping[str, Any], steps: list, arrays: Mapping[str, np.ndarray], nets: Mapping[str, Any]) -> Any:
    if graph.get("outputs") != {"V": "V"} or graph.get("state"):
        return None
    net = FusedMLP.of(nets.get(steps[2].get("net")))
    scale, one = _f32_vector(arrays, "obs_scale"), _f32_vector(arrays, "one")
    if net is None or scale is None or one is None:
        return None
    d = scale.shape[0]
    shape = tuple(steps[3].get("shape", ()))
    if net.in_dim != d + one.size or len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
        return None
    if int(np.prod(shape)) != net.out_dim:
        return None
    stp = steps[4]
    mode = str(stp.get("mode", "full"))
    if mode not in ("full", "ball") or not isinstance(stp.get("p_max_w"), (int, float)):
        return None
    return _ScaledBeamformer(scale, one, net, shape, float(stp["p_max_w"]), mode)


class _ScaledBeamformer:
    """The scaled beamformer BS decision for one observation (see the module docstring)."""

    def __init__(self, scale: np.ndarray, one: np.ndarray, net: FusedMLP, shape: tuple[int, ...],
                 p_max_w: float, mode: str) -> None:
        d = scale.shape[0]
        self.scale, self.net, self.shape, self.ball = scale, net, shape, mode == "ball"
        self.x = np.zeros((1, d + one.size), dtype=F32)                  # [obs / scale, constant]
        self.x[0, d:] = one
        self.x_row, self.x_vec = self.x[:, :d], self.x[0, :d]
        self.sq = np.zeros((1, net.out_dim), dtype=F32)
        self.p, self.eps, self.unit = F32(p_max_w), F32(1e-12), F32(1.0)   # graph._scale_to_power's constants

    def _run(self) -> np.ndarray:
        raw = self.net(self.x)
        np.square(raw, out=self.sq)
        power = np.add.reduce(self.sq, 1)   # (1,): the generic's square(V).reshape(1, -1).sum(-1), same layout
        ratio = self.p / (power[0] + self.eps)            # float32 scalar ops: IEEE, as the (1,) array ops
        scale = np.sqrt(np.minimum(ratio, self.unit) if self.ball else ratio)
        return np.multiply(raw, scale)   # a fresh (1, 2MK) array

    def __call__(self, obs: np.ndarray, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        np.divide(obs, self.scale, out=self.x_row)
        return {"V": self._run().reshape(1, *self.shape)}

    def decide(self, obs: np.ndarray, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        np.divide(obs, self.scale, out=self.x_vec)
        return {"V": self._run().reshape(self.shape)}
