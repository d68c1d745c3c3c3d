"""Tune on some seeds, evaluate on others: a fair comparison of tuned methods in one sweep.

* :func:`tune` — one :func:`fedpa.sweep` of a method's grid on ``tuning_seeds + eval_seeds``
  seeds (each seed its own problem and run randomness, as in
  :func:`~fedpa_book.experiments.convergence.convergence_sweep`). The configuration is chosen
  from the *tuning* seeds only (the lowest mean log final distance; diverged runs never win);
  the evaluation seeds are reported for the chosen configuration and were never looked at to
  choose it. Running the whole grid on every seed keeps it to one compile per structure.
* :func:`paired_ratio` — per-seed ratios of two methods' final values on the same seeds, their
  geometric mean and a t interval.

Everything here calls public :mod:`fedpa` functions only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
import pandas as pd
from scipy import stats

import fedpa
from fedpa.problems import FederatedProblem

from . import _checks

__all__ = ["Tuned", "tune", "paired_ratio", "final_errors"]


class Tuned(NamedTuple):
    """What :func:`tune` returns.

    Attributes:
      grid: one row per configuration: its grid values, ``tune_score`` (geometric mean over
        the tuning seeds of the final distance; ``inf`` if any tuning run diverged),
        ``local_grad_evals`` (mean local gradient evaluations per client and round, from
        ``history["local_grad_evals"]``) and ``chosen``.
      chosen: the chosen configuration (a dict of grid values).
      finals: one row per configuration and seed: grid values, ``config`` (row of ``grid``),
        ``seed``, ``split`` (``"tune"`` or ``"eval"``), ``final`` (mean distance to the optimum
        over the last rounds; ``inf`` for a diverged run).
      curves: the chosen configuration on the evaluation seeds: ``seed`` (counted from 0
        within the evaluation seeds), ``round``, ``dist_to_optimum``, ``objective``,
        ``local_grad_evals``.
    """

    grid: pd.DataFrame
    chosen: dict
    finals: pd.DataFrame
    curves: pd.DataFrame


def final_errors(history: np.ndarray, last: int = 5) -> np.ndarray:
    """``(configs, seeds)`` mean of the last ``last`` rounds of a ``(configs, seeds, rounds)``
    history; non-finite runs give ``inf``."""
    h = np.asarray(history, dtype=np.float64)
    last = _checks.integer("last", last, minimum=1)
    out = h[..., -last:].mean(axis=-1)
    return np.where(np.isfinite(out), out, np.inf)


def tune(
    factory: Callable[..., tuple[Any, Any]],
    make_problem: Callable[[Any], FederatedProblem],
    grid: Mapping[str, Sequence] | Sequence[Mapping[str, Any]],
    *,
    rounds: int,
    tuning_seeds: int,
    eval_seeds: int,
    key,
    clients_per_round: int | None = None,
    last: int = 5,
) -> Tuned:
    """Chooses a configuration of ``factory`` on tuning seeds and evaluates it on other seeds.

    With ``(k_problems, k_runs) = jax.random.split(key)``, seed ``j`` runs on
    ``make_problem(fold_in(k_problems, j))`` with run key ``fold_in(k_runs, j)``; seeds
    ``0 … tuning_seeds - 1`` tune, the next ``eval_seeds`` evaluate. Use the same ``key`` for
    every method of a comparison: the methods then meet the same problems and run keys
    (paired seeds).

    Args:
      factory: ``factory(**config) -> (algorithm, server_optimizer)``.
      make_problem: ``key -> FederatedProblem`` with a known optimum (same shapes for every key).
      grid: the tuning grid, as in :func:`fedpa.sweep`.
      rounds: server rounds, ``>= 1``.
      tuning_seeds, eval_seeds: seeds of each split, ``>= 1``.
      key: PRNG key (required).
      clients_per_round: clients per round (default: all).
      last: final rounds averaged into a run's final distance, ``>= 1``.

    Returns:
      A :class:`Tuned`.
    """
    _checks.key(key)
    tuning_seeds = _checks.integer("tuning_seeds", tuning_seeds, minimum=1)
    eval_seeds = _checks.integer("eval_seeds", eval_seeds, minimum=1)
    rounds = _checks.integer("rounds", rounds, minimum=1)
    last = _checks.integer("last", last, minimum=1)
    if last > rounds:
        raise ValueError(f"last must be <= rounds={rounds}, got last={last}")
    seeds = tuning_seeds + eval_seeds
    k_problems, k_runs = jax.random.split(key)
    problems = [make_problem(jax.random.fold_in(k_problems, j)) for j in range(seeds)]
    for p in problems:
        if not isinstance(p, FederatedProblem):
            raise ValueError(f"make_problem must return a FederatedProblem, got {type(p).__name__}")
    if clients_per_round is None:
        clients_per_round = problems[0].num_clients
    res = fedpa.sweep(
        factory,
        problems,
        grid,
        rounds=rounds,
        clients_per_round=clients_per_round,
        seeds=seeds,
        key=k_runs,
    )
    finals = final_errors(res.history["dist_to_optimum"], last)  # (configs, seeds)
    with np.errstate(divide="ignore"):
        score = np.exp(np.mean(np.log(np.maximum(finals[:, :tuning_seeds], 1e-300)), axis=1))
    score = np.where(np.isnan(score), np.inf, score)
    best = int(np.argmin(score))
    table = pd.DataFrame(res.configs)
    table["tune_score"] = score
    table["local_grad_evals"] = np.asarray(res.history["local_grad_evals"], np.float64).mean(
        axis=(1, 2)
    )
    table["chosen"] = np.arange(len(table)) == best
    rows = pd.DataFrame(
        {
            "config": np.repeat(np.arange(len(res.configs)), seeds),
            "seed": np.tile(np.arange(seeds), len(res.configs)),
            "final": finals.reshape(-1),
        }
    )
    rows["split"] = np.where(rows["seed"] < tuning_seeds, "tune", "eval")
    finals_frame = pd.DataFrame(res.configs).iloc[rows["config"]].reset_index(drop=True)
    finals_frame = pd.concat([finals_frame, rows], axis=1)
    metrics = ["dist_to_optimum", "objective", "local_grad_evals"]
    curves = pd.DataFrame(
        {
            "seed": np.repeat(np.arange(eval_seeds), rounds),
            "round": np.tile(np.arange(1, rounds + 1), eval_seeds),
            **{m: np.asarray(res.history[m][best, tuning_seeds:]).reshape(-1) for m in metrics},
        }
    )
    return Tuned(table, dict(res.configs[best]), finals_frame, curves)


def paired_ratio(numerator, denominator, confidence: float = 0.95) -> dict:
    """Per-seed ratios ``numerator / denominator`` (same seeds, same order), summarized.

    Returns:
      ``{"ratio": geometric mean, "low", "high": t interval of the mean log ratio
      (exponentiated), "min", "max", "below_one": seeds with ratio < 1, "seeds"}``.
    """
    a = np.asarray(numerator, np.float64)
    b = np.asarray(denominator, np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(
            f"numerator and denominator must be 1-D of the same length, got {a.shape}, {b.shape}"
        )
    _checks.real("confidence", confidence, low=0.0, low_open=True)
    if confidence >= 1:
        raise ValueError(f"confidence must be < 1, got confidence={confidence}")
    r = a / b
    logs = np.log(r)
    n = logs.size
    mean = float(np.mean(logs))
    if n > 1 and np.all(np.isfinite(logs)):
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * np.std(logs, ddof=1) / np.sqrt(n))
    else:
        half = float("nan")
    return {
        "ratio": float(np.exp(mean)),
        "low": float(np.exp(mean - half)),
        "high": float(np.exp(mean + half)),
        "min": float(np.min(r)),
        "max": float(np.max(r)),
        "below_one": int(np.sum(r < 1)),
        "seeds": int(n),
    }
