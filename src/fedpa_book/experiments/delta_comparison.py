r"""Two client updates at the same server model: how do their deltas compare?

* :func:`compare_deltas` — for every client of a problem, both updates' deltas from the same
  key (common random numbers: FedAvg and FedPA-IASG then walk the same SGD path), their norms,
  the norm ratio and the cosine between them: a tidy table, one row per client.

Everything here calls public :mod:`fedpa` functions only.
"""

from __future__ import annotations

import jax
import numpy as np
import pandas as pd
from jax.flatten_util import ravel_pytree

from . import _checks

__all__ = ["compare_deltas"]


def compare_deltas(key, update_a, update_b, problem, params, round: int = 0) -> pd.DataFrame:
    """Deltas of ``update_a`` and ``update_b`` at ``params`` on every client of ``problem``.

    Args:
      key: PRNG key; client ``i`` uses ``jax.random.fold_in(key, i)`` for *both* updates.
      update_a, update_b: client updates (``delta, info = update(key, loss_fn, params, client,
        round)``), e.g. :func:`fedpa.fedavg` and :func:`fedpa.fedpa_iasg`.
      problem: a :class:`~fedpa.problems.FederatedProblem`.
      params: the server model (a pytree like ``problem.init_params``).
      round: the absolute server round passed to both (matters for burn-in switches).

    Returns:
      one row per client: ``client``, ``norm_a``, ``norm_b``, ``ratio`` (``norm_b / norm_a``)
      and ``cosine`` between the flattened deltas.
    """
    key = _checks.key(key)
    round = _checks.integer("round", round, minimum=0)
    num = problem.num_clients

    def one(i):
        client = jax.tree.map(lambda a: a[i], problem.clients)
        k = jax.random.fold_in(key, i)
        da = ravel_pytree(update_a(k, problem.loss_fn, params, client, round)[0])[0]
        db = ravel_pytree(update_b(k, problem.loss_fn, params, client, round)[0])[0]
        return da, db

    da, db = jax.jit(jax.vmap(one))(np.arange(num))
    da, db = np.asarray(da, np.float64), np.asarray(db, np.float64)
    na, nb = np.linalg.norm(da, axis=1), np.linalg.norm(db, axis=1)
    cosine = np.sum(da * db, axis=1) / np.maximum(na * nb, np.finfo(float).tiny)
    return pd.DataFrame(
        {"client": np.arange(num), "norm_a": na, "norm_b": nb, "ratio": nb / na, "cosine": cosine}
    )
