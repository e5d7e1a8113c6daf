import hashlib
import json

import numpy as np
import pytest
import torch

from agents import bundle as bundle_mod
from agents.bundle import export_bundle, load_bundle
from agents.networks import BeamformerActor, HybridIRSActor
from twin.envs.p1 import P1Env
from twin.errors import BundleError
from twin.scenarios import get_scenario


def _p1(**overrides):
    return P1Env(num_envs=6, cfg=get_scenario("p1", **overrides))


def _actors(env, seed=0):
    torch.manual_seed(seed)
    irs = HybridIRSActor(env.K + 1, env.N, env.bit_choices, hidden=(32, 32))
    bs = BeamformerActor(env.K, env.M, env.K, env.cfg.p_max_w, hidden=(32, 32))
    # Non-trivial weights: push outputs away from the near-zero init so every head matters.
    with torch.no_grad():
        for p in [*irs.parameters(), *bs.parameters()]:
            p.add_(0.5 * torch.randn(p.shape))
    return {"irs": irs, "bs": bs}


def _export(tmp_path, env, actors, name="bundle"):
    role_of = {a: ("bs" if a.startswith("bs") else "irs") for a in env.agent_ids}
    return export_bundle(tmp_path / name, "test-algo", "p1", env.cfg, actors, role_of,
                         env.observation_spaces, env.action_spaces)


def _obs_batch(env, seed):
    env.reset(seed=seed)
    obs = env.reset(seed=seed)
    g = torch.Generator().manual_seed(seed)
    # Real observations plus random perturbations (so bits/phase/on heads see varied inputs).
    return {a: o + 5.0 * torch.randn(o.shape, generator=g) for a, o in obs.items()}


def _rewrite_manifest(path, edit):
    m = json.loads((path / "manifest.json").read_text())
    edit(m)
    m["content_hash"] = bundle_mod._content_hash(m)  # an attacker who recomputes the hash
    (path / "manifest.json").write_text(json.dumps(m))


def test_round_trip_is_bit_identical_and_steps_the_env(tmp_path):
    env = _p1()
    actors = _actors(env)
    path = _export(tmp_path, env, actors)
    b = load_bundle(path, env=env, scenario_name="p1")
    assert set(b.agent_ids) == set(env.agent_ids) and set(b.roles) == {"irs", "bs"}
    obs = _obs_batch(env, 3)
    loaded = b.act(obs)
    with torch.no_grad():
        for a, o in obs.items():
            ref = actors["bs" if a == "bs0" else "irs"](o)
            for k in ref:
                assert torch.equal(ref[k], loaded[a][k]), (a, k)
    # the IRS head really produces varied discrete choices on these inputs
    assert len(torch.unique(loaded["irs0"]["bits"])) > 1 or len(torch.unique(loaded["irs1"]["bits"])) > 1
    # decide (B = 1, numpy) equals the trainer's actor on the same single observation
    for a in env.agent_ids:
        x = obs[a][2].numpy()
        d = b.decide(a, x)
        with torch.no_grad():
            ref = actors["bs" if a == "bs0" else "irs"](torch.from_numpy(x)[None])
        assert set(d) == set(ref)
        for k in ref:
            assert isinstance(d[k], np.ndarray) and np.array_equal(d[k], ref[k][0].numpy())
    # the environment accepts the bundle's actions as they are
    env.reset(seed=3)
    result = env.step(b.act(env.reset(seed=3)))
    assert torch.isfinite(result.rewards["bs0"]).all()
    # the manifest records what a deployment needs
    m = b.manifest
    assert m["scenario"]["name"] == "p1" and m["scenario"]["config"]["n_irs"] == env.L
    assert m["roles"]["irs"]["agent_ids"] == sorted(env.irs_ids)
    assert m["roles"]["bs"]["observation_spec"]["shape"] == [env.K]
    assert m["versions"]["torch"] and len(m["content_hash"]) == 64


def test_truncated_weights_are_refused(tmp_path):
    env = _p1()
    path = _export(tmp_path, env, _actors(env))
    w = path / "irs.pt"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(BundleError, match=r"irs\.pt.*sha256"):
        load_bundle(path)


def test_tampered_weights_same_size_are_refused(tmp_path):
    env = _p1()
    path = _export(tmp_path, env, _actors(env))
    w = path / "bs.pt"
    data = bytearray(w.read_bytes())
    data[-200] ^= 0x01
    w.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"bs\.pt.*sha256"):
        load_bundle(path)


def test_edited_or_truncated_manifest_is_refused(tmp_path):
    env = _p1()
    path = _export(tmp_path, env, _actors(env))
    text = (path / "manifest.json").read_text()
    (path / "manifest.json").write_text(text.replace('"obs_dim": 5', '"obs_dim": 6'))
    with pytest.raises(BundleError, match="content_hash"):
        load_bundle(path)
    (path / "manifest.json").write_text(text[: len(text) // 2])
    with pytest.raises(BundleError, match=r"manifest\.json.*not valid JSON"):
        load_bundle(path)
    (path / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"manifest\.json: missing"):
        load_bundle(path)


def test_manifest_cannot_name_arbitrary_classes(tmp_path):
    env = _p1()
    path = _export(tmp_path, env, _actors(env))
    for bad in ("os:system", "agents.buffers:ReplayBuffer", "twin.envs.p1:P1Env"):
        _rewrite_manifest(path, lambda m: m["roles"]["bs"].__setitem__("actor_class", bad))
        with pytest.raises(BundleError, match=r"roles\.bs\.actor_class"):
            load_bundle(path)


def test_arch_kwargs_that_do_not_fit_the_weights_are_refused(tmp_path):
    env = _p1()
    path = _export(tmp_path, env, _actors(env))
    _rewrite_manifest(path, lambda m: m["roles"]["irs"]["arch_kwargs"].__setitem__("hidden", [16, 16]))
    with pytest.raises(BundleError, match=r"irs\.pt: cannot load the weights"):
        load_bundle(path)


def test_bundle_for_another_scenario_shape_is_refused(tmp_path):
    env = _p1()
    path = _export(tmp_path, env, _actors(env))
    other = _p1(n_users=env.K + 1)  # IRS observation K+1 -> K+2, BS beams (2,M,K) change
    with pytest.raises(BundleError, match="observation_spec"):
        load_bundle(path, env=other)
    with pytest.raises(BundleError, match="scenario.name"):
        load_bundle(path, scenario_name="p4")
    b = load_bundle(path)
    with pytest.raises(BundleError, match=r"decide\(irs0\).*expects \(5,\)"):
        b.decide("irs0", np.zeros(6, np.float32))
    with pytest.raises(BundleError, match="NaN"):
        b.decide("irs0", np.full(5, np.nan, np.float32))
    with pytest.raises(BundleError, match="not served"):
        b.decide("irs9", np.zeros(5, np.float32))
    # spec edited consistently with a recomputed hash: the actor itself no longer fits
    _rewrite_manifest(path, lambda m: m["roles"]["irs"]["observation_spec"].__setitem__("shape", [7]))
    with pytest.raises(BundleError, match=r"roles\.irs\.observation_spec"):
        load_bundle(path)


def test_export_is_atomic_and_replaces_an_old_bundle(tmp_path, monkeypatch):
    env = _p1()
    old = _export(tmp_path, env, _actors(env, seed=1))
    old_hash = load_bundle(old).content_hash
    # A failure half-way through the export leaves the old bundle untouched and no temp dir.
    real_save = torch.save
    calls = []

    def failing_save(obj, f, *a, **kw):
        calls.append(f)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        _export(tmp_path, env, _actors(env, seed=2))
    monkeypatch.setattr(torch, "save", real_save)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    assert load_bundle(old).content_hash == old_hash
    # A successful export replaces it.
    new = _export(tmp_path, env, _actors(env, seed=2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    assert load_bundle(new).content_hash != old_hash
    # the content hash covers the weights' digests
    m = json.loads((new / "manifest.json").read_text())
    assert m["roles"]["bs"]["sha256"] == hashlib.sha256((new / "bs.pt").read_bytes()).hexdigest()


@pytest.mark.parametrize("algo", ["maq-wp", "maq-pg", "maddpg", "il"])
def test_loaded_actors_match_fresh_trainer_actors_slot_by_slot(tmp_path, algo):
    """B = 1 as the daemons run it, over several slots: actors with per-episode state (MAQ keeps
    its last resolution) must start exactly like the trainer's, so loading must not touch them."""
    from agents import registry

    if algo not in registry.ALGORITHMS:
        pytest.skip(f"{algo} not registered")
    env = P1Env(num_envs=1, cfg=get_scenario("p1"))
    algo_cls, cfg_cls = registry.algorithm(algo)
    trainer_algo = algo_cls(env, cfg_cls(), 7)
    actors = trainer_algo.actors()
    torch.manual_seed(1)
    with torch.no_grad():  # "trained" weights: every input (also MAQ's previous resolution) matters
        for actor in actors.values():
            for p in actor.parameters():
                p.add_(0.5 * torch.randn(p.shape))
    path = export_bundle(tmp_path / "b", algo, "p1", env.cfg, actors, {a: trainer_algo.role_of(a) for a in env.agent_ids},
                         env.observation_spaces, env.action_spaces)
    b = load_bundle(path, env=env)
    # loading leaves no per-episode state behind (e.g. MAQ's last resolution from a probe)
    for a in env.agent_ids:
        loaded = b.actor_for(a)
        fresh = type(loaded)(**loaded.arch_kwargs())
        for key, value in vars(fresh).items():
            if key.startswith("_") or key == "training" or not (value is None or isinstance(value, (int, float, str, torch.Tensor))):
                continue
            other = vars(loaded)[key]
            same = torch.equal(value, other) if isinstance(value, torch.Tensor) and isinstance(other, torch.Tensor) else value == other
            assert same, (a, key, value, other)
    obs = env.reset(seed=4)
    g = torch.Generator().manual_seed(0)
    for slot in range(6):
        x = {a: o + 3.0 * torch.randn(o.shape, generator=g) for a, o in obs.items()}  # varied inputs
        with torch.no_grad():
            ref = {a: actors[trainer_algo.role_of(a)](o) for a, o in x.items()}
        for a in env.agent_ids:
            got = b.decide(a, x[a][0].numpy())
            for k in ref[a]:
                assert np.array_equal(got[k], ref[a][k][0].numpy()), (slot, a, k)
        obs = env.step({a: {k: v for k, v in ref[a].items()} for a in env.agent_ids}).obs
