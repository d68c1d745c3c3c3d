"""Argument checks for the public boundary.

Every public function calls these *before* any compute, so a bad argument fails fast with a
``ValueError`` that names the parameter, the value it got and what was expected. The checks only
look at Python values and static shapes; values that are traced by ``jax.jit`` are skipped (they
cannot be inspected without compute), which keeps the checks out of hot, compiled code.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import numpy as np


def concrete(value: Any) -> Any:
    """Returns ``value`` as a Python/NumPy value, or ``None`` when it is traced by JAX."""
    if isinstance(value, jax.core.Tracer):
        return None
    return value


def integer(name: str, value: Any, *, minimum: int | None = None) -> int:
    """Checks that ``value`` is an integer (not a bool) ``>= minimum``; returns it as ``int``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {name}={value}")
    return int(value)


def real(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> Any:
    """Checks a real scalar against ``[low, high]`` (``low_open``/``high_open``: open ends).

    Traced values pass unchecked (they cannot be inspected without compute)."""
    v = concrete(value)
    if v is None:
        return value
    if isinstance(v, bool):
        raise ValueError(f"{name} must be a real number, got {v!r}")
    try:
        f = float(np.asarray(v))
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {v!r}") from None
    if np.ndim(v) != 0:
        raise ValueError(f"{name} must be a scalar, got shape {np.shape(v)}")
    if not np.isfinite(f):
        raise ValueError(f"{name} must be finite, got {name}={f}")
    left = "(" if low_open else "["
    right = ")" if high_open or high is None else "]"
    bound = (
        f"{left}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}{right}"
    )
    too_low = low is not None and (f <= low if low_open else f < low)
    too_high = high is not None and (f >= high if high_open else f > high)
    if too_low or too_high:
        raise ValueError(f"{name} must be in {bound}, got {name}={f}")
    return value


def rho(value: Any) -> Any:
    """The shrinkage parameter ``rho``: any finite value ``>= 0`` (the paper's definition)."""
    return real("rho", value, low=0.0)


def samples_matrix(samples: Any, *, name: str = "samples") -> tuple[int, int]:
    """Checks a ``(num_samples, dim)`` array with ``num_samples >= 2``; returns ``(l, d)``."""
    shape = np.shape(samples)
    if len(shape) != 2:
        raise ValueError(f"{name} must have shape (num_samples, dim), got shape {shape}")
    num, dim = shape
    if num < 2:
        raise ValueError(
            f"{name} must hold num_samples >= 2 samples to estimate a covariance, got {num}"
        )
    if dim < 1:
        raise ValueError(f"{name} must have dim >= 1, got shape {shape}")
    return num, dim


def vector(name: str, value: Any, dim: int) -> None:
    """Checks a ``(dim,)`` vector."""
    shape = np.shape(value)
    if shape != (dim,):
        raise ValueError(f"{name} must have shape ({dim},), got shape {shape}")
