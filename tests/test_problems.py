"""Federated problems: exact optima, exact local posteriors, the heterogeneity knob."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedpa import problems


@pytest.fixture
def small(x64):
    return problems.least_squares(
        jax.random.key(3), num_clients=6, samples_per_client=40, dim=4, heterogeneity=1.0
    )


def test_global_optimum_solves_the_stacked_ridge_problem(small):
    x = np.asarray(small.clients.data["x"])  # (C, n, d)
    y = np.asarray(small.clients.data["y"])
    c, n, d = x.shape
    lam = 1e-3
    # min (1/C) Σ_i [ 1/(2n) ||X_i w - y_i||² + λ/2 ||w||² ]
    lhs = np.einsum("cni,cnj->ij", x, x) / (c * n) + lam * np.eye(d)
    rhs = np.einsum("cni,cn->i", x, y) / (c * n)
    np.testing.assert_allclose(small.global_optimum(), np.linalg.solve(lhs, rhs), rtol=1e-10)
    grad = jax.grad(small.objective)(small.global_optimum())
    assert np.linalg.norm(grad) < 1e-10


def test_objective_is_the_average_client_loss(small):
    w = jnp.linspace(-1.0, 1.0, small.dim)
    losses = jax.vmap(lambda data: small.loss_fn(w, data))(small.clients.data)
    np.testing.assert_allclose(small.objective(w), jnp.mean(losses), rtol=1e-10)


def test_local_posterior_is_the_exact_tempered_posterior(small):
    for i in (0, 5):
        client = small.client(i)
        loss = lambda w, c=client: small.loss_fn(w, c.data)  # noqa: E731
        mean = client.posterior.mean
        assert np.linalg.norm(jax.grad(loss)(mean)) < 1e-10
        np.testing.assert_allclose(client.posterior.precision(), jax.hessian(loss)(mean), rtol=1e-9)


def test_optimum_is_the_mode_of_the_product_of_local_posteriors(small):
    post = small.clients.posterior
    precisions = jax.vmap(lambda c: c @ c.T)(post.precision_cholesky)
    mode = np.linalg.solve(precisions.sum(0), np.einsum("cij,cj->i", precisions, post.mean))
    np.testing.assert_allclose(mode, small.global_optimum(), rtol=1e-9)


def test_heterogeneity_moves_optima_and_hessians_apart(x64):
    def spread(h):
        p = problems.least_squares(
            jax.random.key(0), num_clients=20, samples_per_client=400, dim=5, heterogeneity=h
        )
        post = p.clients.posterior
        hess = np.asarray(jax.vmap(lambda c: c @ c.T)(post.precision_cholesky))
        means = np.asarray(post.mean)
        return np.std(means, axis=0).mean(), np.std(hess, axis=0).mean()

    (m0, h0), (m1, h1), (m2, h2) = spread(0.0), spread(1.0), spread(2.0)
    assert m0 < m1 < m2 and h0 < h1 < h2
    # At h = 0 the clients differ only by sampling noise.
    assert m0 < 0.1 and h0 < 0.1


def test_quadratic_reproduces_the_given_objectives_exactly(x64):
    means = np.array([[1.0, -2.0], [0.5, 3.0], [0.0, 0.0]])
    a = np.array([[2.0, 0.5], [0.5, 1.0]])
    hessians = np.stack([a, np.diag([0.3, 4.0]), np.eye(2)])
    p = problems.quadratic(jax.random.key(1), means, hessians, samples_per_client=50)
    np.testing.assert_allclose(p.clients.posterior.mean, means, atol=1e-10)
    np.testing.assert_allclose(
        jax.vmap(lambda c: c @ c.T)(p.clients.posterior.precision_cholesky), hessians, atol=1e-10
    )
    expected = np.linalg.solve(hessians.sum(0), np.einsum("cij,cj->i", hessians, means))
    np.testing.assert_allclose(p.global_optimum(), expected, rtol=1e-10)


def test_quadratic_2d_is_biased_for_fedavg():
    p = problems.quadratic_2d()
    midpoint = np.asarray(p.clients.posterior.mean).mean(0)
    # FedAvg with many local steps ends near the midpoint of the client optima: far from x*.
    assert np.linalg.norm(midpoint - np.asarray(p.global_optimum())) > 0.3


def test_same_key_same_data_and_other_key_other_data():
    make = lambda k: problems.least_squares(jax.random.key(k), 5, 20, 3)  # noqa: E731
    a, b, c = make(0), make(0), make(1)
    np.testing.assert_array_equal(a.clients.data["x"], b.clients.data["x"])
    assert not np.allclose(a.clients.data["x"], c.clients.data["x"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_clients": 0}, "num_clients must be >= 1, got num_clients=0"),
        ({"samples_per_client": 2.5}, "samples_per_client must be an integer"),
        ({"dim": 0}, "dim must be >= 1"),
        ({"heterogeneity": -1.0}, "heterogeneity must be in"),
        ({"prior_precision": 0.0}, "prior_precision must be in"),
        ({"noise": float("nan")}, "noise must be finite"),
    ],
)
def test_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        problems.least_squares(jax.random.key(0), **kwargs)


def test_bad_quadratic_input():
    with pytest.raises(ValueError, match="hessians must have shape"):
        problems.quadratic(jax.random.key(0), np.zeros((2, 2)), np.ones((3, 2, 2)))
    with pytest.raises(ValueError, match="positive definite"):
        problems.quadratic(jax.random.key(0), np.zeros((1, 2)), -np.eye(2)[None])
    with pytest.raises(ValueError, match="targets must have shape"):
        problems.least_squares_from_data(np.zeros((2, 5, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="exceeds the last client index"):
        problems.quadratic_2d().client(2)


def test_fedavg_bias_needs_both_spreads(x64):
    """FedAvg's fixed point is biased when client optima AND client Hessians differ; setting
    either spread to zero removes (almost all of) the bias, so "the Hessians differ" alone is not
    the condition (equal optima suffice too)."""
    from fedpa import theory

    def bias(**spreads):
        p = problems.least_squares(
            jax.random.key(0), 10, 400, 4, heterogeneity=1.0, noise=0.0, **spreads
        )
        point = theory.fedavg_fixed_point(p, 50, 0.1)
        return float(theory.relative_distance(point, p))

    both = bias()
    assert both > 0.05
    assert bias(optima_spread=0.0) < 0.01 * both
    assert bias(hessian_spread=0.0) < 0.2 * both  # data Hessians still differ by sampling
    # The default is the old single knob: both spreads equal h.
    a = problems.least_squares(jax.random.key(0), 5, 20, 3, heterogeneity=0.7)
    b = problems.least_squares(
        jax.random.key(0), 5, 20, 3, heterogeneity=0.3, optima_spread=0.7, hessian_spread=0.7
    )
    np.testing.assert_array_equal(a.clients.data["x"], b.clients.data["x"])
