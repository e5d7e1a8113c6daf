"""Export side of the numpy runtime (imports torch): an actor -> (inference graph, arrays).

``describe(actor)`` returns the declarative graph of ``agents.runtime.graph`` and the named
float32 / int64 arrays it reads, or raises ``NotDescribable`` naming what it cannot
express. Describers are keyed by the exact actor class (a subclass may change ``forward``)
and read the actor's modules generically: any ``MLP`` / ``nn.Sequential`` of Linear,
ReLU / Tanh / ELU / GELU / Sigmoid and LayerNorm layers becomes a ``nets`` entry, so new
hidden sizes, depths or activations need no change here. ``agents.bundle.export_bundle``
then runs the graph against the torch actor on probe observations and keeps the torch
backend for the role if they disagree, so a describer that falls behind an actor's code
degrades to torch, never to wrong actions.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from agents.runtime.graph import GRAPH_VERSION

TWO_PI = 2.0 * math.pi


class NotDescribable(Exception):
    """The actor (or one of its modules) has no numpy description; the role stays on torch."""


class _Builder:
    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.nets: dict[str, list[dict[str, Any]]] = {}
        self.steps: list[dict[str, Any]] = []
        self.state: dict[str, dict[str, Any]] = {}

    def const(self, name: str, value: Any, dtype: Any = np.float32) -> str:
        arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        self.arrays[name] = np.ascontiguousarray(arr.astype(dtype))
        return "@" + name

    def step(self, op: str, inp: Any, out: Any, **params: Any) -> Any:
        self.steps.append({"op": op, "in": inp, "out": out, **params})
        return out

    def net(self, name: str, module: nn.Module) -> str:
        """A sequential stack as nets[name]; its arrays as name.<i>.W / .b."""
        seq = _sequential(module)
        layers: list[dict[str, Any]] = []
        for i, m in enumerate(seq):
            key = f"{name}.{i}"
            if isinstance(m, nn.Linear):
                self.arrays[key + ".W"] = np.ascontiguousarray(m.weight.detach().cpu().numpy().T.astype(np.float32))
                bias = m.bias if m.bias is not None else torch.zeros(m.out_features)
                self.arrays[key + ".b"] = bias.detach().cpu().numpy().astype(np.float32)
                layers.append({"linear": key})
            elif type(m) in _ACT_NAMES:
                if isinstance(m, nn.GELU) and m.approximate != "none":
                    raise NotDescribable(f"{name}[{i}]: GELU(approximate={m.approximate!r})")
                if isinstance(m, nn.ELU) and m.alpha != 1.0:
                    raise NotDescribable(f"{name}[{i}]: ELU(alpha={m.alpha})")
                layers.append({"act": _ACT_NAMES[type(m)]})
            elif isinstance(m, nn.LayerNorm) and len(m.normalized_shape) == 1 and m.elementwise_affine:
                self.arrays[key + ".g"] = m.weight.detach().cpu().numpy().astype(np.float32)
                self.arrays[key + ".b"] = m.bias.detach().cpu().numpy().astype(np.float32)
                layers.append({"layernorm": key, "eps": float(m.eps)})
            elif isinstance(m, (nn.Identity, nn.Dropout)):
                continue
            else:
                raise NotDescribable(f"{name}[{i}]: {type(m).__name__} has no numpy form")
        self.nets[name] = layers
        return name

    def mlp(self, name: str, module: nn.Module, inp: str, out: str) -> str:
        self.net(name, module)
        return self.step("mlp", inp, out, net=name)

    def graph(self, outputs: dict[str, str]) -> dict[str, Any]:
        return {"version": GRAPH_VERSION, "state": self.state, "nets": self.nets, "steps": self.steps, "outputs": outputs}


_ACT_NAMES = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.ELU: "elu", nn.GELU: "gelu", nn.Sigmoid: "sigmoid"}


def _sequential(module: nn.Module) -> list[nn.Module]:
    net = getattr(module, "net", module)      # agents.networks.MLP keeps its layers in .net
    if not isinstance(net, nn.Sequential):
        raise NotDescribable(f"{type(module).__name__} is not a sequential stack")
    return list(net)


# --------------------------------------------------------------------------- describers

def _maq_irs(a: Any, g: _Builder) -> dict[str, Any]:
    """agents.maq.MAQIRSActor: eq. 23 resolution (argmax Q_high), then the WP or PG mapping."""
    from agents.networks import GaussianHead

    kw = a.arch_kwargs()
    n, mb = kw["n_elements"], float(a.max_bits)
    g.state["prev_bits"] = {"init": int(a.bit_values[0]), "dtype": "int64"}
    g.step("div", ["obs", g.const("obs_scale", a.obs_scale)], "x")
    g.step("bits_feature", ["state.prev_bits"], "pbf", max_bits=mb)
    g.step("concat", ["x", "pbf", g.const("one_hot", a.one_hot)], "hi_in")
    g.mlp("high_q", a.high_q, "hi_in", "q_high")
    g.step("argmax", ["q_high"], "b_i")
    g.step("take", [g.const("bit_values", a.bit_values, np.int64), "b_i"], "bits")
    g.step("bits_feature", ["bits"], "bf", max_bits=mb)
    g.step("concat", ["x", "bf"], "ctx")
    policy = a.policy.mean if isinstance(a.policy, GaussianHead) else a.policy
    g.mlp("policy", policy, "ctx", "z")
    if a.mapping.name == "pg":            # e = (z_u, z_w + 1/2), then per-element rounding
        g.step("slice", ["z"], "u", start=0, stop=n)
        g.step("slice", ["z"], "w0", start=n, stop=2 * n)
        g.step("add", ["w0"], "w", value=0.5)
        g.step("nearest", ["u", "w", "bits"], ["idx", "on"])
    else:                                  # Alg. 2: sigmoid proto-action, k nearest, best Q_low
        g.step("sigmoid", ["z"], "e")
        g.net("low_q", a.low_q)
        g.step("knn_rank", ["e", "bits", "ctx"], ["idx", "on"], net="low_q", n=n, k=int(a.mapping.k),
               max_bits=int(a.max_bits))
    g.steps.append({"op": "state_write", "state": "prev_bits", "in": "bits"})
    return g.graph({"bits": "bits", "phase_idx": "idx", "on": "on"})


def _beamformer(a: Any, g: _Builder, scaled: bool) -> dict[str, Any]:
    """agents.networks.BeamformerActor / agents.maq.ScaledBeamformerActor: MLP, (2, M, K), P1 eq. 10a."""
    kw = a.arch_kwargs()
    x = "obs"
    if scaled:   # features: obs / scale ++ [1]
        g.step("div", ["obs", g.const("obs_scale", a.obs_scale)], "xs")
        g.step("concat", ["xs", g.const("one", np.ones(1))], "x")
        x = "x"
    g.mlp("net", a.net, x, "raw")
    g.step("reshape", ["raw"], "V0", shape=[2, kw["n_antennas"], kw["n_users"]])
    g.step("scale_to_power", ["V0"], "V", p_max_w=kw["p_max_w"], mode=kw["power_mode"])
    return g.graph({"V": "V"})


def _bs_mlp_out(a: Any, g: _Builder, bound: float, out: str) -> None:
    """Shared head of the MRT-direction BS actors: out = R tanh(MLP([obs / scale, 1]) / R)."""
    g.step("div", ["obs", g.const("obs_scale", a.obs_scale)], "xs")
    g.step("concat", ["xs", g.const("one", np.ones(1))], "x")
    g.mlp("net", a.net, "x", "z")
    g.step("div", ["z"], "z1", value=bound)
    g.step("tanh", ["z1"], "z2")
    g.step("mul", ["z2"], out, value=bound)


def _mrt_beams(a: Any, g: _Builder, log_amp: str) -> dict[str, Any]:
    """Shared tail: per-user amplitudes exp(clip(log_amp)) on the observed MRT directions (a
    fixed selection of the observation, as a bias-free linear net), scaled to P_max."""
    kw = a.arch_kwargs()
    M, K = kw["n_antennas"], kw["n_users"]
    g.step("clip", [log_amp], "lc", min=-a.LOGIT_CLIP, max=a.LOGIT_CLIP)
    g.step("exp", ["lc"], "amp0")
    g.step("reshape", ["amp0"], "amp", shape=[1, 1, K])
    select = nn.Linear(kw["obs_dim"], 2 * M * K, bias=False)
    with torch.no_grad():
        select.weight.copy_(a.select)
    g.mlp("select", nn.Sequential(select), "obs", "d")
    g.step("reshape", ["d"], "D", shape=[2, M, K])
    g.step("mul", ["D", "amp"], "V0")
    g.step("scale_to_power", ["V0"], "V", p_max_w=kw["p_max_w"], mode="full")
    return g.graph({"V": "V"})


def _power_share_bs(a: Any, g: _Builder) -> dict[str, Any]:
    """agents.maq.PowerShareBSActor: MLP -> R tanh(./R) -> per-user amplitudes exp(clip(l)) on the observed
    MRT directions, P1 10a."""
    _bs_mlp_out(a, g, float(a.LOG_AMP_RANGE), "l")
    return _mrt_beams(a, g, "l")


def _snr_power_bs(a: Any, g: _Builder) -> dict[str, Any]:
    """agents.maq.SNRPowerBSActor: exponent c = C tanh(MLP / C); amplitudes SNR_k^(c/2), centred in
    log and clipped, on the observed MRT directions, P1 10a."""
    K = a.arch_kwargs()["n_users"]
    _bs_mlp_out(a, g, float(a.EXP_RANGE), "c")
    g.step("mul", ["c"], "ch", value=float(a.HALF_LN10))
    g.step("slice", ["obs"], "lsnr", start=-K)
    g.step("mul", ["ch", "lsnr"], "l0")
    g.step("mean", ["l0"], "lm", keepdims=True)
    g.step("sub", ["l0", "lm"], "l1")
    return _mrt_beams(a, g, "l1")


def _hybrid_irs(a: Any, g: _Builder, scaled: bool) -> dict[str, Any]:
    """agents.networks.HybridIRSActor (+ the obs-scaled MADDPG / IL variant): argmax bits,
    quantized atan2 phases, ON logit > 0."""
    net = a.net
    nb, n = net.n_bit_choices, net.n_elements
    x = "obs"
    if scaled:
        g.step("div", ["obs", g.const("obs_scale", a.obs_scale)], "x")
        x = "x"
    g.mlp("body", net.body, x, "out")
    g.step("slice", ["out"], "bit_logits", start=0, stop=nb)
    g.step("slice", ["out"], "cs", start=nb, stop=nb + 2 * n)
    g.step("reshape", ["cs"], "cs2", shape=[n, 2])
    g.step("index", ["cs2"], "c", index=0)
    g.step("index", ["cs2"], "s", index=1)
    g.step("atan2", ["s", "c"], "th0")
    g.step("remainder", ["th0"], "theta", value=TWO_PI)
    g.step("slice", ["out"], "on_logits", start=nb + 2 * n, stop=nb + 3 * n)
    g.step("argmax", ["bit_logits"], "b_i")
    g.step("take", [g.const("bit_values", a.bit_values, np.int64), "b_i"], "bits")
    g.step("quantize_phase", ["theta", "bits"], "idx")
    g.step("gt", ["on_logits"], "on", value=0.0)
    return g.graph({"bits": "bits", "phase_idx": "idx", "on": "on"})


def _box_scaler(scale: Any, g: _Builder, inp: str, out: str) -> str:
    g.step("sub", [inp, g.const(f"{out}_mid", scale.mid)], out + "_c")
    return g.step("div", [out + "_c", g.const(f"{out}_half", scale.half_range)], out)


def _dqn(a: Any, g: _Builder) -> dict[str, Any]:
    """agents.dqn.DQNActor: BoxScaler -> QNetwork (dueling V + A - mean A) -> argmax."""
    _box_scaler(a.scale, g, "obs", "x")
    g.mlp("q", a.q.body, "x", "out")
    if a.q.dueling:
        g.step("slice", ["out"], "v", start=0, stop=1)
        g.step("slice", ["out"], "adv", start=1)
        g.step("mean", ["adv"], "adv_mean", keepdims=True)
        g.step("add", ["v", "adv"], "va")
        g.step("sub", ["va", "adv_mean"], "qv")
        g.step("argmax", ["qv"], "action")
    else:
        g.step("argmax", ["out"], "action")
    return g.graph({"action": "action"})


def _qtable(a: Any, g: _Builder) -> dict[str, Any]:
    """agents.dqn.QTableActor: hashed observation -> argmax of its table row."""
    g.const("mult", a.mult, np.int64)
    g.step("qtable_key", ["obs"], "key", mult="mult", table_size=int(a.arch_kwargs()["table_size"]))
    g.step("take", [g.const("table", a.table), "key"], "row")
    g.step("argmax", ["row"], "action")
    return g.graph({"action": "action"})


def _norm_mlp(a: Any, g: _Builder, inp: str, out: str) -> str:
    """agents.mappo._NormMLP: ((x - mean) / max(std, floor)).clip(-10, 10) -> MLP."""
    norm = a.net.norm
    std = norm.var.sqrt().clamp_min(norm.std_floor)          # as RunningNorm.forward, in torch
    g.step("sub", [inp, g.const("norm_mean", norm.mean)], "xc")
    g.step("div", ["xc", g.const("norm_std", std)], "xn")
    g.step("clip", ["xn"], "xk", min=-10.0, max=10.0)
    return g.mlp("mlp", a.net.mlp, "xk", out)


def _scheduler(a: Any, g: _Builder) -> dict[str, Any]:
    """agents.mappo.SchedulerActor (and PPO-AO's, whose local decision is the same argmax)."""
    _norm_mlp(a, g, "obs", "logits")
    g.step("argmax", ["logits"], "action")
    return g.graph({"action": "action"})


def _gaussian(a: Any, g: _Builder) -> dict[str, Any]:
    """agents.mappo.GaussianActor: the mean, reshaped to the action shape."""
    _norm_mlp(a, g, "obs", "mean")
    g.step("reshape", ["mean"], "action", shape=a.arch_kwargs()["action_shape"])
    return g.graph({"action": "action"})


def _p2_bs(a: Any, g: _Builder) -> dict[str, Any]:
    """agents.mdlbi.P2BSActor: (zero-filled group) -> MLP -> tanh -> own block -> raw action
    split by ``raw_shapes`` -> the fixed map to the env's action (per-user power factors,
    claims broadcast to every user), as ``P2BSActor.split``."""
    kw = a.arch_kwargs()
    gs, m = kw["group_size"], kw["index"]
    x = "obs"
    if gs > 1:
        g.step("embed_block", ["obs"], "xg", groups=gs, index=m)
        x = "xg"
    dims = {k: kw[k] for k in ("n_users", "n_irs", "n_antennas", "n_elements")}
    xg = x
    if kw.get("gain_features"):      # x ++ own users' log link gains (agents.runtime.p2_local)
        x = g.step("p2_gain_features", [x], "xf", groups=gs, obs_dim=kw["obs_dim"], **dims)
    gain_claims = kw.get("claim_head", "free") == "gain"
    if gain_claims:                  # x ++ each block's claim value (agents.runtime.p2_claims)
        g.step("p2_claim_features", [xg], "xv", groups=gs, obs_dim=kw["obs_dim"], refl_scale=kw["refl_scale"], **dims)
        x = g.step("concat", [x, "xv"], "xc")
    g.mlp("net", a.net, x, "pre")
    g.step("reshape", ["pre"], "pre2", shape=[gs, a.act_dim])
    g.step("tanh", ["pre2"], "joint")
    g.step("index", ["joint"], "own", index=m, axis=1)
    raw_shapes = dict(getattr(a, "raw_shapes", a.shapes))
    i = 0
    for key, shape in raw_shapes.items():
        size = int(np.prod(shape))
        g.step("slice", ["own"], f"{key}_flat", start=i, stop=i + size)
        g.step("reshape", [f"{key}_flat"], f"raw_{key}", shape=list(shape))
        i += size
    unknown = set(raw_shapes) - {"W", "power", "theta", "assoc", "reg"}
    if unknown:
        raise NotDescribable(f"P2BSActor raw action parts {sorted(unknown)}")
    assoc = "raw_assoc"
    if gain_claims:                  # raw entries are thresholds; scores from the own CSI
        assoc = g.step("p2_gain_claims", ["obs", "raw_assoc"], "claims", claim_range=kw["claim_range"],
                       refl_scale=kw["refl_scale"], **dims)
    claims = assoc
    if len(raw_shapes["assoc"]) == 1:  # claims (L,) -> the same scores for every user (K, L)
        assoc = g.step("repeat", [claims], "assoc_k", axis=1, count=int(a.shapes["assoc"][0]))
    if kw.get("precoder_head") == "local":   # W and theta from the BS's own CSI (agents.runtime.p2_local)
        g.step("p2_local", ["obs", "raw_power", "raw_reg", claims], ["W", "theta"],
               **{k: kw[k] for k in ("n_users", "n_irs", "n_antennas", "n_elements", "align_iters", "refl_scale",
                                     "snr_ref", "power_range", "reg_range")})
        return g.graph({"W": "W", "theta": "theta", "assoc": assoc})
    W = "raw_W"
    if "power" in raw_shapes:        # W[:, :, k] *= exp(power_range (q_k - 1))
        g.step("sub", ["raw_power"], "q1", value=1.0)
        g.step("mul", ["q1"], "q2", value=float(kw["power_range"]))
        g.step("exp", ["q2"], "q3")
        g.step("reshape", ["q3"], "q4", shape=[1, 1, raw_shapes["power"][0]])
        W = g.step("mul", ["raw_W", "q4"], "Wp")
    return g.graph({"W": W, "theta": "raw_theta", "assoc": assoc})


def _global_q(a: Any, g: _Builder) -> dict[str, Any]:
    """agents.magar.GlobalQActor: BoxScaler -> MLP -> per-head centred advantages -> argmax each."""
    _box_scaler(a.scale, g, "obs", "x")
    g.mlp("net", a.net, "x", "out")
    i, heads = 1, []
    for h, n in enumerate(a.arch_kwargs()["n_actions"]):
        g.step("slice", ["out"], f"a{h}", start=i, stop=i + n)
        g.step("mean", [f"a{h}"], f"m{h}", keepdims=True)
        g.step("sub", [f"a{h}", f"m{h}"], f"c{h}")
        heads.append(g.step("argmax", [f"c{h}"], f"h{h}"))
        i += n
    g.step("stack", heads, "action")
    return g.graph({"action": "action"})


DESCRIBERS: dict[str, Callable[[Any, _Builder], dict[str, Any]]] = {
    "agents.maq:MAQIRSActor": _maq_irs,
    "agents.maq:ScaledBeamformerActor": lambda a, g: _beamformer(a, g, scaled=True),
    "agents.maq:PowerShareBSActor": _power_share_bs,
    "agents.maq:SNRPowerBSActor": _snr_power_bs,
    "agents.networks:BeamformerActor": lambda a, g: _beamformer(a, g, scaled=False),
    "agents.networks:HybridIRSActor": lambda a, g: _hybrid_irs(a, g, scaled=False),
    "agents.maddpg:ScaledHybridIRSActor": lambda a, g: _hybrid_irs(a, g, scaled=True),
    "agents.dqn:DQNActor": _dqn,
    "agents.dqn:QTableActor": _qtable,
    "agents.mappo:SchedulerActor": _scheduler,
    "agents.mappo:AOPrecodingSchedulerActor": _scheduler,
    "agents.mappo:GaussianActor": _gaussian,
    "agents.mdlbi:P2BSActor": _p2_bs,
    "agents.magar:GlobalQActor": _global_q,
}


def describe(actor: nn.Module) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(graph, arrays) of ``actor`` for the numpy runtime; NotDescribable if there is none."""
    cls = type(actor)
    key = f"{cls.__module__}:{cls.__qualname__}"
    fn = DESCRIBERS.get(key)
    if fn is None:
        raise NotDescribable(f"no numpy description for {key}")
    g = _Builder()
    try:
        graph = fn(actor, g)
    except NotDescribable:
        raise
    except (AttributeError, KeyError, TypeError, ValueError) as exc:   # the actor's code moved on
        raise NotDescribable(f"{key}: {type(exc).__name__}: {exc}") from None
    return graph, g.arrays
