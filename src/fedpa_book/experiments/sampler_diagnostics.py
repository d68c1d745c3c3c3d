r"""Diagnostics of a local sampler's samples, as a client draws them in one round.

* :func:`lag1_autocorrelation` — how strongly successive samples of a chain are correlated.
* :func:`effective_sample_size` — the AR(1) estimate ``ℓ (1 - r) / (1 + r)``.
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

__all__ = ["lag1_autocorrelation", "effective_sample_size", "sample_set_diagnostics"]


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


def effective_sample_size(samples, mean=None) -> float:
    """``ℓ (1 - r) / (1 + r)`` with ``r`` the lag-1 autocorrelation clipped to ``[0, 1)``.

    The effective size of an AR(1) chain: ``ℓ`` for independent samples, near zero for a chain
    that barely moves. Args as :func:`lag1_autocorrelation`.
    """
    num = np.shape(samples)[0]
    r = min(max(lag1_autocorrelation(samples, mean), 0.0), 1.0 - 1e-12)
    return float(num * (1.0 - r) / (1.0 + r))


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
