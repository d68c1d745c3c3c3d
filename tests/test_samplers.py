"""Local samplers: exact Gaussian moments; IASG moments against the exact local posterior; the
semantics of IASG's discard steps, momentum and chains; the compute each sampler reports."""

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
    draws, info = s.sample(jax.random.key(1), p.loss_fn, jnp.zeros(3), client)
    draws = np.asarray(draws)
    assert draws.shape == (20000, 3) and int(info.num_grad_evals) == 0
    np.testing.assert_allclose(draws.mean(0), MEANS[0], atol=0.05)
    np.testing.assert_allclose(np.cov(draws.T), np.linalg.inv(HESSIAN), atol=0.08)
    # scale = c samples N(mu, c A^-1), from the same normal draws.
    small, _ = samplers.exact_gaussian(20000, scale=0.01).sample(
        jax.random.key(1), p.loss_fn, jnp.zeros(3), client
    )
    np.testing.assert_allclose(np.asarray(small) - MEANS[0], 0.1 * (draws - MEANS[0]), atol=1e-12)


def _iasg_draws(p, client, avg_steps, num_samples=300):
    s = samplers.iasg(num_samples, avg_steps, burnin_steps=200, learning_rate=0.2, batch_size=10)
    fn = jax.jit(lambda k: s.sample(k, p.loss_fn, jnp.zeros(3), client)[0])
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


def test_minibatch_stream_rows_equal_the_index_array():
    key, n = jax.random.key(4), jnp.int32(37)
    idx = samplers.minibatch_indices(key, n, (50, 8))
    stream = samplers.minibatch_stream(key, n, 8)
    rows = jax.vmap(stream.rows)(jnp.arange(50, dtype=jnp.uint32))
    np.testing.assert_array_equal(rows, idx)
    assert not np.array_equal(rows[0], rows[1])


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


def _sgd_iterates(p, client, idx, lr, momentum=None):
    """Every iterate of a heavy-ball SGD chain over the mini-batches ``idx``, written out."""
    grad = jax.grad(p.loss_fn)
    x, v, out = jnp.zeros(3), jnp.zeros(3), []
    for rows in np.asarray(idx):
        g = grad(x, jax.tree.map(lambda a, r=rows: a[r], client.data))
        v = g if momentum is None else momentum * v + g
        x = x - lr * v
        out.append(x)
    return np.stack(out)


@pytest.mark.parametrize("momentum", [None, 0.5])
@pytest.mark.parametrize("discard", [0, 3])
def test_iasg_samples_are_window_averages_of_one_sgd_chain(client_problem, discard, momentum):
    """Sample j averages iterates burn + j(D+K) + D + 1 … burn + (j+1)(D+K) of one chain."""
    p, client = client_problem
    num, avg, burn, lr, batch = 4, 5, 7, 0.1, 3
    s = samplers.iasg(num, avg, burn, lr, batch, discard_steps=discard, momentum=momentum)
    key = jax.random.key(3)
    draws, info = s.sample(key, p.loss_fn, jnp.zeros(3), client)
    total = burn + num * (discard + avg)
    assert int(info.num_grad_evals) == total and int(info.num_example_grads) == total * batch
    idx = samplers.minibatch_indices(key, client.num_examples, (total, batch))
    its = _sgd_iterates(p, client, idx, lr, momentum)
    starts = [burn + j * (discard + avg) + discard for j in range(num)]
    expected = np.stack([its[a : a + avg].mean(0) for a in starts])
    np.testing.assert_allclose(draws, expected, rtol=1e-10)


def test_iasg_momentum_zero_equals_plain_sgd(client_problem):
    p, client = client_problem
    args = (4, 5, 7, 0.1, 3)
    plain, _ = samplers.iasg(*args).sample(jax.random.key(0), p.loss_fn, jnp.zeros(3), client)
    zero, _ = samplers.iasg(*args, momentum=0.0).sample(
        jax.random.key(0), p.loss_fn, jnp.zeros(3), client
    )
    heavy, _ = samplers.iasg(*args, momentum=0.9).sample(
        jax.random.key(0), p.loss_fn, jnp.zeros(3), client
    )
    np.testing.assert_allclose(zero, plain, rtol=1e-12)
    assert not np.allclose(heavy, plain, rtol=1e-3)


def test_iasg_chains_are_independent_single_chains(client_problem):
    """``num_chains = c``: chain k's samples are a one-chain sampler's under split(key, c)[k]."""
    p, client = client_problem
    key = jax.random.key(5)
    multi = samplers.iasg(6, 4, 5, 0.1, 3, num_chains=3)
    draws, info = multi.sample(key, p.loss_fn, jnp.zeros(3), client)
    single = samplers.iasg(2, 4, 5, 0.1, 3)
    parts = [single.sample(k, p.loss_fn, jnp.zeros(3), client)[0] for k in jax.random.split(key, 3)]
    np.testing.assert_allclose(draws, np.concatenate(parts), rtol=1e-12)
    assert int(info.num_grad_evals) == 3 * (5 + 2 * 4)


def test_sgld_reports_its_gradient_evaluations(client_problem):
    p, client = client_problem
    s = samplers.sgld(4, 1e-3, 5, burnin_steps=10, thinning=3)
    draws, info = s.sample(jax.random.key(0), p.loss_fn, jnp.zeros(3), client)
    assert draws.shape == (4, 3)
    assert int(info.num_grad_evals) == 10 + 4 * 3 and int(info.num_example_grads) == 22 * 5


def test_sampler_hyperparameters_are_leaves_and_shapes_are_static():
    s = samplers.iasg(4, 5, 7, 0.1, 3, momentum=0.9)
    leaves, treedef = jax.tree.flatten(s)
    assert leaves == [0.1, 0.9]
    other = samplers.iasg(4, 5, 7, 0.3, 3, momentum=0.5)
    assert jax.tree.structure(other) == treedef
    assert jax.tree.structure(samplers.iasg(4, 6, 7, 0.1, 3, momentum=0.9)) != treedef
    assert jax.tree.structure(samplers.iasg(4, 5, 7, 0.1, 3)) != treedef  # no velocity


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: samplers.iasg(1, 10, 10, 0.1, 10), "num_samples must be >= 2"),
        (lambda: samplers.iasg(5, 0, 10, 0.1, 10), "avg_steps must be >= 1"),
        (lambda: samplers.iasg(5, 10, -1, 0.1, 10), "burnin_steps must be >= 0"),
        (lambda: samplers.iasg(5, 10, 10, 0.0, 10), r"learning_rate must be in \(0.0"),
        (lambda: samplers.iasg(5, 10, 10, 0.1, 0), "batch_size must be >= 1"),
        (lambda: samplers.exact_gaussian(1), "num_samples must be >= 2"),
        (lambda: samplers.exact_gaussian(3, scale=0.0), r"scale must be in \(0.0, inf\)"),
        (lambda: samplers.iasg(5, 10, 10, 0.1, 10, discard_steps=-1), "discard_steps must be"),
        (
            lambda: samplers.iasg(5, 10, 10, 0.1, 10, momentum=1.0),
            r"momentum must be in \[0.0, 1.0\)",
        ),
        (lambda: samplers.iasg(5, 10, 10, 0.1, 10, num_chains=2), "num_chains must divide"),
        (lambda: samplers.sgld(5, 0.1, 10, temperature=0), r"temperature must be in \(0.0"),
    ],
)
def test_bad_input(make, message):
    with pytest.raises(ValueError, match=message):
        make()
