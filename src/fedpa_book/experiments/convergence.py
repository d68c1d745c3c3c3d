"""Federated convergence on problem families: multi-seed runs, trajectories, final values.

* :func:`convergence` — several labelled algorithms on one problem family over several seeds
  (each seed draws its own problem and its own run randomness); :func:`convergence_sweep` — the
  same for a grid of configurations of one algorithm factory. Both are :func:`fedpa.sweep` calls
  (one compile per algorithm structure, ``vmap`` over the grid and the seeds) turned into a tidy
  table.
* :func:`final_values` — per-seed averages of the last rounds, then mean and spread over seeds.
* :func:`trajectory` / :func:`trajectories` — the server model after every round
  (``trace_params=True``), with the starting model as row 0, for pictures of algorithms moving.

Everything here calls public :mod:`fedpa` functions only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import optax
import pandas as pd
from jax.flatten_util import ravel_pytree

import fedpa
from fedpa.problems import FederatedProblem

from . import _checks

__all__ = [
    "convergence",
    "convergence_sweep",
    "final_values",
    "trajectory",
    "trajectories",
]

_METRICS = ("dist_to_optimum", "objective")


def _split_keys(key):
    """``(problem_key, run_key)`` of a study: seed ``j`` draws its problem from
    ``fold_in(problem_key, j)`` and runs with ``fold_in(run_key, j)`` (:func:`fedpa.sweep`)."""
    _checks.key(key)
    k_problems, k_runs = jax.random.split(key)
    return k_problems, k_runs


def convergence_sweep(
    factory: Callable[..., tuple[Any, optax.GradientTransformation]],
    make_problem: Callable[[Any], FederatedProblem],
    grid: Mapping[str, Sequence] | Sequence[Mapping[str, Any]],
    *,
    rounds: int,
    clients_per_round: int | None = None,
    seeds: int = 5,
    key=None,
    labels: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Distance to the optimum and objective per round, for a grid of configurations and seeds.

    A :func:`fedpa.sweep` with a problem factory: with ``(k_problems, k_runs) =
    jax.random.split(key)``, seed ``j`` runs on ``make_problem(fold_in(k_problems, j))`` with run
    key ``fold_in(k_runs, j)``, the same for every configuration (common random numbers).

    Args:
      factory: ``factory(**config) -> (algorithm, server_optimizer)``.
      make_problem: ``key -> FederatedProblem``; must give the same shapes for every key (and
        have a known optimum).
      grid: ``{name: [values]}`` or a list of configuration dicts, as in :func:`fedpa.sweep`.
      rounds: server rounds, ``>= 1``.
      clients_per_round: clients per round (default: all clients).
      seeds: number of seeds, ``>= 1``.
      key: PRNG key (required).
      labels: extra constant columns (e.g. ``{"dim": 10}``).

    Returns:
      Tidy DataFrame with columns ``*labels, *grid names, seed, round, dist_to_optimum,
      objective, suboptimality`` (``round`` counts from 1; ``suboptimality`` is
      ``F(x) - F(x*)`` of the seed's problem).
    """
    k_problems, k_runs = _split_keys(key)
    seeds = _checks.integer("seeds", seeds, minimum=1)
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
    frame = res.to_frame(list(_METRICS))
    optimum_values = np.array(
        [float(p.objective(p.global_optimum())) for p in problems], dtype=np.float64
    )
    frame["suboptimality"] = (
        frame["objective"].to_numpy(np.float64) - optimum_values[frame["seed"].to_numpy()]
    )
    for i, (name, value) in enumerate((labels or {}).items()):
        frame.insert(i, name, value)
    return frame


def convergence(
    algorithms: Mapping[str, Any],
    make_problem: Callable[[Any], FederatedProblem],
    *,
    rounds: int,
    clients_per_round: int | None = None,
    server_optimizer: optax.GradientTransformation | Mapping[str, Any] | None = None,
    seeds: int = 5,
    key=None,
    labels: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """:func:`convergence_sweep` over labelled algorithms: column ``algorithm`` holds the label.

    Args:
      algorithms: ``{label: ClientUpdate}``; labels are for plots (algorithms carry no name).
      make_problem, rounds, clients_per_round, seeds, key, labels: as in
        :func:`convergence_sweep`.
      server_optimizer: one optax transformation for all, or ``{label: transformation}``
        (default: :func:`fedpa.default_server_optimizer`, SGD with learning rate 1).

    Returns:
      Tidy DataFrame with columns ``*labels, algorithm, seed, round, dist_to_optimum,
      objective, suboptimality``.
    """
    if not isinstance(algorithms, Mapping) or not algorithms:
        raise ValueError(
            f"algorithms must map at least one label to a fedpa ClientUpdate, got {algorithms!r}"
        )
    for label, algo in algorithms.items():
        if not isinstance(algo, fedpa.ClientUpdate):
            raise ValueError(
                f"algorithms[{label!r}] must be a fedpa ClientUpdate, got {type(algo).__name__}"
            )
    if server_optimizer is None:
        server_optimizer = fedpa.default_server_optimizer()
    if isinstance(server_optimizer, Mapping):
        missing = set(algorithms) - set(server_optimizer)
        if missing:
            raise ValueError(f"server_optimizer has no entry for algorithms {sorted(missing)}")
        optimizers = dict(server_optimizer)
    else:
        optimizers = dict.fromkeys(algorithms, server_optimizer)
    for label in algorithms:
        if not isinstance(optimizers[label], optax.GradientTransformation):
            raise ValueError(
                f"server_optimizer for {label!r} must be an optax.GradientTransformation, "
                f"got {type(optimizers[label]).__name__}"
            )
    return convergence_sweep(
        lambda algorithm: (algorithms[algorithm], optimizers[algorithm]),
        make_problem,
        {"algorithm": list(algorithms)},
        rounds=rounds,
        clients_per_round=clients_per_round,
        seeds=seeds,
        key=key,
        labels=labels,
    )


def final_values(frame: pd.DataFrame, last: int = 1, by: Sequence[str] = ("algorithm",)):
    """Per-seed average of the last ``last`` rounds, then mean and std over seeds.

    Args:
      frame: a :func:`convergence` table (possibly several concatenated).
      last: how many final rounds to average (smooths the noise of stochastic methods).
      by: grouping columns besides ``seed``.

    Returns:
      DataFrame with ``*by, dist_mean, dist_std, subopt_mean, subopt_std, seeds``.
    """
    last = _checks.integer("last", last, minimum=1)
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


# ------------------------------------------------------------------ trajectories


def trajectory(
    algorithm,
    server_optimizer: optax.GradientTransformation | None,
    problem: FederatedProblem,
    rounds: int,
    clients_per_round: int,
    key=None,
    *,
    init_params=None,
) -> np.ndarray:
    """The server model after every round of :func:`fedpa.run`, flattened.

    Arguments as :func:`fedpa.run` (``key`` is required).

    Returns:
      ``(rounds + 1, d)``: row 0 is the initial model, row ``r`` the model after round ``r``
      (``fedpa.run(..., trace_params=True).history["params"]`` below the starting model); row
      ``rounds`` is ``fedpa.run(...)``'s final params.
    """
    res = fedpa.run(
        algorithm,
        server_optimizer,
        problem,
        rounds,
        clients_per_round,
        key,
        init_params=init_params,
        trace_params=True,
    )
    start = problem.init_params if init_params is None else init_params
    start = np.asarray(ravel_pytree(start)[0], res.history["params"].dtype)
    return np.concatenate([start[None], res.history["params"]])


def trajectories(
    factory: Callable[..., tuple[Any, optax.GradientTransformation]],
    problems: Sequence[FederatedProblem],
    grid: Mapping[str, Sequence] | Sequence[Mapping[str, Any]],
    rounds: int,
    clients_per_round: int,
    key=None,
) -> tuple[list[dict], np.ndarray]:
    """:func:`trajectory` for a grid of configurations on several same-shaped problems.

    One :func:`fedpa.sweep` with ``trace_params=True`` and one problem per seed: problem ``j``
    starts from its own ``init_params`` and runs with the key ``jax.random.fold_in(key, j)``,
    the same for every configuration (common random numbers).

    Args:
      factory: ``factory(**config) -> (algorithm, server_optimizer)``.
      problems: problems whose arrays have the same shapes (e.g.
        :func:`fedpa.problems.least_squares` with different ``heterogeneity``).
      grid: as in :func:`fedpa.sweep` (``[{}]`` for the factory's single configuration).
      rounds, clients_per_round, key: as in :func:`fedpa.run`.

    Returns:
      ``(configs, paths)``: the configurations (in order) and ``(len(configs), len(problems),
      rounds + 1, d)`` models, row 0 of each path being the problem's starting model; path
      ``[i, j]`` equals ``trajectory(*factory(**configs[i]), problems[j], ...,
      key=fold_in(key, j))`` up to float rounding.
    """
    problems = list(problems)
    res = fedpa.sweep(
        factory,
        problems,
        grid,
        rounds=rounds,
        clients_per_round=clients_per_round,
        seeds=len(problems),
        key=key,
        trace_params=True,
    )
    paths = res.history["params"]  # (configs, problems, rounds, d)
    starts = np.stack([np.asarray(ravel_pytree(p.init_params)[0]) for p in problems])
    starts = np.broadcast_to(
        starts[None, :, None, :], (paths.shape[0], len(problems), 1, paths.shape[-1])
    )
    return res.configs, np.concatenate([starts.astype(paths.dtype), paths], axis=2)
