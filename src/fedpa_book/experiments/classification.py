"""Federated classification runs: algorithms × problems (e.g. Dirichlet α × data seed).

:func:`classification_runs` runs labelled algorithms on several same-shaped classification
problems in one :func:`fedpa.sweep` (one problem per seed, one compile per algorithm structure)
and returns a tidy table of test accuracy, test loss, train accuracy and the training objective
per round. Everything here calls public :mod:`fedpa` functions only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optax
import pandas as pd

import fedpa
from fedpa.problems import FederatedProblem

from . import _checks

__all__ = ["classification_runs", "CLASSIFICATION_METRICS"]

CLASSIFICATION_METRICS = ("test_accuracy", "test_loss", "train_accuracy", "objective")


def classification_runs(
    algorithms: Mapping[str, Any],
    problems: Sequence[FederatedProblem],
    *,
    rounds: int,
    clients_per_round: int,
    server_optimizer: optax.GradientTransformation | None = None,
    key=None,
    labels: Sequence[Mapping[str, Any]] | None = None,
) -> pd.DataFrame:
    """Runs every algorithm on every problem: one :func:`fedpa.sweep` over the algorithms.

    Problem ``j`` is the sweep's seed ``j``: it runs with the key ``jax.random.fold_in(key, j)``
    (the same for every algorithm: common random numbers), so its history is what
    ``fedpa.run(algorithm, server_optimizer, problems[j], ..., key=fold_in(key, j))`` returns.

    Args:
      algorithms: ``{label: ClientUpdate}`` (labels name the ``algorithm`` column).
      problems: problems with identical shapes and functions (same model, same ``pad_to``,
        same number of clients), e.g. one per (α, seed).
      rounds: server rounds ``>= 1``.
      clients_per_round: clients per round.
      server_optimizer: optax transformation (default: :func:`fedpa.default_server_optimizer`).
      key: PRNG key (required).
      labels: one mapping of constant columns per problem (e.g. ``{"alpha": 0.1, "seed": 0}``).

    Returns:
      Tidy DataFrame: ``*label columns, problem, algorithm, round`` (from 1) and the metrics of
      :data:`CLASSIFICATION_METRICS`.

    Raises:
      fedpa.DivergenceError: when some run produced NaN/inf parameters.
    """
    _checks.key(key)
    if not isinstance(algorithms, Mapping) or not algorithms:
        raise ValueError("algorithms must map at least one label to a fedpa ClientUpdate")
    for label, algo in algorithms.items():
        if not isinstance(algo, fedpa.ClientUpdate):
            raise ValueError(
                f"algorithms[{label!r}] must be a fedpa ClientUpdate, got {type(algo).__name__}"
            )
    problems = list(problems)
    if not problems:
        raise ValueError("problems must hold at least one FederatedProblem")
    labels = [dict(x) for x in labels] if labels is not None else [{} for _ in problems]
    if len(labels) != len(problems):
        raise ValueError(
            f"labels must have one entry per problem ({len(problems)}), got {len(labels)}"
        )
    if server_optimizer is None:
        server_optimizer = fedpa.default_server_optimizer()
    names = list(algorithms)
    res = fedpa.sweep(
        lambda algorithm: (algorithms[algorithm], server_optimizer),
        problems,
        {"algorithm": names},
        rounds=rounds,
        clients_per_round=clients_per_round,
        seeds=len(problems),
        key=key,
    )
    finite = res.history["finite"].astype(bool)  # (algorithms, problems, rounds)
    if not finite.all():
        i, j = np.argwhere(~finite.all(axis=2))[0]
        raise fedpa.DivergenceError(
            int(np.argmin(finite[i, j])), f"{names[i]} on {problems[j].name}"
        )
    frames = []
    for i, label in enumerate(names):
        for j, lab in enumerate(labels):
            frame = pd.DataFrame({k: res.history[k][i, j] for k in CLASSIFICATION_METRICS})
            frame.insert(0, "round", np.arange(1, rounds + 1))
            frame.insert(0, "algorithm", label)
            frame.insert(0, "problem", j)
            for pos, (name, value) in enumerate(lab.items()):
                frame.insert(pos, name, value)
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)
