"""The world: geometry, channels, surfaces, energy, signal metrics, scenarios and MDPs."""

__version__ = "0.1.0"
