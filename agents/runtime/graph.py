"""The numpy interpreter of a bundle's declarative inference graphs (no torch).

A graph (manifest ``roles.<role>.runtime.graph``) is a straight-line program over named
registers, every value batched with a leading B::

    {"version": 1,
     "state":   {"prev_bits": {"init": 1, "dtype": "int64"}},        # per-role memory, (B,)
     "steps":   [{"op": "div", "in": ["obs", "@obs_scale"], "out": "x"},
                 {"op": "mlp", "in": "x", "net": "policy", "out": "z"}, ...],
     "outputs": {"bits": "bits", "phase_idx": "idx", "on": "on"}    # or {"action": "reg"}
     "nets":    {"policy": [{"linear": "policy.0"}, {"act": "relu"}, ...]}}

Register "obs" holds the (B, obs_dim) float32 observation. An input written "@name" is the
array ``name`` of the role's weights archive (<role>.npz; a linear layer "p" reads "p.W"
(in, out) and "p.b" (out,)). Ops are plain numpy on float32 (float64 where the torch actor
computes in float64, e.g. the nearest-neighbour search), written to repeat the torch actor's
arithmetic so discrete outputs agree exactly except at float ties (see docs/MODELS.md).

``compile_graph(graph, arrays)`` validates the program (unknown op, unknown register,
missing array -> ValueError naming the step) and returns a ``Program``; ``Program.run(obs,
state)`` executes it. Each op is compiled once into a closure over register slots, so a
decision costs one Python call per step plus the numpy work.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np

from agents.runtime import knn as rknn
from agents.runtime import maq_irs, maq_pg

GRAPH_VERSION = 1
F32 = np.float32
TWO_PI = 2.0 * math.pi

_ACTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {}


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, F32(0.0), out=x)


def _tanh(x: np.ndarray) -> np.ndarray:
    return np.tanh(x, out=x)


def _elu(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, np.expm1(x)).astype(F32, copy=False)


def _gelu(x: np.ndarray) -> np.ndarray:
    # torch's default (exact) GELU: x * Phi(x); erf from math on a flat copy (numpy has none).
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return (x * (0.5 * (1.0 + erf(x.astype(np.float64) / math.sqrt(2.0))))).astype(F32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    if x.size and x.min() < -88.0:     # float32 exp(-x) overflows: inf gives 0, as torch's sigmoid
        with np.errstate(over="ignore"):   # (errstate costs more than the rest of the op: only here)
            return F32(1.0) / (F32(1.0) + np.exp(-x))
    return F32(1.0) / (F32(1.0) + np.exp(-x))


_ACTS.update(relu=_relu, tanh=_tanh, elu=_elu, gelu=_gelu, sigmoid=_sigmoid)


class Net:
    """A sequential stack: linear layers (x @ W + b, W stored (in, out)), activations, layer norms."""

    def __init__(self, name: str, layers: list[Mapping[str, Any]], arrays: Mapping[str, np.ndarray]) -> None:
        self.fns: list[Callable[[np.ndarray], np.ndarray]] = []
        self.spec: list[tuple] = []           # ("linear", W, b) / ("act", name) / ("layernorm", g, b, eps)
        self.in_dim: int | None = None
        self.out_dim: int | None = None
        for i, layer in enumerate(layers):
            where = f"nets.{name}[{i}]"
            if "linear" in layer:
                W, b = _array(arrays, layer["linear"] + ".W", where), _array(arrays, layer["linear"] + ".b", where)
                if W.ndim != 2 or b.shape != (W.shape[1],) or (self.out_dim is not None and W.shape[0] != self.out_dim):
                    raise ValueError(f"{where}: linear {layer['linear']} has shapes W {W.shape}, b {b.shape} after width {self.out_dim}")
                if self.in_dim is None:
                    self.in_dim = int(W.shape[0])
                self.out_dim = int(W.shape[1])
                self.fns.append(_linear(W, b))
                self.spec.append(("linear", W, b))
            elif "act" in layer:
                if layer["act"] not in _ACTS:
                    raise ValueError(f"{where}: activation {layer['act']!r} is unknown; known: {sorted(_ACTS)}")
                self.fns.append(_ACTS[layer["act"]])
                self.spec.append(("act", layer["act"]))
            elif "layernorm" in layer:
                g, b = _array(arrays, layer["layernorm"] + ".g", where), _array(arrays, layer["layernorm"] + ".b", where)
                self.fns.append(_layernorm(g, b, float(layer.get("eps", 1e-5))))
                self.spec.append(("layernorm", g, b, float(layer.get("eps", 1e-5))))
            else:
                raise ValueError(f"{where}: a layer needs 'linear', 'act' or 'layernorm', got {sorted(layer)}")
        if self.in_dim is None:
            raise ValueError(f"nets.{name}: no linear layer")
        if not getattr(self.fns[0], "is_linear", False):   # in-place activations must not touch the input
            self.fns.insert(0, lambda x: np.array(x, dtype=F32))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for f in self.fns:
            x = f(x)
        return x


def _linear(W: np.ndarray, b: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    W, b = np.ascontiguousarray(W, dtype=F32), np.ascontiguousarray(b, dtype=F32)
    b_row = b.reshape(1, -1)  # for (B, out): the same float32 additions, at B = 1 no broadcast (~0.4 us a layer)

    def linear(x: np.ndarray) -> np.ndarray:
        y = x @ W             # the same BLAS call and float32 additions as agents.maq's x @ W + b
        y += b_row if y.ndim == 2 else b
        return y

    linear.is_linear = True  # type: ignore[attr-defined]
    return linear


def _layernorm(g: np.ndarray, b: np.ndarray, eps: float) -> Callable[[np.ndarray], np.ndarray]:
    def layernorm(x: np.ndarray) -> np.ndarray:
        mu = x.mean(-1, keepdims=True)
        var = np.square(x - mu).mean(-1, keepdims=True)
        return ((x - mu) / np.sqrt(var + F32(eps)) * g + b).astype(F32, copy=False)

    return layernorm


def _array(arrays: Mapping[str, np.ndarray], name: str, where: str) -> np.ndarray:
    if name not in arrays:
        raise ValueError(f"{where}: array {name!r} is missing from the weights archive")
    return arrays[name]


# --------------------------------------------------------------------------- ops
# Each builder gets (step, getters for its inputs, arrays, nets, params) and returns a function
# of the register list that returns the output value(s).

Getter = Callable[[list], Any]


def _bits_feature(bits: np.ndarray, max_bits: float) -> np.ndarray:
    return (bits.astype(F32) / F32(max_bits))[:, None]


def _quantize_phase(theta: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """agents.networks.quantize_phase in float32: round(theta / (2 pi / 2^b)) mod 2^b."""
    levels = np.power(F32(2.0), bits.astype(F32))[:, None]
    step = F32(TWO_PI) / levels
    return np.remainder(np.round(theta / step), levels).astype(np.int64)


def _nearest(u: np.ndarray, w: np.ndarray, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """agents.knn.nearest_np: per-element rounding in float64."""
    levels = np.power(2.0, bits.astype(np.float64))[:, None]
    idx = np.remainder(np.round(u.astype(np.float64) * levels), levels).astype(np.int64)
    return idx, w > 0.5


def _scale_to_power(V: np.ndarray, p_max_w: float, mode: str, eps: float = 1e-12) -> np.ndarray:
    """agents.networks.scale_to_power (P1 eq. 10a) in float32."""
    B = V.shape[0]
    power = np.square(V).reshape(B, -1).sum(-1)
    if mode == "full":
        scale = np.sqrt(F32(p_max_w) / (power + F32(eps)))
    else:
        scale = np.sqrt(np.minimum(F32(p_max_w) / (power + F32(eps)), F32(1.0)))
    return V * scale.reshape(B, *([1] * (V.ndim - 1))).astype(F32)


def _build_op(step: Mapping[str, Any], ins: list[Getter], arrays: Mapping[str, np.ndarray],
              nets: Mapping[str, Net], where: str, made_by: Mapping[str, str] | None = None) -> Callable[[list], Any]:
    op = step["op"]
    p = step

    def one() -> Getter:
        if len(ins) != 1:
            raise ValueError(f"{where}: op {op} takes one input, got {len(ins)}")
        return ins[0]

    if op == "mlp":
        net = nets.get(p.get("net"))
        if net is None:
            raise ValueError(f"{where}: net {p.get('net')!r} is not in nets")
        g = one()
        return lambda r: net(g(r))
    if op in ("div", "sub", "mul", "add", "maximum"):
        fn = {"div": np.divide, "sub": np.subtract, "mul": np.multiply, "add": np.add, "maximum": np.maximum}[op]
        if len(ins) == 2:
            a, b = ins
            return lambda r: fn(a(r), b(r))
        g, c = one(), p["value"]
        c = F32(c) if isinstance(c, float) else c
        return lambda r: fn(g(r), c)
    if op == "clip":
        g, lo, hi = one(), F32(p["min"]), F32(p["max"])
        return lambda r: np.clip(g(r), lo, hi)
    if op in _ACTS or op in ("exp", "atan2", "cos", "sin"):
        if op == "atan2":
            y, x = ins
            return lambda r: np.arctan2(y(r), x(r))
        g = one()
        fn = _ACTS.get(op) or {"exp": np.exp, "cos": np.cos, "sin": np.sin}[op]
        if op in ("relu", "tanh"):   # in-place activations must not clobber an input register
            return lambda r: fn(np.array(g(r), dtype=F32))
        return lambda r: fn(g(r))
    if op == "concat":         # along the last axis; 1-D inputs (constants) are broadcast over B
        names = step["in"] if isinstance(step["in"], list) else [step["in"]]
        consts = {i: _array(arrays, n[1:], where).reshape(1, -1) for i, n in enumerate(names) if n.startswith("@")}
        if not consts:
            return lambda r: np.concatenate([f(r) for f in ins], -1)

        parts = [(consts.get(i), f) for i, f in enumerate(ins)]
        first = next((i for i in range(len(ins)) if i not in consts), None)

        def concat(r: list) -> np.ndarray:
            vals = [f(r) if c is None else c for c, f in parts]
            B = 1 if first is None else vals[first].shape[0]
            if B != 1:
                vals = [np.broadcast_to(v, (B, v.shape[1])) if c is not None else v for (c, _), v in zip(parts, vals)]
            return np.concatenate(vals, -1)
        return concat
    if op == "slice":
        g, s = one(), slice(p.get("start"), p.get("stop"), p.get("step"))
        return lambda r: g(r)[..., s]
    if op == "index":          # x[:, i] on an axis (default the last)
        g, i, axis = one(), int(p["index"]), int(p.get("axis", -1))
        return lambda r: np.take(g(r), i, axis=axis)
    if op == "reshape":
        g, shape = one(), tuple(int(s) for s in p["shape"])
        return lambda r: g(r).reshape(g(r).shape[0], *shape)
    if op == "repeat":         # insert `axis` and repeat `count` times (torch's unsqueeze + expand)
        g, axis, count = one(), int(p["axis"]), int(p["count"])
        return lambda r: np.repeat(np.expand_dims(g(r), axis), count, axis)
    if op == "mean":
        g = one()
        return lambda r: g(r).mean(-1, keepdims=bool(p.get("keepdims", True)))
    if op == "argmax":
        g = one()
        return lambda r: g(r).argmax(-1)
    if op == "gt":
        g, v = one(), p.get("value", 0.0)
        return lambda r: g(r) > v
    if op == "take":           # table[idx] with a constant table
        tab, g = ins
        return lambda r: tab(r)[g(r)]
    if op == "stack":
        return lambda r: np.stack([f(r) for f in ins], axis=1)
    if op == "remainder":
        g, v = one(), F32(p["value"])
        return lambda r: np.remainder(g(r), v)
    if op == "bits_feature":
        g, mb = one(), float(p["max_bits"])
        cache: dict[int, np.ndarray] = {}     # B = 1: one (1, 1) array per resolution, never written to

        def bits_feature(r: list) -> np.ndarray:
            bits = g(r)
            if bits.shape[0] != 1:
                return _bits_feature(bits, mb)
            key = int(bits[0])
            v = cache.get(key)
            if v is None:
                v = cache[key] = _bits_feature(bits, mb)
            return v
        return bits_feature
    if op == "quantize_phase":
        th, bits = ins
        return lambda r: _quantize_phase(th(r), bits(r))
    if op == "nearest":
        u, w, bits = ins
        return lambda r: _nearest(u(r), w(r), bits(r))
    if op == "scale_to_power":
        g, pw, mode = one(), float(p["p_max_w"]), str(p.get("mode", "full"))
        if mode not in ("full", "ball"):
            raise ValueError(f"{where}: scale_to_power mode {mode!r} is unknown")
        return lambda r: _scale_to_power(g(r), pw, mode)
    if op == "embed_block":    # a local observation as block `index` of `groups` zero blocks
        g, groups, index = one(), int(p["groups"]), int(p["index"])

        def embed(r: list) -> np.ndarray:
            x = g(r)
            out = np.zeros((x.shape[0], groups * x.shape[1]), dtype=x.dtype)
            out[:, index * x.shape[1]:(index + 1) * x.shape[1]] = x
            return out
        return embed
    if op == "qtable_key":     # agents.dqn.QTableActor.key: hash of the observation rounded to 1e-3
        g, mult, size = one(), _array(arrays, p["mult"], where).astype(np.int64), int(p["table_size"])
        scale = float(p.get("scale", 1000.0))
        return lambda r: np.remainder((np.round(g(r).astype(np.float64) * scale).astype(np.int64) * mult).sum(-1), size)
    if op == "knn_rank":       # MAQ-WP (P1 Alg. 2): k nearest discrete actions ranked by the Q net
        e, bits, ctx = ins
        net = nets.get(p.get("net"))
        if net is None:
            raise ValueError(f"{where}: net {p.get('net')!r} is not in nets")
        # a sigmoid's output needs no range check (the search's closed form wants w in [0, 1])
        unit = made_by is not None and made_by.get(step["in"][0]) == "sigmoid"
        ranker = rknn.KNNRanker(n=int(p["n"]), k=int(p["k"]), max_bits=int(p["max_bits"]), q_net=net, unit=unit)
        return lambda r: ranker(e(r), bits(r), ctx(r))
    if op == "p2_local":       # agents.mdlbi.local_precoders (P2 "local" head): (obs, q, r, c) -> W, theta
        from agents.runtime.p2_local import local_precoders

        o, q, rg, c = ins
        kw = {k: p[k] for k in ("n_users", "n_irs", "n_antennas", "n_elements", "align_iters")}
        kw.update({k: float(p[k]) for k in ("refl_scale", "snr_ref", "power_range", "reg_range")})
        return lambda r: local_precoders(o(r), q(r), rg(r), c(r), **kw)
    if op == "p2_gain_features":   # agents.mdlbi.gain_features: x ++ own users' log link gains
        from agents.runtime.p2_local import gain_features

        g = one()
        kw = {k: int(p[k]) for k in ("groups", "obs_dim", "n_users", "n_irs", "n_antennas", "n_elements")}
        return lambda r: gain_features(g(r), **kw)
    if op in ("p2_claim_features", "p2_gain_claims"):   # agents.mdlbi "gain" claim head (agents.runtime.p2_claims)
        from agents.runtime import p2_claims

        kw = {k: int(p[k]) for k in ("n_users", "n_irs", "n_antennas", "n_elements")}
        kw["refl_scale"] = float(p["refl_scale"])
        if op == "p2_claim_features":
            g, groups, obs_dim = one(), int(p["groups"]), int(p["obs_dim"])
            return lambda r: p2_claims.claim_features(g(r), groups, obs_dim, **kw)
        o, u = ins
        cr = float(p["claim_range"])
        return lambda r: p2_claims.gain_claims(o(r), u(r), claim_range=cr, **kw)
    raise ValueError(f"{where}: op {op!r} is unknown to this ristwin runtime")


class Program:
    """A compiled graph: ``run(obs (B, d) float32, state dict) -> outputs dict`` (numpy, batched)."""

    def __init__(self, graph: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        if graph.get("version") != GRAPH_VERSION:
            raise ValueError(f"version: graph version {graph.get('version')!r} is unsupported (this runtime reads {GRAPH_VERSION})")
        self.nets = {name: Net(name, list(layers), arrays) for name, layers in dict(graph.get("nets", {})).items()}
        self.state_spec = {k: dict(v) for k, v in dict(graph.get("state", {})).items()}
        slots: dict[str, int] = {"obs": 0}
        for name in self.state_spec:
            slots[f"state.{name}"] = len(slots)
        consts: list[tuple[int, np.ndarray]] = []
        made_by: dict[str, str] = {}          # register -> the op that last wrote it
        self._fns: list[tuple[Callable[[list], Any], tuple[int, ...]]] = []
        self._writes: list[tuple[str, int]] = []

        def getter(name: Any, where: str) -> Getter:
            if not isinstance(name, str):
                raise ValueError(f"{where}: inputs are register names or '@array', got {name!r}")
            if name.startswith("@"):
                if name not in slots:
                    slots[name] = len(slots)
                    consts.append((slots[name], _array(arrays, name[1:], where)))
            elif name not in slots:
                raise ValueError(f"{where}: register {name!r} is read before it is written")
            i = slots[name]
            return lambda r: r[i]

        for n, step in enumerate(graph.get("steps", [])):
            where = f"steps[{n}] ({step.get('op')})"
            if step.get("op") == "state_write":
                name = step.get("state")
                if name not in self.state_spec:
                    raise ValueError(f"{where}: state {name!r} is not declared")
                src = step.get("in")
                getter(src, where)
                self._writes.append((name, slots[src]))
                continue
            ins_raw = step.get("in", [])
            ins = [getter(x, where) for x in (ins_raw if isinstance(ins_raw, list) else [ins_raw])]
            fn = _build_op(step, ins, arrays, self.nets, where, made_by)
            outs = step.get("out")
            outs = outs if isinstance(outs, list) else [outs]
            made_by.update({o: step.get("op") for o in outs if isinstance(o, str)})
            for o in outs:
                if not isinstance(o, str) or o.startswith("@") or o == "obs":
                    raise ValueError(f"{where}: bad output register {o!r}")
                slots.setdefault(o, len(slots))
            self._fns.append((fn, tuple(slots[o] for o in outs)))
        self.outputs = dict(graph.get("outputs", {}))
        if not self.outputs:
            raise ValueError("outputs: the graph names no output")
        for key, reg in self.outputs.items():
            if reg not in slots:
                raise ValueError(f"outputs.{key}: register {reg!r} is never written")
        self._out = [(k, slots[v]) for k, v in self.outputs.items()]
        self._n = len(slots)
        self._consts = consts
        self._state_slots = [(name, slots[f"state.{name}"]) for name in self.state_spec]
        # MAQ-WP's IRS graph, MAQ-PG's IRS and BS graphs, one observation: the same decision
        # without the interpreter's glue (None: the generic steps)
        self._fused = maq_irs.fuse(graph, arrays, self.nets, _sigmoid) or maq_pg.fuse(graph, arrays, self.nets)
        # the fused runner's B = 1 entry with squeezed outputs (obs (d,), state) -> outputs, if it has one
        self.decide_one: Callable[[np.ndarray, dict], dict[str, np.ndarray]] | None = getattr(self._fused, "decide", None)

    def init_state(self, batch: int) -> dict[str, np.ndarray]:
        return {name: np.full((batch,), spec["init"], dtype=np.dtype(spec.get("dtype", "int64")))
                for name, spec in self.state_spec.items()}

    def run(self, obs: np.ndarray, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._fused is not None and obs.shape[0] == 1:
            return self._fused(obs, state)
        return self.run_steps(obs, state)

    def run_steps(self, obs: np.ndarray, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``run`` through the generic steps (what ``run`` does unless a fused runner applies)."""
        r: list = [None] * self._n
        r[0] = obs
        for i, v in self._consts:
            r[i] = v
        for name, i in self._state_slots:
            r[i] = state[name]
        for fn, outs in self._fns:
            if len(outs) == 1:
                r[outs[0]] = fn(r)
            else:
                for i, v in zip(outs, fn(r)):
                    r[i] = v
        for name, i in self._writes:
            state[name] = r[i]
        return {k: r[i] for k, i in self._out}


def compile_graph(graph: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Program:
    return Program(graph, arrays)
