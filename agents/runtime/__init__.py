"""Torch-free execution of exported actor bundles (what the agent daemons run).

    from agents.runtime import load_runtime
    rt = load_runtime("RUN/bundle")           # numpy + ristwin's twin.errors only; no torch
    rt.decide("irs0", obs)                    # obs (obs_dim,) float -> {"bits": array(3), "phase_idx": (N,), "on": (N,)}
    rt.act({"irs0": obs_batch})               # batched: agent id -> (B, obs_dim) -> dict of (B, ...) arrays
    rt.reset_state()                          # new episode (MAQ's remembered resolution)

``load_runtime(path, allow_torch=True) -> RuntimeBundle`` verifies the bundle exactly as
``agents.bundle.load_bundle`` does (manifest fields, content hash, sha256 of every file it
lists, action shapes on a probe observation) and raises ``twin.errors.BundleError`` naming
the file and field. ``RuntimeBundle`` has the ``agents.bundle.Bundle`` surface the daemons
use: ``path``, ``manifest``, ``roles``, ``agent_ids``, ``algorithm``, ``scenario_name``,
``scenario_config``, ``content_hash``, ``role_of(agent_id)``, ``obs_dim(agent_id)``,
``decide(agent_id, obs)``, ``act(obs)``, ``reset_state()``, plus ``backend(role)`` ->
"numpy" or "torch".

Each role of a bundle written by this ristwin carries, next to ``<role>.pt``, its weights as
``<role>.npz`` (np.savez; read with allow_pickle=False) and a declarative inference graph in
the manifest (``roles.<role>.runtime``; format in ``agents.runtime.graph``), both covered by
the content hash. Roles without one — bundles from before the runtime, or actors with no
numpy description (``runtime.backend == "torch"`` with a ``reason``) — are served by the
torch actor, imported on first need; ``allow_torch=False`` refuses them instead. Actions
equal the torch actor's: exactly for discrete outputs (up to float ties, docs/MODELS.md),
to float32 rounding for continuous ones.

Run daemons with ``OPENBLAS_NUM_THREADS=1`` in their environment (it must be set before numpy
is imported): MAQ-WP's Q_low over k = 50 candidates is above OpenBLAS's threading threshold,
and a second BLAS thread costs more than it saves at these sizes and escapes core pinning.

The package must not import torch at module level (tests check it in a subprocess);
``agents.runtime.describe`` (export side) is the one module that does.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from agents.runtime.graph import Program
from agents.runtime.manifest import (
    MANIFEST,
    ManifestView,
    check_action,
    check_file,
    load_arrays,
    obs_dim_of,
    read_manifest,
)
from twin.errors import BundleError

__all__ = ["RuntimeBundle", "load_runtime"]

_LIST_SUM_MAX = 64      # observations up to this length are NaN / inf checked with a Python sum


class _NumpyRole:
    """One role's compiled graph and its per-episode state (batch-shaped, like the torch actor's)."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.state: dict[str, np.ndarray] = {}
        self._batch = -1            # the batch size self.state is shaped for (-1: none yet)

    def reset(self) -> None:
        self.state = {}
        self._batch = -1

    def __call__(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        B = obs.shape[0]
        if B != self._batch and self.program.state_spec:
            self.state = self.program.init_state(B)
            self._batch = B
        return self.program.run(obs, self.state)

    def decide(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """One checked observation (obs_dim,) float32 -> outputs with B = 1 squeezed."""
        one = self.program.decide_one
        if one is None:
            out = self(x.reshape(1, x.shape[0]))
            return {k: v[0, ...] for k, v in out.items()}
        if self._batch != 1 and self.program.state_spec:     # as __call__: state shaped for B = 1
            self.state = self.program.init_state(1)
            self._batch = 1
        return one(x, self.state)


class RuntimeBundle(ManifestView):
    """A verified bundle served by numpy (torch only for roles that need it); see the module docstring."""

    def __init__(self, path: Path, manifest: dict[str, Any], numpy_roles: dict[str, _NumpyRole],
                 torch_bundle: Any = None) -> None:
        super().__init__(path, manifest)
        self._numpy = numpy_roles
        self._torch = torch_bundle
        # decide()'s per-agent lookups done once: agent id -> (the numpy role's decide, (obs_dim,),
        # whether the NaN / inf check sums a Python list: ~0.2 us instead of numpy's ~1.1 us for a
        # short observation, ~25 ns more per entry)
        self._decide_of = {a: (numpy_roles[r].decide, (self._obs_dim[a],), self._obs_dim[a] <= _LIST_SUM_MAX)
                           for a, r in self._role_of.items() if r in numpy_roles}

    def backend(self, role: str) -> str:
        if role not in self.manifest["roles"]:
            raise BundleError(f"role: {role!r} is not in this bundle; roles are {list(self.roles)}")
        return "numpy" if role in self._numpy else "torch"

    def reset_state(self) -> None:
        for r in self._numpy.values():
            r.reset()
        if self._torch is not None:
            self._torch.reset_state()

    def act(self, obs: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Batched actions (numpy) for every agent in ``obs`` (agent id -> (B, obs_dim)): a dict
        of arrays, or one array for actors with a single output (as ``Bundle.act``)."""
        out: dict[str, Any] = {}
        for a, o in obs.items():
            role = self.role_of(a)
            x = np.ascontiguousarray(np.asarray(o, dtype=np.float32))
            if role in self._numpy:       # as Bundle.act: an array for single-output actors
                out[a] = _action_dict(self._numpy[role](x))
            else:
                import torch

                with torch.inference_mode():
                    res = self._torch.actor_for(a)(torch.from_numpy(x))
                out[a] = {k: v.numpy() for k, v in res.items()} if isinstance(res, dict) else res.numpy()
        return out

    def decide(self, agent_id: str, obs: np.ndarray) -> dict[str, np.ndarray]:
        """One agent's action for one local observation (obs_dim,), as numpy arrays (B=1 squeezed)."""
        entry = self._decide_of.get(agent_id)
        if entry is None:
            self.role_of(agent_id)                              # raises for an agent the bundle does not serve
            return self._torch.decide(agent_id, obs)
        decide, shape, short = entry
        x = np.asarray(obs, dtype=np.float32)
        if x.shape != shape:
            raise BundleError(f"decide({agent_id}): observation has shape {x.shape}, the bundle expects ({shape[0]},)")
        # NaN or inf anywhere: the float64 sum of float32 values cannot overflow, so it is finite
        # exactly when every entry is (tolist gives the exact float64 values)
        if not math.isfinite(sum(x.tolist()) if short else x.sum(dtype=np.float64)):
            raise BundleError(f"decide({agent_id}): observation contains NaN or inf")
        return decide(x)


def _action_dict(out: dict[str, np.ndarray]) -> Any:
    return out["action"] if set(out) == {"action"} else out


def load_runtime(path: str | os.PathLike, allow_torch: bool = True) -> RuntimeBundle:
    """Load and verify a bundle for numpy execution (see the module docstring)."""
    path = Path(path)
    manifest = read_manifest(path)
    mpath = path / MANIFEST
    numpy_roles: dict[str, _NumpyRole] = {}
    torch_roles: list[str] = []
    for role, spec in manifest["roles"].items():
        where = f"{mpath}: roles.{role}"
        check_file(path, spec["weights"], spec["sha256"], "weights")
        rt = spec.get("runtime")
        if rt is None or rt["backend"] != "numpy":
            torch_roles.append(role)
            continue
        apath = check_file(path, rt["arrays"], rt["sha256"], "numpy weights")
        arrays = load_arrays(apath)
        try:
            program = Program(rt["graph"], arrays)
        except (ValueError, KeyError, TypeError) as exc:
            raise BundleError(f"{where}.runtime.graph: {exc}") from None
        obs_dim = obs_dim_of(spec["observation_spec"])
        probe = _NumpyRole(program)
        try:
            with np.errstate(all="ignore"):
                out = probe(np.zeros((1, obs_dim), dtype=np.float32))
        except Exception as exc:
            raise BundleError(f"{where}.runtime.graph: the graph rejects a ({obs_dim},) observation "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
        check_action(_action_dict(out), spec["action_spec"], f"{where}.action_spec")
        numpy_roles[role] = _NumpyRole(program)
    torch_bundle = None
    if torch_roles:
        if not allow_torch:
            reasons = {r: (manifest["roles"][r].get("runtime") or {}).get("reason", "bundle predates the numpy runtime")
                       for r in torch_roles}
            raise BundleError(f"{mpath}: roles {torch_roles} need torch ({reasons}); load with allow_torch=True "
                              "or re-export the bundle with this ristwin")
        from agents.bundle import load_bundle   # imports torch: only for roles that need it

        torch_bundle = load_bundle(path)
    return RuntimeBundle(path, manifest, numpy_roles, torch_bundle)
