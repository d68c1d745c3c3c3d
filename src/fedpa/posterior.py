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

``rho = 0`` gives :math:`\hat\Sigma = I` (the delta is ``x - μ̂``, FedAvg-like); ``rho = 1``
gives the most weight to the sample covariance, :math:`\rho_\ell = 1/\ell`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from . import _validate

__all__ = ["shrinkage_weight", "shrinkage_covariance", "delta", "delta_direct"]


def shrinkage_weight(num_samples: int, rho):
    """``ρ_ℓ = 1 / (1 + (ℓ - 1) ρ)``, the weight of the identity in the shrinkage estimator."""
    return 1.0 / (1.0 + (num_samples - 1) * rho)


def _moments(samples):
    mean = jnp.mean(samples, axis=0)
    return mean, samples - mean


def shrinkage_covariance(samples, rho):
    """Shrinkage covariance ``ρ_ℓ I + (1 - ρ_ℓ) S`` of ``samples``.

    Args:
      samples: ``(ℓ, d)`` array, ``ℓ >= 2``.
      rho: shrinkage parameter in ``[0, 1]``.

    Returns:
      ``(d, d)`` covariance estimate; ``S`` is the unbiased sample covariance (divides by
      ``ℓ - 1``).
    """
    num, dim = _validate.samples_matrix(samples)
    _validate.rho(rho)
    return _shrinkage_covariance(jnp.asarray(samples), rho)


@jax.jit
def _shrinkage_covariance(samples, rho):
    num, dim = samples.shape
    _, centered = _moments(samples)
    sample_cov = centered.T @ centered / (num - 1)
    weight = shrinkage_weight(num, rho)
    return weight * jnp.eye(dim, dtype=samples.dtype) + (1.0 - weight) * sample_cov


def delta(samples, x, rho):
    """FedPA client delta ``Σ̂⁻¹ (x - μ̂)`` by the dynamic program (``O(ℓ² d)``, no ``d × d``).

    ``Σ̂ = a I + b Σ_j u_j u_jᵀ`` with ``a = ρ_ℓ``, ``b = (1 - ρ_ℓ) / (ℓ - 1)`` and
    ``u_j = x_j - μ̂``. Adding the rank-one terms one sample at a time, Sherman–Morrison gives
    ``M_k⁻¹ v = v / a - Σ_{j ≤ k} γ_j g_j (g_jᵀ v)`` with ``g_k = M_{k-1}⁻¹ u_k`` and
    ``γ_k = b / (1 + b u_kᵀ g_k)``; step ``k`` costs ``O(k d)``. The loop over samples is a
    ``lax.scan`` holding the ``(ℓ, d)`` buffer of ``g`` vectors.

    Args:
      samples: ``(ℓ, d)`` approximate posterior samples, ``ℓ >= 2``.
      x: ``(d,)`` the current server model.
      rho: shrinkage parameter in ``[0, 1]``.

    Returns:
      ``(d,)`` the delta.
    """
    num, dim = _validate.samples_matrix(samples)
    _validate.vector("x", x, dim)
    _validate.rho(rho)
    return _delta_dp(jnp.asarray(samples), jnp.asarray(x), rho)


@jax.jit
def _delta_dp(samples, x, rho):
    """Unchecked dynamic program; see :func:`delta`."""
    num, dim = samples.shape
    weight = shrinkage_weight(num, rho)
    a = weight
    b = (1.0 - weight) / (num - 1)
    mean, centered = _moments(samples)
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


def delta_direct(samples, x, rho):
    """Reference delta: forms ``Σ̂`` (``d × d``) and solves. ``O(ℓ d² + d³)``; for tests."""
    num, dim = _validate.samples_matrix(samples)
    _validate.vector("x", x, dim)
    _validate.rho(rho)
    return _delta_direct(jnp.asarray(samples), jnp.asarray(x), rho)


@jax.jit
def _delta_direct(samples, x, rho):
    cov = _shrinkage_covariance(samples, rho)
    return jax.scipy.linalg.solve(cov, x - jnp.mean(samples, axis=0), assume_a="pos")
