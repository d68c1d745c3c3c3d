r"""Experiment drivers of the "Beyond quadratics" chapter; notebooks call these and only plot.

* :func:`classification_runs` — federated algorithms on several classification problems at once
  (``vmap`` over problems: e.g. Dirichlet α × data seed), returning a tidy table of test accuracy,
  test loss, train accuracy and the training objective per round.
* :func:`sampler_delta_errors` — how well the FedPA delta computed from each local sampler's
  samples (exact, IASG, SGLD, HMC, NUTS) matches the exact delta ``A (x - μ)`` of a quadratic
  client, against the number of samples ``ℓ`` and the compute spent.

pandas is imported lazily (it belongs to the ``book`` extra).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import _validate, posterior, samplers
from .algorithms import Algorithm
from .problems import FederatedProblem
from .run import run_many, stack_problems

__all__ = ["classification_runs", "sampler_delta_errors", "CLASSIFICATION_METRICS"]

CLASSIFICATION_METRICS = ("test_accuracy", "test_loss", "train_accuracy", "objective")


def classification_runs(
    algorithms: Mapping[str, Algorithm],
    problems: Sequence[FederatedProblem],
    *,
    rounds: int,
    clients_per_round: int,
    server_optimizer: optax.GradientTransformation | None = None,
    key=None,
    labels: Sequence[Mapping[str, Any]] | None = None,
):
    """Runs every algorithm on every problem; one compiled, ``vmap``-ed call per algorithm.

    Problem ``j`` gets run key ``k_j`` (the same for every algorithm: common random numbers), and
    its history is what ``fedpa.run(algorithm, problems[j], ..., key=k_j)`` returns.

    Args:
      algorithms: ``{label: Algorithm}``; reuse the objects across calls (compiles are cached).
      problems: problems with identical shapes and functions (same model, same ``pad_to``,
        same number of clients), e.g. one per (α, seed).
      rounds: server rounds ``>= 1``.
      clients_per_round: clients per round.
      server_optimizer: optax transformation (default ``optax.sgd(1.0)``).
      key: PRNG key (required).
      labels: one mapping of constant columns per problem (e.g. ``{"alpha": 0.1, "seed": 0}``).

    Returns:
      Tidy DataFrame: ``*label columns, problem, algorithm, round`` (from 1) and the metrics of
      :data:`CLASSIFICATION_METRICS`.

    Raises:
      fedpa.DivergenceError: when some run produced NaN/inf parameters.
    """
    from .run import DivergenceError

    if key is None:
        raise ValueError("key must be a PRNG key (e.g. jax.random.key(0)), got None")
    if not algorithms:
        raise ValueError("algorithms must map at least one label to a fedpa Algorithm")
    for label, algo in algorithms.items():
        if not isinstance(algo, Algorithm):
            raise ValueError(
                f"algorithms[{label!r}] must be a fedpa Algorithm, got {type(algo).__name__}"
            )
    problems = list(problems)
    if not problems:
        raise ValueError("problems must hold at least one FederatedProblem")
    labels = [dict(x) for x in labels] if labels is not None else [{} for _ in problems]
    if len(labels) != len(problems):
        raise ValueError(
            f"labels must have one entry per problem ({len(problems)}), got {len(labels)}"
        )
    stacked = stack_problems(problems)
    keys = jax.random.split(key, len(problems))
    import pandas as pd

    frames = []
    for label, algo in algorithms.items():
        history = run_many(algo, stacked, rounds, clients_per_round, server_optimizer, keys)
        finite = history["finite"]
        if not finite.all():
            j = int(np.argmin(finite.all(1)))
            raise DivergenceError(int(np.argmin(finite[j])), f"{label} on {problems[j].name}")
        for j, lab in enumerate(labels):
            frame = pd.DataFrame({k: history[k][j] for k in CLASSIFICATION_METRICS})
            frame.insert(0, "round", np.arange(1, rounds + 1))
            frame.insert(0, "algorithm", label)
            frame.insert(0, "problem", j)
            for i, (name, value) in enumerate(lab.items()):
                frame.insert(i, name, value)
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)


# ------------------------------------------------------------------------ sampler comparison


@partial(jax.jit, static_argnames=("num_samples",))
@partial(jax.vmap, in_axes=(0, None, None, None, None))
def _delta_stats(samples, x, exact, num_samples, rho):
    """Relative error and direction error of the delta from the first ``ℓ`` samples.

    ``vmap``-ed over a leading repeat axis of ``samples``; compiled once per ``ℓ``.
    """
    d = posterior._delta_dp(samples[:num_samples], x, rho)
    norm = jnp.linalg.norm(exact)
    rel = jnp.linalg.norm(d - exact) / norm
    cos = jnp.dot(d, exact) / (jnp.linalg.norm(d) * norm)
    # min_c ‖c Δ̂ - Δ‖ / ‖Δ‖ = sqrt(1 - cos²) (cos > 0), 1 otherwise.
    direction = jnp.where(cos > 0, jnp.sqrt(jnp.clip(1 - cos**2, 0.0, 1.0)), 1.0)
    return rel, direction


def sampler_delta_errors(
    problem: FederatedProblem,
    specs: Mapping[str, Mapping[str, Any]],
    *,
    num_samples: Sequence[int] = (5, 10, 20, 50, 100),
    rho: float = 0.1,
    repeats: int = 8,
    client: int = 0,
    x=None,
    key=None,
):
    r"""Delta error of each local sampler against the exact delta, vs ``ℓ`` and compute.

    For one client of a quadratic problem (exact posterior ``N(μ, A⁻¹)``) and a server model
    ``x`` (default ``problem.init_params``), each sampler draws ``max(num_samples)`` samples
    ``repeats`` times (``vmap``); the delta from the first ``ℓ`` samples,
    ``Δ̂ = Σ̂⁻¹(x - μ̂)``, is compared with ``Δ = A (x - μ)``:

    * ``rel_error`` ``‖Δ̂ - Δ‖ / ‖Δ‖``;
    * ``direction_error`` ``min_c ‖c Δ̂ - Δ‖ / ‖Δ‖`` — the error left after the best rescaling,
      which a server learning rate can absorb.

    Compute is counted in *full-data gradient equivalents* (per-example gradients ``/ n``):
    ``(burnin + ℓ · k) · B / n`` for IASG (``k = avg_steps``) and SGLD (``k = thinning``),
    ``(burnin + ℓ · thinning) · L`` for HMC, and for NUTS the measured leapfrog steps, prorated to
    the first ``ℓ`` samples. The exact sampler costs nothing here (it reads the closed form).

    Args:
      problem: a problem with exact Gaussian client posteriors (``least_squares``, ...).
      specs: ``{label: {"kind": "exact"|"iasg"|"sgld"|"hmc"|"nuts", **settings}}``; settings
        are those of :func:`fedpa.samplers.iasg` (``avg_steps, burnin_steps, learning_rate,
        batch_size``), :func:`~fedpa.samplers.sgld` (``learning_rate, batch_size, burnin_steps,
        thinning``), :func:`~fedpa.samplers.hmc` (``step_size, num_integration_steps,
        burnin_steps, thinning``) and :func:`~fedpa.samplers.nuts` (``step_size,
        burnin_steps, thinning``), without ``num_samples``.
      num_samples: the ``ℓ`` values (each ``>= 2``).
      rho: shrinkage in ``[0, 1]``.
      repeats: independent repetitions.
      client: the client index.
      x: the server model (default ``problem.init_params``).
      key: PRNG key (required).

    Returns:
      Tidy DataFrame: ``sampler, num_samples, repeat, rel_error, direction_error, compute``.
    """
    if key is None:
        raise ValueError("key must be a PRNG key (e.g. jax.random.key(0)), got None")
    if not isinstance(problem, FederatedProblem) or problem.clients.posterior is None:
        raise ValueError("problem must be a FederatedProblem with exact client posteriors")
    ells = tuple(_validate.integer("num_samples entry", v, minimum=2) for v in num_samples)
    if not ells:
        raise ValueError("num_samples must list at least one ℓ >= 2")
    _validate.rho(rho)
    repeats = _validate.integer("repeats", repeats, minimum=1)
    one = problem.client(client)
    post = one.posterior
    x = problem.init_params if x is None else jnp.asarray(x)
    exact = post.precision_matvec(x - post.mean)
    n = int(one.num_examples)
    top = max(ells)
    import pandas as pd

    rows = []
    for label, spec in specs.items():
        spec = dict(spec)
        kind = spec.pop("kind", None)
        burnin = spec.get("burnin_steps", 0)
        if kind == "exact":
            sampler = samplers.exact_gaussian(top)
        elif kind == "iasg":
            sampler = samplers.iasg(top, **spec)
        elif kind == "sgld":
            sampler = samplers.sgld(top, **spec)
        elif kind == "hmc":
            sampler = samplers.hmc(top, **spec)
        elif kind == "nuts":
            sampler = None
        else:
            raise ValueError(
                f"specs[{label!r}]['kind'] must be one of exact, iasg, sgld, hmc, nuts; "
                f"got {kind!r}"
            )
        keys = jax.random.split(jax.random.fold_in(key, len(rows)), repeats)
        if kind == "nuts":
            _validate.real("step_size", spec.get("step_size"), low=0.0, low_open=True)
            thinning = spec.get("thinning", 1)

            def logdensity(theta):
                return -problem.loss_fn(theta, one.data)

            def chain(k, thinning=thinning, spec=spec):
                return samplers.hmc_chain(
                    k,
                    logdensity,
                    x,
                    num_samples=top,
                    step_size=spec["step_size"],
                    burnin_steps=spec.get("burnin_steps", 100),
                    thinning=thinning,
                )

            draws, evals = jax.jit(jax.vmap(chain))(keys)
            per_transition = float(np.mean(evals)) / (
                spec.get("burnin_steps", 100) + top * thinning
            )
            burnin = spec.get("burnin_steps", 100)

            def cost(ell, per=per_transition, b=burnin, t=thinning):
                return (b + ell * t) * per
        else:
            fn = jax.jit(jax.vmap(lambda k, s=sampler: s.sample(k, problem.loss_fn, x, one)))
            draws = fn(keys)
            if kind == "exact":

                def cost(ell):
                    return 0.0
            elif kind in ("iasg", "sgld"):
                step = spec["avg_steps"] if kind == "iasg" else spec.get("thinning", 10)
                burnin = spec.get("burnin_steps", 100 if kind == "sgld" else 0)

                def cost(ell, b=burnin, k=step, bs=spec["batch_size"]):
                    return (b + ell * k) * bs / n
            else:
                burnin = spec.get("burnin_steps", 100)
                thin, length = spec.get("thinning", 1), spec["num_integration_steps"]

                def cost(ell, b=burnin, t=thin, L=length):
                    return (b + ell * t) * L

        for ell in ells:
            rel, direction = _delta_stats(draws, x, exact, ell, rho)
            for r in range(repeats):
                rows.append(
                    {
                        "sampler": label,
                        "num_samples": ell,
                        "repeat": r,
                        "rel_error": float(rel[r]),
                        "direction_error": float(direction[r]),
                        "compute": float(cost(ell)),
                    }
                )
    return pd.DataFrame(rows)
