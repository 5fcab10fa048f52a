"""Errors the simulator raises on bad arguments (shown to CLI users as one line)."""


class SimulatorError(ValueError):
    """A simulator argument or policy is invalid."""
