"""Local posterior samplers: pure kernels with explicit PRNG keys.

Every sampler is a :class:`Sampler`: a number of samples and a pure function

``sample(key, loss_fn, params, client) -> samples``

where ``params`` is the current server model (the starting point of local inference), ``client``
is one client's :class:`~fedpa.problems.Clients` record (unstacked), ``loss_fn(params, batch)`` the
average loss over a batch, and ``samples`` a pytree shaped like ``params`` with a leading axis of
``num_samples``. FedPA only sees this signature, so samplers are interchangeable.

The building block of SGD-based samplers is :func:`sgd_steps`, a ``lax.scan`` over local SGD
steps on mini-batches drawn with replacement from the client's valid examples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from . import _validate

__all__ = ["Sampler", "exact_gaussian", "iasg", "sgd_steps", "minibatch_indices"]


class Sampler(NamedTuple):
    """A local posterior sampler.

    Attributes:
      num_samples: ``ℓ``, how many samples one call returns.
      sample: ``(key, loss_fn, params, client) -> samples`` (leading axis ``ℓ``).
      name: a short label.
    """

    num_samples: int
    sample: Callable[..., Any]
    name: str = "sampler"


def minibatch_indices(key, num_examples, shape):
    """Integer indices, uniform with replacement over a client's ``num_examples`` valid rows."""
    return jax.random.randint(key, shape, 0, num_examples)


def _gather(data, idx):
    return jax.tree.map(lambda a: a[idx], data)


def sgd_steps(loss_fn, params, data, indices, learning_rate, *, unroll: int = 1):
    """Plain SGD over the mini-batches ``data[indices[t]]``, ``t = 0 … T-1``.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      params: starting point (pytree).
      data: a client's data pytree, leaves ``(n, ...)``.
      indices: ``(T, batch_size)`` int mini-batch rows.
      learning_rate: step size.
      unroll: ``lax.scan`` unroll factor.

    Returns:
      The final iterate.
    """
    grad_fn = jax.grad(loss_fn)

    def step(p, idx):
        g = grad_fn(p, _gather(data, idx))
        return jax.tree.map(lambda w, gw: w - learning_rate * gw, p, g), None

    params, _ = lax.scan(step, params, indices, unroll=unroll)
    return params


def _averaged_sgd(loss_fn, params, data, indices, learning_rate, unroll):
    """SGD over ``indices (K, B)``; returns ``(final iterate, average of the K iterates)``."""
    grad_fn = jax.grad(loss_fn)

    def step(carry, idx):
        p, total = carry
        g = grad_fn(p, _gather(data, idx))
        p = jax.tree.map(lambda w, gw: w - learning_rate * gw, p, g)
        return (p, jax.tree.map(jnp.add, total, p)), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    (params, total), _ = lax.scan(step, (params, zeros), indices, unroll=unroll)
    num = indices.shape[0]
    return params, jax.tree.map(lambda t: t / num, total)


def iasg(
    num_samples: int,
    avg_steps: int,
    burnin_steps: int,
    learning_rate: float,
    batch_size: int,
    *,
    unroll: int = 1,
) -> Sampler:
    """Iterate-averaged SGD (Mandt, Hoffman & Blei, 2017) as a local posterior sampler.

    Runs ``burnin_steps`` SGD steps from the server model, then ``num_samples × avg_steps`` more;
    sample ``j`` is the average of the ``j``-th block of ``avg_steps`` consecutive iterates.
    Averaging a stationary SGD chain over a window gives iterates whose covariance has the shape
    of the local posterior ``A⁻¹`` (scaled by ``σ² / (avg_steps · batch_size)``), while raw SGD
    iterates are close to isotropic.

    Memory is ``O(num_samples · d)`` per client: the averages are accumulated inside the scan.
    """
    num_samples = _validate.integer("num_samples", num_samples, minimum=2)
    avg_steps = _validate.integer("avg_steps", avg_steps, minimum=1)
    burnin_steps = _validate.integer("burnin_steps", burnin_steps, minimum=0)
    batch_size = _validate.integer("batch_size", batch_size, minimum=1)
    _validate.real("learning_rate", learning_rate, low=0.0, low_open=True)
    unroll = _validate.integer("unroll", unroll, minimum=1)

    def sample(key, loss_fn, params, client):
        total = burnin_steps + num_samples * avg_steps
        idx = minibatch_indices(key, client.num_examples, (total, batch_size))
        params = sgd_steps(
            loss_fn, params, client.data, idx[:burnin_steps], learning_rate, unroll=unroll
        )
        blocks = idx[burnin_steps:].reshape(num_samples, avg_steps, batch_size)

        def one_sample(p, block):
            return _averaged_sgd(loss_fn, p, client.data, block, learning_rate, unroll)

        _, samples = lax.scan(one_sample, params, blocks)
        return samples

    return Sampler(num_samples, sample, name="iasg")


def exact_gaussian(num_samples: int) -> Sampler:
    """Exact samples of a client's Gaussian local posterior ``N(μ_i, A_i⁻¹)``.

    Needs ``client.posterior`` (quadratic problems). With ``A = L Lᵀ``, a sample is
    ``μ + L⁻ᵀ z``, ``z ~ N(0, I)``. ``params`` must be the flat ``(d,)`` model.
    """
    num_samples = _validate.integer("num_samples", num_samples, minimum=2)

    def sample(key, loss_fn, params, client):
        del loss_fn
        post = client.posterior
        z = jax.random.normal(key, (num_samples, post.mean.shape[-1]), post.mean.dtype)
        offsets = jax.scipy.linalg.solve_triangular(post.precision_cholesky.T, z.T, lower=False)
        return post.mean + offsets.T

    return Sampler(num_samples, sample, name="exact")
