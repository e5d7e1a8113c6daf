"""Channel snapshots: one explicit single-cell (P1 model) scene in a .npz file.

This is the "bring your own channels" format (docs/SNAPSHOT.md, DESIGN.md "Contracts"):
users import measured or ray-traced channels by writing these keys with numpy.

  H_BR   complex (L, N, M)  BS -> surface l
  h_RU   complex (L, K, N)  surface l -> user k, used as h_RU[l,k]^H Phi_l H_BR[l]
  h_BU   complex (K, M)     BS -> user k, used as h_BU[k]^H
  V      complex (M, K)     column k is the beamformer v_k (sqrt(W) units)
  theta  float   (L, N)     phases in radians
  on     0/1     (L, N)     ON/OFF mask
  noise_w float  ()         noise power sigma^2 in W
  bits   int     (L,)       optional: per-surface resolution; phases are rounded to the
                            nearest point of the b-bit grid and irs_power_w is reported
  info   str     ()         optional: free-form JSON provenance (ignored by evaluation)

Evaluation runs in complex128 with twin/signal.py.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile

import numpy as np
import torch

from twin import signal, surfaces
from twin.errors import ConfigError, SnapshotError
from twin.surface_config import MAX_PHASE_BITS

REQUIRED = ("H_BR", "h_RU", "h_BU", "V", "theta", "on", "noise_w")
OPTIONAL = ("bits", "info")
SHAPES = {  # symbolic shapes for messages
    "H_BR": "(L, N, M)", "h_RU": "(L, K, N)", "h_BU": "(K, M)", "V": "(M, K)",
    "theta": "(L, N)", "on": "(L, N)", "noise_w": "() scalar", "bits": "(L,)", "info": "() string",
}


def _fail(key: str, what: str) -> SnapshotError:
    return SnapshotError(f"{key}: {what} (expected {SHAPES.get(key, '?')}; see docs/SNAPSHOT.md)")


def _numeric(key: str, arr: np.ndarray, complex_ok: bool) -> np.ndarray:
    kinds = "biufc" if complex_ok else "biuf"
    if arr.dtype.kind not in kinds or arr.dtype.kind == "b" and key != "on":
        want = "a complex or real number array" if complex_ok else "a real number array"
        raise _fail(key, f"must be {want}, got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise _fail(key, "contains NaN or inf")
    return arr


def _shape(key: str, arr: np.ndarray, expected: tuple, names: str) -> None:
    if arr.shape != expected:
        raise _fail(key, f"wrong shape {arr.shape}; with {names} it must be {expected}")


def validate_snapshot(data: dict) -> dict:
    """Check every key of a snapshot mapping; return clean numpy arrays.

    Raises SnapshotError naming the key and the expected shape on a missing key, unknown key,
    wrong shape or dtype, NaN/inf, non-positive noise, ON values other than 0/1, or an
    unsupported resolution.
    """
    for key in REQUIRED:
        if key not in data:
            raise _fail(key, "missing from the snapshot")
    unknown = sorted(set(data) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise SnapshotError(f"{unknown[0]}: unknown snapshot key; known keys: {', '.join(REQUIRED + OPTIONAL)}")
    arrs = {k: np.asarray(data[k]) for k in data}

    H_BR = _numeric("H_BR", arrs["H_BR"], True)
    if H_BR.ndim != 3 or min(H_BR.shape) < 1:
        raise _fail("H_BR", f"must be 3-D with non-empty axes, got shape {H_BR.shape}")
    L, N, M = H_BR.shape
    h_BU = _numeric("h_BU", arrs["h_BU"], True)
    if h_BU.ndim != 2 or h_BU.shape[0] < 1:
        raise _fail("h_BU", f"must be 2-D with K >= 1 users, got shape {h_BU.shape}")
    K = h_BU.shape[0]
    names = f"L={L}, N={N}, M={M}, K={K}"
    _shape("h_BU", h_BU, (K, M), names)
    h_RU = _numeric("h_RU", arrs["h_RU"], True)
    _shape("h_RU", h_RU, (L, K, N), names)
    V = _numeric("V", arrs["V"], True)
    _shape("V", V, (M, K), names)
    theta = _numeric("theta", arrs["theta"], False)
    _shape("theta", theta, (L, N), names)
    on = _numeric("on", arrs["on"], False)
    _shape("on", on, (L, N), names)
    if not np.all((on == 0) | (on == 1)):
        raise _fail("on", "values must be 0 or 1")
    noise = _numeric("noise_w", arrs["noise_w"], False)
    if noise.size != 1 or noise.ndim > 1:
        raise _fail("noise_w", f"must be a single number, got shape {noise.shape}")
    noise_w = float(noise.reshape(()))
    if noise_w <= 0:
        raise _fail("noise_w", f"noise power must be > 0 W, got {noise_w}")
    out = {"H_BR": H_BR.astype(np.complex128), "h_RU": h_RU.astype(np.complex128),
           "h_BU": h_BU.astype(np.complex128), "V": V.astype(np.complex128),
           "theta": theta.astype(np.float64), "on": on.astype(bool), "noise_w": noise_w}
    if "bits" in arrs:
        bits = arrs["bits"]
        if bits.dtype.kind not in "iu":
            raise _fail("bits", f"must be integers, got dtype {bits.dtype}")
        _shape("bits", bits, (L,), names)
        if bits.min() < 1 or bits.max() > MAX_PHASE_BITS:
            raise _fail("bits", f"unsupported resolution {sorted(set(bits.tolist()))}; use integers in 1..{MAX_PHASE_BITS}")
        out["bits"] = bits.astype(np.int64)
    if "info" in arrs:
        info = arrs["info"]
        if info.dtype.kind != "U" or info.ndim != 0:
            raise _fail("info", f"must be a 0-d string, got dtype {info.dtype} shape {info.shape}")
        out["info"] = str(info)
    return out


def save_snapshot(path, **arrays) -> None:
    """Validate and write a snapshot atomically (temp file in the same directory + os.replace)."""
    clean = validate_snapshot(arrays)
    payload = {k: (np.asarray(v) if k != "info" else np.asarray(str(v))) for k, v in clean.items()}
    payload["on"] = payload["on"].astype(np.uint8)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise SnapshotError(f"out: directory {directory} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".snapshot-", suffix=".npz.tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **payload)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_snapshot(path) -> dict:
    """Read and validate a snapshot; any unreadable or corrupt file becomes SnapshotError."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SnapshotError(f"snapshot: file {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise SnapshotError(f"snapshot: {path} is not a .npz (zip) archive; write it with numpy.savez (docs/SNAPSHOT.md)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise SnapshotError(f"snapshot: {path} is not a readable .npz file ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # zlib.error and friends from a truncated member
        raise SnapshotError(f"snapshot: {path} is corrupt ({type(exc).__name__}: {exc})") from None
    return validate_snapshot(data)


def evaluate_snapshot(snap: dict, scenario=None) -> dict:
    """Signal metrics of one snapshot in complex128 (P1 eqs. 1, 4, 5, 7).

    Returns sinr (K), rate_bps_hz (K), sum_rate_bps_hz, tx_power_w (sum_k ||v_k||^2),
    tx_power_per_user_w (K), and when ``bits`` is present irs_power_w (L) from the element
    power table of ``scenario`` (default: the p1 preset) plus the applied (rounded) phases.
    """
    from twin.scenarios import get_scenario

    snap = validate_snapshot(snap)
    t = {k: torch.as_tensor(v).unsqueeze(0) for k, v in snap.items() if k not in ("noise_w", "info")}
    theta = t["theta"]
    out = {}
    if "bits" in t:
        scn = scenario if scenario is not None else get_scenario("p1")
        try:
            mu = [scn.element_power_w(int(b)) for b in snap["bits"]]
        except ConfigError as exc:
            raise SnapshotError(str(exc)) from None
        theta = surfaces.quantize(theta, t["bits"])  # round to the nearest b-bit grid point (eq. 6)
        out["irs_power_w"] = (snap["on"].sum(-1) * np.asarray(mu)).tolist()  # eq. 7
        out["theta_applied"] = theta[0].tolist()
    phi = torch.polar(t["on"].to(torch.float64), theta)
    G = signal.effective_channel(t["H_BR"], t["h_RU"], t["h_BU"], phi)
    gamma = signal.sinr(G, t["V"], snap["noise_w"])
    rate = signal.rate_bps_hz(gamma)
    p = signal.tx_power_w(t["V"])
    out.update(
        sinr=gamma[0].tolist(),
        rate_bps_hz=rate[0].tolist(),
        sum_rate_bps_hz=float(rate.sum()),
        tx_power_w=float(p.sum()),
        tx_power_per_user_w=p[0].tolist(),
    )
    return out


def info_json(**fields) -> str:
    return json.dumps(fields, sort_keys=True)


def aligned_phases(H_BR: torch.Tensor, h_RU: torch.Tensor, h_BU: torch.Tensor, user_pos: torch.Tensor,
                   irs_pos: torch.Tensor) -> torch.Tensor:
    """Per-IRS phase alignment toward its nearest user (a simple, reasonable default).

    For IRS l and its nearest user k, with w0 = h_BU[k] / ||h_BU[k]|| (MRT on the direct link),
    theta_l,n = arg h_RU[l,k,n] - arg (H_BR[l] w0)_n + arg(h_BU[k]^H w0): every reflected path
    then adds in phase with the direct one for user k. Shapes as in twin/signal.py; (B, L, N).
    """
    d = torch.linalg.vector_norm(irs_pos.unsqueeze(-2) - user_pos.unsqueeze(-3), dim=-1)  # (B, L, K)
    k = d.argmin(-1)  # (B, L)
    B, L, K, N = h_RU.shape
    h_k = torch.gather(h_RU, 2, k[..., None, None].expand(B, L, 1, N))[:, :, 0]  # (B, L, N)
    hbu_k = torch.gather(h_BU.unsqueeze(1).expand(B, L, K, -1), 2,
                         k[..., None, None].expand(B, L, 1, h_BU.shape[-1]))[:, :, 0]  # (B, L, M)
    w0 = hbu_k / torch.linalg.vector_norm(hbu_k, dim=-1, keepdim=True).clamp_min(1e-30)
    incident = torch.einsum("blnm,blm->bln", H_BR, w0)
    direct = (hbu_k.conj() * w0).sum(-1, keepdim=True)
    return torch.angle(h_k) - torch.angle(incident) + torch.angle(direct)


def mrt_beamformers(G: torch.Tensor, p_max_w: float) -> torch.Tensor:
    """MRT: v_k = sqrt(P_max / K) g_k / ||g_k||, so sum_k ||v_k||^2 = P_max. G (B, K, M) -> V (B, M, K)."""
    K = G.shape[-2]
    dirs = G.conj() / torch.linalg.vector_norm(G, dim=-1, keepdim=True).clamp_min(1e-30)
    return (dirs * (p_max_w / K) ** 0.5).transpose(-1, -2)


def sample_p1_snapshot(scn, seed: int, bits: int | None = None) -> dict:
    """One P1 scene from ``seed`` as a snapshot dict: phases aligned per IRS (rounded to
    ``bits`` if given), all elements ON, MRT beamformers at P_max on the resulting channel."""
    from twin.scene import sample_p1

    gen = torch.Generator().manual_seed(int(seed))
    scene = sample_p1(scn, 1, gen, dtype=torch.complex128)
    theta = aligned_phases(scene.H_BR, scene.h_RU, scene.h_BU, scene.user_pos, scene.irs_pos)
    on = torch.ones_like(theta, dtype=torch.bool)
    bits_t = None
    if bits is not None:
        if int(bits) not in scn.power_table_bits:
            raise ConfigError(f"bits: resolution {bits} has no element power in the {scn.name} preset "
                              f"(known: {', '.join(map(str, scn.power_table_bits))})")
        bits_t = torch.full(theta.shape[:2], int(bits), dtype=torch.long)
        theta = surfaces.quantize(theta, bits_t)
    theta = torch.remainder(theta, 2 * np.pi)
    phi = torch.polar(on.to(torch.float64), theta)
    G = signal.effective_channel(scene.H_BR, scene.h_RU, scene.h_BU, phi)
    V = mrt_beamformers(G, scn.p_max_w)
    snap = {
        "H_BR": scene.H_BR[0].numpy(), "h_RU": scene.h_RU[0].numpy(), "h_BU": scene.h_BU[0].numpy(),
        "V": V[0].numpy(), "theta": theta[0].numpy(), "on": on[0].numpy().astype(np.uint8),
        "noise_w": np.float64(scn.noise_w),
    }
    if bits_t is not None:
        snap["bits"] = bits_t[0].numpy()
    return snap
