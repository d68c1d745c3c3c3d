"""fedpa_book.experiments.convergence: multi-seed runs, final values and trajectories."""

import jax
import numpy as np
import optax
import pandas as pd
import pytest

import fedpa
from fedpa import problems
from fedpa_book.experiments import convergence as conv


def _small_problem(key):
    return fedpa.problems.least_squares(
        key, num_clients=6, samples_per_client=30, dim=3, heterogeneity=1.0
    )


@pytest.fixture(scope="module")
def small():
    return problems.least_squares(
        jax.random.key(3), num_clients=5, samples_per_client=40, dim=3, heterogeneity=1.5
    )


@pytest.fixture(scope="module")
def two_d():
    return problems.quadratic_2d(jax.random.key(0), samples_per_client=50)


# ------------------------------------------------------------------ convergence


def test_convergence_matches_fedpa_run_seed_by_seed():
    algos = {"FedAvg": fedpa.fedavg(local_steps=5, local_lr=0.05, batch_size=2)}
    opt = optax.sgd(1.0)
    key = jax.random.key(3)
    table = conv.convergence(
        algos,
        _small_problem,
        rounds=4,
        clients_per_round=3,
        server_optimizer=opt,
        seeds=2,
        key=key,
        labels={"dim": 3},
    )
    assert list(table.columns[:2]) == ["dim", "algorithm"]
    assert len(table) == 2 * 4
    k_problems, k_runs = jax.random.split(key)
    for s in range(2):
        problem = _small_problem(jax.random.fold_in(k_problems, s))
        ref = fedpa.run(algos["FedAvg"], opt, problem, 4, 3, key=jax.random.fold_in(k_runs, s))
        got = table[table.seed == s].sort_values("round")
        np.testing.assert_allclose(got.dist_to_optimum, ref.history["dist_to_optimum"], rtol=1e-4)
        np.testing.assert_allclose(got.objective, ref.history["objective"], rtol=1e-4)
        opt_value = float(problem.objective(problem.global_optimum()))
        np.testing.assert_allclose(
            got.suboptimality, ref.history["objective"] - opt_value, atol=1e-5
        )


def test_convergence_sweep_rows_are_the_runs_of_each_configuration():
    def factory(local_lr, server_lr):
        return fedpa.fedavg(5, local_lr, 2), optax.sgd(server_lr)

    grid = {"local_lr": [0.02, 0.05], "server_lr": [0.5, 1.0]}
    key = jax.random.key(8)
    table = conv.convergence_sweep(
        factory, _small_problem, grid, rounds=3, clients_per_round=4, seeds=2, key=key
    )
    assert len(table) == 4 * 2 * 3
    assert {"local_lr", "server_lr", "seed", "round", "suboptimality"} <= set(table.columns)
    k_problems, k_runs = jax.random.split(key)
    problem = _small_problem(jax.random.fold_in(k_problems, 1))
    ref = fedpa.run(*factory(0.05, 0.5), problem, 3, 4, key=jax.random.fold_in(k_runs, 1))
    got = table[(table.local_lr == 0.05) & (table.server_lr == 0.5) & (table.seed == 1)]
    got = got.sort_values("round")
    np.testing.assert_allclose(got.dist_to_optimum, ref.history["dist_to_optimum"], rtol=1e-4)


def test_convergence_fedpa_exact_reaches_the_optimum_and_fedavg_does_not():
    algos = {
        "FedPA-exact": fedpa.fedpa_exact(),
        "FedAvg (50 steps)": fedpa.fedavg(local_steps=50, local_lr=0.1, batch_size=5),
    }
    table = conv.convergence(algos, _small_problem, rounds=15, seeds=2, key=jax.random.key(4))
    final = conv.final_values(table, last=3).set_index("algorithm")
    assert final.loc["FedPA-exact", "dist_mean"] < 1e-3
    assert final.loc["FedAvg (50 steps)", "dist_mean"] > 3 * final.loc["FedPA-exact", "dist_mean"]
    assert (final.seeds == 2).all()


def test_convergence_validates_arguments():
    algo = {"a": fedpa.fedpa_exact()}
    with pytest.raises(ValueError, match="key"):
        conv.convergence(algo, _small_problem, rounds=2)
    with pytest.raises(ValueError, match="clients_per_round"):
        conv.convergence(algo, _small_problem, rounds=2, clients_per_round=7, key=jax.random.key(0))
    with pytest.raises(ValueError, match="server_optimizer"):
        conv.convergence(
            algo,
            _small_problem,
            rounds=2,
            server_optimizer={"b": optax.sgd(1.0)},
            key=jax.random.key(0),
        )
    with pytest.raises(ValueError, match="ClientUpdate"):
        conv.convergence({"a": "fedavg"}, _small_problem, rounds=2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="ClientUpdate"):
        conv.convergence([fedpa.fedpa_exact()], _small_problem, rounds=2, key=jax.random.key(0))


def test_final_values_averages_last_rounds_per_seed():
    frame = pd.DataFrame(
        {
            "algorithm": "A",
            "seed": [0, 0, 0, 1, 1, 1],
            "round": [1, 2, 3, 1, 2, 3],
            "dist_to_optimum": [9.0, 1.0, 3.0, 9.0, 5.0, 7.0],
            "suboptimality": [0.0] * 6,
        }
    )
    out = conv.final_values(frame, last=2).iloc[0]
    assert out.dist_mean == pytest.approx((2.0 + 6.0) / 2)
    assert out.dist_std == pytest.approx(np.std([2.0, 6.0], ddof=1))


# ------------------------------------------------------------------ trajectories


def test_stochastic_fedavg_fluctuates_around_the_exact_fixed_point(two_d):
    # Local SGD on independent mini-batches has the same expected delta as full-batch GD.
    algo = fedpa.fedavg(20, 0.2, 5)
    path = conv.trajectory(algo, optax.sgd(0.5), two_d, 300, 2, jax.random.key(1))
    tail = path[100:].mean(0)
    exact = fedpa.theory.fedavg_fixed_point(two_d, 20, 0.2)
    optimum = np.asarray(two_d.global_optimum())
    bias = np.linalg.norm(exact - optimum)
    assert bias > 0.05
    assert np.linalg.norm(tail - exact) < 0.15 * bias


def test_trajectory_rows_are_the_rounds_of_run(two_d):
    algo = fedpa.fedavg(5, 0.1, 5)
    opt = optax.sgd(0.7)
    x0 = np.array([-2.0, 1.5], np.float32)
    path = conv.trajectory(algo, opt, two_d, 6, 2, jax.random.key(4), init_params=x0)
    assert path.shape == (7, 2)
    np.testing.assert_array_equal(path[0], x0)
    res = fedpa.run(algo, opt, two_d, 6, 2, jax.random.key(4), init_params=x0)
    np.testing.assert_array_equal(path[-1], np.asarray(res.params))
    np.testing.assert_allclose(
        np.linalg.norm(path[1:] - np.asarray(two_d.global_optimum()), axis=1),
        res.history["dist_to_optimum"],
        rtol=1e-5,
    )
    # Every round moves (no row is a repeat).
    assert np.all(np.linalg.norm(np.diff(path, axis=0), axis=1) > 0)


def test_trajectories_equal_one_trajectory_per_problem_and_configuration(small):
    # Same shapes as `small`, so the data generator is not compiled again.
    probs = [problems.least_squares(jax.random.key(1), 5, 40, 3, heterogeneity=0.0), small]

    def factory(server_lr):
        return fedpa.fedpa_exact(), optax.sgd(server_lr)

    configs, paths = conv.trajectories(
        factory, probs, {"server_lr": [0.5, 1.0]}, 4, 4, key=jax.random.key(5)
    )
    assert configs == [{"server_lr": 0.5}, {"server_lr": 1.0}]
    assert paths.shape == (2, 2, 5, 3)
    for i, config in enumerate(configs):
        for j, p in enumerate(probs):
            one = conv.trajectory(
                *factory(**config), p, 4, 4, key=jax.random.fold_in(jax.random.key(5), j)
            )
            np.testing.assert_allclose(paths[i, j], one, rtol=1e-5, atol=1e-6)


def test_trajectory_validation(small, two_d):
    algo = fedpa.fedpa_exact()
    with pytest.raises(ValueError, match="rounds"):
        conv.trajectory(algo, None, small, 0, 2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="clients_per_round"):
        conv.trajectory(algo, None, small, 3, 6, key=jax.random.key(0))
    with pytest.raises(ValueError, match="key"):
        conv.trajectory(algo, None, small, 3, 2)
    with pytest.raises(ValueError, match="init_params"):
        conv.trajectory(algo, None, small, 3, 2, key=jax.random.key(0), init_params=np.zeros(2))
    with pytest.raises(ValueError, match="same shapes"):
        conv.trajectories(
            lambda: (algo, fedpa.default_server_optimizer()),
            [small, two_d],
            [{}],
            3,
            2,
            key=jax.random.key(0),
        )
