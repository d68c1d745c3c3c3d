r"""Client updates: the part of a federated algorithm that runs on the clients.

Every federated algorithm here is the same round — sample clients, each computes a *delta*,
the server averages the deltas and feeds the average to an optax optimizer as a pseudo-gradient
(generalized FedOpt, Reddi et al. 2021) — and differs only in the client update. A client update
is a :class:`ClientUpdate`: a frozen dataclass registered as a pytree (float hyperparameters are
leaves, traced and vmappable; integers that fix shapes are static) with one pure method::

    delta, info = update(key, loss_fn, params, client, round)

``delta`` has the structure of ``params``; ``info`` is an :class:`UpdateInfo` (local compute);
``round`` is the absolute server round (an int32 scalar), which combinators such as
:class:`Switch` read, so a continued run behaves like one long run.

* :func:`minibatch_sgd` (:class:`MinibatchGradient`): a mini-batch gradient at the server model.
* :func:`fedavg` (:class:`LocalSGD`): local SGD, delta ``x - x_local``.
* :func:`fedpa` (:class:`PosteriorDelta`): samples from any :class:`~fedpa.samplers.Sampler`,
  delta ``Σ̂⁻¹ (x - μ̂)`` by the dynamic program (:func:`fedpa.posterior.delta`);
  :func:`fedpa_iasg` is FedPA with the IASG sampler (the paper's practical algorithm).
* :func:`fedpa_exact` (:class:`ExactPosteriorDelta`): the exact local posterior of a quadratic
  problem, delta ``A_i (x - μ_i)``; averaged, this is the gradient of the global objective (an
  oracle: full-batch gradient descent on ``F``).
* :func:`with_burnin` (:class:`Switch`): one update before a round, another from it on (the
  paper's FedAvg burn-in rounds before FedPA).
"""

from __future__ import annotations

from typing import Any

import jax
from jax import lax
from jax.flatten_util import ravel_pytree

from . import _validate, posterior, samplers
from ._pytree import pytree_dataclass, static

__all__ = [
    "ClientUpdate",
    "UpdateInfo",
    "LocalSGD",
    "MinibatchGradient",
    "PosteriorDelta",
    "ExactPosteriorDelta",
    "Switch",
    "minibatch_sgd",
    "fedavg",
    "fedpa",
    "fedpa_exact",
    "fedpa_iasg",
    "with_burnin",
]


UpdateInfo = samplers.SamplerInfo
"""Local compute of one client update (the :class:`~fedpa.samplers.SamplerInfo` fields)."""
_info = samplers.local_compute


class ClientUpdate:
    """Base class of client updates (see the module docstring)."""

    def __call__(self, key, loss_fn, params, client, round) -> tuple[Any, UpdateInfo]:
        raise NotImplementedError


@pytree_dataclass
class LocalSGD(ClientUpdate):
    """FedAvg's client update: ``local_steps`` of SGD from the server model, delta ``x - x_local``.

    Leaves: ``local_lr``, ``momentum`` (``None``: plain SGD). Static: ``local_steps``,
    ``batch_size``, ``unroll``. Build with :func:`fedavg`.
    """

    local_lr: Any = 0.01
    momentum: Any = None
    local_steps: int = static(default=100)
    batch_size: int = static(default=10)
    unroll: int = static(default=1)

    def __call__(self, key, loss_fn, params, client, round):
        del round
        stream = samplers.minibatch_stream(key, client.num_examples, self.batch_size)
        local = samplers.sgd_steps(
            loss_fn,
            params,
            client.data,
            (stream, 0, self.local_steps),
            self.local_lr,
            momentum=self.momentum,
            unroll=self.unroll,
        )
        delta = jax.tree.map(lambda x, y: x - y, params, local)
        return delta, _info(self.local_steps, self.batch_size)


@pytree_dataclass
class MinibatchGradient(ClientUpdate):
    """Mini-batch SGD's client update: one mini-batch gradient at the server model."""

    batch_size: int = static(default=10)

    def __call__(self, key, loss_fn, params, client, round):
        del round
        idx = samplers.minibatch_indices(key, client.num_examples, (self.batch_size,))
        batch = jax.tree.map(lambda a: a[idx], client.data)
        return jax.grad(loss_fn)(params, batch), _info(1, self.batch_size)


@pytree_dataclass
class PosteriorDelta(ClientUpdate):
    """FedPA's client update: ``sampler``'s samples, delta ``Σ̂⁻¹ (x - μ̂)``.

    The delta is computed by the dynamic program of :func:`fedpa.posterior.delta` on the
    flattened samples (``ravel_pytree``), so any params pytree works. Leaves: ``rho`` and the
    sampler's leaves. Static: ``target`` (:data:`fedpa.posterior.TARGETS`).
    """

    sampler: samplers.Sampler
    rho: Any = 0.1
    target: str = static(default="identity")

    def __call__(self, key, loss_fn, params, client, round):
        del round
        samples, info = self.sampler.sample(key, loss_fn, params, client)
        flat_params, unravel = ravel_pytree(params)
        flat_samples = jax.vmap(lambda s: ravel_pytree(s)[0])(samples)
        delta = posterior.delta_unchecked(flat_samples, flat_params, self.rho, self.target)
        return unravel(delta), info


@pytree_dataclass
class ExactPosteriorDelta(ClientUpdate):
    """Delta ``A_i (x - μ_i)`` from the exact Gaussian local posterior (quadratic problems).

    Its average over clients is ``∇F(x)``: with server SGD this is full-batch gradient descent on
    the global objective, an oracle that no client computes from data in FedPA.
    """

    def __call__(self, key, loss_fn, params, client, round):
        del loss_fn, key, round
        post = client.posterior
        return post.precision_matvec(params - post.mean), _info(0, 0)


@pytree_dataclass
class Switch(ClientUpdate):
    """``before`` in rounds ``< at_round``, ``after`` from round ``at_round`` on.

    ``at_round`` is a leaf (an integer that may be traced or batched: a grid of burn-in lengths
    compiles once; batched, both updates run and one is selected). The round is the absolute
    server round, so continuing a run from its state switches at the same round.
    """

    before: ClientUpdate
    after: ClientUpdate
    at_round: Any = 0

    def __call__(self, key, loss_fn, params, client, round):
        return lax.cond(
            round < self.at_round,
            lambda: self.before(key, loss_fn, params, client, round),
            lambda: self.after(key, loss_fn, params, client, round),
        )


# ------------------------------------------------------------------ constructors (checked)


def minibatch_sgd(batch_size: int = 10) -> MinibatchGradient:
    """Mini-batch SGD: each sampled client sends one mini-batch gradient; the server steps."""
    return MinibatchGradient(batch_size=_validate.integer("batch_size", batch_size, minimum=1))


def fedavg(
    local_steps: int = 100,
    local_lr: float = 0.01,
    batch_size: int = 10,
    *,
    momentum: float | None = None,
    unroll: int = 1,
) -> LocalSGD:
    """FedAvg (McMahan et al., 2017) with a server optimizer: local SGD, delta ``x - x_local``.

    Args:
      local_steps: SGD steps per client and round, ``>= 1``.
      local_lr: ``> 0`` (a leaf: may be traced).
      batch_size: examples per step, ``>= 1``.
      momentum: client heavy-ball momentum in ``[0, 1)``, or ``None`` for plain SGD.
      unroll: ``lax.scan`` unroll factor.
    """
    local_steps = _validate.integer("local_steps", local_steps, minimum=1)
    _validate.real("local_lr", local_lr, low=0.0, low_open=True)
    batch_size = _validate.integer("batch_size", batch_size, minimum=1)
    if momentum is not None:
        _validate.real("momentum", momentum, low=0.0, high=1.0, high_open=True)
    unroll = _validate.integer("unroll", unroll, minimum=1)
    return LocalSGD(
        local_lr=local_lr,
        momentum=momentum,
        local_steps=local_steps,
        batch_size=batch_size,
        unroll=unroll,
    )


def fedpa(
    sampler: samplers.Sampler, rho: float = 0.1, *, target: str = "identity"
) -> PosteriorDelta:
    """FedPA with any local sampler: delta ``Σ̂⁻¹ (x - μ̂)`` with shrinkage ``rho >= 0``.

    Args:
      sampler: a :class:`~fedpa.samplers.Sampler`.
      rho: shrinkage, any value ``>= 0`` (a leaf: may be traced).
      target: the shrinkage target, ``"identity"`` (the paper's) or ``"scaled_identity"``.
    """
    if not isinstance(sampler, samplers.Sampler):
        raise ValueError(f"sampler must be a fedpa.samplers.Sampler, got {type(sampler).__name__}")
    _validate.rho(rho)
    if target not in posterior.TARGETS:
        raise ValueError(f"target must be one of {posterior.TARGETS}, got {target!r}")
    return PosteriorDelta(sampler=sampler, rho=rho, target=target)


def fedpa_exact() -> ExactPosteriorDelta:
    """FedPA with the exact local posteriors of a quadratic problem (needs ``client.posterior``).

    The averaged delta ``Σ_i w_i A_i (x - μ_i)`` is ``∇F(x)`` and vanishes exactly at the
    global optimum.
    """
    return ExactPosteriorDelta()


def fedpa_iasg(
    num_samples: int = 10,
    avg_steps: int = 10,
    burnin_steps: int = 50,
    local_lr: float = 0.01,
    batch_size: int = 10,
    rho: float = 0.1,
    *,
    burnin_rounds: int = 0,
    discard_steps: int = 0,
    momentum: float | None = None,
    num_chains: int = 1,
    target: str = "identity",
    unroll: int = 1,
) -> ClientUpdate:
    """FedPA with IASG local sampling (the paper's practical algorithm).

    Args:
      num_samples, avg_steps, burnin_steps, discard_steps, momentum, num_chains: the
        :func:`~fedpa.samplers.iasg` sampler's.
      local_lr, batch_size: local SGD settings.
      rho: shrinkage, ``>= 0``.
      burnin_rounds: server rounds of FedAvg before FedPA starts (:func:`with_burnin`), with
        the same local SGD and as many local steps as one IASG chain takes; may be traced.
      target: the shrinkage target.
    """
    _validate.real("local_lr", local_lr, low=0.0, low_open=True)
    sampler = samplers.iasg(
        num_samples,
        avg_steps,
        burnin_steps,
        local_lr,
        batch_size,
        discard_steps=discard_steps,
        momentum=momentum,
        num_chains=num_chains,
        unroll=unroll,
    )
    algo = fedpa(sampler, rho, target=target)
    if _validate.concrete(burnin_rounds) is not None:
        burnin_rounds = _validate.integer("burnin_rounds", burnin_rounds, minimum=0)
        if burnin_rounds == 0:
            return algo
    burnin = fedavg(sampler.steps_per_chain, local_lr, batch_size, momentum=momentum, unroll=unroll)
    return with_burnin(algo, burnin, burnin_rounds)


def with_burnin(algorithm: ClientUpdate, burnin: ClientUpdate, rounds: int) -> Switch:
    """Runs ``burnin`` for the first ``rounds`` server rounds, then ``algorithm``.

    ``rounds`` counts absolute server rounds (``ServerState.round``), so a run continued from
    its state stays on ``algorithm``; it is a leaf (may be traced: a grid of burn-in lengths
    compiles once).
    """
    for label, a in (("algorithm", algorithm), ("burnin", burnin)):
        if not isinstance(a, ClientUpdate):
            raise ValueError(f"{label} must be a fedpa ClientUpdate, got {type(a).__name__}")
    if _validate.concrete(rounds) is not None:
        rounds = _validate.integer("rounds", rounds, minimum=0)
    return Switch(before=burnin, after=algorithm, at_round=rounds)
