r"""Client updates and how they compose into federated algorithms.

Every federated algorithm here is the same round — sample clients, each computes a *delta*,
the server averages the deltas and feeds the average to an optax optimizer as a pseudo-gradient
(generalized FedOpt, Reddi et al. 2021) — and differs only in the client update

``client_update(loss_fn, params, client, key) -> delta``   (delta has the structure of params).

* :func:`minibatch_sgd`: the delta is a mini-batch gradient at the server model.
* :func:`fedavg`: local SGD, delta ``x - x_local``.
* :func:`fedpa`: local posterior samples from any :class:`~fedpa.samplers.Sampler`, delta
  ``Σ̂⁻¹ (x - μ̂)`` by the dynamic program (:func:`fedpa.posterior.delta`);
  :func:`fedpa_iasg` is FedPA with the IASG sampler.
* :func:`fedpa_exact`: the exact local posterior of a quadratic problem, delta
  ``A_i (x - μ_i)``.

:func:`with_burnin` runs another algorithm (FedAvg, in the paper) for the first rounds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
from jax.flatten_util import ravel_pytree

from . import _validate, posterior, samplers

__all__ = [
    "Algorithm",
    "minibatch_sgd",
    "fedavg",
    "fedpa",
    "fedpa_exact",
    "fedpa_iasg",
    "with_burnin",
    "local_sgd_update",
    "posterior_update",
    "exact_posterior_update",
]

ClientUpdate = Callable[..., Any]


class Algorithm(NamedTuple):
    """A federated algorithm: a client update, optionally preceded by burn-in rounds of another.

    Attributes:
      client_update: ``(loss_fn, params, client, key) -> delta``.
      name: a short label for plots.
      burnin_rounds: rounds that use ``burnin_update`` instead, before ``client_update``.
      burnin_update: the client update of the burn-in phase (FedAvg in the paper).
    """

    client_update: ClientUpdate
    name: str
    burnin_rounds: int = 0
    burnin_update: ClientUpdate | None = None


# ------------------------------------------------------------------ client updates (pieces)


def local_sgd_update(
    local_steps: int, local_lr: float, batch_size: int, *, unroll: int = 1
) -> ClientUpdate:
    """FedAvg's client update: ``local_steps`` of SGD, delta ``params - local_params``."""

    def update(loss_fn, params, client, key):
        idx = samplers.minibatch_indices(key, client.num_examples, (local_steps, batch_size))
        local = samplers.sgd_steps(loss_fn, params, client.data, idx, local_lr, unroll=unroll)
        return jax.tree.map(lambda x, y: x - y, params, local)

    return update


def minibatch_gradient_update(batch_size: int) -> ClientUpdate:
    """Mini-batch SGD's client update: the gradient on one mini-batch at the server model."""

    def update(loss_fn, params, client, key):
        idx = samplers.minibatch_indices(key, client.num_examples, (batch_size,))
        batch = jax.tree.map(lambda a: a[idx], client.data)
        return jax.grad(loss_fn)(params, batch)

    return update


def posterior_update(sampler: samplers.Sampler, rho) -> ClientUpdate:
    """FedPA's client update: samples from ``sampler``, delta by the dynamic program.

    Any params pytree works: samples and params are flattened with ``ravel_pytree``.
    """

    def update(loss_fn, params, client, key):
        samples = sampler.sample(key, loss_fn, params, client)
        flat_params, unravel = ravel_pytree(params)
        flat_samples = jax.vmap(lambda s: ravel_pytree(s)[0])(samples)
        return unravel(posterior._delta_dp(flat_samples, flat_params, rho))

    return update


def exact_posterior_update(loss_fn, params, client, key) -> Any:
    """Delta ``A_i (x - μ_i)`` from the exact Gaussian local posterior (quadratic problems)."""
    del loss_fn, key
    post = client.posterior
    return post.precision_matvec(params - post.mean)


# ------------------------------------------------------------------ algorithms (user-facing)


def minibatch_sgd(batch_size: int = 10) -> Algorithm:
    """Mini-batch SGD: each sampled client sends one mini-batch gradient; the server steps."""
    batch_size = _validate.integer("batch_size", batch_size, minimum=1)
    return Algorithm(minibatch_gradient_update(batch_size), name="mini-batch SGD")


def fedavg(
    local_steps: int = 100,
    local_lr: float = 0.01,
    batch_size: int = 10,
    *,
    unroll: int = 1,
) -> Algorithm:
    """FedAvg (McMahan et al., 2017) with a server optimizer: local SGD, delta ``x - x_local``."""
    local_steps = _validate.integer("local_steps", local_steps, minimum=1)
    _validate.real("local_lr", local_lr, low=0.0, low_open=True)
    batch_size = _validate.integer("batch_size", batch_size, minimum=1)
    unroll = _validate.integer("unroll", unroll, minimum=1)
    return Algorithm(
        local_sgd_update(local_steps, local_lr, batch_size, unroll=unroll),
        name=f"FedAvg ({local_steps} steps)",
    )


def fedpa(sampler: samplers.Sampler, rho: float = 0.1, *, name: str | None = None) -> Algorithm:
    """FedPA with any local sampler: delta ``Σ̂⁻¹ (x - μ̂)`` with shrinkage ``rho``."""
    if not isinstance(sampler, samplers.Sampler):
        raise ValueError(f"sampler must be a fedpa.samplers.Sampler, got {type(sampler).__name__}")
    _validate.rho(rho)
    label = name or f"FedPA-{sampler.name} (ℓ={sampler.num_samples}, ρ={rho:g})"
    return Algorithm(posterior_update(sampler, rho), name=label)


def fedpa_exact() -> Algorithm:
    """FedPA with the exact local posteriors of a quadratic problem (needs ``client.posterior``).

    The averaged delta ``Σ_i w_i A_i (x - μ_i)`` vanishes exactly at the global optimum.
    """
    return Algorithm(exact_posterior_update, name="FedPA-exact")


def fedpa_iasg(
    num_samples: int = 10,
    avg_steps: int = 10,
    burnin_steps: int = 50,
    local_lr: float = 0.01,
    batch_size: int = 10,
    rho: float = 0.1,
    *,
    burnin_rounds: int = 0,
    unroll: int = 1,
) -> Algorithm:
    """FedPA with IASG local sampling (the paper's practical algorithm).

    Args:
      num_samples: ``ℓ >= 2`` posterior samples per client and round.
      avg_steps: SGD iterates averaged into one sample.
      burnin_steps: SGD steps before the first sample.
      local_lr, batch_size: local SGD settings.
      rho: shrinkage in ``[0, 1]``.
      burnin_rounds: server rounds of FedAvg (same local steps, ``burnin_steps + ℓ·avg_steps``)
        before FedPA starts.
    """
    sampler = samplers.iasg(
        num_samples, avg_steps, burnin_steps, local_lr, batch_size, unroll=unroll
    )
    algo = fedpa(sampler, rho, name=f"FedPA-IASG (ℓ={num_samples}, ρ={rho:g})")
    burnin_rounds = _validate.integer("burnin_rounds", burnin_rounds, minimum=0)
    if burnin_rounds:
        local_steps = burnin_steps + num_samples * avg_steps
        algo = with_burnin(
            algo, fedavg(local_steps, local_lr, batch_size, unroll=unroll), burnin_rounds
        )
    return algo


def with_burnin(algorithm: Algorithm, burnin: Algorithm, rounds: int) -> Algorithm:
    """Runs ``burnin``'s client update for the first ``rounds`` rounds, then ``algorithm``'s."""
    for label, a in (("algorithm", algorithm), ("burnin", burnin)):
        if not isinstance(a, Algorithm):
            raise ValueError(f"{label} must be a fedpa Algorithm, got {type(a).__name__}")
    rounds = _validate.integer("rounds", rounds, minimum=0)
    return algorithm._replace(
        burnin_rounds=rounds,
        burnin_update=burnin.client_update,
        name=f"{algorithm.name} + {rounds} burn-in rounds",
    )
