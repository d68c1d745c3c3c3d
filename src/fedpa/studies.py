r"""Experiment drivers for the book: repeated, vectorized studies that return tidy tables.

Each driver runs one study end to end in a few compiled calls and returns a pandas ``DataFrame``
(one row per measured quantity, ready for seaborn). Notebooks call these and only plot.

* :func:`delta_errors` — how well does the FedPA delta :math:`\hat\Sigma^{-1}(x - \hat\mu)`
  computed from ``ℓ`` exact samples of a Gaussian local posterior :math:`\mathcal N(\mu, A^{-1})`
  estimate the exact delta :math:`A (x - \mu)`, as a function of ``ℓ`` and the shrinkage ``ρ``
  (bias and variance over repeated draws, ``vmap``-ed).
* :func:`covariance_fit` — the scalar ``c`` that best matches a sample covariance to ``c A⁻¹``
  and the remaining shape error (IASG samples have the posterior's *shape*, not its scale).
* :func:`delta_timings` — wall time of the dynamic program against the direct solve.
* :func:`convergence` — several federated algorithms on one problem family over several seeds
  (``vmap`` over seeds: each seed draws its own problem and its own run randomness).

pandas is imported lazily (it belongs to the ``book`` extra).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import _validate, posterior
from .algorithms import Algorithm
from .problems import FederatedProblem, GaussianPosterior
from .run import _default_optimizer, run_many, stack_problems

__all__ = [
    "exact_delta",
    "delta_errors",
    "covariance_fit",
    "covariance_ellipse",
    "posterior_covariance",
    "delta_timings",
    "convergence",
    "final_values",
]


def _pandas():
    import pandas as pd

    return pd


def _int_list(name: str, values: Sequence[int], minimum: int) -> tuple[int, ...]:
    values = tuple(values)
    if not values:
        raise ValueError(f"{name} must be a non-empty list of integers, got {values!r}")
    for v in values:
        _validate.integer(f"{name} entry", v, minimum=minimum)
    return tuple(int(v) for v in values)


def _check_posterior(post: Any) -> int:
    if not isinstance(post, GaussianPosterior):
        raise ValueError(
            f"posterior must be a fedpa.problems.GaussianPosterior, got {type(post).__name__}"
        )
    shape = np.shape(post.mean)
    if len(shape) != 1:
        raise ValueError(
            f"posterior must be one client's (unstacked) posterior with mean shape (d,), "
            f"got mean shape {shape}"
        )
    dim = shape[0]
    if np.shape(post.precision_cholesky) != (dim, dim):
        raise ValueError(
            f"posterior.precision_cholesky must have shape ({dim}, {dim}), "
            f"got {np.shape(post.precision_cholesky)}"
        )
    return dim


# ------------------------------------------------------------------ the delta from samples


def exact_delta(post: GaussianPosterior, x):
    """The exact FedPA delta ``A (x - μ)`` of a Gaussian posterior ``N(μ, A⁻¹)``; ``(d,)``."""
    dim = _check_posterior(post)
    _validate.vector("x", x, dim)
    return post.precision_matvec(jnp.asarray(x) - post.mean)


def _gaussian_draws(key, post: GaussianPosterior, num: int):
    """``(num, d)`` exact samples ``μ + L⁻ᵀ z`` of ``N(μ, (L Lᵀ)⁻¹)``."""
    dim = post.mean.shape[-1]
    z = jax.random.normal(key, (num, dim), post.mean.dtype)
    offsets = jax.scipy.linalg.solve_triangular(post.precision_cholesky.T, z.T, lower=False)
    return post.mean + offsets.T


@partial(jax.jit, static_argnames=("num_samples", "repeats"))
def _delta_error_stats(key, post, x, rhos, *, num_samples, repeats):
    dim = post.mean.shape[-1]
    largest = max(num_samples)
    # One pool of draws per repeat; the study for ℓ uses its first ℓ rows (common random
    # numbers across ℓ and ρ make the comparisons sharper).
    pool = _gaussian_draws(key, post, repeats * largest).reshape(repeats, largest, dim)
    target = post.precision_matvec(x - post.mean)
    scale = jnp.linalg.norm(target)
    over_rhos = jax.vmap(posterior.delta, in_axes=(None, None, 0))  # (ρ,) -> (R, d)
    over_both = jax.vmap(over_rhos, in_axes=(0, None, None))  # (R, ρ, d)
    stats = []
    for num in num_samples:  # static sample counts: one scan length each
        deltas = over_both(pool[:, :num], x, rhos)  # (R, ρ, d)
        # The best single step size c* = E⟨Δ̂, Δ⟩ / E‖Δ̂‖² (what a tuned server learning rate
        # provides); errors are reported both raw and for c* Δ̂.
        step = jnp.mean(deltas @ target, axis=0) / jnp.mean(jnp.sum(deltas**2, axis=-1), axis=0)
        row = [step]
        for est in (deltas, step[:, None] * deltas):
            mean_delta = jnp.mean(est, axis=0)  # (ρ, d)
            bias = jnp.linalg.norm(mean_delta - target, axis=-1) / scale
            spread = jnp.sqrt(jnp.mean(jnp.sum((est - mean_delta) ** 2, axis=-1), axis=0)) / scale
            rmse = jnp.sqrt(bias**2 + spread**2)
            row += [rmse, bias, spread]
        stats.append(jnp.stack(row, axis=-1))
    return jnp.stack(stats)  # (len(num_samples), ρ, 7)


def delta_errors(
    key,
    post: GaussianPosterior,
    x,
    num_samples: Sequence[int],
    rhos: Sequence[float],
    repeats: int = 32,
):
    r"""Error of the FedPA delta from ``ℓ`` exact posterior samples, against ``ℓ`` and ``ρ``.

    For each ``ℓ`` in ``num_samples`` and ``ρ`` in ``rhos``, draws ``repeats`` independent sets of
    ``ℓ`` exact samples of ``N(μ, A⁻¹)``, computes :math:`\hat\Delta = \hat\Sigma^{-1}(x-\hat\mu)`
    with :func:`fedpa.posterior.delta` and compares it with :math:`\Delta = A(x - \mu)`. All
    errors are relative to :math:`\lVert\Delta\rVert`, with expectations over the repeats:

    * ``bias`` :math:`= \lVert\mathbb E\hat\Delta - \Delta\rVert / \lVert\Delta\rVert`,
    * ``std`` :math:`= \sqrt{\mathbb E\lVert\hat\Delta - \mathbb E\hat\Delta\rVert^2} /
      \lVert\Delta\rVert`,
    * ``rmse`` :math:`= \sqrt{\mathrm{bias}^2 + \mathrm{std}^2}
      = \sqrt{\mathbb E \lVert\hat\Delta - \Delta\rVert^2} / \lVert\Delta\rVert`.

    A common scalar factor of the clients' deltas is absorbed by the server learning rate, so the
    same three numbers are also reported for :math:`c^\star \hat\Delta` with the best single
    step :math:`c^\star = \mathbb E\langle\hat\Delta, \Delta\rangle /
    \mathbb E\lVert\hat\Delta\rVert^2` (column ``step``); these "scaled" errors are at most
    one (``c* = 0`` gives one). The draws for the ``ℓ`` values are nested (the first ``ℓ`` of one
    pool per repeat) and shared across ``ρ`` (common random numbers).

    Args:
      key: PRNG key.
      post: one client's :class:`~fedpa.problems.GaussianPosterior` (mean ``(d,)``).
      x: ``(d,)`` the server model at which the delta is evaluated (``x ≠ μ``).
      num_samples: sample counts ``ℓ >= 2``.
      rhos: shrinkage values in ``[0, 1]``.
      repeats: independent draws per ``ℓ`` (``>= 2``).

    Returns:
      DataFrame with columns ``dim, num_samples, rho, rmse, bias, std, step, rmse_scaled,
      bias_scaled, std_scaled`` (one row per ``(ℓ, ρ)``).
    """
    dim = _check_posterior(post)
    _validate.vector("x", x, dim)
    grid = _int_list("num_samples", num_samples, minimum=2)
    rhos = tuple(float(_validate.rho(r)) for r in rhos)
    if not rhos:
        raise ValueError("rhos must be a non-empty list of floats in [0, 1], got []")
    repeats = _validate.integer("repeats", repeats, minimum=2)
    x = jnp.asarray(x, post.mean.dtype)
    if float(jnp.linalg.norm(x - post.mean)) == 0.0:
        raise ValueError("x must differ from the posterior mean (the exact delta is zero there)")
    stats = np.asarray(
        _delta_error_stats(
            key, post, x, jnp.asarray(rhos, x.dtype), num_samples=grid, repeats=repeats
        )
    )
    pd = _pandas()
    rows = [
        {
            "dim": dim,
            "num_samples": num,
            "rho": rho,
            "rmse": float(stats[i, j, 1]),
            "bias": float(stats[i, j, 2]),
            "std": float(stats[i, j, 3]),
            "step": float(stats[i, j, 0]),
            "rmse_scaled": float(stats[i, j, 4]),
            "bias_scaled": float(stats[i, j, 5]),
            "std_scaled": float(stats[i, j, 6]),
        }
        for i, num in enumerate(grid)
        for j, rho in enumerate(rhos)
    ]
    return pd.DataFrame(rows)


def covariance_fit(samples, post: GaussianPosterior) -> dict[str, float]:
    """How well the sample covariance ``S`` of ``samples`` matches the posterior *shape* ``A⁻¹``.

    IASG samples have the shape of the local posterior but not its scale (about
    ``σ² / (avg_steps · batch_size)``), so the fit allows a scalar: ``c = ⟨S, A⁻¹⟩_F / ‖A⁻¹‖_F²``
    (least squares), and the shape error is ``‖S - c A⁻¹‖_F / ‖c A⁻¹‖_F``. Exact samples give
    ``c ≈ 1`` and a shape error of order ``sqrt(d / ℓ)``.

    Args:
      samples: ``(ℓ, d)``, ``ℓ >= 2``.
      post: the Gaussian posterior ``N(μ, A⁻¹)`` (mean ``(d,)``).

    Returns:
      ``{"scale": c, "shape_error": ...}``.
    """
    num, dim = _validate.samples_matrix(samples)
    if _check_posterior(post) != dim:
        raise ValueError(f"samples have dim {dim} but the posterior has dim {post.mean.shape[0]}")
    # Small host-side linear algebra (float64): no compilation for a one-off fit.
    cov = np.cov(np.asarray(samples, dtype=np.float64), rowvar=False, ddof=1).reshape(dim, dim)
    target = posterior_covariance(post)
    scale = np.sum(cov * target) / np.sum(target * target)
    error = np.linalg.norm(cov - scale * target) / np.linalg.norm(scale * target)
    return {"scale": float(scale), "shape_error": float(error)}


def posterior_covariance(post: GaussianPosterior) -> np.ndarray:
    """``(d, d)`` covariance ``A⁻¹ = (L Lᵀ)⁻¹`` of one client's posterior, as float64 NumPy."""
    _check_posterior(post)
    chol = np.asarray(post.precision_cholesky, dtype=np.float64)
    inv_chol = np.linalg.inv(chol)
    return inv_chol.T @ inv_chol


def covariance_ellipse(cov, num_std: float = 2.0, num_points: int = 200) -> np.ndarray:
    """``(num_points, 2)`` points of the ellipse ``{v : vᵀ cov⁻¹ v = num_std²}`` (centred at 0).

    Args:
      cov: ``(2, 2)`` symmetric positive definite covariance.
      num_std: the Mahalanobis radius.
      num_points: points along the closed curve (the first point is repeated at the end).
    """
    cov = np.asarray(cov, dtype=np.float64)
    if cov.shape != (2, 2):
        raise ValueError(f"cov must have shape (2, 2), got shape {cov.shape}")
    _validate.real("num_std", num_std, low=0.0, low_open=True)
    num_points = _validate.integer("num_points", num_points, minimum=3)
    eigvals, eigvecs = np.linalg.eigh(cov)
    if eigvals[0] <= 0:
        raise ValueError(f"cov must be positive definite, got eigenvalues {eigvals}")
    angles = np.linspace(0.0, 2.0 * np.pi, num_points)
    circle = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return num_std * circle * np.sqrt(eigvals) @ eigvecs.T


# ------------------------------------------------------------------ dynamic program vs direct


_DELTA_DP = jax.jit(posterior.delta)
_DELTA_DIRECT = jax.jit(posterior.delta_direct)


def _timed_calls(fn, args, repeats: int) -> list[float]:
    jax.block_until_ready(fn(*args))  # compile and warm up
    times = []
    for _ in range(repeats):  # wall-clock timing: a host loop is the point here
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return times


def delta_timings(
    key,
    dims: Sequence[int],
    num_samples: int = 10,
    rho: float = 0.1,
    repeats: int = 5,
):
    """Wall time of the delta: the ``O(ℓ² d)`` dynamic program against the ``O(d³)`` solve.

    For each ``d``, draws ``ℓ`` samples of a random anisotropic Gaussian (standard deviations
    log-uniform in ``[0.3, 3]``) and a server model ``x``, compiles both functions once, then times
    ``repeats`` calls of each (``block_until_ready``). Also records the relative difference
    ``‖Δ_dp - Δ_direct‖ / ‖Δ_direct‖`` of their outputs (in the default float precision).

    Args:
      key: PRNG key.
      dims: model dimensions ``d >= 1``.
      num_samples: ``ℓ >= 2``.
      rho: shrinkage in ``[0, 1]``.
      repeats: timed calls per method and ``d`` (``>= 1``).

    Returns:
      DataFrame with columns ``dim, num_samples, method, repeat, seconds, rel_diff`` where
      ``method`` is ``"dynamic program"`` or ``"direct solve"``.
    """
    dims = _int_list("dims", dims, minimum=1)
    num_samples = _validate.integer("num_samples", num_samples, minimum=2)
    _validate.rho(rho)
    repeats = _validate.integer("repeats", repeats, minimum=1)
    pd = _pandas()
    rows = []
    for dim, k in zip(dims, jax.random.split(key, len(dims)), strict=True):
        k_scale, k_z, k_x = jax.random.split(k, 3)
        stds = jnp.exp(jax.random.uniform(k_scale, (dim,), minval=jnp.log(0.3), maxval=jnp.log(3)))
        samples = jax.random.normal(k_z, (num_samples, dim)) * stds
        x = jax.random.normal(k_x, (dim,))
        args = (samples, x, jnp.asarray(rho, samples.dtype))
        dp, direct = _DELTA_DP(*args), _DELTA_DIRECT(*args)
        rel = float(jnp.linalg.norm(dp - direct) / jnp.linalg.norm(direct))
        for method, fn in (("dynamic program", _DELTA_DP), ("direct solve", _DELTA_DIRECT)):
            for r, seconds in enumerate(_timed_calls(fn, args, repeats)):
                rows.append(
                    {
                        "dim": dim,
                        "num_samples": num_samples,
                        "method": method,
                        "repeat": r,
                        "seconds": seconds,
                        "rel_diff": rel,
                    }
                )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ federated convergence


def convergence(
    algorithms: Mapping[str, Algorithm] | Sequence[Algorithm],
    make_problem: Callable[[Any], FederatedProblem],
    *,
    rounds: int,
    clients_per_round: int | None = None,
    server_optimizer: optax.GradientTransformation | Mapping[str, Any] | None = None,
    seeds: int = 5,
    key=None,
    labels: Mapping[str, Any] | None = None,
):
    """Distance to the optimum and objective per round, for several algorithms and seeds.

    Seed ``s`` draws its own problem ``make_problem(k_s)`` and its own run key; every algorithm
    sees the same problems and run keys (common random numbers). The runs of all seeds of one
    algorithm are one compiled, ``vmap``-ed call of the same loop as :func:`fedpa.run` (seed
    ``s`` gives what ``fedpa.run(..., key=k_s')`` gives on problem ``s``).

    Args:
      algorithms: ``{label: Algorithm}`` (or a list, labelled by ``Algorithm.name``). Reuse
        the same objects across calls: compiled runs are cached on them.
      make_problem: ``key -> FederatedProblem``; must give the same shapes for every key.
      rounds: server rounds, ``>= 1``.
      clients_per_round: clients per round (default: all clients).
      server_optimizer: one optax transformation for all, or ``{label: transformation}``
        (default ``optax.sgd(1.0)``).
      seeds: number of seeds, ``>= 1``.
      key: PRNG key (required).
      labels: extra constant columns (e.g. ``{"dim": 10}``).

    Returns:
      Tidy DataFrame with columns ``*labels, algorithm, seed, round, dist_to_optimum,
      objective, suboptimality`` (``round`` counts from 1; ``suboptimality`` is
      ``F(x) - F(x*)``).
    """
    if key is None:
        raise ValueError("key must be a PRNG key (e.g. jax.random.key(0)), got None")
    if not isinstance(algorithms, Mapping):
        algorithms = {a.name: a for a in algorithms}
    if not algorithms:
        raise ValueError("algorithms must name at least one fedpa Algorithm, got none")
    for label, algo in algorithms.items():
        if not isinstance(algo, Algorithm):
            raise ValueError(
                f"algorithms[{label!r}] must be a fedpa Algorithm, got {type(algo).__name__}"
            )
    rounds = _validate.integer("rounds", rounds, minimum=1)
    seeds = _validate.integer("seeds", seeds, minimum=1)
    if server_optimizer is None:
        server_optimizer = _default_optimizer()
    if isinstance(server_optimizer, Mapping):
        missing = set(algorithms) - set(server_optimizer)
        if missing:
            raise ValueError(f"server_optimizer has no entry for algorithms {sorted(missing)}")
        optimizers = dict(server_optimizer)
    else:
        optimizers = dict.fromkeys(algorithms, server_optimizer)
    for label, opt in optimizers.items():
        if not isinstance(opt, optax.GradientTransformation):
            raise ValueError(
                f"server_optimizer for {label!r} must be an optax.GradientTransformation, "
                f"got {type(opt).__name__}"
            )
    k_problems, k_runs = jax.random.split(key)
    problem_list = [make_problem(k) for k in jax.random.split(k_problems, seeds)]
    for p in problem_list:
        if not isinstance(p, FederatedProblem):
            raise ValueError(f"make_problem must return a FederatedProblem, got {type(p).__name__}")
    num_clients = problem_list[0].num_clients
    if clients_per_round is None:
        clients_per_round = num_clients
    clients_per_round = _validate.integer("clients_per_round", clients_per_round, minimum=1)
    if clients_per_round > num_clients:
        raise ValueError(f"clients_per_round={clients_per_round} exceeds num_clients={num_clients}")
    problems = stack_problems(problem_list)  # one compiled loop for all seeds and calls
    optimum_values = np.asarray(
        jax.vmap(lambda p: p.objective(p.global_optimum()))(problems), dtype=np.float64
    )
    run_keys = jax.random.split(k_runs, seeds)
    pd = _pandas()
    frames = []
    for label, algo in algorithms.items():
        history = run_many(algo, problems, rounds, clients_per_round, optimizers[label], run_keys)
        dist = np.asarray(history["dist_to_optimum"], dtype=np.float64)  # (seeds, rounds)
        obj = np.asarray(history["objective"], dtype=np.float64)
        frame = pd.DataFrame(
            {
                "algorithm": label,
                "seed": np.repeat(np.arange(seeds), rounds),
                "round": np.tile(np.arange(1, rounds + 1), seeds),
                "dist_to_optimum": dist.ravel(),
                "objective": obj.ravel(),
                "suboptimality": (obj - optimum_values[:, None]).ravel(),
            }
        )
        frames.append(frame)
    out = pd.concat(frames, ignore_index=True)
    for i, (name, value) in enumerate((labels or {}).items()):
        out.insert(i, name, value)
    return out


def final_values(frame, last: int = 1, by: Sequence[str] = ("algorithm",)):
    """Per-seed average of the last ``last`` rounds, then mean and std over seeds.

    Args:
      frame: a :func:`convergence` table (possibly several concatenated).
      last: how many final rounds to average (smooths the noise of stochastic methods).
      by: grouping columns besides ``seed``.

    Returns:
      DataFrame with ``*by, dist_mean, dist_std, subopt_mean, subopt_std, seeds``.
    """
    last = _validate.integer("last", last, minimum=1)
    by = list(by)
    cutoff = frame.groupby(by)["round"].transform("max") - last
    tail = frame[frame["round"] > cutoff]
    per_seed = tail.groupby([*by, "seed"], as_index=False)[
        ["dist_to_optimum", "suboptimality"]
    ].mean()
    grouped = per_seed.groupby(by)
    return grouped.agg(
        dist_mean=("dist_to_optimum", "mean"),
        dist_std=("dist_to_optimum", "std"),
        subopt_mean=("suboptimality", "mean"),
        subopt_std=("suboptimality", "std"),
        seeds=("seed", "nunique"),
    ).reset_index()
