r"""Exact results on quadratic problems: FedAvg's fixed point, relative distances.

:func:`fedavg_fixed_point` is exact for quadratic problems. Client ``i`` minimizes
``f_i(x) = ½ (x - μ_i)ᵀ A_i (x - μ_i)``; ``K`` steps of full-batch gradient descent with step
``η`` from the server model ``x`` end at ``μ_i + (I - ηA_i)^K (x - μ_i)``, so FedAvg's delta is

.. math::

    \Delta_i(x) = B_i (x - \mu_i), \qquad B_i = I - (I - \eta A_i)^K .

The server's averaged delta vanishes at

.. math::

    \bar x_K = \Big(\sum_i w_i B_i\Big)^{-1} \sum_i w_i B_i \mu_i ,

FedAvg's fixed point (for any server SGD learning rate). With ``K = 1``, ``B_i = ηA_i`` and
``\bar x_1`` is the global optimum ``x^\star = (\sum_i w_i A_i)^{-1}\sum_i w_i A_i\mu_i``; as
``K → ∞``, ``B_i → I`` and ``\bar x_K`` tends to the plain average of the client optima. Local
*stochastic* gradient steps on independent mini-batches have the same expected delta (the
mini-batch Hessians are independent of the iterate they multiply), so the stationary mean of
stochastic FedAvg with all clients is the same point.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from . import _validate
from .problems import FederatedProblem

__all__ = ["fedavg_fixed_point", "relative_distance"]


@jax.jit
def _client_spectra(chol):
    hessians = chol @ jnp.swapaxes(chol, -1, -2)
    return jnp.linalg.eigh(hessians)


@jax.jit
def _fixed_points(eigvals, eigvecs, means, weights, steps, local_lr):
    base = 1.0 - local_lr * eigvals  # (clients, d)

    def one(k):
        # (1 - ηλ)^K for integer K, also for negative bases.
        sign = jnp.where((base < 0) & (jnp.mod(k, 2) == 1), -1.0, 1.0)
        power = sign * jnp.exp(k * jnp.log(jnp.abs(base)))
        power = jnp.where(base == 0, 0.0, power)
        b = jnp.einsum("cij,cj,ckj->cik", eigvecs, 1.0 - power, eigvecs)
        lhs = jnp.einsum("c,cij->ij", weights, b)
        rhs = jnp.einsum("c,cij,cj->i", weights, b, means)
        return jnp.linalg.solve(lhs, rhs)

    return jax.vmap(one)(steps)


def fedavg_fixed_point(problem: FederatedProblem, local_steps, local_lr: float) -> np.ndarray:
    """FedAvg's exact fixed point on a quadratic problem (full-batch local gradient descent).

    Args:
      problem: a problem with exact local posteriors (``problem.clients.posterior``), e.g.
        :func:`fedpa.problems.least_squares` or :func:`fedpa.problems.quadratic`.
      local_steps: ``K >= 1``, an int or a 1-D sequence of ints.
      local_lr: ``η > 0`` with ``η · max_i λ_max(A_i) < 2`` (local gradient descent converges).

    Returns:
      ``(d,)`` for an int ``local_steps``, ``(len(local_steps), d)`` for a sequence: the point
      ``x̄_K`` where the averaged FedAvg delta ``Σ_i w_i (I - (I - ηA_i)^K)(x - μ_i)`` vanishes.
    """
    if not isinstance(problem, FederatedProblem):
        raise ValueError(f"problem must be a fedpa FederatedProblem, got {type(problem).__name__}")
    if problem.clients.posterior is None:
        raise ValueError(
            f"problem {problem.name!r} has no exact local posteriors; fedavg_fixed_point needs a "
            "quadratic problem"
        )
    scalar = np.ndim(local_steps) == 0
    steps = [local_steps] if scalar else list(np.asarray(local_steps).ravel())
    if not steps:
        raise ValueError("local_steps must hold at least one value, got an empty sequence")
    steps = [
        _validate.integer("local_steps", int(k) if isinstance(k, np.integer) else k, minimum=1)
        for k in steps
    ]
    _validate.real("local_lr", local_lr, low=0.0, low_open=True)
    post = problem.clients.posterior
    eigvals, eigvecs = _client_spectra(post.precision_cholesky)
    top = float(jnp.max(eigvals))
    if local_lr * top >= 2.0:
        raise ValueError(
            f"local_lr must be < 2 / max_i λ_max(A_i) = {2.0 / top:.4g} for local gradient descent "
            f"to converge, got local_lr={local_lr}"
        )
    dtype = eigvals.dtype
    points = _fixed_points(
        eigvals,
        eigvecs,
        post.mean,
        problem.client_weights().astype(dtype),
        jnp.asarray(steps, dtype),
        jnp.asarray(local_lr, dtype),
    )
    points = np.asarray(points)
    return points[0] if scalar else points


def relative_distance(points, problem: FederatedProblem) -> np.ndarray:
    """``‖x - x*‖ / ‖x*‖`` for ``points`` of shape ``(..., d)`` (flat models)."""
    if not isinstance(problem, FederatedProblem):
        raise ValueError(f"problem must be a fedpa FederatedProblem, got {type(problem).__name__}")
    optimum = np.asarray(ravel_pytree(problem.global_optimum())[0])
    points = np.asarray(points)
    if points.shape[-1:] != optimum.shape:
        raise ValueError(
            f"points must have a last axis of size d={optimum.size}, got shape {points.shape}"
        )
    return np.linalg.norm(points - optimum, axis=-1) / np.linalg.norm(optimum)
