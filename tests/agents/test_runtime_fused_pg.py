"""agents.runtime.maq_pg: the fused one-observation MAQ-PG IRS and scaled-beamformer BS
decisions are bit for bit the generic graph program's (and the torch actor's discrete actions),
on random, huge, tiny and tie-making observations and weights, for several surface sizes and
resolution sets; only the exact step lists are fused; RuntimeBundle.decide keeps its checks."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from agents import registry
from agents.bundle import export_bundle, load_bundle
from agents.runtime import load_runtime, maq_pg
from agents.runtime.graph import Program
from twin.errors import BundleError
from twin.scenarios import get_scenario

F32_MAX = float(np.finfo(np.float32).max)


def _last_linear(module: nn.Module) -> nn.Linear:
    return [m for m in module.modules() if isinstance(m, nn.Linear)][-1]


def _export_pg(tmp_path: Path, n_elements: int, bits: tuple[int, ...], seed: int, scale: float = 0.5,
               ties: bool = False, n_irs: int = 2) -> Path:
    """A MAQ-PG P1 bundle with perturbed weights; ``ties`` plants exact ties on irs0: equal
    Q_high columns (argmax ties), proto-actions exactly between two phase levels (rounding
    ties) and ON values exactly at or one float32 step around 1/2."""
    cfg = get_scenario("p1", n_irs=n_irs, n_elements=n_elements, resolutions=bits)
    env = registry.make_env("p1", cfg, 1)
    cls, ccls = registry.algorithm("maq-pg")
    algo = cls(env, ccls(), seed)
    actors = algo.actors()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for actor in {id(a): a for a in actors.values()}.values():
            for t in actor.state_dict().values():
                if t.is_floating_point() and t.dim() > 0:
                    t.add_(scale / (t.shape[-1] ** 0.5 if t.dim() > 1 else 1.0) * torch.randn(t.shape, generator=g))
        if ties:
            a = actors["irs0"]
            q = _last_linear(a.high_q)
            q.weight[1:] = q.weight[0]          # every resolution's Q equal: argmax takes the first
            q.bias[1:] = q.bias[0]
            last = _last_linear(a.policy.mean if hasattr(a.policy, "mean") else a.policy)
            n = n_elements
            half = min(n, 8)                    # elements [0, half) of u and w: constant outputs
            last.weight[:half] = 0.0
            last.weight[n:n + half] = 0.0
            # u * 2^b lands exactly on k + 1/2 for b = 1, 2 or 3 (rint ties to even), or on -1/2
            u_ties = torch.tensor([0.25, 0.75, -0.25, 0.125, 0.375, 0.0625, -0.0625, 1.25, 0.5, 0.0])
            last.bias[:half] = u_ties.repeat(half // 10 + 1)[:half]
            eps = float(np.spacing(np.float32(0.5)))          # 2^-24; 2^-25 is the rounding tie
            below, above = (float(np.nextafter(np.float32(eps / 2), np.float32(t))) for t in (0.0, 1.0))
            w_ties = torch.tensor([0.0, eps, -eps, eps / 2, 2 * eps, below, above, -0.0, 1e-30, -1e-30])
            last.bias[n:n + half] = w_ties.repeat(half // 8 + 1)[:half]
    role_of = {a: algo.role_of(a) for a in env.agent_ids}
    return export_bundle(tmp_path / f"pg{n_elements}-{seed}", "maq-pg", "p1", cfg, actors, role_of,
                         dict(env.observation_spaces), dict(env.action_spaces))


def _observations(d: int, n: int, seed: int) -> np.ndarray:
    """Random rows over many scales, then adversarial ones: zeros, signed zeros, huge (to the
    float32 limit), tiny and subnormal values, one-hot spikes."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) * 10.0 ** rng.uniform(-4, 4, size=(n, 1))
    rows = [x, np.zeros((1, d)), -np.zeros((1, d)), np.full((1, d), F32_MAX), np.full((1, d), -F32_MAX),
            np.full((1, d), 1e-45), np.full((1, d), 1e30), rng.choice([-1.0, 1.0], (8, d)) * F32_MAX,
            rng.standard_normal((8, d)) * 1e-40]
    for i in range(d):
        for v in (1e38, -1e38, 1.0):
            r = np.zeros((1, d))
            r[0, i] = v
            rows.append(r)
    with np.errstate(over="ignore"):
        return np.concatenate(rows).astype(np.float32)


def _bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Same dtype, shape and bytes (float outputs bit for bit, NaN payloads and -0.0 included)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def _check_roles(path: Path, obs_seed: int, n_obs: int, torch_too: bool) -> None:
    rt = load_runtime(path, allow_torch=False)
    tb = load_bundle(path) if torch_too else None
    for a in rt.agent_ids:
        prog = rt._numpy[rt.role_of(a)].program
        kind = maq_pg._PGIRS if a.startswith("irs") else maq_pg._ScaledBeamformer
        assert isinstance(prog._fused, kind) and prog.decide_one is not None, a
        d = rt.obs_dim(a)
        obs = _observations(d, n_obs, obs_seed)
        s_steps, s_run = prog.init_state(1), prog.init_state(1)
        with np.errstate(all="ignore"):
            for i, x in enumerate(obs):
                ref = prog.run_steps(x.reshape(1, d), s_steps)          # the generic interpreter
                got_run = prog.run(x.reshape(1, d), s_run)              # fused, batched form
                got = rt.decide(a, x)                                   # fused, squeezed (daemon path)
                assert set(got) == set(ref) == set(got_run)
                for k in ref:
                    assert _bits_equal(got_run[k], ref[k]), (a, i, k)
                    assert _bits_equal(got[k], ref[k][0, ...]), (a, i, k)
                for k in s_steps:
                    assert _bits_equal(s_steps[k], s_run[k]) and _bits_equal(s_steps[k], rt._numpy[rt.role_of(a)].state[k])
                if tb is not None:                                      # the torch actor (same state sequence)
                    want = tb.decide(a, x)
                    for k, v in want.items():
                        v = np.asarray(v)
                        if v.dtype.kind in "biu":
                            assert np.array_equal(v, got[k]) and v.dtype == got[k].dtype, (a, i, k)
                        elif np.abs(x).max() < 1e6:                     # floats: where they stay finite
                            np.testing.assert_allclose(got[k], v, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(v).max())))


@pytest.mark.parametrize("n_elements,bits,seed,scale", [(10, (1, 2, 3), 0, 0.5), (10, (1, 2, 3), 1, 4.0),
                                                      (10, (2,), 2, 0.5), (256, (1,), 3, 0.5)])
def test_fused_pg_roles_equal_the_generic_program_and_torch(n_elements, bits, seed, scale, tmp_path: Path) -> None:
    _check_roles(_export_pg(tmp_path, n_elements, bits, seed, scale), obs_seed=seed + 10, n_obs=150, torch_too=True)


def test_planted_ties_are_broken_as_the_generic_program_and_torch(tmp_path: Path) -> None:
    path = _export_pg(tmp_path, 10, (1, 2, 3), seed=5, ties=True)
    rt = load_runtime(path, allow_torch=False)
    prog = rt._numpy[rt.role_of("irs0")].program
    # the planted ties are really hit: equal Q values, u 2^b on k + 1/2, w on 1/2
    q = prog.nets["high_q"](np.zeros((1, prog.nets["high_q"].in_dim), np.float32))
    assert np.all(q == q[0, 0])
    _check_roles(path, obs_seed=6, n_obs=100, torch_too=True)
    out = rt.decide("irs0", np.ones(rt.obs_dim("irs0"), np.float32))
    b = int(out["bits"])
    assert b == 1                                                     # the first of the tied resolutions
    # the planted elements, in closed form: Python's round() is half-to-even like np.rint
    u = [0.25, 0.75, -0.25, 0.125, 0.375]
    assert out["phase_idx"][:5].tolist() == [round(v * 2 ** b) % 2 ** b for v in u]
    eps = np.spacing(np.float32(0.5))
    w = [0.0, eps, -eps, eps / 2, 2 * eps, np.nextafter(eps / 2, 0.0), np.nextafter(eps / 2, 1.0)]
    want = [bool(np.float32(0.5) + np.float32(v) > 0.5) for v in w]
    assert want == [False, True, False, False, True, False, True]
    assert out["on"][:7].tolist() == want


def _program(path: Path, role: str, edit=None, out_scale: float = 1.0) -> Program:
    """A role's program from the bundle files, its graph edited, its last layer scaled."""
    manifest = json.loads((path / "manifest.json").read_text())
    rt = manifest["roles"][role]["runtime"]
    graph = copy.deepcopy(rt["graph"])
    if edit is not None:
        edit(graph)
    with np.load(path / rt["arrays"], allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    last = graph["nets"]["net"][-1]["linear"] if role.startswith("bs") else None
    if last is not None:
        for k in (last + ".W", last + ".b"):
            arrays[k] = (arrays[k] * np.float32(out_scale)).astype(np.float32)
    return Program(graph, arrays)


def _set(i: int, **kw):
    return lambda g: g["steps"][i].update(kw)


@pytest.mark.parametrize("role,edit", [
    ("irs0", lambda g: g["steps"].pop(-1)),                               # no state write
    ("irs0", _set(11, value=0.25)),                                       # another ON offset...
    ("irs0", _set(11, op="sub")),                                         # ...or op
    ("irs0", _set(10, start=1)),                                          # another slice
    ("irs0", lambda g: g["steps"].insert(12, {"op": "relu", "in": "w", "out": "w"})),   # one step more
    ("irs0", lambda g: g["nets"]["policy"].__setitem__(1, {"act": "elu"})),   # an activation the runner lacks
    ("bs0", _set(1, **{"in": ["xs"]})),                                   # no constant feature
    ("bs0", _set(3, shape=[4, 8])),
    ("bs0", lambda g: g["steps"].append({"op": "tanh", "in": "V", "out": "V2"})),
])
def test_a_graph_one_step_off_keeps_the_generic_interpreter(role: str, edit, tmp_path: Path) -> None:
    path = _export_pg(tmp_path, 10, (1, 2, 3), seed=0)
    assert _program(path, role)._fused is not None
    try:
        prog = _program(path, role, edit)
    except ValueError:
        return                                            # the interpreter itself refuses the edit
    assert prog._fused is None and prog.decide_one is None


@pytest.mark.parametrize("mode,out_scale", [("ball", 1.0), ("full", 1e-7), ("ball", 1e-7), ("full", 1e25)])
def test_power_scaling_is_fused_and_equal_for_tiny_huge_and_ball(mode: str, out_scale: float, tmp_path: Path) -> None:
    """Raw beams around the 1e-12 power guard (tiny last layer), overflowing squares (huge), and
    the ball mode (no scaling up below P_max) that no MAQ-PG export uses but the runner accepts."""
    path = _export_pg(tmp_path, 10, (1, 2, 3), seed=1, scale=4.0)
    prog = _program(path, "bs0", _set(4, mode=mode, p_max_w=1e-6), out_scale=out_scale)
    assert isinstance(prog._fused, maq_pg._ScaledBeamformer)
    d = prog.nets["net"].in_dim - 1
    with np.errstate(all="ignore"):
        for x in _observations(d, 100, 3):
            ref = prog.run_steps(x.reshape(1, d), {})
            assert _bits_equal(prog.run(x.reshape(1, d), {})["V"], ref["V"])
            assert _bits_equal(prog.decide_one(x, {})["V"], ref["V"][0])


def test_decide_rejects_bad_observations_and_keeps_the_state(tmp_path: Path) -> None:
    path = _export_pg(tmp_path, 10, (1, 2, 3), seed=0, scale=4.0)
    rt = load_runtime(path, allow_torch=False)
    ref = load_runtime(path, allow_torch=False)
    rng = np.random.default_rng(0)
    for a in ("irs0", "bs0"):
        d = rt.obs_dim(a)
        prog = ref._numpy[ref.role_of(a)].program
        state = prog.init_state(1)
        for i in range(30):                      # a rejected observation leaves the remembered resolution
            x = rng.standard_normal(d).astype(np.float32) * 3
            got = rt.decide(a, x)
            want = prog.run_steps(x.reshape(1, d), state)
            assert all(_bits_equal(got[k], want[k][0, ...]) for k in want)
            bad = x.copy()
            bad[i % d] = [np.nan, np.inf, -np.inf][i % 3]
            with pytest.raises(BundleError, match=rf"decide\({a}\): observation contains NaN or inf"):
                rt.decide(a, bad)
            with pytest.raises(BundleError, match=rf"decide\({a}\): observation has shape \({d + 1},\), "
                                                  rf"the bundle expects \({d},\)"):
                rt.decide(a, np.zeros(d + 1, np.float32))
    # float64 and list observations are converted to float32 as before (bs0: no state)
    x64 = rng.standard_normal(rt.obs_dim("bs0")) * 1e-3
    want = rt.decide("bs0", x64.astype(np.float32))["V"]
    assert _bits_equal(rt.decide("bs0", x64)["V"], want) and _bits_equal(rt.decide("bs0", x64.tolist())["V"], want)


def test_decide_after_a_batch_starts_a_fresh_one_observation_state(tmp_path: Path) -> None:
    path = _export_pg(tmp_path, 10, (1, 2, 3), seed=2, scale=4.0)
    rt, ref = load_runtime(path, allow_torch=False), load_runtime(path, allow_torch=False)
    rng = np.random.default_rng(1)
    d = rt.obs_dim("irs0")
    xs = rng.standard_normal((6, d)).astype(np.float32) * 3
    rt.act({"irs0": xs[:4]})                               # state shaped for B = 4
    prog = ref._numpy[ref.role_of("irs0")].program
    state = prog.init_state(1)
    for x in xs:
        want = prog.run_steps(x.reshape(1, d), state)
        got = rt.decide("irs0", x)
        assert all(_bits_equal(got[k], want[k][0, ...]) for k in want)


def test_fused_nets_equal_graph_nets_with_negative_zero_biases_and_either_product(monkeypatch) -> None:
    """The fused MLP against graph.Net, bytes compared: relu layers whose bias holds -0.0 (the one
    case where max against a +0.0 row could differ from the generic's scalar 0 in the sign of a
    zero) and zero or -0.0 weight columns that make such pre-activations; both the dot and the
    matmul product (the load-time probe's fallback)."""
    from agents.runtime.graph import Net

    rng = np.random.default_rng(7)
    arrays = {}
    for i, (k, m) in enumerate([(6, 16), (16, 16), (16, 5)]):
        W = rng.standard_normal((k, m)).astype(np.float32)
        b = rng.standard_normal(m).astype(np.float32)
        W[:, :4] = np.float32(-0.0)
        W[:, 4:6] = np.float32(0.0)
        b[:3] = np.float32(-0.0)
        b[4] = np.float32(-0.0)
        arrays[f"n.{2 * i}.W"], arrays[f"n.{2 * i}.b"] = W, b
    layers = [{"linear": "n.0"}, {"act": "relu"}, {"linear": "n.2"}, {"act": "tanh"}, {"linear": "n.4"}, {"act": "relu"}]
    net = Net("n", layers, arrays)
    xs = [rng.standard_normal((1, 6)).astype(np.float32) * s for s in (1e-3, 1.0, 1e3, 1e38)]
    xs += [np.zeros((1, 6), np.float32), np.full((1, 6), -0.0, np.float32), -np.abs(xs[1]), np.abs(xs[1])]
    for same in (True, False):
        monkeypatch.setattr(maq_pg, "_same_product", lambda W, rng: same)
        fused = maq_pg.FusedMLP.of(net)
        assert fused is not None and all((p is np.dot) == same for p, *_ in fused.layers)
        with np.errstate(all="ignore"):
            for x in xs:
                assert _bits_equal(fused(x), net(x))
    assert maq_pg.FusedMLP.of(Net("n", layers[:1] + [{"act": "elu"}], arrays)) is None


def test_long_observations_keep_the_numpy_nan_check(monkeypatch, tmp_path: Path) -> None:
    """Past _LIST_SUM_MAX entries decide checks with numpy's float64 sum: the same refusals."""
    import agents.runtime as runtime

    path = _export_pg(tmp_path, 10, (1, 2, 3), seed=0)
    for limit in (0, 64):
        monkeypatch.setattr(runtime, "_LIST_SUM_MAX", limit)
        rt = load_runtime(path, allow_torch=False)
        assert all(short == (limit > 0) for _, _, short in rt._decide_of.values())
        d = rt.obs_dim("irs0")
        for bad in (np.nan, np.inf, -np.inf):
            x = np.full(d, F32_MAX, np.float32)          # large but finite entries pass...
            with np.errstate(all="ignore"):
                rt.decide("irs0", x)
            x[d // 2] = bad                               # ...one NaN / inf does not
            with pytest.raises(BundleError, match="NaN or inf"):
                rt.decide("irs0", x)
