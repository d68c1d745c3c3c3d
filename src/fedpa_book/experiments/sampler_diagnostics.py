r"""Diagnostics of a local sampler's samples, as a client draws them in one round.

* :func:`lag1_autocorrelation` — how strongly successive samples of a chain are correlated.
* :func:`autocorrelation` — the autocorrelation function of chains, pooled over chains and
  coordinates.
* :func:`effective_sample_size` — ``n / τ`` with Geyer's initial positive sequence (for an
  AR(1) chain, ``n (1 - φ) / (1 + φ)`` as ``n`` grows).
* :func:`sample_set_diagnostics` — ``repeats`` independent sample sets from the server model
  (what a client computes each round), each with its covariance fit against the exact posterior
  (:func:`~fedpa_book.experiments.local_posterior.covariance_fit`), autocorrelation and
  effective sample size: a tidy table, one row per set.

Everything here calls public :mod:`fedpa` functions only.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import pandas as pd

from . import _checks
from .local_posterior import covariance_fit

__all__ = [
    "lag1_autocorrelation",
    "autocorrelation",
    "effective_sample_size",
    "sample_set_diagnostics",
]


def lag1_autocorrelation(samples, mean=None) -> float:
    """Lag-1 autocorrelation of a chain's samples, averaged over coordinates.

    ``r = mean_j Σ_t z_tj z_(t+1)j / Σ_t z_tj²`` with ``z = samples - mean`` (the sample mean by
    default; pass the posterior mean to measure drift as well).

    Args:
      samples: ``(ℓ, d)`` in chain order, ``ℓ >= 2``.
      mean: ``(d,)`` centre, or ``None`` for the sample mean.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"samples must have shape (num_samples >= 2, dim), got shape {x.shape}")
    centre = x.mean(0) if mean is None else np.asarray(mean, dtype=np.float64)
    if centre.shape != (x.shape[1],):
        raise ValueError(f"mean must have shape ({x.shape[1]},), got shape {centre.shape}")
    z = x - centre
    num = np.sum(z[1:] * z[:-1], axis=0)
    den = np.sum(z * z, axis=0)
    return float(np.mean(num / np.where(den > 0, den, 1.0)))


def autocorrelation(chains, max_lag: int | None = None) -> np.ndarray:
    r"""Autocorrelation ``ρ_k`` of stationary chains, pooled over chains and coordinates.

    With each chain centred by its own mean,
    ``ρ_k = Σ_c Σ_t ⟨x_{c,t} − m_c, x_{c,t+k} − m_c⟩ / Σ_c Σ_t ‖x_{c,t} − m_c‖²``
    (the usual biased estimator, divided by the chain length ``n`` at every lag).

    Args:
      chains: ``(num_chains, n, d)`` (or ``(n, d)``, or ``(n,)``), ``n >= 2``.
      max_lag: largest lag (default ``n - 1``).

    Returns:
      ``(max_lag + 1,)`` float64, ``ρ_0 = 1``.
    """
    x = np.asarray(chains, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :, None]
    elif x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[1] < 2:
        raise ValueError(f"chains must have shape (num_chains, n >= 2, d), got {np.shape(chains)}")
    n = x.shape[1]
    max_lag = n - 1 if max_lag is None else _checks.integer("max_lag", max_lag, minimum=0)
    if max_lag > n - 1:
        raise ValueError(f"max_lag must be <= n - 1 = {n - 1}, got {max_lag}")
    x = x - x.mean(axis=1, keepdims=True)
    var = np.sum(x * x)
    if var == 0:
        return np.r_[1.0, np.zeros(max_lag)]
    return np.array([np.sum(x[:, : n - k] * x[:, k:]) / var for k in range(max_lag + 1)])


def effective_sample_size(chains) -> float:
    r"""Effective sample size per chain, ``n / τ``, ``τ = 1 + 2 Σ_k ρ_k``.

    The sum is truncated by Geyer's initial positive sequence: pairs ``ρ_{2m} + ρ_{2m+1}`` are
    added while positive (so ``τ = -1 + 2 Σ_m Γ_m``). For an AR(1) chain with coefficient ``φ``
    and ``n → ∞``, ``n / τ → n (1 - φ) / (1 + φ)``.

    Args:
      chains: as :func:`autocorrelation`.
    """
    rho = autocorrelation(chains)
    n = rho.shape[0]
    tau = -1.0
    for m in range(0, n - 1, 2):
        gamma = rho[m] + rho[m + 1]
        if gamma <= 0:
            break
        tau += 2.0 * gamma
    tau = max(tau, 1.0 / n)
    return float(n / tau)


def sample_set_diagnostics(key, sampler, loss_fn, params, client, repeats: int) -> pd.DataFrame:
    """``repeats`` independent sample sets of ``sampler`` from ``params``, each diagnosed.

    Args:
      key: PRNG key; set ``r`` uses ``jax.random.fold_in(key, r)``.
      sampler: a :mod:`fedpa.samplers` sampler (``sample(key, loss_fn, params, client)``).
      loss_fn, params, client: as for ``sampler.sample``; ``client.posterior`` is the exact
        Gaussian posterior the samples are compared with.
      repeats: ``>= 1`` sample sets.

    Returns:
      one row per set: ``repeat``, ``num_samples``, ``scale`` and ``shape_error`` (the covariance
      fit), ``lag1`` (lag-1 autocorrelation about the sample mean), ``ess`` and ``mean_error``
      (``‖mean - μ‖ / sqrt(tr(scale · A⁻¹))``, the sample mean's distance from the posterior
      mean in units of the samples' own spread).
    """
    key = _checks.key(key)
    repeats = _checks.integer("repeats", repeats, minimum=1)
    keys = jax.vmap(lambda r: jax.random.fold_in(key, r))(np.arange(repeats))
    draws = jax.vmap(lambda k: sampler.sample(k, loss_fn, params, client)[0])(keys)
    draws = np.asarray(draws)  # (repeats, ℓ, d)
    post = client.posterior
    mu = np.asarray(post.mean, dtype=np.float64)
    rows: list[dict[str, Any]] = []
    for r, sample in enumerate(draws):
        fit = covariance_fit(sample, post)
        chol = np.asarray(post.precision_cholesky, dtype=np.float64)
        trace = np.trace(np.linalg.inv(chol @ chol.T))
        spread = np.sqrt(abs(fit["scale"]) * trace)
        rows.append(
            {
                "repeat": r,
                "num_samples": sample.shape[0],
                **fit,
                "lag1": lag1_autocorrelation(sample),
                "ess": effective_sample_size(sample),
                "mean_error": float(np.linalg.norm(sample.mean(0) - mu) / spread),
            }
        )
    return pd.DataFrame(rows)
