"""Local samplers: exact Gaussian moments; IASG moments against the exact local posterior."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedpa import problems, samplers

MEANS = np.array([[1.0, -1.0, 0.5]])
HESSIAN = np.array([[1.0, 0.6, 0.0], [0.6, 1.0, 0.0], [0.0, 0.0, 0.25]])


@pytest.fixture
def client_problem(x64):
    p = problems.quadratic(jax.random.key(0), MEANS, HESSIAN[None], samples_per_client=500)
    return p, p.client(0)


def test_exact_gaussian_moments(client_problem):
    p, client = client_problem
    s = samplers.exact_gaussian(20000)
    draws = np.asarray(s.sample(jax.random.key(1), p.loss_fn, jnp.zeros(3), client))
    assert draws.shape == (20000, 3)
    np.testing.assert_allclose(draws.mean(0), MEANS[0], atol=0.05)
    np.testing.assert_allclose(np.cov(draws.T), np.linalg.inv(HESSIAN), atol=0.08)


def _iasg_draws(p, client, avg_steps, num_samples=300):
    s = samplers.iasg(num_samples, avg_steps, burnin_steps=200, learning_rate=0.2, batch_size=10)
    fn = jax.jit(lambda k: s.sample(k, p.loss_fn, jnp.zeros(3), client))
    return np.asarray(fn(jax.random.key(1)))


def test_iasg_moments_approach_the_exact_posterior(client_problem):
    """Averaging K iterates of SGD (batch B) gives samples with covariance ≈ A⁻¹ σ² / (K B).

    This is the posterior's shape, whereas raw SGD iterates are nearly isotropic (Mandt et al.,
    2017): the same statistic on a chain with ``avg_steps=1`` must fail.
    """
    p, client = client_problem
    avg_steps, batch, noise_var = 100, 10, 1.0
    cov_exact = np.linalg.inv(HESSIAN)

    draws = _iasg_draws(p, client, avg_steps)
    # The mean converges as samples grow.
    err_few = np.linalg.norm(draws[:5].mean(0) - MEANS[0])
    err_many = np.linalg.norm(draws.mean(0) - MEANS[0])
    assert err_many < 0.02 and err_many < err_few
    # The rescaled covariance matches the exact posterior covariance.
    scaled = np.cov(draws.T) * avg_steps * batch / noise_var
    assert np.linalg.norm(scaled - cov_exact) / np.linalg.norm(cov_exact) < 0.3

    raw = _iasg_draws(p, client, 1)
    normalized = lambda c: c / np.trace(c)  # noqa: E731
    shape_err = lambda c: np.linalg.norm(normalized(c) - normalized(cov_exact))  # noqa: E731
    assert shape_err(np.cov(raw.T)) > 2 * shape_err(np.cov(draws.T))


def test_sgd_steps_is_deterministic_and_follows_the_gradient():
    p = problems.quadratic_2d()
    client = p.client(0)
    idx = samplers.minibatch_indices(jax.random.key(0), client.num_examples, (50, 8))
    assert idx.shape == (50, 8) and int(idx.max()) < int(client.num_examples)
    a = samplers.sgd_steps(p.loss_fn, jnp.zeros(2), client.data, idx, 0.1)
    b = samplers.sgd_steps(p.loss_fn, jnp.zeros(2), client.data, idx, 0.1)
    np.testing.assert_array_equal(a, b)
    start = p.loss_fn(jnp.zeros(2), client.data)
    assert p.loss_fn(a, client.data) < start


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: samplers.iasg(1, 10, 10, 0.1, 10), "num_samples must be >= 2"),
        (lambda: samplers.iasg(5, 0, 10, 0.1, 10), "avg_steps must be >= 1"),
        (lambda: samplers.iasg(5, 10, -1, 0.1, 10), "burnin_steps must be >= 0"),
        (lambda: samplers.iasg(5, 10, 10, 0.0, 10), r"learning_rate must be in \(0.0"),
        (lambda: samplers.iasg(5, 10, 10, 0.1, 0), "batch_size must be >= 1"),
        (lambda: samplers.exact_gaussian(1), "num_samples must be >= 2"),
    ],
)
def test_bad_input(make, message):
    with pytest.raises(ValueError, match=message):
        make()
