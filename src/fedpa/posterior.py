r"""Posterior math of FedPA: the shrinkage covariance and the client delta.

A client that holds ``ℓ`` approximate samples ``x_1 … x_ℓ`` of its local posterior estimates the
posterior covariance by shrinking the sample covariance towards the identity,

.. math::

    \hat\Sigma = \rho_\ell I + (1 - \rho_\ell) S, \qquad
    S = \frac{1}{\ell - 1} \sum_j (x_j - \hat\mu)(x_j - \hat\mu)^\top, \qquad
    \rho_\ell = \frac{1}{1 + (\ell - 1)\rho},

and sends the server the delta :math:`\Delta = \hat\Sigma^{-1}(x - \hat\mu)`, where :math:`x` is the
current server model and :math:`\hat\mu` the sample mean. :func:`delta` computes it with the
paper's dynamic program: Sherman–Morrison updates, one per sample, in ``O(ℓ² d)`` time and
``O(ℓ d)`` memory, never forming a ``d × d`` matrix. :func:`delta_direct` forms
:math:`\hat\Sigma` and solves, for testing and for the cost comparison in the book.

``rho`` is any value ``>= 0``, as in the paper: ``rho = 0`` gives :math:`\hat\Sigma = I` (the
delta is ``x - μ̂``, the server model minus the *mean of the samples*); ``rho = 1`` gives
:math:`\rho_\ell = 1/\ell`; as ``rho → ∞`` the estimate tends to the sample covariance ``S``
(singular when ``ℓ ≤ d``, so keep ``rho`` finite).

``target="scaled_identity"`` shrinks towards ``(tr S / d) I`` instead of ``I`` (Ledoit & Wolf's
target): :math:`\hat\Sigma = \rho_\ell \tfrac{\operatorname{tr} S}{d} I + (1 - \rho_\ell) S`.
It is invariant to the scale of the samples (samples ``c·x_j`` give ``c²·Σ̂``), which matters
when the sampler's covariance has the posterior's shape at another scale (IASG).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from . import _validate

__all__ = [
    "TARGETS",
    "delta_unchecked",
    "shrinkage_weight",
    "shrinkage_covariance",
    "delta",
    "delta_direct",
]

TARGETS = ("identity", "scaled_identity")
"""Shrinkage targets: ``I``, or ``(tr S / d) I``."""


def shrinkage_weight(num_samples: int, rho):
    """``ρ_ℓ = 1 / (1 + (ℓ - 1) ρ)``, the weight of the identity in the shrinkage estimator."""
    return 1.0 / (1.0 + (num_samples - 1) * rho)


def _moments(samples):
    mean = jnp.mean(samples, axis=0)
    return mean, samples - mean


def _target_scale(centered, target: str):
    """The multiple of ``I`` that Σ̂ shrinks towards: ``1``, or ``tr S / d`` (``1`` if ``S = 0``)."""
    if target == "identity":
        return jnp.ones((), centered.dtype)
    num, dim = centered.shape
    trace = jnp.sum(centered * centered) / ((num - 1) * dim)
    return jnp.where(trace > 0, trace, jnp.ones((), centered.dtype))


def _check_target(target: str) -> str:
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    return target


def shrinkage_covariance(samples, rho, *, target: str = "identity"):
    """Shrinkage covariance ``ρ_ℓ τ I + (1 - ρ_ℓ) S`` of ``samples`` (``τ = 1`` or ``tr S / d``).

    Args:
      samples: ``(ℓ, d)`` array, ``ℓ >= 2``.
      rho: shrinkage parameter, ``>= 0``.
      target: ``"identity"`` (``τ = 1``, the paper's) or ``"scaled_identity"`` (``τ = tr S/d``).

    Returns:
      ``(d, d)`` covariance estimate; ``S`` is the unbiased sample covariance (divides by
      ``ℓ - 1``).
    """
    num, dim = _validate.samples_matrix(samples)
    _validate.rho(rho)
    return _shrinkage_covariance(jnp.asarray(samples), rho, _check_target(target))


@partial(jax.jit, static_argnums=2)
def _shrinkage_covariance(samples, rho, target="identity"):
    num, dim = samples.shape
    _, centered = _moments(samples)
    sample_cov = centered.T @ centered / (num - 1)
    weight = shrinkage_weight(num, rho)
    scale = _target_scale(centered, target)
    return weight * scale * jnp.eye(dim, dtype=samples.dtype) + (1.0 - weight) * sample_cov


def delta(samples, x, rho, *, target: str = "identity"):
    """FedPA client delta ``Σ̂⁻¹ (x - μ̂)`` by the dynamic program (``O(ℓ² d)``, no ``d × d``).

    ``Σ̂ = a I + b Σ_j u_j u_jᵀ`` with ``a = ρ_ℓ τ``, ``b = (1 - ρ_ℓ) / (ℓ - 1)`` and
    ``u_j = x_j - μ̂`` (``τ = 1``, or ``tr S / d`` for ``target="scaled_identity"``). Adding the
    rank-one terms one sample at a time, Sherman–Morrison gives
    ``M_k⁻¹ v = v / a - Σ_{j ≤ k} γ_j g_j (g_jᵀ v)`` with ``g_k = M_{k-1}⁻¹ u_k`` and
    ``γ_k = b / (1 + b u_kᵀ g_k)``; step ``k`` costs ``O(k d)``. The loop over samples is a
    ``lax.scan`` holding the ``(ℓ, d)`` buffer of ``g`` vectors.

    Args:
      samples: ``(ℓ, d)`` approximate posterior samples, ``ℓ >= 2``.
      x: ``(d,)`` the current server model.
      rho: shrinkage parameter, ``>= 0`` (``ρ = 0``: ``a = τ``, ``b = 0``; the delta is
        ``(x - μ̂) / τ``).
      target: the shrinkage target, one of :data:`TARGETS`.

    Returns:
      ``(d,)`` the delta.
    """
    num, dim = _validate.samples_matrix(samples)
    _validate.vector("x", x, dim)
    _validate.rho(rho)
    return delta_unchecked(jnp.asarray(samples), jnp.asarray(x), rho, _check_target(target))


@partial(jax.jit, static_argnums=3)
def delta_unchecked(samples, x, rho, target: str = "identity"):
    """:func:`delta` without argument checks, for use inside compiled code (``rho`` may be
    traced; ``target`` is static)."""
    num, dim = samples.shape
    weight = shrinkage_weight(num, rho)
    mean, centered = _moments(samples)
    a = weight * _target_scale(centered, target)
    b = (1.0 - weight) / (num - 1)
    dtype = samples.dtype

    def add_sample(carry, k):
        g_buf, gammas = carry
        u = centered[k]
        # g = M_{k-1}^{-1} u; rows j >= k of the buffer are still zero (gamma_j = 0).
        g = u / a - (gammas * (g_buf @ u)) @ g_buf
        gamma = b / (1.0 + b * jnp.dot(u, g))
        return (g_buf.at[k].set(g), gammas.at[k].set(gamma)), None

    init = (jnp.zeros((num, dim), dtype), jnp.zeros((num,), dtype))
    (g_buf, gammas), _ = lax.scan(add_sample, init, jnp.arange(num))
    v = x - mean
    return v / a - (gammas * (g_buf @ v)) @ g_buf


def delta_direct(samples, x, rho, *, target: str = "identity"):
    """Reference delta: forms ``Σ̂`` (``d × d``) and solves. ``O(ℓ d² + d³)``; for tests."""
    num, dim = _validate.samples_matrix(samples)
    _validate.vector("x", x, dim)
    _validate.rho(rho)
    return _delta_direct(jnp.asarray(samples), jnp.asarray(x), rho, _check_target(target))


@partial(jax.jit, static_argnums=3)
def _delta_direct(samples, x, rho, target="identity"):
    cov = _shrinkage_covariance(samples, rho, target)
    return jax.scipy.linalg.solve(cov, x - jnp.mean(samples, axis=0), assume_a="pos")
