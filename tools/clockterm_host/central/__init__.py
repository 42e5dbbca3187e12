"""The reference central API: stores punches from terminals, serves rosters and configs, over HTTPS."""

from .server import Handle, start_background

__all__ = ["Handle", "start_background"]
