"""fedpa.analysis: per-round trajectories and FedAvg's exact fixed point on quadratics."""

import dataclasses

import jax
import numpy as np
import optax
import pytest

import fedpa
from fedpa import analysis, problems


@pytest.fixture(scope="module")
def small():
    return problems.least_squares(
        jax.random.key(3), num_clients=5, samples_per_client=40, dim=3, heterogeneity=1.5
    )


@pytest.fixture(scope="module")
def two_d():
    return problems.quadratic_2d(jax.random.key(0), samples_per_client=50)


def _hessians(problem):
    chol = np.asarray(problem.clients.posterior.precision_cholesky, np.float64)
    return chol @ np.swapaxes(chol, -1, -2)


def _fedavg_by_iteration(problem, local_steps, local_lr, server_rounds=4000):
    """Independent reference: full-batch FedAvg, every client, server lr 1, plain NumPy loops."""
    hessians = _hessians(problem)
    means = np.asarray(problem.clients.posterior.mean, np.float64)
    weights = np.asarray(problem.client_weights(), np.float64)
    x = np.zeros(means.shape[1])
    for _ in range(server_rounds):
        delta = np.zeros_like(x)
        for a, mu, w in zip(hessians, means, weights, strict=True):
            local = x.copy()
            for _ in range(local_steps):
                local = local - local_lr * a @ (local - mu)
            delta += w * (x - local)
        x = x - delta
    return x


def test_one_local_step_gives_the_global_optimum(small):
    point = analysis.fedavg_fixed_point(small, 1, 0.1)
    assert point.shape == (3,)
    assert analysis.relative_distance(point, small) < 1e-5


def test_many_local_steps_give_the_average_of_client_optima(small):
    top = np.linalg.eigvalsh(_hessians(small)).max()
    point = analysis.fedavg_fixed_point(small, 200_000, 1.0 / top)
    means = np.asarray(small.clients.posterior.mean)
    np.testing.assert_allclose(point, means.mean(0), atol=1e-4)
    # ... which is not the optimum: the bias is real.
    assert analysis.relative_distance(point, small) > 0.05


@pytest.mark.parametrize("local_steps, lr_scale", [(7, 0.5), (5, 1.5)])
def test_fixed_point_matches_iterated_full_batch_fedavg(small, local_steps, lr_scale):
    # lr_scale 1.5 makes 1 - ηλ negative for the top eigenvalues (odd K: a sign flip).
    lr = lr_scale / np.linalg.eigvalsh(_hessians(small)).max()
    want = _fedavg_by_iteration(small, local_steps, lr, server_rounds=600)
    got = analysis.fedavg_fixed_point(small, local_steps, lr)
    np.testing.assert_allclose(got, want, atol=2e-4)
    got_many = analysis.fedavg_fixed_point(small, [1, local_steps], lr)
    assert got_many.shape == (2, 3)
    np.testing.assert_allclose(got_many[1], got, atol=1e-6)


def test_bias_grows_with_local_steps(small):
    steps = [1, 3, 10, 30, 100, 300]
    dist = analysis.relative_distance(analysis.fedavg_fixed_point(small, steps, 0.05), small)
    assert np.all(np.diff(dist) > 0)


def test_stochastic_fedavg_fluctuates_around_the_exact_fixed_point(two_d):
    # Local SGD on independent mini-batches has the same expected delta as full-batch GD.
    algo = fedpa.fedavg(20, 0.2, 5)
    path = analysis.trajectory(algo, two_d, 300, 2, optax.sgd(0.5), jax.random.key(1))
    tail = path[100:].mean(0)
    exact = analysis.fedavg_fixed_point(two_d, 20, 0.2)
    optimum = np.asarray(two_d.global_optimum())
    bias = np.linalg.norm(exact - optimum)
    assert bias > 0.05
    assert np.linalg.norm(tail - exact) < 0.15 * bias


def test_trajectory_rows_are_the_rounds_of_run(two_d):
    algo = fedpa.fedavg(5, 0.1, 5)
    opt = optax.sgd(0.7)
    x0 = np.array([-2.0, 1.5], np.float32)
    path = analysis.trajectory(algo, two_d, 6, 2, opt, jax.random.key(4), init_params=x0)
    assert path.shape == (7, 2)
    np.testing.assert_array_equal(path[0], x0)
    res = fedpa.run(algo, two_d, 6, 2, opt, jax.random.key(4), init_params=x0)
    np.testing.assert_array_equal(path[-1], np.asarray(res.params))
    np.testing.assert_allclose(
        np.linalg.norm(path[1:] - np.asarray(two_d.global_optimum()), axis=1),
        res.history["dist_to_optimum"],
        rtol=1e-5,
    )
    # Every round moves (no row is a repeat).
    assert np.all(np.linalg.norm(np.diff(path, axis=0), axis=1) > 0)


def test_trajectories_equal_one_trajectory_per_problem(small):
    # Same shapes as `small`, so the data generator is not compiled again.
    probs = [problems.least_squares(jax.random.key(1), 5, 40, 3, heterogeneity=0.0), small]
    algo = fedpa.fedpa_exact()
    both = analysis.trajectories(algo, probs, 4, 4, key=jax.random.key(5))
    assert both.shape == (2, 5, 3)
    keys = jax.random.split(jax.random.key(5), 2)
    for j, p in enumerate(probs):
        one = analysis.trajectory(algo, p, 4, 4, key=keys[j])
        np.testing.assert_allclose(both[j], one, rtol=1e-5, atol=1e-6)


def test_validation(small, two_d):
    algo = fedpa.fedpa_exact()
    with pytest.raises(ValueError, match="rounds"):
        analysis.trajectory(algo, small, 0, 2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="clients_per_round"):
        analysis.trajectory(algo, small, 3, 6, key=jax.random.key(0))
    with pytest.raises(ValueError, match="key"):
        analysis.trajectory(algo, small, 3, 2)
    with pytest.raises(ValueError, match="init_params"):
        analysis.trajectory(algo, small, 3, 2, key=jax.random.key(0), init_params=np.zeros(2))
    with pytest.raises(ValueError, match="same shapes"):
        analysis.trajectories(algo, [small, two_d], 3, 2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="local_lr"):
        analysis.fedavg_fixed_point(small, 10, 100.0)
    with pytest.raises(ValueError, match="local_steps"):
        analysis.fedavg_fixed_point(small, 0, 0.1)
    with pytest.raises(ValueError, match="local_steps"):
        analysis.fedavg_fixed_point(small, [], 0.1)
    no_posterior = dataclasses.replace(
        small, clients=small.clients._replace(posterior=None), name="np"
    )
    with pytest.raises(ValueError, match="exact local posteriors"):
        analysis.fedavg_fixed_point(no_posterior, 10, 0.1)
    with pytest.raises(ValueError, match="last axis"):
        analysis.relative_distance(np.zeros(2), small)
