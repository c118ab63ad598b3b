"""Potluck: pooled laptops and desktops as capped Docker capacity.

The subpackages are the design card's folders, linked in here so that one
distribution serves every role: ``potluck.events`` is ``libs/events``,
``potluck.registry`` is ``services/registry``, and so on.
"""

from potluck.kernel.version import __version__

__all__ = ["__version__"]
