"""Argument checks of the experiment drivers (concrete Python values, before any compute)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np


def integer(name: str, value: Any, *, minimum: int | None = None) -> int:
    """An integer (not a bool) ``>= minimum``, as ``int``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {name}={value}")
    return int(value)


def real(name: str, value: Any, *, low: float | None = None, low_open: bool = False) -> float:
    """A finite real scalar ``>= low`` (``> low`` when ``low_open``), as ``float``."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{name} must be a real number, got {value!r}")
    try:
        f = float(np.asarray(value))
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if np.ndim(value) != 0:
        raise ValueError(f"{name} must be a scalar, got shape {np.shape(value)}")
    if not np.isfinite(f):
        raise ValueError(f"{name} must be finite, got {name}={f}")
    if low is not None and (f <= low if low_open else f < low):
        bound = f"> {low}" if low_open else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {name}={f}")
    return f


def rho(value: Any, name: str = "rho") -> float:
    """The shrinkage parameter: any finite value ``>= 0``."""
    return real(name, value, low=0.0)


def int_list(name: str, values: Sequence[int], minimum: int) -> tuple[int, ...]:
    """A non-empty list of integers ``>= minimum``."""
    values = tuple(values)
    if not values:
        raise ValueError(f"{name} must be a non-empty list of integers, got {values!r}")
    return tuple(integer(f"{name} entry", v, minimum=minimum) for v in values)


def vector(name: str, value: Any, dim: int) -> None:
    """A ``(dim,)`` vector."""
    shape = np.shape(value)
    if shape != (dim,):
        raise ValueError(f"{name} must have shape ({dim},), got shape {shape}")


def key(value: Any) -> Any:
    """A PRNG key (not ``None``)."""
    if value is None:
        raise ValueError("key must be a PRNG key (e.g. jax.random.key(0)), got None")
    return value
