r"""Practical FedPA, fairly tested: tuned methods at matched local budgets, sampler diagnostics.

Drivers that return tidy pandas tables (the chapter ``book/practical_fedpa.md`` only plots):

* **Seeds.** :func:`split_keys` gives disjoint *tuning* and *evaluation* keys: every method of a
  study is tuned on the tuning problems and runs, and evaluated on other problems and runs
  (common random numbers: all methods see the same problems within each split).
* **Best against best.** :func:`tune_and_evaluate` runs a method's grid with one
  :func:`fedpa.sweep` on the tuning seeds, keeps the best configuration (optionally the best per
  value of one axis, e.g. per ``rho``) by the mean log of the final metric, and reruns the kept
  configurations on the evaluation seeds.
* **Matched budgets.** :func:`iasg_burnin` and :func:`sgld_burnin` size a sampler so that it
  spends exactly ``budget`` local gradient evaluations per round; :func:`grad_evals` reads what an
  update reports in its ``info`` (the rounds' ``local_grad_evals`` history is the same count).
* **Diagnostics.** :func:`autocorrelation` and :func:`effective_sample_size` of the samples one
  client draws (pooled over chains, Geyer's initial positive sequence; from
  :mod:`~fedpa_book.experiments.sampler_diagnostics`), :func:`mixing_steps`
  (``1/(η λ_min(A_i))``), and :func:`sampler_diagnostics`, which draws a sampler's samples on
  every client of a problem at a server model and reports lag-1 autocorrelation, ESS and the fit
  of the sample covariance to the exact posterior (scale and shape,
  :func:`fedpa_book.experiments.local_posterior.covariance_fit`).
* **Gains.** :func:`final_errors`, :func:`paired_ratios` (per evaluation seed, against a
  reference method; geometric mean and a t interval of the log ratio) and
  :func:`rounds_to_target`.

Everything here calls public :mod:`fedpa` functions only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import fedpa
from fedpa.problems import FederatedProblem

from . import _checks
from .local_posterior import covariance_fit
from .sampler_diagnostics import autocorrelation, effective_sample_size
from .tuning import final_errors, paired_ratio

__all__ = [
    "split_keys",
    "problems_for",
    "iasg_burnin",
    "sgld_burnin",
    "grad_evals",
    "autocorrelation",
    "effective_sample_size",
    "mixing_steps",
    "sampler_diagnostics",
    "final_errors",
    "select",
    "tune_and_evaluate",
    "paired_ratios",
    "rounds_to_target",
]


# ------------------------------------------------------------------ seeds


def split_keys(key) -> dict[str, tuple[Any, Any]]:
    """Disjoint tuning and evaluation keys: ``{"tune": (problem_key, run_key), "eval": (...)}``.

    Seed ``j`` of a split draws its problem from ``fold_in(problem_key, j)`` and runs with
    ``fold_in(run_key, j)`` (as :func:`fedpa.sweep`); the four keys are distinct, so no
    evaluation problem or run is a tuning one.
    """
    _checks.key(key)
    k_tune, k_eval = jax.random.split(key)
    return {"tune": tuple(jax.random.split(k_tune)), "eval": tuple(jax.random.split(k_eval))}


def problems_for(make_problem: Callable[[Any], Any], problem_key, seeds: int) -> list:
    """``[make_problem(fold_in(problem_key, j)) for j < seeds]``."""
    seeds = _checks.integer("seeds", seeds, minimum=1)
    return [make_problem(jax.random.fold_in(problem_key, j)) for j in range(seeds)]


# ------------------------------------------------------------------ matched budgets


def iasg_burnin(
    budget: int, num_samples: int, avg_steps: int, discard_steps: int = 0, num_chains: int = 1
) -> int:
    """The IASG burn-in that makes one client spend exactly ``budget`` gradient evaluations.

    IASG costs ``num_chains · (burnin + (num_samples / num_chains) · (discard + avg))``.
    Raises ``ValueError`` when no burn-in ``>= 0`` does.
    """
    budget = _checks.integer("budget", budget, minimum=1)
    num_chains = _checks.integer("num_chains", num_chains, minimum=1)
    if num_samples % num_chains or budget % num_chains:
        raise ValueError(
            f"num_chains={num_chains} must divide num_samples={num_samples} and budget={budget}"
        )
    burnin = budget // num_chains - (num_samples // num_chains) * (discard_steps + avg_steps)
    if burnin < 0:
        raise ValueError(
            f"budget={budget} is too small for {num_samples} samples of {discard_steps} + "
            f"{avg_steps} steps on {num_chains} chain(s)"
        )
    return int(burnin)


def sgld_burnin(budget: int, num_samples: int, thinning: int) -> int:
    """The SGLD burn-in for ``budget = burnin + num_samples · thinning`` gradient evaluations."""
    budget = _checks.integer("budget", budget, minimum=1)
    burnin = budget - num_samples * thinning
    if burnin < 0:
        raise ValueError(f"budget={budget} < num_samples · thinning = {num_samples * thinning}")
    return int(burnin)


def grad_evals(update: fedpa.ClientUpdate, problem: FederatedProblem, round: int = 10**6) -> int:
    """Gradient evaluations one client update reports (``info.num_grad_evals``) on client 0.

    ``round`` is the server round (default: late, after any FedAvg burn-in rounds).
    """
    client = problem.client(0)
    _, info = update(
        jax.random.key(0), problem.loss_fn, problem.init_params, client, jnp.int32(round)
    )
    return int(info.num_grad_evals)


# ------------------------------------------------------------------ sampler diagnostics


def mixing_steps(problem: FederatedProblem, learning_rate: float) -> np.ndarray:
    """``(num_clients,)`` mixing time ``1 / (η λ_min(A_i))`` of each client's local SGD chain.

    ``A_i`` is the precision of the client's Gaussian local posterior (the Hessian of its average
    loss), so this is the number of steps SGD with step size ``η`` needs to forget its start in
    the flattest direction.
    """
    _checks.real("learning_rate", learning_rate, low=0.0, low_open=True)
    post = problem.clients.posterior
    if post is None:
        raise ValueError("mixing_steps needs a problem with exact local posteriors (quadratic)")
    chol = np.asarray(post.precision_cholesky, dtype=np.float64)
    lam_min = np.linalg.eigvalsh(chol @ np.swapaxes(chol, -1, -2))[..., 0]
    return 1.0 / (learning_rate * lam_min)


def sampler_diagnostics(sampler, problem: FederatedProblem, params, key) -> dict[str, float]:
    """Diagnostics of ``sampler`` on every client of ``problem`` at the server model ``params``.

    Each client draws its ``ℓ`` samples as in a FedPA round (same sampler, same client data, same
    server model). Autocorrelation and ESS treat each client's samples as one chain, in the order
    drawn (pooled over clients); the covariance fit compares each client's sample covariance with
    its exact posterior covariance ``A_i⁻¹`` and reports medians over clients.

    Returns:
      ``{"lag1", "ess", "ess_fraction", "scale", "shape_error", "grad_evals"}``: lag-1
      autocorrelation, ESS per client (out of ``ℓ``), ESS / ℓ, median covariance scale ``c``
      (``S ≈ c A_i⁻¹``), median shape error, gradient evaluations per client (from ``info``).
    """
    post = problem.clients.posterior
    if post is None:
        raise ValueError("sampler_diagnostics needs a problem with exact local posteriors")
    keys = jax.random.split(key, problem.num_clients)
    samples, info = jax.jit(jax.vmap(lambda k, c: sampler.sample(k, problem.loss_fn, params, c)))(
        keys, problem.clients
    )
    samples = np.asarray(samples, dtype=np.float64)  # (clients, ℓ, d)
    fits = [
        covariance_fit(samples[i], jax.tree.map(lambda a, i=i: a[i], post))
        for i in range(samples.shape[0])
    ]
    num = samples.shape[1]
    ess = effective_sample_size(samples)
    return {
        "lag1": float(autocorrelation(samples, max_lag=1)[1]),
        "ess": ess,
        "ess_fraction": ess / num,
        "scale": float(np.median([f["scale"] for f in fits])),
        "shape_error": float(np.median([f["shape_error"] for f in fits])),
        "grad_evals": float(np.mean(np.asarray(info.num_grad_evals))),
    }


# ------------------------------------------------------------------ tuning and evaluation


def select(
    configs: Sequence[Mapping[str, Any]],
    finals: np.ndarray,
    *,
    per: str | None = None,
    mode: str = "min",
) -> list[int]:
    """Indices of the best configurations by the mean over tuning seeds of ``log(final)``.

    ``mode="max"`` maximizes the mean final value instead (accuracies). ``per``: the best
    configuration for each value of that grid axis (in order of first appearance); ``None``: the
    single best. Diverged runs (``inf``) are never chosen while a finite one exists.
    """
    finals = np.asarray(finals, dtype=np.float64)
    if mode == "min":
        with np.errstate(divide="ignore"):
            score = np.mean(np.log(np.maximum(finals, 1e-300)), axis=1)
    elif mode == "max":
        score = -np.mean(np.where(np.isfinite(finals), finals, -np.inf), axis=1)
    else:
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    score = np.where(np.isnan(score), np.inf, score)
    if per is None:
        return [int(np.argmin(score))]
    chosen = []
    values = list(dict.fromkeys(c[per] for c in configs))
    for v in values:
        idx = [i for i, c in enumerate(configs) if c[per] == v]
        chosen.append(idx[int(np.argmin(score[idx]))])
    return chosen


def tune_and_evaluate(
    factory: Callable[..., tuple[Any, Any]],
    make_problem: Callable[[Any], FederatedProblem] | None,
    grid,
    *,
    rounds: int,
    clients_per_round: int,
    tune_seeds: int,
    eval_seeds: int,
    key,
    per: str | None = None,
    metric: str = "dist_to_optimum",
    mode: str = "min",
    last: int = 5,
    problems: Mapping[str, Sequence[FederatedProblem]] | None = None,
    metrics: Sequence[str] | None = None,
    merge: bool = False,
    chunk_size: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tunes a method on the tuning seeds, evaluates the kept configurations on the others.

    Args:
      factory: ``factory(**config) -> (algorithm, server_optimizer)``.
      make_problem: ``key -> FederatedProblem`` (problems drawn from :func:`split_keys`), or
        ``None`` when ``problems`` gives them.
      grid: the tuning grid (as :func:`fedpa.sweep`).
      rounds, clients_per_round: as :func:`fedpa.sweep`.
      tune_seeds, eval_seeds: seeds of each split.
      key: the study's key (:func:`split_keys`); use the same one for every method of a study.
      per: also keep the best configuration per value of this axis (e.g. ``"rho"``).
      metric, mode, last: the selection criterion (mean of the last ``last`` rounds).
      problems: ``{"tune": [...], "eval": [...]}`` same-shaped problems instead of
        ``make_problem``.
      metrics: history metrics of the evaluation table (default: every per-round metric).
      merge: run the whole grid on the tuning *and* evaluation problems in one sweep (one
        compile; for methods whose runs are cheap next to a compile, e.g. exact samples). The
        selection still reads the tuning seeds only; evaluation seed ``j`` then runs with key
        ``fold_in(tuning_run_key, tune_seeds + j)``, still distinct from every tuning run.
      chunk_size: runs per compiled call (:func:`fedpa.sweep`); tuning and evaluation share
        one compilation. Default: ``eval_seeds``, which divides the evaluation's runs (no padded
        runs) and was the fastest measured on 2 CPU cores (narrow calls keep each call's data in
        cache and spread evenly over the host threads: a 105-configuration IASG sweep at d = 100
        took 9.5 s in calls of 5 runs and 21 s in calls of 35).

    Returns:
      ``(tuning, curves)``: ``tuning`` has one row per tuning configuration with its mean and
      std final metric over tuning seeds and ``chosen`` (kept for evaluation) and ``best`` (the
      single best); ``curves`` is the evaluation runs' tidy table of the kept configurations
      (their grid values, ``best``, ``seed``, ``round`` and the metrics).
    """
    keys = split_keys(key)
    tune_seeds = _checks.integer("tune_seeds", tune_seeds, minimum=0)
    eval_seeds = _checks.integer("eval_seeds", eval_seeds, minimum=1)
    if problems is None:
        problems = {
            split: problems_for(make_problem, keys[split][0], n) if n else []
            for split, n in (("tune", tune_seeds), ("eval", eval_seeds))
        }
    configs = fedpa.sweeps.grid_configs(grid)
    tune_problems = list(problems["tune"])[:tune_seeds]
    eval_problems = list(problems["eval"])[:eval_seeds]
    same = dict(rounds=rounds, clients_per_round=clients_per_round)
    if tune_seeds == 0:  # nothing to tune: evaluate the grid's configurations as given
        if len(configs) != 1:
            raise ValueError(f"tune_seeds=0 needs a grid of one configuration, got {len(configs)}")
        tuning = pd.DataFrame(configs).assign(
            final_mean=np.nan, final_std=np.nan, chosen=True, best=True
        )
        evaluated = fedpa.sweep(
            factory, eval_problems, configs, seeds=eval_seeds, key=keys["eval"][1], **same
        )
        return tuning, evaluated.to_frame(metrics).assign(best=True)
    if merge:  # one sweep over the tuning, then the evaluation problems
        res = fedpa.sweep(
            factory,
            tune_problems + eval_problems,
            configs,
            seeds=tune_seeds + eval_seeds,
            key=keys["tune"][1],
            **same,
        )
        finals = final_errors(res.history[metric][:, :tune_seeds], last)
        tuning, chosen, best = _choose(configs, finals, per, mode)
        history = {k: v[chosen][:, tune_seeds:] for k, v in res.history.items()}
        evaluated = fedpa.SweepResult([configs[i] for i in chosen], history, None, eval_seeds)
    else:
        # One compilation for tuning and evaluation: the evaluation traces what the tuning
        # traced and both run the same number of runs per call.
        same["chunk_size"] = _checks.integer(
            "chunk_size", eval_seeds if chunk_size is None else chunk_size, minimum=1
        )
        tuned = fedpa.sweep(
            factory, tune_problems, configs, seeds=tune_seeds, key=keys["tune"][1], **same
        )
        finals = final_errors(tuned.history[metric], last)
        tuning, chosen, best = _choose(configs, finals, per, mode)
        evaluated = fedpa.sweep(
            factory,
            eval_problems,
            [configs[i] for i in chosen],
            seeds=eval_seeds,
            key=keys["eval"][1],
            trace=tuned.traced,
            **same,
        )
    curves = evaluated.to_frame(metrics)
    curves["best"] = np.repeat([i == best for i in chosen], eval_seeds * rounds)
    return tuning, curves


def edge_choices(tuning: pd.DataFrame, grid, bounds: Mapping[str, Any] | None = None) -> list[str]:
    """The grid axes (of more than one value) whose best value is the grid's smallest or largest.

    A best choice on the edge of its grid says the grid may not reach far enough on that axis.
    ``grid`` is a product grid or a list of configurations (as :func:`fedpa.sweep`). ``tuning`` is
    the tuning table of :func:`tune_and_evaluate` (one row ``best``). ``bounds``: ``{axis:
    value}`` natural bounds (e.g. no server momentum, ``0.0``): a best value there is not reported,
    the grid cannot reach past it.
    """
    bounds = dict(bounds or {})
    best = tuning[tuning["best"]].iloc[0]
    axes: dict[str, set] = {}
    for config in fedpa.sweeps.grid_configs(grid):  # a product grid or a list of configurations
        for name, value in config.items():
            axes.setdefault(name, set()).add(value)
    edges = []
    for name, values in axes.items():
        values = sorted(values)
        at_bound = name in bounds and best[name] == bounds[name]
        if len(values) > 1 and best[name] in (values[0], values[-1]) and not at_bound:
            edges.append(f"{name}={best[name]:g}")
    return edges


def _choose(configs, finals, per, mode):
    """``(tuning table, chosen indices, best index)`` from the tuning seeds' final errors."""
    chosen = select(configs, finals, per=per, mode=mode)
    best = select(configs, finals, mode=mode)[0]
    tuning = pd.DataFrame(configs)
    with np.errstate(invalid="ignore"):
        tuning["final_mean"] = finals.mean(axis=1)
        tuning["final_std"] = finals.std(axis=1, ddof=1) if finals.shape[1] > 1 else 0.0
    tuning["chosen"] = np.isin(np.arange(len(tuning)), chosen)
    tuning["best"] = np.arange(len(tuning)) == best
    return tuning, chosen, best


# ------------------------------------------------------------------ gains


def paired_ratios(
    finals: pd.DataFrame,
    *,
    reference: str,
    by: Sequence[str] = (),
    method: str = "method",
    value: str = "final",
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Per-seed ratios ``value(method) / value(reference)`` on the same evaluation seeds.

    Args:
      finals: one row per ``(*by, method, seed)`` with the final error in ``value``.
      reference: the method in the denominator (e.g. tuned FedAvg).
      by: columns that define separate studies (regime, heterogeneity, budget...).
      confidence: level of the t interval of the mean log ratio.

    Returns:
      One row per ``(*by, method)``: ``ratio`` (geometric mean over seeds), ``low``/``high``
      (the interval, exponentiated), ``min``/``max`` over seeds, ``wins`` (seeds with
      ratio < 1) and ``seeds``.
    """
    by = list(by)
    rows = []
    for keys_, group in finals.groupby(by, sort=False) if by else [((), finals)]:
        keys_ = keys_ if isinstance(keys_, tuple) else (keys_,)
        ref = group[group[method] == reference].set_index("seed")[value]
        if ref.empty:
            raise ValueError(
                f"no rows of reference method {reference!r} in {dict(zip(by, keys_, strict=True))}"
            )
        for name, g in group.groupby(method, sort=False):
            s = paired_ratio(
                g[value].to_numpy(), ref.reindex(g["seed"]).to_numpy(), confidence=confidence
            )
            rows.append(
                {
                    **dict(zip(by, keys_, strict=True)),
                    method: name,
                    **{k: s[k] for k in ("ratio", "low", "high", "min", "max")},
                    "wins": s["below_one"],
                    "seeds": s["seeds"],
                }
            )
    return pd.DataFrame(rows)


def rounds_to_target(
    curves: pd.DataFrame, target: float, *, by: Sequence[str], metric: str = "dist_to_optimum"
) -> pd.DataFrame:
    """First round at which ``metric <= target``, per ``(*by, seed)`` (``NaN``: never)."""
    rows = []
    for keys_, g in curves.groupby([*by, "seed"], sort=False):
        g = g.sort_values("round")
        hit = g["round"].to_numpy()[g[metric].to_numpy() <= target]
        rows.append(
            {
                **dict(zip([*by, "seed"], keys_, strict=True)),
                "rounds": hit[0] if len(hit) else np.nan,
            }
        )
    return pd.DataFrame(rows)
