"""Secure by default off loopback: CURVE keys / MQTT credentials, read only from private files.

* Binding or connecting to an address that is not loopback needs ZeroMQ CURVE keys or MQTT
  username + password, unless the deployment says ``insecure = true`` (an explicit opt-in).
* Secrets (CURVE key pairs, MQTT passwords) come from files readable by their owner only;
  a group- or world-readable secret file is refused. Never from the command line, where any
  user on the host can read them in the process list.
* ``ristwin keys`` writes CURVE key pairs with :func:`generate_curve_keys` (secret 0600).

Key files are plain text, one ``name = "z85"`` per line (the ZeroMQ certificate style):
``<name>.key`` holds ``public-key``; ``<name>.key_secret`` holds ``public-key`` and ``secret-key``.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

from twin.errors import TransportError

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """True only for literal loopback addresses / names; any other host name counts as remote."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_secret_file(path: str | os.PathLike, what: str) -> str:
    """Contents of an owner-only file (refuses group/world-readable or foreign-owned files)."""
    p = Path(path).expanduser()
    try:
        st = p.stat()
    except OSError as exc:
        raise TransportError(f"{what}: cannot read {p} ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise TransportError(f"{what}: {p} is not a regular file")
    if st.st_mode & 0o077:
        raise TransportError(
            f"{what}: {p} is readable by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"run `chmod 600 {p}`"
        )
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise TransportError(f"{what}: {p} is owned by another user; secrets must belong to the daemon's user")
    return p.read_text()


def _parse_keyfile(text: str, path: Path, what: str) -> dict[str, bytes]:
    keys = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        value = value.strip().strip('"')
        if len(value) != 40:
            raise TransportError(f"{what}: {path}: {name.strip()} is not a 40-character z85 CURVE key")
        keys[name.strip()] = value.encode("ascii")
    return keys


def load_curve_public(path: str | os.PathLike, what: str = "curve public key") -> bytes:
    p = Path(path).expanduser()
    try:
        text = p.read_text()
    except OSError as exc:
        raise TransportError(f"{what}: cannot read {p} ({exc.strerror})") from None
    keys = _parse_keyfile(text, p, what)
    if "public-key" not in keys:
        raise TransportError(f"{what}: {p} has no public-key line; generate it with `ristwin keys`")
    return keys["public-key"]


def load_curve_keypair(path: str | os.PathLike, what: str = "curve key pair") -> tuple[bytes, bytes]:
    """(public, secret) from an owner-only ``*.key_secret`` file."""
    p = Path(path).expanduser()
    keys = _parse_keyfile(read_secret_file(p, what), p, what)
    if "public-key" not in keys or "secret-key" not in keys:
        raise TransportError(f"{what}: {p} needs public-key and secret-key lines; generate it with `ristwin keys`")
    return keys["public-key"], keys["secret-key"]


def _write_private(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, mode)  # O_CREAT honours the umask; make the mode exact


def generate_curve_keys(out_dir: str | os.PathLike, name: str, force: bool = False) -> tuple[Path, Path]:
    """Write ``name.key`` (public, 0644) and ``name.key_secret`` (0600); return both paths."""
    import zmq

    if not name or not all(c.isalnum() or c in "_-." for c in name):
        raise TransportError(f"name: {name!r} must be letters, digits, '_', '-', '.'")
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    public_path, secret_path = out / f"{name}.key", out / f"{name}.key_secret"
    for p in (public_path, secret_path):
        if p.exists():
            if not force:
                raise TransportError(f"{p}: already exists; pass --force to overwrite")
            p.unlink()
    public, secret = zmq.curve_keypair()
    header = f"# ristwin CURVE key ({name}), z85\n"
    _write_private(public_path, header + f'public-key = "{public.decode()}"\n', 0o644)
    _write_private(secret_path, header + "# SECRET: keep this file private (mode 600)\n"
                   f'public-key = "{public.decode()}"\nsecret-key = "{secret.decode()}"\n', 0o600)
    return public_path, secret_path


def check_bus_security(cfg, *, hub: bool = False) -> None:
    """Refuse a non-loopback bus without authentication unless ``insecure = true``."""
    if is_loopback(cfg.host) or cfg.insecure:
        return
    if cfg.kind == "zmq":
        own = cfg.curve_server_secret if hub else cfg.curve_client_secret
        secured = bool(cfg.curve_server_public and own) if not hub else bool(own)
        how = ("transport.curve_server_secret (and curve_allowed_dir)" if hub else
               "transport.curve_server_public and transport.curve_client_secret")
    else:
        secured = bool(cfg.username and cfg.password_file)
        how = "transport.username and transport.password_file"
    if not secured:
        raise TransportError(
            f"transport.host: {cfg.host} is not loopback and the bus is unauthenticated; set {how} "
            f"(keys from `ristwin keys`) or, on a trusted network only, insecure = true"
        )
