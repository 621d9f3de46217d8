"""The root of every error supplyflow raises on purpose.

Each subpackage narrows it in its own ``exceptions.py``; library errors are wrapped at the
boundary with ``raise ... from exc`` so an operator sees what happened and what to do.
"""

__all__ = ["SupplyflowError"]


class SupplyflowError(Exception):
    """Base class of supplyflow's own errors."""
