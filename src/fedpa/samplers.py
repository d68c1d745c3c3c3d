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


def _mix32(x):
    """``lowbias32`` (C. Wellons): a bijective 32-bit integer hash with near-ideal avalanche."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _mulhi_u32(a, b):
    """``floor(a * b / 2³²)`` for ``uint32`` arrays, exactly, with 16-bit limbs (no uint64)."""
    mask = jnp.uint32(0xFFFF)
    ah, al, bh, bl = a >> 16, a & mask, b >> 16, b & mask
    hl, lh = ah * bl, al * bh
    carry = ((hl & mask) + (lh & mask) + ((al * bl) >> 16)) >> 16
    return ah * bh + (hl >> 16) + (lh >> 16) + carry


def hash_bits(key, size: int):
    """``(size,)`` uniform ``uint32`` words from a keyed counter-based hash.

    A cheap stand-in for Threefry where many words are needed per step (mini-batch rows): two
    32-bit words are drawn from ``key`` with JAX's own generator, then word ``t`` is
    ``mix(mix(t·φ + k₀) ⊕ k₁)`` with ``mix`` the ``lowbias32`` hash. Deterministic in ``key``;
    about 5× cheaper than ``jax.random.bits`` on XLA:CPU. Not for cryptography.
    """
    k = jax.random.bits(key, (2,), jnp.uint32)
    counter = lax.iota(jnp.uint32, size) * jnp.uint32(0x9E3779B9)
    return _mix32(_mix32(counter + k[0]) ^ k[1])


def minibatch_indices(key, num_examples, shape):
    """Integer indices, uniform with replacement over a client's ``num_examples`` valid rows.

    Args:
      key: PRNG key.
      num_examples: int scalar ``n >= 1`` (may be traced: the valid rows of a padded client).
      shape: static output shape, e.g. ``(steps, batch_size)``.

    Returns:
      ``int32`` array of ``shape`` with values in ``[0, n)``: one :func:`hash_bits` word per
      index mapped by Lemire's multiply-shift ``⌊w·n / 2³²⌋`` (bias below ``n / 2³²``). Drawn
      flat and reshaped: a rank-3 draw under ``vmap`` compiles very slowly on XLA:CPU.
    """
    size = 1
    for s in shape:
        size *= s
    n = jnp.asarray(num_examples).astype(jnp.uint32)
    return _mulhi_u32(hash_bits(key, size), n).astype(jnp.int32).reshape(shape)


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


# ------------------------------------------------------------------ MCMC samplers (SGLD, HMC, NUTS)
# Alternatives to IASG with the same ``Sampler`` interface. They run in the flattened parameter
# space (``ravel_pytree``), so any params pytree works, and all target the local posterior
# ``p_i(x) ∝ exp(-f_i(x) / temperature)`` of the client's *average* loss ``f_i`` (the scaling of
# :mod:`fedpa.problems`: for least squares, ``temperature = 1`` gives ``N(μ_i, A_i⁻¹)`` exactly).

__all__ += ["sgld", "hmc", "nuts", "hmc_chain"]


def _ravel(params):
    from jax.flatten_util import ravel_pytree

    return ravel_pytree(params)


def _flat_loss(loss_fn, unravel):
    return lambda flat, batch: loss_fn(unravel(flat), batch)


def sgld(
    num_samples: int,
    learning_rate: float,
    batch_size: int,
    *,
    burnin_steps: int = 100,
    thinning: int = 10,
    temperature: float = 1.0,
    unroll: int = 1,
) -> Sampler:
    """Stochastic-gradient Langevin dynamics (Welling & Teh, 2011) as a local sampler.

    ``x ← x - η ∇f̂(x) + sqrt(2 η T) ξ``, ``ξ ~ N(0, I)``, with ``∇f̂`` a mini-batch gradient of
    the average loss (rows drawn with replacement among the valid examples). From the server
    model, ``burnin_steps`` steps are discarded, then every ``thinning``-th iterate is kept until
    ``num_samples`` are collected: ``burnin_steps + num_samples · thinning`` gradient steps of
    ``batch_size`` examples. The chain is a ``lax.scan``; memory is ``O(num_samples · d)``.

    Args:
      num_samples: ``ℓ >= 2``.
      learning_rate: ``η > 0`` (small ``η`` lowers the discretization bias, mixes slower).
      batch_size: examples per gradient.
      burnin_steps: discarded steps, ``>= 0``.
      thinning: steps between kept samples, ``>= 1``.
      temperature: ``T > 0``.
    """
    num_samples = _validate.integer("num_samples", num_samples, minimum=2)
    _validate.real("learning_rate", learning_rate, low=0.0, low_open=True)
    batch_size = _validate.integer("batch_size", batch_size, minimum=1)
    burnin_steps = _validate.integer("burnin_steps", burnin_steps, minimum=0)
    thinning = _validate.integer("thinning", thinning, minimum=1)
    _validate.real("temperature", temperature, low=0.0, low_open=True)
    unroll = _validate.integer("unroll", unroll, minimum=1)

    def sample(key, loss_fn, params, client):
        flat, unravel = _ravel(params)
        grad_fn = jax.grad(_flat_loss(loss_fn, unravel))
        total = burnin_steps + num_samples * thinning
        k_idx, k_noise = jax.random.split(key)
        idx = minibatch_indices(k_idx, client.num_examples, (total, batch_size))
        noise_keys = jax.random.split(k_noise, total)
        scale = jnp.sqrt(2.0 * learning_rate * temperature).astype(flat.dtype)

        def step(x, inputs):
            i, k = inputs
            g = grad_fn(x, _gather(client.data, i))
            z = jax.random.normal(k, x.shape, x.dtype)
            return x - learning_rate * g + scale * z, None

        x, _ = lax.scan(step, flat, (idx[:burnin_steps], noise_keys[:burnin_steps]), unroll=unroll)

        def block(x, inputs):
            x, _ = lax.scan(step, x, inputs, unroll=unroll)
            return x, x

        rest = (
            idx[burnin_steps:].reshape(num_samples, thinning, batch_size),
            noise_keys[burnin_steps:].reshape(num_samples, thinning, *noise_keys.shape[1:]),
        )
        _, samples = lax.scan(block, x, rest)
        return jax.vmap(unravel)(samples)

    return Sampler(num_samples, sample, name="sgld")


def hmc_chain(
    key,
    logdensity_fn: Callable,
    position,
    *,
    num_samples: int,
    step_size: float,
    num_integration_steps: int | None = None,
    burnin_steps: int = 100,
    thinning: int = 1,
    max_num_doublings: int = 10,
):
    """A blackjax HMC (or NUTS, when ``num_integration_steps`` is ``None``) chain in a ``scan``.

    Identity mass matrix, fixed step size (no adaptation: the chain must stay a pure, ``vmap``-able
    function of the key). Discards ``burnin_steps`` transitions, then keeps every
    ``thinning``-th state.

    Args:
      key: PRNG key.
      logdensity_fn: ``(d,) -> scalar`` log density (up to a constant).
      position: ``(d,)`` starting point.
      num_samples, step_size, num_integration_steps, burnin_steps, thinning: as in :func:`hmc`.
      max_num_doublings: NUTS' tree-depth limit.

    Returns:
      ``(samples (num_samples, d), gradient_evaluations)``: the second is the total number of
      leapfrog steps (one full-data gradient each), the chain's compute.
    """
    import blackjax

    inverse_mass = jnp.ones_like(position)
    if num_integration_steps is None:
        algo = blackjax.nuts(
            logdensity_fn, step_size, inverse_mass, max_num_doublings=max_num_doublings
        )
    else:
        algo = blackjax.hmc(logdensity_fn, step_size, inverse_mass, num_integration_steps)

    def transition(carry, k):
        state, evals = carry
        state, info = algo.step(k, state)
        return (state, evals + info.num_integration_steps), None

    k_burn, k_keep = jax.random.split(key)
    carry = (algo.init(position), jnp.zeros((), jnp.int32))
    carry, _ = lax.scan(transition, carry, jax.random.split(k_burn, burnin_steps))

    def block(carry, keys):
        carry, _ = lax.scan(transition, carry, keys)
        return carry, carry[0].position

    keys = jax.random.split(k_keep, num_samples * thinning)
    keys = keys.reshape(num_samples, thinning, *keys.shape[1:])
    (_, evals), samples = lax.scan(block, carry, keys)
    return samples, evals


def _mcmc_sampler(
    num_samples,
    step_size,
    num_integration_steps,
    burnin_steps,
    thinning,
    temperature,
    max_num_doublings,
    name,
):
    num_samples = _validate.integer("num_samples", num_samples, minimum=2)
    _validate.real("step_size", step_size, low=0.0, low_open=True)
    if num_integration_steps is not None:
        num_integration_steps = _validate.integer(
            "num_integration_steps", num_integration_steps, minimum=1
        )
    burnin_steps = _validate.integer("burnin_steps", burnin_steps, minimum=0)
    thinning = _validate.integer("thinning", thinning, minimum=1)
    _validate.real("temperature", temperature, low=0.0, low_open=True)
    max_num_doublings = _validate.integer("max_num_doublings", max_num_doublings, minimum=1)

    def sample(key, loss_fn, params, client):
        flat, unravel = _ravel(params)
        loss = _flat_loss(loss_fn, unravel)

        def logdensity(x):
            return -loss(x, client.data) / temperature

        samples, _ = hmc_chain(
            key,
            logdensity,
            flat,
            num_samples=num_samples,
            step_size=step_size,
            num_integration_steps=num_integration_steps,
            burnin_steps=burnin_steps,
            thinning=thinning,
            max_num_doublings=max_num_doublings,
        )
        return jax.vmap(unravel)(samples)

    return Sampler(num_samples, sample, name=name)


def hmc(
    num_samples: int,
    step_size: float,
    num_integration_steps: int,
    *,
    burnin_steps: int = 100,
    thinning: int = 1,
    temperature: float = 1.0,
) -> Sampler:
    """Full-batch Hamiltonian Monte Carlo (blackjax) as a local sampler.

    Targets ``exp(-f_i(x) / T)`` where ``f_i = loss_fn(params, client.data)`` is the loss on the
    client's *whole* data array, so for padded clients the loss must ignore padding (the models of
    :mod:`fedpa.models` do, through the ``mask`` entry). Compute:
    ``(burnin_steps + num_samples · thinning) · num_integration_steps`` full-data gradients.

    Args:
      num_samples: ``ℓ >= 2``.
      step_size: leapfrog step size ``> 0`` (fixed; identity mass matrix).
      num_integration_steps: leapfrog steps per transition, ``>= 1``.
      burnin_steps: discarded transitions.
      thinning: transitions between kept samples.
      temperature: ``T > 0``.
    """
    return _mcmc_sampler(
        num_samples,
        step_size,
        num_integration_steps,
        burnin_steps,
        thinning,
        temperature,
        10,
        "hmc",
    )


def nuts(
    num_samples: int,
    step_size: float,
    *,
    burnin_steps: int = 100,
    thinning: int = 1,
    temperature: float = 1.0,
    max_num_doublings: int = 10,
) -> Sampler:
    """The No-U-Turn sampler (blackjax) as a local sampler: HMC with adaptive path lengths.

    Same target and padding caveat as :func:`hmc`; the number of leapfrog steps per transition
    is chosen by NUTS (up to ``2^max_num_doublings``). Under ``vmap`` over clients every client
    waits for the longest trajectory.
    """
    return _mcmc_sampler(
        num_samples,
        step_size,
        None,
        burnin_steps,
        thinning,
        temperature,
        max_num_doublings,
        "nuts",
    )
