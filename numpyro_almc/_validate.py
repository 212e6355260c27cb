"""Eager argument checks shared by every public entry point (fail early, in Python)."""

from __future__ import annotations

import math
import numbers

__all__ = ["check_choice", "check_count", "check_positive"]


def check_count(name: str, value, minimum: int = 0) -> int:
    """``value`` as an ``int >= minimum``; a float or bool raises ``TypeError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"`{name}` must be an integer, got {value!r}; "
            "round it yourself if you meant a count."
        )
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")
    return int(value)


def check_positive(name: str, value, *, allow_zero: bool = False) -> float:
    """``value`` as a finite ``float > 0`` (``>= 0`` with ``allow_zero``)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"`{name}` must be a real number, got {type(value).__name__}.")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{name}` must be finite and {bound}, got {value}.")
    return value


def check_choice(name: str, value, options) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``options``."""
    if value not in options:
        raise ValueError(f"`{name}` must be one of {tuple(options)}, got {value!r}.")
