"""Actor bundles: the exported result of training, the unit the daemons deploy.

A bundle is a directory::

    manifest.json   format version, scenario name + resolved config, algorithm, versions,
                    per role: actor class path, arch kwargs, agent ids, observation / action
                    specs, weights file + sha256; and a content hash over all of that
    <role>.pt       torch.save of the role's actor state_dict (loaded with weights_only=True)
    <role>.npz      the same weights as a numpy archive (np.savez, read with allow_pickle=False)
                    for the torch-free runtime, when the actor has a numpy description; the
                    manifest's roles.<role>.runtime holds its inference graph and sha256, or
                    {"backend": "torch", "reason": ...} when the role must run on torch

``load_bundle`` rebuilds the torch actors; ``agents.runtime.load_runtime`` (or
``load_bundle(path, backend="numpy")``) runs the numpy graphs without importing torch. At
export every numpy graph is run against its torch actor on probe observations and a role
whose graph disagrees keeps the torch backend (so a stale description can cost speed, never
correctness). Bundles written before the runtime (no .npz) load as before.

Loading needs torch and ristwin only. Actor classes are rebuilt from their class path, which
must name a subclass of ``agents.base.Actor`` inside the ``agents`` package, so a manifest
cannot make the loader import arbitrary code. Any corruption or mismatch raises
``BundleError`` naming the file and field.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import os
import re
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from agents.base import Actor
from agents.runs import UMASK
from agents.runtime import manifest as mf
from agents.runtime.manifest import FORMAT_VERSION, MANIFEST, ManifestView, canonical_json, obs_dim_of  # noqa: F401 (re-exported)
from twin import __version__ as RISTWIN_VERSION
from twin.errors import BundleError

_ROLE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


# --------------------------------------------------------------------------- JSON helpers

def to_jsonable(value: Any) -> Any:
    """Dataclasses, numpy values, tuples, paths -> plain JSON types (deterministic)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, torch.Tensor):
        return to_jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())  # np.float32(inf) -> 'inf' like a Python float
    if isinstance(value, (Path, torch.dtype, np.dtype)):
        return str(value)
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    return str(value)


def space_spec(space: Any) -> dict[str, Any]:
    """A Gymnasium space (or an already-JSON spec dict) as a JSON spec."""
    import gymnasium as gym

    if isinstance(space, Mapping) and "type" in space:
        return to_jsonable(space)
    if isinstance(space, gym.spaces.Dict):
        return {"type": "Dict", "spaces": {k: space_spec(s) for k, s in space.spaces.items()}}
    if isinstance(space, gym.spaces.Box):
        low, high = np.asarray(space.low), np.asarray(space.high)
        return {
            "type": "Box", "shape": list(space.shape), "dtype": str(space.dtype),
            "low": to_jsonable(low.flat[0] if low.size and np.all(low == low.flat[0]) else low),
            "high": to_jsonable(high.flat[0] if high.size and np.all(high == high.flat[0]) else high),
        }
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": np.asarray(space.nvec).tolist()}
    if isinstance(space, gym.spaces.MultiBinary):
        return {"type": "MultiBinary", "n": to_jsonable(space.n)}
    raise BundleError(f"spec: cannot describe a {type(space).__name__} space in a bundle manifest")


_sha256 = mf.sha256_file
_content_hash = mf.content_hash


def _class_path(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}:{cls.__qualname__}"


def _resolve_actor_class(path: str, where: str) -> type[Actor]:
    module_name, _, qualname = path.partition(":")
    if not qualname or not (module_name == "agents" or module_name.startswith("agents.")) or "." in qualname:
        raise BundleError(f"{where}: actor class {path!r} is not allowed; bundles may only name Actor classes under agents.*")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BundleError(f"{where}: cannot import {module_name!r} ({exc}); is this ristwin version too old?") from None
    cls = getattr(module, qualname, None)
    if not (isinstance(cls, type) and issubclass(cls, Actor)):
        raise BundleError(f"{where}: {path!r} is not an agents.base.Actor subclass")
    return cls


# --------------------------------------------------------------------------- export

def export_bundle(
    path: str | os.PathLike,
    algorithm_name: str,
    scenario_name: str,
    scenario_cfg: Any,
    actors: Mapping[str, Actor],
    role_of: Mapping[str, str],
    obs_specs: Mapping[str, Any],
    action_specs: Mapping[str, Any],
) -> Path:
    """Write a bundle atomically (temp directory, then rename) and return its path.

    ``obs_specs`` / ``action_specs`` map agent id -> Gymnasium space (or JSON spec); all
    agents served by one role must share their specs.
    """
    path = Path(path)
    roles: dict[str, dict[str, Any]] = {}
    for role, actor in actors.items():
        if not _ROLE_RE.match(role):
            raise BundleError(f"role {role!r}: use letters, digits, '_', '-', '.' (it names a file)")
        if not isinstance(actor, Actor):
            raise BundleError(f"role {role}: {type(actor).__name__} is not an agents.base.Actor")
        cls_path = _class_path(actor)
        _resolve_actor_class(cls_path, f"role {role}")
        agent_ids = sorted(a for a, r in role_of.items() if r == role)
        if not agent_ids:
            raise BundleError(f"role {role}: no agent id maps to it in role_of")
        specs = []
        for a in agent_ids:
            if a not in obs_specs or a not in action_specs:
                raise BundleError(f"agent {a}: missing from obs_specs/action_specs")
            specs.append((space_spec(obs_specs[a]), space_spec(action_specs[a])))
        if any(s != specs[0] for s in specs[1:]):
            raise BundleError(f"role {role}: agents {agent_ids} have different observation/action specs")
        roles[role] = {
            "actor_class": cls_path,
            "arch_kwargs": to_jsonable(actor.arch_kwargs()),
            "agent_ids": agent_ids,
            "observation_spec": specs[0][0],
            "action_spec": specs[0][1],
            "weights": f"{role}.pt",
        }
    unserved = sorted(set(role_of.values()) - set(actors))
    if unserved:
        raise BundleError(f"role_of: roles {unserved} have no actor")

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~UMASK)  # mkdtemp gives 0700; a bundle is meant to be shared
        for role, actor in actors.items():
            state = {k: v.detach().cpu().clone() for k, v in actor.state_dict().items()}
            weights = tmp / roles[role]["weights"]
            torch.save(state, weights)
            roles[role]["sha256"] = _sha256(weights)
            roles[role]["runtime"] = _export_runtime(tmp, role, actor, roles[role])
        manifest = {
            "format_version": FORMAT_VERSION,
            "algorithm": algorithm_name,
            "scenario": {"name": scenario_name, "config": to_jsonable(scenario_cfg)},
            "versions": {"ristwin": RISTWIN_VERSION, "torch": torch.__version__.split("+")[0]},
            "roles": roles,
        }
        manifest["content_hash"] = _content_hash(manifest)
        with open(tmp / MANIFEST, "w") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        # Swap in: an existing bundle is moved aside first so readers never see a half bundle.
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


# --------------------------------------------------------------------------- numpy runtime part

PROBE_BATCHES = 4      # probe calls per role at export (stateful actors carry state across them)
PROBE_BATCH = 32


def _probe_observations(spec: Mapping[str, Any], seed: int) -> list[np.ndarray]:
    """Observations spread over the spec's box (finite bounds) or around 0 with unit scale,
    plus zeros: what the graph is checked on before it is trusted."""
    d = obs_dim_of(spec)
    rng = np.random.default_rng(seed)
    low = np.broadcast_to(np.asarray(spec.get("low", -np.inf), dtype=np.float64), (d,))
    high = np.broadcast_to(np.asarray(spec.get("high", np.inf), dtype=np.float64), (d,))
    finite = np.isfinite(low) & np.isfinite(high)
    out = []
    for i in range(PROBE_BATCHES):
        x = rng.normal(0.0, 1.0 + i, (PROBE_BATCH, d))
        u = rng.random((PROBE_BATCH, d))
        x = np.where(finite, np.where(finite, low, 0) + u * np.where(finite, high - low, 0), x)
        x[0] = 0.0
        out.append(x.astype(np.float32))
    return out


def _agree(ref: Any, got: Any, where: str) -> str | None:
    """None when the numpy outputs equal the torch ones (discrete exactly, float to rounding)."""
    if isinstance(ref, Mapping):
        if not isinstance(got, Mapping) or set(got) != set(ref):
            return f"{where}: keys {sorted(got) if isinstance(got, Mapping) else type(got).__name__} != {sorted(ref)}"
        for k in ref:
            bad = _agree(ref[k], got[k], f"{where}.{k}")
            if bad:
                return bad
        return None
    r = ref.detach().cpu().numpy()
    g = np.asarray(got)
    if r.shape != g.shape or r.dtype != g.dtype:
        return f"{where}: numpy gives {g.dtype}{list(g.shape)}, torch {r.dtype}{list(r.shape)}"
    if r.dtype.kind in "biu":
        ok = np.array_equal(r, g)
    else:
        # float32 rounding through wide layers grows with the activations' size (it reached
        # 1.4e-4 on outputs in [-1, 1] with pre-activations ~1e3); a structural error is O(1)
        ok = np.allclose(r, g, rtol=1e-3, atol=1e-3 * max(1.0, float(np.abs(r).max(initial=0.0))))
    return None if ok else f"{where}: numpy and torch outputs differ on probe observations"


def _export_runtime(tmp: Path, role: str, actor: Actor, spec: dict[str, Any]) -> dict[str, Any]:
    """Write ``<role>.npz`` and return the manifest's runtime entry (or the torch fallback and why)."""
    from agents.runtime.describe import NotDescribable, describe
    from agents.runtime.graph import Program

    # Describe and check the actor as load_bundle rebuilds it (class + arch_kwargs + state_dict),
    # not the live object: buffers outside the state_dict come from arch_kwargs there.
    try:
        ref_actor = _resolve_actor_class(spec["actor_class"], f"role {role}")(**actor.arch_kwargs())
        ref_actor.load_state_dict(actor.state_dict(), strict=True)
    except Exception as exc:
        return {"backend": "torch", "reason": f"cannot rebuild the actor from the bundle ({exc})"}
    ref_actor.eval()
    try:
        graph, arrays = describe(ref_actor)
        graph = to_jsonable(graph)
        program = Program(graph, arrays)
    except NotDescribable as exc:
        return {"backend": "torch", "reason": str(exc)}
    except Exception as exc:  # a describer bug must not break export (training): keep torch, say why
        return {"backend": "torch", "reason": f"numpy description failed ({type(exc).__name__}: {exc})"}
    state: dict[str, np.ndarray] = {}
    for i, x in enumerate(_probe_observations(spec["observation_spec"], seed=_probe_seed(role))):
        with torch.inference_mode():
            ref = ref_actor(torch.from_numpy(x))
        if not state:
            state = program.init_state(x.shape[0])
        try:
            with np.errstate(all="ignore"):
                out = program.run(x, state)
        except Exception as exc:  # a graph that cannot run is a describer bug: keep torch, say why
            return {"backend": "torch", "reason": f"numpy graph failed on a probe ({type(exc).__name__}: {exc})"}
        got = out["action"] if set(out) == {"action"} and not isinstance(ref, Mapping) else out
        bad = _agree(ref, got, f"probe {i}")
        if bad:
            return {"backend": "torch", "reason": bad}
    apath = tmp / f"{role}.npz"
    with open(apath, "wb") as f:
        np.savez(f, **arrays)
    return {"backend": "numpy", "arrays": apath.name, "sha256": _sha256(apath), "graph": graph}


def _probe_seed(role: str) -> int:
    return zlib.crc32(role.encode())


# --------------------------------------------------------------------------- load

def reset_actor(actor: Actor) -> None:
    """Call the actor's optional ``reset_state()`` (per-episode memory, e.g. MAQ's last resolution)."""
    reset = getattr(actor, "reset_state", None)
    if callable(reset):
        reset()


class Bundle(ManifestView):
    """A loaded bundle: one eval-mode actor per role, decisions for any served agent id."""

    def __init__(self, path: Path, manifest: dict[str, Any], actors: dict[str, Actor]) -> None:
        super().__init__(path, manifest)
        self._actors = actors

    def actor_for(self, agent_id: str) -> Actor:
        return self._actors[self.role_of(agent_id)]

    def reset_state(self) -> None:
        """Start a new episode: actors that keep per-episode state (``reset_state()``) forget it."""
        for actor in self._actors.values():
            reset_actor(actor)

    def act(self, obs: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        """Batched actions for every agent in ``obs`` (agent id -> (B, obs_dim))."""
        with torch.inference_mode():
            return {a: self.actor_for(a)(o) for a, o in obs.items()}

    def decide(self, agent_id: str, obs: np.ndarray) -> dict[str, np.ndarray]:
        """One agent's action for one local observation (obs_dim,), as numpy arrays (B=1 squeezed)."""
        actor = self.actor_for(agent_id)
        x = np.asarray(obs, dtype=np.float32)
        if x.shape != (self._obs_dim[agent_id],):
            raise BundleError(f"decide({agent_id}): observation has shape {x.shape}, the bundle expects ({self._obs_dim[agent_id]},)")
        if not np.isfinite(x).all():
            raise BundleError(f"decide({agent_id}): observation contains NaN or inf")
        with torch.inference_mode():
            out = actor(torch.from_numpy(x).unsqueeze(0))
        if isinstance(out, torch.Tensor):
            return {"action": out[0].numpy()}
        return {k: v[0].numpy() for k, v in out.items()}

    def check_env(self, env: Any, scenario_name: str | None = None) -> None:
        """Raise BundleError unless ``env``'s agents and spaces are the ones this bundle was trained on."""
        if scenario_name is not None and scenario_name != self.scenario_name:
            raise BundleError(f"{MANIFEST}: scenario.name is {self.scenario_name!r}, the environment is {scenario_name!r}")
        missing = sorted(set(env.agent_ids) - set(self._role_of))
        if missing:
            raise BundleError(f"{MANIFEST}: roles: no actor for agent ids {missing} of the environment")
        for a in env.agent_ids:
            spec = self.manifest["roles"][self._role_of[a]]
            for field, space in (("observation_spec", env.observation_spaces[a]), ("action_spec", env.action_spaces[a])):
                if space_spec(space) != spec[field]:
                    raise BundleError(
                        f"{MANIFEST}: roles.{self._role_of[a]}.{field} does not match the environment for agent "
                        f"{a}: bundle {spec[field]} vs environment {space_spec(space)}"
                    )


def load_bundle(path: str | os.PathLike, env: Any = None, scenario_name: str | None = None,
                backend: str = "torch") -> Any:
    """Load and verify a bundle (hashes, classes, weights, shapes); optionally check it fits ``env``.

    backend "torch" (default): a ``Bundle`` of torch actors. backend "numpy": an
    ``agents.runtime.RuntimeBundle`` (same verification and decide/act/reset_state surface;
    call ``agents.runtime.load_runtime`` directly to avoid importing torch at all).
    """
    if backend not in ("torch", "numpy"):
        raise BundleError(f"backend: {backend!r} is unknown; use 'torch' or 'numpy'")
    path = Path(path)
    mpath = path / MANIFEST
    if backend == "numpy":
        from agents.runtime import load_runtime

        rt = load_runtime(path)
        if env is not None:
            Bundle.check_env(rt, env, scenario_name)  # type: ignore[arg-type]  (same fields)
        elif scenario_name is not None and scenario_name != rt.scenario_name:
            raise BundleError(f"{mpath}: scenario.name is {rt.scenario_name!r}, expected {scenario_name!r}")
        return rt
    manifest = mf.read_manifest(path)

    actors: dict[str, Actor] = {}
    for role, spec in manifest["roles"].items():
        where = f"{mpath}: roles.{role}"
        wpath = mf.check_file(path, spec["weights"], spec["sha256"], "weights")
        rt = spec.get("runtime")
        if rt is not None and rt["backend"] == "numpy":   # the numpy part must be intact too
            mf.check_file(path, rt["arrays"], rt["sha256"], "numpy weights")
        cls = _resolve_actor_class(spec["actor_class"], f"{where}.actor_class")
        try:
            actor = cls(**spec["arch_kwargs"])
        except Exception as exc:  # a manifest from another version; say which field
            raise BundleError(f"{where}.arch_kwargs: cannot build {spec['actor_class']} ({exc})") from None
        try:
            state = torch.load(wpath, map_location="cpu", weights_only=True)
            actor.load_state_dict(state, strict=True)
        except Exception as exc:
            raise BundleError(f"{wpath}: cannot load the weights into {spec['actor_class']} ({str(exc).splitlines()[0]})") from None
        actor.eval()
        for p in actor.parameters():
            p.requires_grad_(False)
        obs_dim = obs_dim_of(spec["observation_spec"])
        try:
            # Probe a copy: an actor may keep per-episode state (e.g. its last resolution)
            # that the probe must not leave behind.
            with torch.inference_mode():
                out = copy.deepcopy(actor)(torch.zeros(1, obs_dim))
        except Exception as exc:
            raise BundleError(f"{where}.observation_spec: the actor rejects a ({obs_dim},) observation ({str(exc).splitlines()[0]})") from None
        mf.check_action(out, spec["action_spec"], f"{where}.action_spec")
        actors[role] = actor

    bundle = Bundle(path, manifest, actors)
    if env is not None or scenario_name is not None:
        if env is not None:
            bundle.check_env(env, scenario_name)
        elif scenario_name != bundle.scenario_name:
            raise BundleError(f"{mpath}: scenario.name is {bundle.scenario_name!r}, expected {scenario_name!r}")
    return bundle
