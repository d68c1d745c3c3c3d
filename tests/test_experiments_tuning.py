"""fedpa_book.experiments.tuning: choose on tuning seeds, report on other seeds; paired ratios."""

import jax
import numpy as np
import optax
import pytest
from scipy import stats

import fedpa
from fedpa_book.experiments import tuning

ROUNDS = 8


def _problem(key):
    return fedpa.problems.least_squares(
        key, num_clients=4, samples_per_client=20, dim=3, heterogeneity=1.0
    )


def _exact(server_lr):
    # The exact-delta oracle is gradient descent on F (largest Hessian eigenvalue about 1):
    # server steps above 2 diverge, and among the stable ones the largest converges fastest.
    return fedpa.fedpa_exact(), optax.sgd(server_lr)


@pytest.fixture(scope="module")
def tuned():
    return tuning.tune(
        _exact,
        _problem,
        {"server_lr": [0.3, 1.0, 1e6]},
        rounds=ROUNDS,
        tuning_seeds=2,
        eval_seeds=3,
        key=jax.random.key(0),
        last=2,
    )


def test_chooses_the_best_finite_configuration_on_the_tuning_seeds(tuned):
    grid = tuned.grid
    assert list(grid.server_lr) == [0.3, 1.0, 1e6]
    assert np.isinf(grid.tune_score.iloc[2])  # diverged: never chosen
    assert tuned.chosen == {"server_lr": 1.0}
    assert grid.chosen.tolist() == [False, True, False]
    tune_rows = tuned.finals[tuned.finals.split == "tune"]
    means = tune_rows.groupby("config")["final"].apply(lambda f: np.exp(np.log(f).mean()))
    np.testing.assert_allclose(grid.tune_score.iloc[:2], means.iloc[:2], rtol=1e-12)
    assert grid.local_grad_evals.tolist() == [0.0, 0.0, 0.0]  # the oracle computes nothing


def test_splits_and_curves_are_the_later_seeds_of_one_sweep(tuned):
    finals = tuned.finals
    assert sorted(finals[finals.split == "tune"].seed.unique()) == [0, 1]
    assert sorted(finals[finals.split == "eval"].seed.unique()) == [2, 3, 4]
    # the same runs as fedpa.sweep with a problem per seed: seed j of the study
    key = jax.random.key(0)
    k_problems, k_runs = jax.random.split(key)
    problems = [_problem(jax.random.fold_in(k_problems, j)) for j in range(5)]
    ref = fedpa.sweep(_exact, problems, [{"server_lr": 1.0}], ROUNDS, 4, seeds=5, key=k_runs)
    dist = ref.history["dist_to_optimum"][0]  # (seeds, rounds)
    np.testing.assert_allclose(
        tuned.curves.dist_to_optimum.to_numpy().reshape(3, ROUNDS), dist[2:], rtol=1e-5
    )
    chosen = finals[(finals.config == 1) & (finals.split == "eval")].sort_values("seed")
    np.testing.assert_allclose(chosen["final"], dist[2:, -2:].mean(axis=1), rtol=1e-5)
    assert tuned.curves["round"].max() == ROUNDS and tuned.curves.seed.max() == 2


def test_tune_rejects_bad_arguments():
    common = dict(rounds=ROUNDS, tuning_seeds=1, eval_seeds=1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="eval_seeds"):
        tuning.tune(_exact, _problem, {"server_lr": [1.0]}, **{**common, "eval_seeds": 0})
    with pytest.raises(ValueError, match="last"):
        tuning.tune(_exact, _problem, {"server_lr": [1.0]}, **common, last=ROUNDS + 1)
    with pytest.raises(ValueError, match="key"):
        tuning.tune(_exact, _problem, {"server_lr": [1.0]}, **{**common, "key": None})


def test_paired_ratio_geometric_mean_and_t_interval():
    same = tuning.paired_ratio([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    assert same["ratio"] == pytest.approx(2.0)
    assert same["low"] == pytest.approx(2.0) and same["high"] == pytest.approx(2.0)
    assert same["below_one"] == 0 and same["seeds"] == 3
    r = tuning.paired_ratio([1.0, 4.0], [2.0, 2.0])
    half = stats.t.ppf(0.975, 1) * np.std(np.log([0.5, 2.0]), ddof=1) / np.sqrt(2)
    assert r["ratio"] == pytest.approx(1.0)
    assert r["low"] == pytest.approx(np.exp(-half)) and r["high"] == pytest.approx(np.exp(half))
    assert (r["min"], r["max"], r["below_one"]) == (0.5, 2.0, 1)
    with pytest.raises(ValueError, match="same length"):
        tuning.paired_ratio([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="confidence"):
        tuning.paired_ratio([1.0, 2.0], [1.0, 1.0], confidence=1.0)
