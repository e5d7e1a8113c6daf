"""The physical edge: driver interface, sim driver, serial protocol, pyserial driver, emulator."""
