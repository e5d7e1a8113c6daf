"""The torch-free runtime (agents.runtime): same actions as the torch actors for every
deployed algorithm, no torch import, the same refusals as agents.bundle, torch fallback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from agents import bundle as bundle_mod
from agents import knn, registry
from agents.bundle import export_bundle, load_bundle
from agents.runtime import describe as describe_mod
from agents.runtime import knn as rknn
from agents.runtime import load_runtime
from twin.errors import BundleError

SCENARIO = {"magar": "p3", "madqn": "p3", "madqn-lr": "p3", "q-learning": "p3", "mappo": "p4", "ppo-ao": "p4",
            "mdlbi": "p2", "ddpg-central": "p2"}
ROOT = Path(__file__).resolve().parents[2]


def _export(name: str, tmp_path: Path, seed: int = 0, scale: float = 0.5, **algo_overrides):
    """An algorithm's actors with perturbed weights (every head matters), exported."""
    scen = SCENARIO.get(name, "p1")
    cfg = registry.scenario_config(scen)
    env = registry.make_env(scen, cfg, 1)
    algo_cls, cfg_cls = registry.algorithm(name)
    algo = algo_cls(env, cfg_cls(**algo_overrides), seed)
    actors = algo.actors()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for actor in {id(a): a for a in actors.values()}.values():
            for tname, t in actor.state_dict().items():   # what a bundle stores (shares storage)
                if t.is_floating_point() and t.dim() > 0:   # O(scale) changes of every layer's outputs
                    t.add_(scale / (t.shape[-1] ** 0.5 if t.dim() > 1 else 1.0) * torch.randn(t.shape, generator=g))
                    if tname.endswith(".var"):       # running variances stay positive
                        t.abs_()
    role_of = {a: algo.role_of(a) for a in env.agent_ids}
    obs_specs, act_specs = dict(env.observation_spaces), dict(env.action_spaces)
    extra = getattr(algo, "extra_agents", None)
    for aid, (role, o, s) in (extra() if extra else {}).items():
        role_of[aid], obs_specs[aid], act_specs[aid] = role, o, s
    path = export_bundle(tmp_path / name, name, scen, cfg, actors, role_of, obs_specs, act_specs)
    return path, scen, cfg


def _observations(bundle, scen, cfg, n: int, seed: int) -> dict[str, np.ndarray]:
    """Real observations of the scenario, repeated and perturbed (several scales), per agent."""
    env = registry.make_env(scen, cfg, 8)
    obs = {a: o.numpy() for a, o in env.reset(seed=seed).items()}
    rng = np.random.default_rng(seed)
    out = {}
    for a in bundle.agent_ids:
        d = bundle.obs_dim(a)
        base = obs[a] if a in obs else np.zeros((8, d), np.float32)
        x = np.repeat(base, n // base.shape[0] + 1, 0)[:n]
        noise = rng.normal(size=x.shape) * rng.choice([0.0, 0.1, 1.0, 5.0], size=(n, 1)) * (np.abs(x).mean() + 1.0)
        out[a] = (x + noise).astype(np.float32)
    return out


def _same(ref: dict, got: dict, where: str) -> None:
    assert set(ref) == set(got), where
    for k in ref:
        r, g = np.asarray(ref[k]), np.asarray(got[k])
        assert r.dtype == g.dtype and r.shape == g.shape, (where, k, r.dtype, g.dtype, r.shape, g.shape)
        if r.dtype.kind in "biu":
            assert np.array_equal(r, g), (where, k, int((r != g).sum()))
        else:
            # float32 rounding only (export refuses the numpy backend beyond this; see agents.bundle._agree)
            np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-3 * max(1.0, float(np.abs(r).max())), err_msg=f"{where}.{k}")


@pytest.mark.parametrize("name", sorted(registry.ALGORITHMS))
def test_numpy_runtime_matches_torch_actors(name: str, tmp_path: Path) -> None:
    path, scen, cfg = _export(name, tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    assert all(s["runtime"]["backend"] == "numpy" for s in manifest["roles"].values()), \
        {r: s["runtime"].get("reason") for r, s in manifest["roles"].items()}
    tb, rt = load_bundle(path), load_runtime(path, allow_torch=False)
    assert all(rt.backend(r) == "numpy" for r in rt.roles)
    obs = _observations(tb, scen, cfg, 160, seed=1)
    for a, x in obs.items():
        for i in range(40):                      # single decisions, in sequence (stateful actors)
            _same(tb.decide(a, x[i]), rt.decide(a, x[i]), f"{name}/{a}/decide {i}")
    tb.reset_state(), rt.reset_state()
    with torch.inference_mode():
        ref = tb.act({a: torch.from_numpy(x) for a, x in obs.items()})
    got = rt.act(obs)
    for a in obs:
        assert isinstance(got[a], dict) == isinstance(ref[a], dict), a     # same form as Bundle.act
        r = {k: v.numpy() for k, v in ref[a].items()} if isinstance(ref[a], dict) else {"action": ref[a].numpy()}
        g = got[a] if isinstance(got[a], dict) else {"action": got[a]}
        _same(r, g, f"{name}/{a}/act")


@pytest.mark.parametrize("scale", [0.5, 4.0])
def test_maq_wp_large_k_matches_including_saturated_policies(scale: float, tmp_path: Path) -> None:
    """k = 50, and weights large enough to saturate the sigmoid proto-actions, which makes
    exact distance ties at the k-th neighbour common: the runtime's search breaks them as
    agents.knn does, so even then the chosen action is the torch actor's."""
    path, scen, cfg = _export("maq-wp", tmp_path, seed=3, scale=scale, k=50)
    tb, rt = load_bundle(path), load_runtime(path, allow_torch=False)
    obs = _observations(tb, scen, cfg, 300, seed=2)
    for a in ("irs0", "irs1"):
        for i in range(300):
            _same(tb.decide(a, obs[a][i]), rt.decide(a, obs[a][i]), f"{a}/{i}")


def test_search_is_bit_identical_to_agents_knn_and_exact() -> None:
    rng = np.random.default_rng(0)
    for trial in range(600):
        N, k, b = int(rng.integers(1, 12)), int(rng.integers(1, 51)), int(rng.integers(1, 4))
        u, w = rng.random((1, N)) * 3 - 1, rng.random((1, N)) * 1.6 - 0.3
        if trial % 2:   # tie-heavy: saturated phases / ON scores
            u, w = np.round(u * 4) / 4, np.round(w)
        ref = knn._k_nearest_merge_np(u, w, np.array([b]), k, 3)
        got = rknn.k_nearest(u, w, np.array([b]), k, 3)
        for r, g in zip(ref, got):   # actions, ON bits, distances, valid
            assert r.dtype == g.dtype and r.shape == g.shape, (trial, N, k, b)
        assert np.array_equal(ref[0], got[0]) and np.array_equal(ref[1], got[1]) and np.array_equal(ref[3], got[3])
        # the tie-exact merge gives agents.knn's float64 distances bit for bit; the fast path
        # (no ties among the k+1 nearest) sums the same terms in another order
        np.testing.assert_allclose(got[2][got[3]], ref[2][ref[3]], rtol=0, atol=1e-12)
        search = rknn.KNNSearch(N, k, 3)
        search.fast = False
        exact = search(u[0], w[0], b)
        assert np.array_equal(exact[1], ref[2][0]) and np.array_equal(exact[0][:, :N], ref[0][0])
    # the fast path (rank space, agents.runtime.kbest) is what runs on tie-free inputs, and it
    # declines ties: on-grid phases (two equally near neighbours) and saturated ON scores (equal margins)
    fast = rknn.KNNSearch(10, 50, 3)
    accepted = sum(fast.rank.row(rng.random(20), int(rng.integers(1, 4))) is not None for _ in range(50))
    assert accepted >= 45
    assert fast.rank.row(np.r_[np.full(10, 0.5), np.ones(10)], 3) is None
    # exactness against enumeration of the whole action set (small N)
    for trial in range(40):
        N, b, k = 3, int(rng.integers(1, 4)), int(rng.integers(1, 30))
        u, w = rng.random(N), rng.random(N)
        L = 1 << b
        grid = np.stack(np.meshgrid(*[np.arange(L)] * N, *[np.arange(2)] * N, indexing="ij"), -1).reshape(-1, 2 * N)
        d = grid[:, :N] / L - u
        d2 = ((d - np.round(d)) ** 2).sum(1) + ((grid[:, N:] - w) ** 2).sum(1)
        best = np.sort(d2)[:k]
        _, sums, valid = rknn.KNNSearch(N, k, 3)(u, w, b)
        n = min(k, grid.shape[0])
        np.testing.assert_allclose(sums[:n], best[:n], atol=1e-12)
        assert valid[:n].all() and not valid[n:].any()


def test_loading_and_deciding_does_not_import_torch(tmp_path: Path) -> None:
    path, _, _ = _export("maq-wp", tmp_path, k=10)
    code = (
        "import sys, numpy as np\n"
        "from agents.runtime import load_runtime\n"
        f"rt = load_runtime({str(path)!r}, allow_torch=False)\n"
        "for a in rt.agent_ids:\n"
        "    out = rt.decide(a, np.ones(rt.obs_dim(a), np.float32))\n"
        "    assert all(isinstance(v, np.ndarray) for v in out.values())\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_tampered_or_truncated_numpy_part_is_refused(tmp_path: Path) -> None:
    path, _, _ = _export("maq-pg", tmp_path)
    npz = path / "irs0.npz"
    raw = bytearray(npz.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    npz.write_bytes(bytes(raw))
    for load in (load_runtime, load_bundle):
        with pytest.raises(BundleError, match=r"irs0\.npz: sha256 does not match"):
            load(path)
    npz.write_bytes(bytes(raw[: len(raw) // 3]))
    with pytest.raises(BundleError, match="irs0.npz"):
        load_runtime(path)
    npz.unlink()
    with pytest.raises(BundleError, match="numpy weights file missing"):
        load_runtime(path)


def test_edited_graph_is_refused_and_a_recomputed_hash_still_fails_safely(tmp_path: Path) -> None:
    path, _, _ = _export("maq-pg", tmp_path)
    mpath = path / "manifest.json"
    m = json.loads(mpath.read_text())
    m["roles"]["bs0"]["runtime"]["graph"]["steps"][-1]["p_max_w"] = 100.0
    mpath.write_text(json.dumps(m))
    with pytest.raises(BundleError, match="content_hash does not match"):
        load_runtime(path)
    # someone who recomputes the hash can change a graph, as with arch_kwargs today; a graph
    # that names a missing array or an unknown op is still refused with the field named
    m["roles"]["irs0"]["runtime"]["graph"]["steps"][0]["op"] = "exec"
    m["content_hash"] = bundle_mod._content_hash(m)
    mpath.write_text(json.dumps(m))
    with pytest.raises(BundleError, match=r"roles\.irs0\.runtime\.graph: .*'exec' is unknown"):
        load_runtime(path)


def test_old_bundle_without_numpy_part_loads_through_torch(tmp_path: Path) -> None:
    path, scen, cfg = _export("maddpg", tmp_path)
    mpath = path / "manifest.json"
    m = json.loads(mpath.read_text())
    for role, spec in m["roles"].items():   # what export_bundle wrote before the runtime existed
        del spec["runtime"]
        (path / f"{role}.npz").unlink()
    m["content_hash"] = bundle_mod._content_hash(m)
    mpath.write_text(json.dumps(m))
    tb, rt = load_bundle(path), load_runtime(path)
    assert all(rt.backend(r) == "torch" for r in rt.roles)
    x = _observations(tb, scen, cfg, 4, seed=0)
    for a in tb.agent_ids:
        _same(tb.decide(a, x[a][1]), rt.decide(a, x[a][1]), a)
    with pytest.raises(BundleError, match="need torch"):
        load_runtime(path, allow_torch=False)


def test_undescribable_or_stale_description_keeps_torch_for_that_role(tmp_path: Path, monkeypatch) -> None:
    key = "agents.maq:ScaledBeamformerActor"
    monkeypatch.delitem(describe_mod.DESCRIBERS, key)
    path, scen, cfg = _export("maq-pg", tmp_path / "a")
    m = json.loads((path / "manifest.json").read_text())
    assert m["roles"]["bs0"]["runtime"] == {"backend": "torch", "reason": f"no numpy description for {key}"}
    assert not (path / "bs0.npz").exists() and m["roles"]["irs0"]["runtime"]["backend"] == "numpy"
    rt, tb = load_runtime(path), load_bundle(path)
    assert rt.backend("bs0") == "torch" and rt.backend("irs0") == "numpy"
    x = _observations(tb, scen, cfg, 4, seed=0)
    _same(tb.decide("bs0", x["bs0"][2]), rt.decide("bs0", x["bs0"][2]), "bs0")

    def stale(actor, g):       # a describer that fell behind its actor (forgets the power scaling)
        graph = describe_mod._beamformer(actor, g, scaled=True)
        graph["outputs"]["V"] = "V0"
        return graph

    monkeypatch.setitem(describe_mod.DESCRIBERS, key, stale)
    path, _, _ = _export("maq-pg", tmp_path / "b")
    spec = json.loads((path / "manifest.json").read_text())["roles"]["bs0"]["runtime"]
    assert spec["backend"] == "torch" and "differ" in spec["reason"]

    def broken(actor, g):      # a describer bug: export (and so training) still succeeds, on torch
        raise RuntimeError("boom")

    monkeypatch.setitem(describe_mod.DESCRIBERS, key, broken)
    path, _, _ = _export("maq-pg", tmp_path / "c")
    spec = json.loads((path / "manifest.json").read_text())["roles"]["bs0"]["runtime"]
    assert spec["backend"] == "torch" and "RuntimeError: boom" in spec["reason"]
    assert load_runtime(path).backend("bs0") == "torch"


def test_decide_validates_observations_like_the_torch_bundle(tmp_path: Path) -> None:
    path, _, _ = _export("maq-pg", tmp_path)
    rt = load_runtime(path)
    with pytest.raises(BundleError, match="expects"):
        rt.decide("irs0", np.zeros(3, np.float32))
    with pytest.raises(BundleError, match="NaN"):
        rt.decide("irs0", np.full(rt.obs_dim("irs0"), np.nan, np.float32))
    with pytest.raises(BundleError, match="not served"):
        rt.decide("irs9", np.zeros(rt.obs_dim("irs0"), np.float32))
    assert load_bundle(path, backend="numpy").content_hash == rt.content_hash == load_bundle(path).content_hash
