r"""Local posterior inference on one client: how good is the FedPA delta from samples?

Drivers that return tidy pandas tables (one row per measured quantity, ready for seaborn):

* :func:`delta_errors` — error of the delta :math:`\hat\Sigma^{-1}(x - \hat\mu)` from ``ℓ``
  exact samples of a Gaussian local posterior :math:`\mathcal N(\mu, A^{-1})` against the exact
  delta :math:`A (x - \mu)`, as a function of ``ℓ`` and the shrinkage ``ρ`` (bias and variance
  over repeated draws, ``vmap``-ed).
* :func:`sampler_delta_errors` — the same error for the samples of each local sampler (exact,
  IASG, SGLD, HMC, NUTS) against ``ℓ`` and the compute the sampler reports.
* :func:`covariance_fit` — the scalar ``c`` that best matches a sample covariance to ``c A⁻¹``
  and the remaining shape error (IASG samples have the posterior's *shape*, not its scale);
  :func:`posterior_covariance` and :func:`covariance_ellipse` for pictures of it.
* :func:`delta_timings` — wall time of the dynamic program against the direct solve.

Everything here calls public :mod:`fedpa` functions only.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import fedpa
from fedpa import posterior
from fedpa.problems import Clients, FederatedProblem, GaussianPosterior

from . import _checks

__all__ = [
    "exact_delta",
    "delta_errors",
    "sampler_delta_errors",
    "covariance_fit",
    "covariance_ellipse",
    "posterior_covariance",
    "delta_timings",
    "SAMPLER_KINDS",
]

SAMPLER_KINDS = ("exact", "iasg", "sgld", "hmc", "nuts")


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


def _posterior_client(post: GaussianPosterior) -> Clients:
    """A one-client record holding only a posterior (what the exact sampler reads)."""
    return Clients(data=None, num_examples=jnp.ones((), jnp.int32), posterior=post)


# ------------------------------------------------------------------ the delta from samples


def exact_delta(post: GaussianPosterior, x):
    """The exact FedPA delta ``A (x - μ)`` of a Gaussian posterior ``N(μ, A⁻¹)``; ``(d,)``."""
    dim = _check_posterior(post)
    _checks.vector("x", x, dim)
    return post.precision_matvec(jnp.asarray(x) - post.mean)


@partial(jax.jit, static_argnames=("num_samples", "repeats"))
def _delta_error_stats(key, post, x, rhos, *, num_samples, repeats):
    largest = max(num_samples)
    # One pool of exact draws per repeat; the study for ℓ uses its first ℓ rows (common random
    # numbers across ℓ and ρ make the comparisons sharper).
    sampler = fedpa.samplers.ExactGaussian(num_samples=repeats * largest)
    pool, _ = sampler.sample(key, None, x, _posterior_client(post))
    pool = pool.reshape(repeats, largest, -1)  # (R, largest, d)
    target = post.precision_matvec(x - post.mean)
    scale = jnp.linalg.norm(target)
    over_rhos = jax.vmap(posterior.delta_unchecked, in_axes=(None, None, 0))  # (ρ,) -> (ρ, d)
    over_both = jax.vmap(over_rhos, in_axes=(0, None, None))  # (R, ρ, d)
    stats = []
    for num in num_samples:  # static sample counts: one slice each
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
) -> pd.DataFrame:
    r"""Error of the FedPA delta from ``ℓ`` exact posterior samples, against ``ℓ`` and ``ρ``.

    For each ``ℓ`` in ``num_samples`` and ``ρ`` in ``rhos``, draws ``repeats`` independent sets of
    ``ℓ`` exact samples of ``N(μ, A⁻¹)`` (:func:`fedpa.samplers.exact_gaussian`), computes
    :math:`\hat\Delta = \hat\Sigma^{-1}(x-\hat\mu)` with :func:`fedpa.posterior.delta` and
    compares it with :math:`\Delta = A(x - \mu)`. All errors are relative to
    :math:`\lVert\Delta\rVert`, with expectations over the repeats:

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
      rhos: shrinkage values, each ``>= 0``.
      repeats: independent draws per ``ℓ`` (``>= 2``).

    Returns:
      DataFrame with columns ``dim, num_samples, rho, rmse, bias, std, step, rmse_scaled,
      bias_scaled, std_scaled`` (one row per ``(ℓ, ρ)``).
    """
    dim = _check_posterior(post)
    _checks.vector("x", x, dim)
    grid = _checks.int_list("num_samples", num_samples, minimum=2)
    rhos = tuple(_checks.rho(r, "rhos entry") for r in rhos)
    if not rhos:
        raise ValueError("rhos must be a non-empty list of floats >= 0, got []")
    repeats = _checks.integer("repeats", repeats, minimum=2)
    x = jnp.asarray(x, post.mean.dtype)
    if float(jnp.linalg.norm(x - post.mean)) == 0.0:
        raise ValueError("x must differ from the posterior mean (the exact delta is zero there)")
    stats = np.asarray(
        _delta_error_stats(
            key, post, x, jnp.asarray(rhos, x.dtype), num_samples=grid, repeats=repeats
        )
    )
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


# ------------------------------------------------------------------ covariance shape


def posterior_covariance(post: GaussianPosterior) -> np.ndarray:
    """``(d, d)`` covariance ``A⁻¹ = (L Lᵀ)⁻¹`` of one client's posterior, as float64 NumPy."""
    _check_posterior(post)
    chol = np.asarray(post.precision_cholesky, dtype=np.float64)
    inv_chol = np.linalg.inv(chol)
    return inv_chol.T @ inv_chol


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
    shape = np.shape(samples)
    if len(shape) != 2 or shape[0] < 2:
        raise ValueError(f"samples must have shape (num_samples >= 2, dim), got shape {shape}")
    num, dim = shape
    if _check_posterior(post) != dim:
        raise ValueError(f"samples have dim {dim} but the posterior has dim {post.mean.shape[0]}")
    # Small host-side linear algebra (float64): no compilation for a one-off fit.
    cov = np.cov(np.asarray(samples, dtype=np.float64), rowvar=False, ddof=1).reshape(dim, dim)
    target = posterior_covariance(post)
    scale = np.sum(cov * target) / np.sum(target * target)
    error = np.linalg.norm(cov - scale * target) / np.linalg.norm(scale * target)
    return {"scale": float(scale), "shape_error": float(error)}


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
    _checks.real("num_std", num_std, low=0.0, low_open=True)
    num_points = _checks.integer("num_points", num_points, minimum=3)
    eigvals, eigvecs = np.linalg.eigh(cov)
    if eigvals[0] <= 0:
        raise ValueError(f"cov must be positive definite, got eigenvalues {eigvals}")
    angles = np.linspace(0.0, 2.0 * np.pi, num_points)
    circle = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return num_std * circle * np.sqrt(eigvals) @ eigvecs.T


# ------------------------------------------------------------------ samplers compared


def _build_sampler(label: str, spec: Mapping[str, Any], num_samples: int):
    spec = dict(spec)
    kind = spec.pop("kind", None)
    builders = {
        "exact": lambda: fedpa.samplers.exact_gaussian(num_samples, **spec),
        "iasg": lambda: fedpa.samplers.iasg(num_samples, **spec),
        "sgld": lambda: fedpa.samplers.sgld(num_samples, **spec),
        "hmc": lambda: fedpa.samplers.hmc(num_samples, **spec),
        "nuts": lambda: fedpa.samplers.nuts(num_samples, **spec),
    }
    if kind not in builders:
        raise ValueError(
            f"specs[{label!r}]['kind'] must be one of {', '.join(SAMPLER_KINDS)}; got {kind!r}"
        )
    try:
        return builders[kind]()
    except (TypeError, ValueError) as err:
        raise ValueError(f"specs[{label!r}]: {err}") from err


@partial(jax.jit, static_argnames=("num_samples",))
@partial(jax.vmap, in_axes=(0, None, None, None, None))
def _delta_stats(samples, x, exact, num_samples, rho):
    """Relative error and direction error of the delta from the first ``ℓ`` samples.

    ``vmap``-ed over a leading repeat axis of ``samples``; compiled once per ``ℓ``.
    """
    d = posterior.delta_unchecked(samples[:num_samples], x, rho)
    norm = jnp.linalg.norm(exact)
    rel = jnp.linalg.norm(d - exact) / norm
    cos = jnp.dot(d, exact) / (jnp.linalg.norm(d) * norm)
    # min_c ‖c Δ̂ - Δ‖ / ‖Δ‖ = sqrt(1 - cos²) (cos > 0), 1 otherwise.
    direction = jnp.where(cos > 0, jnp.sqrt(jnp.clip(1 - cos**2, 0.0, 1.0)), 1.0)
    return rel, direction


def _draw(sampler, keys, loss_fn, x, client):
    """``repeats`` independent sample sets and the mean compute, in full-data gradients."""
    fn = jax.jit(jax.vmap(lambda k: sampler.sample(k, loss_fn, x, client)))
    draws, info = fn(keys)
    per_example = float(np.mean(np.asarray(info.num_example_grads, np.float64)))
    return draws, per_example / float(client.num_examples)


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
) -> pd.DataFrame:
    r"""Delta error of each local sampler against the exact delta, vs ``ℓ`` and compute.

    For one client of a quadratic problem (exact posterior ``N(μ, A⁻¹)``) and a server model
    ``x`` (default ``problem.init_params``), each sampler draws ``max(num_samples)`` samples
    ``repeats`` times (``vmap``); the delta from the first ``ℓ`` samples,
    ``Δ̂ = Σ̂⁻¹(x - μ̂)``, is compared with ``Δ = A (x - μ)``:

    * ``rel_error`` ``‖Δ̂ - Δ‖ / ‖Δ‖``;
    * ``direction_error`` ``min_c ‖c Δ̂ - Δ‖ / ‖Δ‖`` — the error left after the best rescaling,
      which a server learning rate can absorb.

    Compute is what the samplers report (``info.num_example_grads``, per-example gradients) in
    *full-data gradient equivalents* (divided by the client's ``n``), averaged over the repeats.
    A sampler's cost is affine in the number of samples it keeps (a burn-in, then a fixed cost
    per sample), so it is measured at the smallest and the largest ``ℓ`` (a second, short run)
    and interpolated for the first ``ℓ`` samples of the long run; for NUTS, whose path lengths
    are random, this is an estimate. The exact sampler costs nothing (it reads the closed form).

    Args:
      problem: a problem with exact Gaussian client posteriors (``least_squares``, ...).
      specs: ``{label: {"kind": "exact"|"iasg"|"sgld"|"hmc"|"nuts", **settings}}``; settings
        are the keyword arguments of :func:`fedpa.samplers.exact_gaussian`,
        :func:`~fedpa.samplers.iasg`, :func:`~fedpa.samplers.sgld`, :func:`~fedpa.samplers.hmc`
        and :func:`~fedpa.samplers.nuts` without ``num_samples``.
      num_samples: the ``ℓ`` values (each ``>= 2``).
      rho: shrinkage, ``>= 0``.
      repeats: independent repetitions.
      client: the client index.
      x: the server model (default ``problem.init_params``).
      key: PRNG key (required).

    Returns:
      Tidy DataFrame: ``sampler, num_samples, repeat, rel_error, direction_error, compute``.
    """
    _checks.key(key)
    if not isinstance(problem, FederatedProblem) or problem.clients.posterior is None:
        raise ValueError("problem must be a FederatedProblem with exact client posteriors")
    ells = _checks.int_list("num_samples", num_samples, minimum=2)
    rho = _checks.rho(rho)
    repeats = _checks.integer("repeats", repeats, minimum=1)
    one = problem.client(client)
    post = one.posterior
    x = problem.init_params if x is None else jnp.asarray(x)
    exact = post.precision_matvec(x - post.mean)
    lo, top = min(ells), max(ells)
    samplers = {label: _build_sampler(label, spec, top) for label, spec in specs.items()}
    short = {label: _build_sampler(label, specs[label], lo) for label in specs} if lo < top else {}
    rows = []
    for label, sampler in samplers.items():
        # the i-th sampler's draws use fold_in(key, i · repeats · len(num_samples)), its first row
        keys = jax.random.split(jax.random.fold_in(key, len(rows)), repeats)
        draws, cost_top = _draw(sampler, keys, problem.loss_fn, x, one)
        if lo < top:
            _, cost_lo = _draw(short[label], keys, problem.loss_fn, x, one)
            per_sample = (cost_top - cost_lo) / (top - lo)
        else:
            cost_lo, per_sample = cost_top, 0.0
        for ell in ells:
            rel, direction = _delta_stats(draws, x, exact, ell, rho)
            compute = cost_lo + (ell - lo) * per_sample
            for r in range(repeats):
                rows.append(
                    {
                        "sampler": label,
                        "num_samples": ell,
                        "repeat": r,
                        "rel_error": float(rel[r]),
                        "direction_error": float(direction[r]),
                        "compute": float(compute),
                    }
                )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ dynamic program vs direct


_DELTA_DP = jax.jit(posterior.delta_unchecked)
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
) -> pd.DataFrame:
    """Wall time of the delta: the ``O(ℓ² d)`` dynamic program against the ``O(d³)`` solve.

    For each ``d``, draws ``ℓ`` samples of a random anisotropic Gaussian (standard deviations
    log-uniform in ``[0.3, 3]``) and a server model ``x``, compiles both functions once, then times
    ``repeats`` calls of each (``block_until_ready``). Also records the relative difference
    ``‖Δ_dp - Δ_direct‖ / ‖Δ_direct‖`` of their outputs (in the default float precision).

    Args:
      key: PRNG key.
      dims: model dimensions ``d >= 1``.
      num_samples: ``ℓ >= 2``.
      rho: shrinkage, ``>= 0``.
      repeats: timed calls per method and ``d`` (``>= 1``).

    Returns:
      DataFrame with columns ``dim, num_samples, method, repeat, seconds, rel_diff`` where
      ``method`` is ``"dynamic program"`` or ``"direct solve"``.
    """
    dims = _checks.int_list("dims", dims, minimum=1)
    num_samples = _checks.integer("num_samples", num_samples, minimum=2)
    rho = _checks.rho(rho)
    repeats = _checks.integer("repeats", repeats, minimum=1)
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
