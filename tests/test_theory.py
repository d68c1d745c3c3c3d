"""fedpa.theory: FedAvg's exact fixed point on quadratics, relative distances."""

import dataclasses

import jax
import numpy as np
import pytest

from fedpa import problems, theory


@pytest.fixture(scope="module")
def small():
    return problems.least_squares(
        jax.random.key(3), num_clients=5, samples_per_client=40, dim=3, heterogeneity=1.5
    )


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
    point = theory.fedavg_fixed_point(small, 1, 0.1)
    assert point.shape == (3,)
    assert theory.relative_distance(point, small) < 1e-5


def test_many_local_steps_give_the_average_of_client_optima(small):
    top = np.linalg.eigvalsh(_hessians(small)).max()
    point = theory.fedavg_fixed_point(small, 200_000, 1.0 / top)
    means = np.asarray(small.clients.posterior.mean)
    np.testing.assert_allclose(point, means.mean(0), atol=1e-4)
    # ... which is not the optimum: the bias is real.
    assert theory.relative_distance(point, small) > 0.05


@pytest.mark.parametrize("local_steps, lr_scale", [(7, 0.5), (5, 1.5)])
def test_fixed_point_matches_iterated_full_batch_fedavg(small, local_steps, lr_scale):
    # lr_scale 1.5 makes 1 - ηλ negative for the top eigenvalues (odd K: a sign flip).
    lr = lr_scale / np.linalg.eigvalsh(_hessians(small)).max()
    want = _fedavg_by_iteration(small, local_steps, lr, server_rounds=600)
    got = theory.fedavg_fixed_point(small, local_steps, lr)
    np.testing.assert_allclose(got, want, atol=2e-4)
    got_many = theory.fedavg_fixed_point(small, [1, local_steps], lr)
    assert got_many.shape == (2, 3)
    np.testing.assert_allclose(got_many[1], got, atol=1e-6)


def test_bias_grows_with_local_steps(small):
    steps = [1, 3, 10, 30, 100, 300]
    dist = theory.relative_distance(theory.fedavg_fixed_point(small, steps, 0.05), small)
    assert np.all(np.diff(dist) > 0)


def test_validation(small):
    with pytest.raises(ValueError, match="local_lr"):
        theory.fedavg_fixed_point(small, 10, 100.0)
    with pytest.raises(ValueError, match="local_steps"):
        theory.fedavg_fixed_point(small, 0, 0.1)
    with pytest.raises(ValueError, match="local_steps"):
        theory.fedavg_fixed_point(small, [], 0.1)
    no_posterior = dataclasses.replace(
        small, clients=small.clients._replace(posterior=None), name="np"
    )
    with pytest.raises(ValueError, match="exact local posteriors"):
        theory.fedavg_fixed_point(no_posterior, 10, 0.1)
    with pytest.raises(ValueError, match="last axis"):
        theory.relative_distance(np.zeros(2), small)
