"""Fused C kernels of the P1 evaluation, built lazily with the system C compiler.

Why C and not torch: at B = 1024 the P1 evaluation is ~400 complex multiply-adds per
environment, but torch eager spends ~1.1 ms on ~50 ops each streaming the batch through memory
(docs/BENCHMARKS.md, "Twin throughput"; torch.compile was slower). One pass per environment
in C does the same arithmetic in ~0.3 ms on one core (SSE2 only: no gain from AVX here).

How: ``p1_eval.c`` (+ ``p1_eval_impl.h``) is compiled on first use with ``$CC`` / ``cc``
(``-O3 -fPIC -shared``) into a per-user cache directory (``$RISTWIN_CACHE_DIR``, else
``$XDG_CACHE_HOME/ristwin``, else ``~/.cache/ristwin``), named by a hash of the sources, the
flags and the compiler's version, written atomically (temp file + ``os.replace``) next to a
sha256 of the library that is checked before every load (a corrupted or foreign file is
rebuilt). ctypes calls it on the tensors' ``data_ptr()``: no torch C++ headers, no new Python
dependency. No compiler, a failed build or ``RISTWIN_FUSED=0``: every function here returns
None after one logged warning (none for the switch), and twin/signal.py runs its torch path.

Only the cases the kernels cover are taken (CPU, complex64 / complex128, no autograd, one
leading batch axis, batch either full or broadcast); :func:`p1_eval` returns None otherwise.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

log = logging.getLogger(__name__)

ABI = 2  # must equal ristwin_p1_abi() in p1_eval.c
SOURCES = ("p1_eval.c", "p1_eval_impl.h")
# No -march=native: a cache directory on a shared home may serve other CPU models.
FLAGS = ("-O3", "-fPIC", "-shared", "-std=gnu99", "-fno-math-errno", "-pthread")
# The per-environment work arrays live on the C stack (~2 L N (M + K + 1) + 5 K M reals): a
# bound far above the presets (P1: ~450) and far below a thread's stack (256 KB in double).
MAX_WORK_REALS = 32768


def _fits(L: int, N: int, M: int, K: int) -> bool:
    return min(L, N, M, K) >= 1 and 2 * L * N * (M + K + 1) + 5 * K * M <= MAX_WORK_REALS


_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_failed = False  # a build or load failed in this process: stay on the torch path
_fns: dict = {}


def enabled() -> bool:
    """False when ``RISTWIN_FUSED`` is 0 / false / no / off (read on every call, so tests can flip it)."""
    return os.environ.get("RISTWIN_FUSED", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    if os.environ.get("RISTWIN_CACHE_DIR"):
        return Path(os.environ["RISTWIN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ristwin"


def _compiler() -> str | None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    return cc if cc and shutil.which(cc) else None


def library_path(cc: str) -> Path:
    """Cache file of the library for this source, these flags and this compiler."""
    h = hashlib.sha256()
    here = Path(__file__).parent
    for name in SOURCES:
        h.update(name.encode() + b"\0" + (here / name).read_bytes())
    h.update("\0".join(FLAGS).encode())
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = b""
    h.update(cc.encode() + b"\0" + version + os.uname().machine.encode())
    return cache_dir() / f"p1_eval-{h.hexdigest()[:16]}.so"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _build(cc: str, path: Path) -> None:
    """Compile into a temp file of the cache dir, then move it and its checksum into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    here = Path(__file__).parent
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".so.tmp")
    os.close(fd)
    try:
        proc = subprocess.run([cc, *FLAGS, str(here / "p1_eval.c"), "-o", tmp, "-lm"],
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"{cc} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
        digest = _sha256(Path(tmp))
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    _write_atomic(path.with_suffix(".so.sha256"), digest.encode())


def _open(path: Path) -> ctypes.CDLL | None:
    """The library at ``path`` if its checksum matches and it speaks this ABI, else None."""
    try:
        if _sha256(path) != path.with_suffix(".so.sha256").read_text().strip():
            return None
        lib = ctypes.CDLL(str(path))
        lib.ristwin_p1_abi.restype = ctypes.c_int
        return lib if lib.ristwin_p1_abi() == ABI else None
    except (OSError, AttributeError, ValueError):
        return None


def _declare(lib: ctypes.CDLL) -> None:
    i64, ptr, dbl = ctypes.c_int64, ctypes.c_void_p, ctypes.c_double
    for sfx in ("c64", "c128"):
        f = getattr(lib, f"p1_eval_{sfx}")
        f.restype = ctypes.c_int
        f.argtypes = [i64] * 5 + [ptr, i64] * 3 + [ptr, i64] * 2 + [ptr, i64] + [ptr, i64] + [ptr, i64, dbl, ptr, i64] + [ptr] * 3 + [i64]
        _fns["eval", sfx] = f
        f = getattr(lib, f"p1_cascade_{sfx}")
        f.restype = ctypes.c_int
        f.argtypes = [i64] * 5 + [ptr, i64] * 4 + [ptr]
        _fns["cascade", sfx] = f


def load() -> ctypes.CDLL | None:
    """The compiled library (built on first use), or None if it cannot be had (logged once)."""
    global _lib, _failed
    if _lib is not None or _failed:
        return _lib
    with _lock:
        if _lib is not None or _failed:
            return _lib
        cc = _compiler()
        try:
            if cc is None:
                raise RuntimeError("no C compiler found (set CC or install gcc)")
            path = library_path(cc)
            lib = _open(path) if path.exists() else None
            if lib is None:  # missing, corrupted, or another ABI: rebuild once
                _build(cc, path)
                lib = _open(path)
            if lib is None:
                raise RuntimeError(f"{path}: the freshly built library does not load")
            _declare(lib)
            _lib = lib
        except Exception as exc:  # any failure means: torch path, never a crash
            _failed = True
            log.warning("ristwin fused P1 kernel unavailable, using the torch path: %s", exc)
    return _lib


def reset() -> None:
    """Forget the loaded library and any failure (tests; the next call loads again)."""
    global _lib, _failed
    with _lock:
        _lib, _failed = None, False
        _fns.clear()


_SFX = {torch.complex64: "c64", torch.complex128: "c128"}


def _batched(x: torch.Tensor, B: int, ndim: int) -> tuple[torch.Tensor, int] | None:
    """(x with contiguous trailing dims, batch stride in elements) for a (B or 1, ...) input."""
    if x.ndim != ndim:
        return None
    n = x.shape[0]
    if n == B and not x.is_conj() and x.is_contiguous():  # the usual case, without a copy or a view
        return x, x.numel() // n
    if n not in (1, B):
        return None
    x = x.resolve_conj()
    if n == 1 or x.stride(0) == 0:
        return x[0].contiguous(), 0  # one environment shared by the whole batch
    x = x.contiguous()
    return x, x.numel() // n


def _usable(*tensors: torch.Tensor) -> bool:
    if not enabled():
        return False
    if any(t.device.type != "cpu" for t in tensors):
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return load() is not None


def p1_eval(H_BR, h_RU, h_BU, bits, phase_idx, on, V, noise_w, circle, fine_bits, power_table=None, threads=None):
    """Rates (B,K), per-stream transmit power (B,K), IRS power (B,L) or None, or None if not applicable.

    Semantics of twin.signal.p1_metrics' torch path; ``circle`` is the (2^fine_bits,) complex
    lookup of twin.surfaces.coefficients (so phi is the same number), ``power_table`` the
    float64 mu[b] table of twin.surfaces.power_table. ``threads``: how many threads may split
    the batch (default torch.get_num_threads(); slices of >= 128 environments).
    """
    dtype = H_BR.dtype
    sfx = _SFX.get(dtype)
    if sfx is None or h_RU.dtype != dtype or h_BU.dtype != dtype or V.dtype != dtype:
        return None
    if not isinstance(noise_w, (int, float)):
        if not (isinstance(noise_w, torch.Tensor) and noise_w.numel() == 1):
            return None
        noise_w = float(noise_w)
    if H_BR.ndim != 4 or h_RU.ndim != 4 or h_BU.ndim != 3 or V.ndim != 3 or bits.ndim != 2 or phase_idx.ndim != 3:
        return None
    L, N, M = H_BR.shape[1:]
    K = h_RU.shape[2]
    B = max(t.shape[0] for t in (H_BR, h_RU, h_BU, V, bits, phase_idx, on))
    if B == 0:
        return None
    if (h_RU.shape[1:] != (L, K, N) or h_BU.shape[1:] != (K, M) or V.shape[1:] != (M, K)
            or bits.shape[1:] != (L,) or phase_idx.shape[1:] != (L, N) or on.shape[1:] != (L, N)
            or not _fits(L, N, M, K)):
        return None
    if on.dtype != torch.bool or circle.numel() != 1 << fine_bits:
        return None  # a float / integer mask is an amplitude for the torch path (0.5 reflects half)
    if bits.dtype != torch.int64 or phase_idx.dtype != torch.int64:
        if bits.is_floating_point() or phase_idx.is_floating_point() or bits.is_complex() or phase_idx.is_complex():
            return None
        bits, phase_idx = bits.long(), phase_idx.long()
    if not _usable(H_BR, h_RU, h_BU, V, bits, phase_idx, on):
        return None
    args = [_batched(t, B, n) for t, n in ((H_BR, 4), (h_RU, 4), (h_BU, 3), (bits, 2), (phase_idx, 3), (on, 3), (V, 3))]
    if any(a is None for a in args):
        return None
    circle = circle.to(dtype).contiguous()
    real = torch.float32 if dtype == torch.complex64 else torch.float64
    rate = torch.empty(B, K, dtype=real)
    txp = torch.empty(B, K, dtype=real)
    irs, mu_ptr, n_mu = None, None, 0
    if power_table is not None:
        mu = power_table.to(torch.float64).contiguous()
        irs = torch.empty(B, L, dtype=torch.float64)
        mu_ptr, n_mu = mu.data_ptr(), mu.numel()
    flat = [v for t, s in args for v in (t.data_ptr(), s)]
    err = _fns["eval", sfx](B, L, N, M, K, *flat, circle.data_ptr(), fine_bits, noise_w, mu_ptr, n_mu,
                            rate.data_ptr(), txp.data_ptr(), None if irs is None else irs.data_ptr(),
                            torch.get_num_threads() if threads is None else threads)
    if err:
        return None  # bits outside the lookup tables: the torch path raises the proper error
    return rate, txp, irs


def p1_cascade(H_BR, h_RU, h_BU, phi):
    """Effective channel G (B,K,M) of P1 eq. 1, or None if not applicable (see module doc)."""
    dtype = H_BR.dtype
    sfx = _SFX.get(dtype)
    if sfx is None or h_RU.dtype != dtype or h_BU.dtype != dtype or phi.dtype != dtype:
        return None
    if H_BR.ndim != 4 or h_RU.ndim != 4 or h_BU.ndim != 3 or phi.ndim != 3:
        return None
    L, N, M = H_BR.shape[1:]
    K = h_RU.shape[2]
    B = max(H_BR.shape[0], h_RU.shape[0], h_BU.shape[0], phi.shape[0])
    if B == 0:
        return None
    if (h_RU.shape[1:] != (L, K, N) or h_BU.shape[1:] != (K, M) or phi.shape[1:] != (L, N)
            or not _fits(L, N, M, K)):
        return None
    if not _usable(H_BR, h_RU, h_BU, phi):
        return None
    args = [_batched(t, B, n) for t, n in ((H_BR, 4), (h_RU, 4), (h_BU, 3), (phi, 3))]
    if any(a is None for a in args):
        return None
    G = torch.empty(B, K, M, dtype=dtype)
    _fns["cascade", sfx](B, L, N, M, K, *[v for t, s in args for v in (t.data_ptr(), s)], G.data_ptr())
    return G
