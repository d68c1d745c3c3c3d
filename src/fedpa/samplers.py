"""Local posterior samplers: pytrees of hyperparameters with a pure ``sample`` method.

Every sampler is a :class:`Sampler`, a frozen dataclass registered as a pytree: its float
hyperparameters (step sizes, temperatures, momentum) are leaves, traced by ``jit`` and batched by
``vmap``; the integers that fix array shapes (samples, steps, batch size, chains) are static.
One method does the work, in blackjax's spirit (numbers as data, structure closed over)::

    samples, info = sampler.sample(key, loss_fn, params, client)

``params`` is the current server model (the starting point of local inference), ``client`` one
client's :class:`~fedpa.problems.Clients` record (unstacked), ``loss_fn(params, batch)`` the
average loss over a batch, ``samples`` a pytree shaped like ``params`` with a leading axis of
``num_samples``, and ``info`` a :class:`SamplerInfo` with the local compute spent (so budgets
can be matched without re-implementing a sampler).

The building block of the SGD-based samplers is :func:`sgd_steps`, a ``lax.scan`` over local
SGD steps (optionally with heavy-ball momentum) on mini-batches drawn with replacement from the
client's valid examples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

from . import _validate
from ._pytree import pytree_dataclass, static

__all__ = [
    "Sampler",
    "SamplerInfo",
    "local_compute",
    "IASG",
    "SGLD",
    "HMC",
    "ExactGaussian",
    "iasg",
    "sgld",
    "hmc",
    "nuts",
    "exact_gaussian",
    "hmc_chain",
    "sgd_steps",
    "minibatch_indices",
    "minibatch_stream",
    "MinibatchStream",
    "hash_bits",
]


class SamplerInfo(NamedTuple):
    """The local compute one ``sample`` call spent.

    Attributes:
      num_grad_evals: gradient evaluations (one per mini-batch or full-data gradient), int32.
      num_example_grads: per-example gradients, ``num_grad_evals`` times the examples per
        gradient (the batch size, or the client's examples for full-data samplers), int32.
    """

    num_grad_evals: jax.Array
    num_example_grads: jax.Array


def local_compute(grad_evals, examples_per_grad) -> SamplerInfo:
    """A :class:`SamplerInfo` of ``grad_evals`` gradients of ``examples_per_grad`` examples each."""
    evals = jnp.asarray(grad_evals, jnp.int32)
    return SamplerInfo(evals, evals * jnp.asarray(examples_per_grad, jnp.int32))


class Sampler:
    """Base class of local posterior samplers (see the module docstring).

    Subclasses are :func:`~fedpa._pytree.pytree_dataclass` es with a static ``num_samples``
    field and a ``sample(key, loss_fn, params, client) -> (samples, SamplerInfo)`` method.
    """

    num_samples: int

    def sample(self, key, loss_fn, params, client) -> tuple[Any, SamplerInfo]:
        raise NotImplementedError


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
    return _hash(jax.random.bits(key, (2,), jnp.uint32), lax.iota(jnp.uint32, size))


def _hash(words, counter):
    """Words ``counter`` of the keyed hash stream whose key words are ``words (2,)``."""
    return _mix32(_mix32(counter * jnp.uint32(0x9E3779B9) + words[0]) ^ words[1])


class MinibatchStream(NamedTuple):
    """The mini-batch rows of one SGD chain, computed step by step inside the step.

    ``rows(t)`` equals ``minibatch_indices(key, num_examples, (T, batch_size))[t]`` bit for bit
    (the same counter-based hash words), without materializing the ``(T, batch_size)`` array:
    the hash fuses with the gather of step ``t``. Build with :func:`minibatch_stream`.
    """

    words: jax.Array
    num_examples: jax.Array
    batch_size: int

    def rows(self, t):
        counter = t * jnp.uint32(self.batch_size) + lax.iota(jnp.uint32, self.batch_size)
        n = jnp.asarray(self.num_examples).astype(jnp.uint32)
        return _mulhi_u32(_hash(self.words, counter), n).astype(jnp.int32)


def minibatch_stream(key, num_examples, batch_size: int) -> MinibatchStream:
    """The :class:`MinibatchStream` of ``key``: the rows :func:`minibatch_indices` would draw."""
    return MinibatchStream(jax.random.bits(key, (2,), jnp.uint32), num_examples, batch_size)


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


class SGDState(NamedTuple):
    """An SGD chain's state: the iterate and the heavy-ball velocity (``None`` without momentum)."""

    params: Any
    velocity: Any = None


def _sgd_step(loss_fn, data, rows, learning_rate, momentum):
    """One SGD step on ``data[rows(x)]``: ``v ← m v + g``, ``x ← x - η v`` (plain: ``v = g``)."""
    grad_fn = jax.grad(loss_fn)

    def step(state: SGDState, x) -> SGDState:
        g = grad_fn(state.params, _gather(data, rows(x)))
        if state.velocity is not None:
            g = jax.tree.map(lambda v, gw: momentum * v + gw, state.velocity, g)
        p = jax.tree.map(lambda w, gw: w - learning_rate * gw, state.params, g)
        return SGDState(p, None if state.velocity is None else g)

    return step


def _sgd_init(params, momentum) -> SGDState:
    return SGDState(params, None if momentum is None else jax.tree.map(jnp.zeros_like, params))


def sgd_steps(loss_fn, params, data, indices, learning_rate, *, momentum=None, unroll: int = 1):
    """SGD over the mini-batches ``data[indices[t]]``, ``t = 0 … T-1``.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      params: starting point (pytree).
      data: a client's data pytree, leaves ``(n, ...)``.
      indices: ``(T, batch_size)`` int mini-batch rows, or a :class:`MinibatchStream` and a step
        range as ``(stream, first_step, num_steps)`` (rows hashed inside each step).
      learning_rate: step size (may be traced).
      momentum: heavy-ball momentum in ``[0, 1)`` (may be traced), or ``None`` for plain SGD.
      unroll: ``lax.scan`` unroll factor (1 is fastest on XLA:CPU, measured).

    Returns:
      The final iterate.
    """
    state = _sgd_init(params, momentum)
    return _run_sgd(loss_fn, state, data, indices, learning_rate, momentum, unroll)[0].params


def _steps(indices):
    """``(xs, rows)``: what the scan runs over and how a scanned element becomes batch rows."""
    if isinstance(indices, tuple) and isinstance(indices[0], MinibatchStream):
        stream, first, num = indices
        return jnp.asarray(first, jnp.uint32) + jnp.arange(num, dtype=jnp.uint32), stream.rows
    return indices, lambda idx: idx


def _run_sgd(loss_fn, state, data, indices, learning_rate, momentum, unroll, average=False):
    """SGD over ``indices`` (see :func:`sgd_steps`); returns ``(final state, mean iterate)``,
    the mean of the iterates after each step when ``average`` (else ``None``)."""
    xs, rows = _steps(indices)
    step = _sgd_step(loss_fn, data, rows, learning_rate, momentum)
    if not average:
        state, _ = lax.scan(lambda s, x: (step(s, x), None), state, xs, unroll=unroll)
        return state, None

    def body(carry, x):
        s, total = carry
        s = step(s, x)
        return (s, jax.tree.map(jnp.add, total, s.params)), None

    zeros = jax.tree.map(jnp.zeros_like, state.params)
    (state, total), _ = lax.scan(body, (state, zeros), xs, unroll=unroll)
    num = xs.shape[0]
    return state, jax.tree.map(lambda t: t / num, total)


# ------------------------------------------------------------------ IASG


@pytree_dataclass
class IASG(Sampler):
    """Iterate-averaged SGD (Mandt, Hoffman & Blei, 2017) as a local posterior sampler.

    From the server model, each of ``num_chains`` independent chains runs ``burnin_steps`` SGD
    steps, then for each of its ``num_samples / num_chains`` samples ``discard_steps`` steps whose
    iterates are dropped followed by ``avg_steps`` steps whose iterates are averaged into the
    sample. Averaging a stationary SGD chain over a window gives iterates whose covariance has the
    shape of the local posterior ``A⁻¹`` (scaled by ``σ² / (avg_steps · batch_size)``); raw SGD
    iterates are close to isotropic. Memory is ``O(num_samples · d)`` per client.

    Leaves (traced): ``learning_rate``, ``momentum`` (``None``: plain SGD, no velocity).
    Static: ``num_samples``, ``avg_steps``, ``burnin_steps``, ``batch_size``, ``discard_steps``,
    ``num_chains``, ``unroll``. Build with :func:`iasg` (validates the values).
    """

    learning_rate: Any = 0.01
    momentum: Any = None
    num_samples: int = static(default=10)
    avg_steps: int = static(default=10)
    burnin_steps: int = static(default=50)
    batch_size: int = static(default=10)
    discard_steps: int = static(default=0)
    num_chains: int = static(default=1)
    unroll: int = static(default=1)

    @property
    def steps_per_chain(self) -> int:
        per_chain = self.num_samples // self.num_chains
        return self.burnin_steps + per_chain * (self.discard_steps + self.avg_steps)

    def sample(self, key, loss_fn, params, client):
        per_chain = self.num_samples // self.num_chains
        lr, mom, unroll = self.learning_rate, self.momentum, self.unroll

        def chain(k):
            stream = minibatch_stream(k, client.num_examples, self.batch_size)
            burn, window = self.burnin_steps, self.discard_steps + self.avg_steps
            state = _sgd_init(params, mom)
            state, _ = _run_sgd(loss_fn, state, client.data, (stream, 0, burn), lr, mom, unroll)

            def one_sample(s, j):
                start = burn + j * window
                if self.discard_steps:
                    s, _ = _run_sgd(
                        loss_fn,
                        s,
                        client.data,
                        (stream, start, self.discard_steps),
                        lr,
                        mom,
                        unroll,
                    )
                rest = (stream, start + self.discard_steps, self.avg_steps)
                return _run_sgd(loss_fn, s, client.data, rest, lr, mom, unroll, average=True)

            _, samples = lax.scan(one_sample, state, jnp.arange(per_chain, dtype=jnp.uint32))
            return samples

        if self.num_chains == 1:
            samples = chain(key)
        else:
            samples = jax.vmap(chain)(jax.random.split(key, self.num_chains))
            samples = jax.tree.map(lambda s: s.reshape(-1, *s.shape[2:]), samples)
        return samples, local_compute(self.num_chains * self.steps_per_chain, self.batch_size)


def iasg(
    num_samples: int,
    avg_steps: int,
    burnin_steps: int,
    learning_rate: float,
    batch_size: int,
    *,
    discard_steps: int = 0,
    momentum: float | None = None,
    num_chains: int = 1,
    unroll: int = 1,
) -> IASG:
    """An :class:`IASG` sampler, its values checked.

    Args:
      num_samples: ``ℓ >= 2`` samples per call (all chains together).
      avg_steps: SGD iterates averaged into one sample, ``>= 1``.
      burnin_steps: SGD steps of each chain before its first sample, ``>= 0``.
      learning_rate: ``> 0`` (a leaf: may be traced).
      batch_size: examples per SGD step, ``>= 1``.
      discard_steps: SGD steps dropped before each averaging window, ``>= 0`` (the original
        code's steps between samples; they lower the samples' autocorrelation).
      momentum: client heavy-ball momentum in ``[0, 1)``, or ``None`` for plain SGD.
      num_chains: independent chains from the server model, ``>= 1``, dividing ``num_samples``.
      unroll: ``lax.scan`` unroll factor.
    """
    num_samples = _validate.integer("num_samples", num_samples, minimum=2)
    avg_steps = _validate.integer("avg_steps", avg_steps, minimum=1)
    burnin_steps = _validate.integer("burnin_steps", burnin_steps, minimum=0)
    batch_size = _validate.integer("batch_size", batch_size, minimum=1)
    _validate.real("learning_rate", learning_rate, low=0.0, low_open=True)
    discard_steps = _validate.integer("discard_steps", discard_steps, minimum=0)
    if momentum is not None:
        _validate.real("momentum", momentum, low=0.0, high=1.0, high_open=True)
    num_chains = _validate.integer("num_chains", num_chains, minimum=1)
    if num_samples % num_chains:
        raise ValueError(
            f"num_chains must divide num_samples, got num_chains={num_chains} and "
            f"num_samples={num_samples}"
        )
    unroll = _validate.integer("unroll", unroll, minimum=1)
    return IASG(
        learning_rate=learning_rate,
        momentum=momentum,
        num_samples=num_samples,
        avg_steps=avg_steps,
        burnin_steps=burnin_steps,
        batch_size=batch_size,
        discard_steps=discard_steps,
        num_chains=num_chains,
        unroll=unroll,
    )


# ------------------------------------------------------------------ exact Gaussian


@pytree_dataclass
class ExactGaussian(Sampler):
    """Exact samples of a client's Gaussian local posterior, ``μ_i + √scale · L⁻ᵀ z``.

    Needs ``client.posterior`` (quadratic problems; ``A_i = L Lᵀ``, ``z ~ N(0, I)``); ``params``
    must be the flat ``(d,)`` model. ``scale = 1`` samples ``N(μ_i, A_i⁻¹)``; another ``scale``
    (a leaf) samples ``N(μ_i, scale · A_i⁻¹)``: the right shape at the wrong scale, like IASG's
    samples. Costs no gradient evaluation (an oracle).
    """

    scale: Any = 1.0
    num_samples: int = static(default=10)

    def sample(self, key, loss_fn, params, client):
        del loss_fn, params
        post = client.posterior
        z = jax.random.normal(key, (self.num_samples, post.mean.shape[-1]), post.mean.dtype)
        offsets = jax.scipy.linalg.solve_triangular(post.precision_cholesky.T, z.T, lower=False)
        samples = post.mean + jnp.sqrt(jnp.asarray(self.scale, post.mean.dtype)) * offsets.T
        return samples, local_compute(0, 0)


def exact_gaussian(num_samples: int, *, scale: float = 1.0) -> ExactGaussian:
    """An :class:`ExactGaussian` sampler of ``num_samples >= 2`` samples at ``scale > 0``."""
    num_samples = _validate.integer("num_samples", num_samples, minimum=2)
    _validate.real("scale", scale, low=0.0, low_open=True)
    return ExactGaussian(scale=scale, num_samples=num_samples)


# ------------------------------------------------------------------ MCMC samplers (SGLD, HMC, NUTS)
# Alternatives to IASG with the same interface. They run in the flattened parameter space
# (``ravel_pytree``), so any params pytree works, and all target the local posterior
# ``p_i(x) ∝ exp(-f_i(x) / temperature)`` of the client's *average* loss ``f_i`` (the scaling of
# :mod:`fedpa.problems`: for least squares, ``temperature = 1`` gives ``N(μ_i, A_i⁻¹)`` exactly).


def _flat_loss(loss_fn, unravel):
    return lambda flat, batch: loss_fn(unravel(flat), batch)


@pytree_dataclass
class SGLD(Sampler):
    """Stochastic-gradient Langevin dynamics (Welling & Teh, 2011) as a local sampler.

    ``x ← x - η ∇f̂(x) + sqrt(2 η T) ξ``, ``ξ ~ N(0, I)``, with ``∇f̂`` a mini-batch gradient of
    the average loss (rows drawn with replacement among the valid examples). From the server
    model, ``burnin_steps`` steps are discarded, then every ``thinning``-th iterate is kept until
    ``num_samples`` are collected: ``burnin_steps + num_samples · thinning`` gradient steps.

    Leaves: ``learning_rate`` (``η``), ``temperature`` (``T``). Static: ``num_samples``,
    ``batch_size``, ``burnin_steps``, ``thinning``, ``unroll``. Build with :func:`sgld`.
    """

    learning_rate: Any = 1e-3
    temperature: Any = 1.0
    num_samples: int = static(default=10)
    batch_size: int = static(default=10)
    burnin_steps: int = static(default=100)
    thinning: int = static(default=10)
    unroll: int = static(default=1)

    def sample(self, key, loss_fn, params, client):
        flat, unravel = ravel_pytree(params)
        grad_fn = jax.grad(_flat_loss(loss_fn, unravel))
        burn, thin, num = self.burnin_steps, self.thinning, self.num_samples
        total = burn + num * thin
        k_idx, k_noise = jax.random.split(key)
        idx = minibatch_indices(k_idx, client.num_examples, (total, self.batch_size))
        noise_keys = jax.random.split(k_noise, total)
        lr = self.learning_rate
        scale = jnp.sqrt(2.0 * lr * self.temperature).astype(flat.dtype)

        def step(x, inputs):
            i, k = inputs
            g = grad_fn(x, _gather(client.data, i))
            z = jax.random.normal(k, x.shape, x.dtype)
            return x - lr * g + scale * z, None

        x, _ = lax.scan(step, flat, (idx[:burn], noise_keys[:burn]), unroll=self.unroll)

        def block(x, inputs):
            x, _ = lax.scan(step, x, inputs, unroll=self.unroll)
            return x, x

        rest = (
            idx[burn:].reshape(num, thin, self.batch_size),
            noise_keys[burn:].reshape(num, thin, *noise_keys.shape[1:]),
        )
        _, samples = lax.scan(block, x, rest)
        return jax.vmap(unravel)(samples), local_compute(total, self.batch_size)


def sgld(
    num_samples: int,
    learning_rate: float,
    batch_size: int,
    *,
    burnin_steps: int = 100,
    thinning: int = 10,
    temperature: float = 1.0,
    unroll: int = 1,
) -> SGLD:
    """An :class:`SGLD` sampler, its values checked.

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
    return SGLD(
        learning_rate=learning_rate,
        temperature=temperature,
        num_samples=num_samples,
        batch_size=batch_size,
        burnin_steps=burnin_steps,
        thinning=thinning,
        unroll=unroll,
    )


def hmc_chain(
    key,
    logdensity_fn: Callable,
    position,
    *,
    num_samples: int,
    step_size,
    num_integration_steps: int | None = None,
    burnin_steps: int = 100,
    thinning: int = 1,
    max_num_doublings: int = 10,
    adaptation_steps: int = 0,
):
    """A blackjax HMC (or NUTS, when ``num_integration_steps`` is ``None``) chain in a ``scan``.

    With ``adaptation_steps = 0``: identity mass matrix, fixed ``step_size`` (may be traced).
    With ``adaptation_steps > 0``: blackjax's window adaptation (Stan's: dual averaging of the
    step size towards acceptance 0.8, a diagonal mass matrix from the warm-up's variances) runs
    that many transitions from ``position`` starting at ``step_size``, and the chain continues
    from the adapted state with the adapted parameters. Then ``burnin_steps`` transitions are
    discarded and every ``thinning``-th state is kept.

    Args:
      key: PRNG key.
      logdensity_fn: ``(d,) -> scalar`` log density (up to a constant).
      position: ``(d,)`` starting point.
      num_samples, step_size, num_integration_steps, burnin_steps, thinning: as in :class:`HMC`.
      max_num_doublings: NUTS' tree-depth limit.

    Returns:
      ``(samples (num_samples, d), gradient_evaluations)``: the second is the total number of
      leapfrog steps (one full-data gradient each) including the adaptation's, the chain's
      compute.
    """
    import blackjax
    from blackjax.adaptation.base import get_filter_adapt_info_fn

    if num_integration_steps is None:
        family, extra = blackjax.nuts, {"max_num_doublings": max_num_doublings}
    else:
        family, extra = blackjax.hmc, {"num_integration_steps": num_integration_steps}
    k_burn, k_keep = jax.random.split(key)
    evals = jnp.zeros((), jnp.int32)
    if adaptation_steps:
        k_adapt, k_burn = jax.random.split(k_burn)
        warmup = blackjax.window_adaptation(
            family,
            logdensity_fn,
            initial_step_size=step_size,
            adaptation_info_fn=get_filter_adapt_info_fn(info_keys={"num_integration_steps"}),
            **extra,
        )
        (state, parameters), info = warmup.run(k_adapt, position, adaptation_steps)
        algo = family(logdensity_fn, **{**extra, **parameters})
        evals = evals + jnp.sum(info.info.num_integration_steps).astype(jnp.int32)
    else:
        algo = family(logdensity_fn, step_size, jnp.ones_like(position), **extra)
        state = algo.init(position)

    def transition(carry, k):
        state, evals = carry
        state, info = algo.step(k, state)
        return (state, evals + info.num_integration_steps), None

    carry = (state, evals)
    carry, _ = lax.scan(transition, carry, jax.random.split(k_burn, burnin_steps))

    def block(carry, keys):
        carry, _ = lax.scan(transition, carry, keys)
        return carry, carry[0].position

    keys = jax.random.split(k_keep, num_samples * thinning)
    keys = keys.reshape(num_samples, thinning, *keys.shape[1:])
    (_, evals), samples = lax.scan(block, carry, keys)
    return samples, evals


@pytree_dataclass
class HMC(Sampler):
    """Full-batch Hamiltonian Monte Carlo, or NUTS, from blackjax, as a local sampler.

    Targets ``exp(-f_i(x) / T)`` where ``f_i = loss_fn(params, client.data)`` is the loss on the
    client's *whole* data array, so for padded clients the loss must ignore padding (the models
    of :mod:`fedpa.models` do, through the ``mask`` entry). ``num_integration_steps = None`` is
    NUTS (adaptive path lengths up to ``2^max_num_doublings``; under ``vmap`` every client waits
    for the longest trajectory). Identity mass matrix and a fixed step size, or, with
    ``adaptation_steps > 0``, blackjax's window adaptation of both on every client (see
    :func:`hmc_chain`; ``step_size`` is then its starting value).

    Leaves: ``step_size``, ``temperature``. Static: ``num_samples``, ``num_integration_steps``,
    ``burnin_steps``, ``thinning``, ``max_num_doublings``, ``adaptation_steps``. Build with
    :func:`hmc` or :func:`nuts`; needs the ``mcmc`` extra (blackjax).
    """

    step_size: Any = 0.1
    temperature: Any = 1.0
    num_samples: int = static(default=10)
    num_integration_steps: int | None = static(default=10)
    burnin_steps: int = static(default=100)
    thinning: int = static(default=1)
    max_num_doublings: int = static(default=10)
    adaptation_steps: int = static(default=0)

    def sample(self, key, loss_fn, params, client):
        flat, unravel = ravel_pytree(params)
        loss = _flat_loss(loss_fn, unravel)
        temperature = self.temperature

        def logdensity(x):
            return -loss(x, client.data) / temperature

        samples, evals = hmc_chain(
            key,
            logdensity,
            flat,
            num_samples=self.num_samples,
            step_size=self.step_size,
            num_integration_steps=self.num_integration_steps,
            burnin_steps=self.burnin_steps,
            thinning=self.thinning,
            max_num_doublings=self.max_num_doublings,
            adaptation_steps=self.adaptation_steps,
        )
        return jax.vmap(unravel)(samples), local_compute(evals, client.num_examples)


def _mcmc(
    num_samples,
    step_size,
    num_integration_steps,
    burnin_steps,
    thinning,
    temperature,
    max_num_doublings,
    adaptation_steps,
) -> HMC:
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
    adaptation_steps = _validate.integer("adaptation_steps", adaptation_steps, minimum=0)
    return HMC(
        step_size=step_size,
        temperature=temperature,
        num_samples=num_samples,
        num_integration_steps=num_integration_steps,
        burnin_steps=burnin_steps,
        thinning=thinning,
        max_num_doublings=max_num_doublings,
        adaptation_steps=adaptation_steps,
    )


def hmc(
    num_samples: int,
    step_size: float,
    num_integration_steps: int,
    *,
    burnin_steps: int = 100,
    thinning: int = 1,
    temperature: float = 1.0,
    adaptation_steps: int = 0,
) -> HMC:
    """Full-batch HMC (:class:`HMC`): ``(burnin_steps + num_samples · thinning) ·
    num_integration_steps`` full-data gradients.

    Args:
      num_samples: ``ℓ >= 2``.
      step_size: leapfrog step size ``> 0``.
      num_integration_steps: leapfrog steps per transition, ``>= 1``.
      burnin_steps: discarded transitions.
      thinning: transitions between kept samples.
      temperature: ``T > 0``.
      adaptation_steps: window-adaptation transitions (step size and a diagonal mass matrix)
        before the burn-in, ``>= 0``; ``0``: fixed ``step_size``, identity mass matrix.
    """
    return _mcmc(
        num_samples,
        step_size,
        num_integration_steps,
        burnin_steps,
        thinning,
        temperature,
        10,
        adaptation_steps,
    )


def nuts(
    num_samples: int,
    step_size: float,
    *,
    burnin_steps: int = 100,
    thinning: int = 1,
    temperature: float = 1.0,
    max_num_doublings: int = 10,
    adaptation_steps: int = 0,
) -> HMC:
    """The No-U-Turn sampler (:class:`HMC` with adaptive path lengths); arguments as
    :func:`hmc`, plus NUTS' tree-depth limit ``max_num_doublings``."""
    return _mcmc(
        num_samples,
        step_size,
        None,
        burnin_steps,
        thinning,
        temperature,
        max_num_doublings,
        adaptation_steps,
    )
