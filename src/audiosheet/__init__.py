"""audiosheet: link music recordings with sheet music."""

__version__ = "0.1.0"
