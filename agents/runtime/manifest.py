"""Reading and verifying a bundle manifest without torch (shared by agents.bundle and the
numpy runtime, so both refuse exactly the same corrupted, edited or mismatched bundles)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from twin.errors import BundleError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ROLE_FIELDS = ("actor_class", "arch_kwargs", "agent_ids", "observation_spec", "action_spec", "weights", "sha256")


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def content_hash(manifest: Mapping[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "content_hash"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def obs_dim_of(spec: Mapping[str, Any]) -> int:
    if spec.get("type") != "Box" or len(spec.get("shape", [])) != 1:
        raise BundleError(f"observation spec: expected a 1-D Box, got {spec}")
    return int(spec["shape"][0])


class ManifestView:
    """What a verified manifest says about its agents, shared by the torch bundle
    (agents.bundle.Bundle) and the numpy runtime (agents.runtime.RuntimeBundle)."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self._role_of = {a: role for role, spec in manifest["roles"].items() for a in spec["agent_ids"]}
        self._obs_dim = {a: obs_dim_of(manifest["roles"][r]["observation_spec"]) for a, r in self._role_of.items()}

    roles = property(lambda self: tuple(self.manifest["roles"]))
    agent_ids = property(lambda self: tuple(sorted(self._role_of)))
    algorithm = property(lambda self: self.manifest["algorithm"])
    scenario_name = property(lambda self: self.manifest["scenario"]["name"])
    scenario_config = property(lambda self: self.manifest["scenario"]["config"])
    content_hash = property(lambda self: self.manifest["content_hash"])

    def role_of(self, agent_id: str) -> str:
        try:
            return self._role_of[agent_id]
        except KeyError:
            raise BundleError(f"agent_id: {agent_id!r} is not served by this bundle; it serves {list(self.agent_ids)}") from None

    def obs_dim(self, agent_id: str) -> int:
        self.role_of(agent_id)
        return self._obs_dim[agent_id]


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of bundle directory ``path``, with its format, fields and content hash checked."""
    mpath = path / MANIFEST
    if not path.is_dir():
        raise BundleError(f"{path}: not a bundle directory")
    if not mpath.is_file():
        raise BundleError(f"{mpath}: missing; is {path} a bundle (RUN/bundle)?")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{mpath}: not valid JSON ({exc}); the manifest is truncated or corrupted") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{mpath}: expected a JSON object")
    for key in ("format_version", "algorithm", "scenario", "versions", "roles", "content_hash"):
        if key not in manifest:
            raise BundleError(f"{mpath}: field {key!r} is missing")
    if manifest["format_version"] != FORMAT_VERSION:
        raise BundleError(f"{mpath}: format_version {manifest['format_version']!r} is unsupported (this ristwin reads {FORMAT_VERSION})")
    if content_hash(manifest) != manifest["content_hash"]:
        raise BundleError(f"{mpath}: content_hash does not match the manifest; it was edited or corrupted")
    if not isinstance(manifest["roles"], dict) or not manifest["roles"]:
        raise BundleError(f"{mpath}: roles must be a non-empty object")
    for role, spec in manifest["roles"].items():
        where = f"{mpath}: roles.{role}"
        if not isinstance(spec, dict):
            raise BundleError(f"{where} must be an object")
        for key in ROLE_FIELDS:
            if key not in spec:
                raise BundleError(f"{where}.{key} is missing")
        if spec["weights"] != f"{role}.pt":
            raise BundleError(f"{where}.weights must be {role}.pt, got {spec['weights']!r}")
        rt = spec.get("runtime")
        if rt is not None:
            if not isinstance(rt, dict) or rt.get("backend") not in ("numpy", "torch"):
                raise BundleError(f"{where}.runtime.backend must be 'numpy' or 'torch'")
            if rt["backend"] == "numpy":
                for key in ("arrays", "sha256", "graph"):
                    if key not in rt:
                        raise BundleError(f"{where}.runtime.{key} is missing")
                if rt["arrays"] != f"{role}.npz":
                    raise BundleError(f"{where}.runtime.arrays must be {role}.npz, got {rt['arrays']!r}")
    return manifest


def check_file(path: Path, name: str, sha: str, what: str) -> Path:
    """``path/name`` exists and has sha256 ``sha`` (else BundleError naming the file)."""
    fpath = path / name
    if not fpath.is_file():
        raise BundleError(f"{fpath}: {what} file missing")
    if sha256_file(fpath) != sha:
        raise BundleError(f"{fpath}: sha256 does not match the manifest; the {what} are truncated or tampered with")
    return fpath


def load_arrays(fpath: Path) -> dict[str, np.ndarray]:
    """A role's numpy archive (np.savez, read with allow_pickle=False)."""
    try:
        with np.load(fpath, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:
        raise BundleError(f"{fpath}: cannot read the numpy weights ({str(exc).splitlines()[0]})") from None


def check_action(out: Any, spec: Mapping[str, Any], where: str) -> None:
    """An actor's output for B observations has the action spec's keys and per-sample shapes
    (torch tensors or numpy arrays)."""
    if spec.get("type") == "Dict":
        if not isinstance(out, Mapping) or set(out) != set(spec["spaces"]):
            got = sorted(out) if isinstance(out, Mapping) else type(out).__name__
            raise BundleError(f"{where}: actor returns {got}, action spec has keys {sorted(spec['spaces'])}")
        for key, sub in spec["spaces"].items():
            check_action(out[key], sub, f"{where}.{key}")
        return
    if not hasattr(out, "shape") or isinstance(out, Mapping):
        raise BundleError(f"{where}: actor returns {type(out).__name__}, expected a tensor")
    kind = spec.get("type")
    if kind == "Box":
        shape = list(spec["shape"])
    elif kind == "MultiDiscrete":
        shape = list(np.asarray(spec["nvec"]).shape)
    elif kind == "Discrete":
        shape = []
    elif kind == "MultiBinary":
        shape = [spec["n"]] if isinstance(spec["n"], int) else list(spec["n"])
    else:
        return
    if list(out.shape[1:]) != shape:
        raise BundleError(f"{where}: actor output shape {list(out.shape[1:])} != action spec shape {shape}")
