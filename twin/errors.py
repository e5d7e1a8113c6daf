"""One exception family for everything a user can get wrong.

Every message names the offending field and says how to fix it; the CLI prints the
message on one line and exits non-zero. Tracebacks are reserved for bugs.
"""


class RistwinError(Exception):
    """Base of all user-facing ristwin errors."""


class ConfigError(RistwinError):
    """A scenario, algorithm or deployment value is missing, malformed or out of range."""


class SnapshotError(RistwinError):
    """A channel snapshot file has a missing key, a wrong shape or a non-finite value."""


class ActionError(RistwinError):
    """An agent's action has the wrong shape, an out-of-range index or a NaN."""


class BundleError(RistwinError):
    """An actor bundle is missing, truncated, tampered with or does not match."""


class DriverError(RistwinError):
    """A surface driver could not connect, apply or verify a configuration."""


class TransportError(RistwinError):
    """A message bus could not bind, connect, or refused an insecure address."""


class MessageError(RistwinError):
    """A wire message failed decoding or validation."""


def require(condition: bool, error: type[RistwinError], message: str) -> None:
    """Raise ``error(message)`` unless ``condition`` holds."""
    if not condition:
        raise error(message)
