"""The physical edge: driver interface, sim driver, serial protocol, pyserial driver, emulator.

``drivers.open(url)`` returns a connected driver chosen by the URL scheme (see
``drivers.base.DRIVERS``); driver modules are imported only when their scheme is used.
"""

from drivers.base import DRIVERS, SurfaceDriver, open  # noqa: A004 - drivers.open mirrors serial_for_url

__all__ = ["DRIVERS", "SurfaceDriver", "open"]
