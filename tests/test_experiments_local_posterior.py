"""fedpa_book.experiments.local_posterior: the delta from samples, mathematics not just shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fedpa
from fedpa.problems import GaussianPosterior
from fedpa_book.experiments import local_posterior as lp


def _posterior(dim, chol=None, mean=None):
    chol = jnp.eye(dim) if chol is None else jnp.asarray(chol, jnp.float32)
    mean = jnp.zeros(dim) if mean is None else jnp.asarray(mean, jnp.float32)
    return GaussianPosterior(mean=mean, precision_cholesky=chol)


# ------------------------------------------------------------------ delta_errors


def test_delta_errors_isotropic_rho0_is_unbiased_with_known_variance():
    # A = I, rho = 0: the delta is x - mean(samples), unbiased for Δ = x - μ, and
    # E‖Δ̂ - Δ‖² = d / ℓ exactly.
    dim, x = 4, jnp.array([2.0, 0.0, 0.0, 0.0])
    table = lp.delta_errors(jax.random.key(0), _posterior(dim), x, [4, 16], [0.0], 400)
    norm = 2.0
    for row in table.itertuples():
        expected_std = np.sqrt(dim / row.num_samples) / norm
        assert row.std == pytest.approx(expected_std, rel=0.1)
        assert row.bias < 3 * expected_std / np.sqrt(400) + 1e-6
        assert row.rmse**2 == pytest.approx(row.bias**2 + row.std**2, rel=1e-5)
        # best step E⟨Δ̂, Δ⟩ / E‖Δ̂‖² = ‖Δ‖² / (‖Δ‖² + d/ℓ): it shrinks the noisy delta
        assert row.step == pytest.approx(norm**2 / (norm**2 + dim / row.num_samples), rel=0.05)


def test_delta_errors_anisotropic_needs_the_covariance():
    # A = diag(4, 1/4): rho = 0 gives x - μ̂, whose direction is wrong whatever the step; with many
    # samples and rho = 1 the delta approaches A (x - μ).
    chol = jnp.diag(jnp.array([2.0, 0.5]))
    x = jnp.array([1.0, 1.0])
    table = lp.delta_errors(
        jax.random.key(1), _posterior(2, chol), x, [4, 64], [0.0, 1.0], 64
    ).set_index(["num_samples", "rho"])
    # Direction error of x - μ = (1, 1) against Δ = (4, 1/4): sin of the angle.
    cos = (4 + 0.25) / (np.sqrt(2) * np.hypot(4, 0.25))
    sin = np.sqrt(1 - cos**2)
    assert table.loc[(64, 0.0), "rmse_scaled"] == pytest.approx(sin, rel=0.1)
    assert table.loc[(64, 1.0), "rmse_scaled"] < 0.5 * sin
    assert table.loc[(64, 1.0), "rmse"] < table.loc[(4, 1.0), "rmse"]
    assert (table.rmse_scaled <= 1.0 + 1e-6).all()


def test_delta_errors_validates_arguments():
    post, x = _posterior(3), jnp.ones(3)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="rho"):
        lp.delta_errors(key, post, x, [4], [-0.5])
    with pytest.raises(ValueError, match="num_samples"):
        lp.delta_errors(key, post, x, [1], [0.1])
    with pytest.raises(ValueError, match="x must"):
        lp.delta_errors(key, post, jnp.zeros(3), [4], [0.1])
    with pytest.raises(ValueError, match="x must have shape"):
        lp.delta_errors(key, post, jnp.ones(2), [4], [0.1])
    with pytest.raises(ValueError, match="GaussianPosterior"):
        lp.delta_errors(key, (post.mean, post.precision_cholesky), x, [4], [0.1])


def test_exact_delta_is_precision_times_offset():
    chol = jnp.array([[2.0, 0.0], [1.0, 1.0]])
    post = _posterior(2, chol, mean=[1.0, -1.0])
    x = jnp.array([0.5, 2.0])
    a = np.asarray(chol @ chol.T)
    np.testing.assert_allclose(lp.exact_delta(post, x), a @ (np.asarray(x) - [1, -1]), 1e-6)


# ------------------------------------------------------------------ covariance shape


def test_covariance_fit_recovers_temperature_and_shape():
    chol = jnp.array([[3.0, 0.0], [1.0, 0.3]])
    post = _posterior(2, chol)
    temperature = 0.02
    draws, _ = fedpa.samplers.exact_gaussian(20000).sample(
        jax.random.key(2), None, None, post_client(post)
    )
    fit = lp.covariance_fit(np.sqrt(temperature) * np.asarray(draws), post)
    assert fit["scale"] == pytest.approx(temperature, rel=0.05)
    assert fit["shape_error"] < 0.05
    # an isotropic cloud has the wrong shape
    iso = np.random.default_rng(0).normal(size=(20000, 2))
    assert lp.covariance_fit(iso, post)["shape_error"] > 0.5


def post_client(post):
    return fedpa.problems.Clients(data=None, num_examples=jnp.array(1), posterior=post)


def test_covariance_ellipse_lies_on_the_mahalanobis_circle():
    cov = np.array([[2.0, 0.6], [0.6, 0.5]])
    pts = lp.covariance_ellipse(cov, num_std=2.0, num_points=50)
    radii = np.einsum("ni,ij,nj->n", pts, np.linalg.inv(cov), pts)
    np.testing.assert_allclose(radii, 4.0, rtol=1e-10)
    with pytest.raises(ValueError, match="cov"):
        lp.covariance_ellipse(np.eye(3))


# ------------------------------------------------------------------ timings


def test_delta_timings_dp_agrees_with_direct():
    table = lp.delta_timings(jax.random.key(0), [24], num_samples=6, rho=0.3, repeats=3)
    assert set(table.method) == {"dynamic program", "direct solve"}
    assert len(table) == 2 * 3
    assert (table.seconds > 0).all()
    assert table.rel_diff.max() < 1e-4
    with pytest.raises(ValueError, match="dims"):
        lp.delta_timings(jax.random.key(0), [])


# ------------------------------------------------------------------ samplers compared


def test_sampler_delta_errors_compute_is_what_the_samplers_report():
    prob = fedpa.problems.least_squares(
        jax.random.key(5), num_clients=2, samples_per_client=100, dim=3, heterogeneity=1.0
    )
    specs = {
        "exact": {"kind": "exact"},
        "IASG": {
            "kind": "iasg",
            "avg_steps": 4,
            "burnin_steps": 10,
            "learning_rate": 0.05,
            "batch_size": 5,
        },
        "SGLD": {"kind": "sgld", "learning_rate": 0.05, "batch_size": 5, "burnin_steps": 7},
    }
    table = lp.sampler_delta_errors(
        prob, specs, num_samples=[4, 64], rho=1.0, repeats=6, key=jax.random.key(6)
    )
    assert len(table) == 3 * 2 * 6
    cost = table.groupby(["sampler", "num_samples"]).compute.first()
    n = 100
    # IASG: (burn-in + ℓ · avg_steps) steps of batch 5; SGLD: (burn-in + ℓ · thinning 10) steps.
    for ell in (4, 64):
        assert cost[("exact", ell)] == 0.0
        assert cost[("IASG", ell)] == pytest.approx((10 + ell * 4) * 5 / n)
        assert cost[("SGLD", ell)] == pytest.approx((7 + ell * 10) * 5 / n)
    # Exact samples: the delta error falls with ℓ (ρ = 1 trusts the samples).
    med = table.groupby(["sampler", "num_samples"]).rel_error.median()
    assert med[("exact", 64)] < 0.7 * med[("exact", 4)]
    assert (table.direction_error <= 1.0 + 1e-6).all()
    with pytest.raises(ValueError, match="kind"):
        lp.sampler_delta_errors(prob, {"x": {"kind": "gibbs"}}, key=jax.random.key(0))
    with pytest.raises(ValueError, match="key"):
        lp.sampler_delta_errors(prob, specs)
