"""Tests of the book's experiment drivers (fedpa.studies): mathematics, not just shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest

import fedpa
from fedpa import studies
from fedpa.problems import GaussianPosterior


def _posterior(dim, chol=None, mean=None):
    chol = jnp.eye(dim) if chol is None else jnp.asarray(chol, jnp.float32)
    mean = jnp.zeros(dim) if mean is None else jnp.asarray(mean, jnp.float32)
    return GaussianPosterior(mean=mean, precision_cholesky=chol)


# ------------------------------------------------------------------ delta_errors


def test_delta_errors_isotropic_rho0_is_unbiased_with_known_variance():
    # A = I, rho = 0: the delta is x - mean(samples), unbiased for Δ = x - μ, and
    # E‖Δ̂ - Δ‖² = d / ℓ exactly.
    dim, x = 4, jnp.array([2.0, 0.0, 0.0, 0.0])
    table = studies.delta_errors(jax.random.key(0), _posterior(dim), x, [4, 16], [0.0], 400)
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
    table = studies.delta_errors(
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
        studies.delta_errors(key, post, x, [4], [1.5])
    with pytest.raises(ValueError, match="num_samples"):
        studies.delta_errors(key, post, x, [1], [0.1])
    with pytest.raises(ValueError, match="x must"):
        studies.delta_errors(key, post, jnp.zeros(3), [4], [0.1])
    with pytest.raises(ValueError, match="x must have shape"):
        studies.delta_errors(key, post, jnp.ones(2), [4], [0.1])
    with pytest.raises(ValueError, match="GaussianPosterior"):
        studies.delta_errors(key, (post.mean, post.precision_cholesky), x, [4], [0.1])


def test_exact_delta_is_precision_times_offset():
    chol = jnp.array([[2.0, 0.0], [1.0, 1.0]])
    post = _posterior(2, chol, mean=[1.0, -1.0])
    x = jnp.array([0.5, 2.0])
    a = np.asarray(chol @ chol.T)
    np.testing.assert_allclose(studies.exact_delta(post, x), a @ (np.asarray(x) - [1, -1]), 1e-6)


# ------------------------------------------------------------------ covariance shape


def test_covariance_fit_recovers_temperature_and_shape():
    chol = jnp.array([[3.0, 0.0], [1.0, 0.3]])
    post = _posterior(2, chol)
    temperature = 0.02
    draws = fedpa.samplers.exact_gaussian(20000).sample(
        jax.random.key(2), None, None, post_client(post)
    )
    fit = studies.covariance_fit(np.sqrt(temperature) * np.asarray(draws), post)
    assert fit["scale"] == pytest.approx(temperature, rel=0.05)
    assert fit["shape_error"] < 0.05
    # an isotropic cloud has the wrong shape
    iso = np.random.default_rng(0).normal(size=(20000, 2))
    assert studies.covariance_fit(iso, post)["shape_error"] > 0.5


def post_client(post):
    return fedpa.problems.Clients(data=None, num_examples=jnp.array(1), posterior=post)


def test_covariance_ellipse_lies_on_the_mahalanobis_circle():
    cov = np.array([[2.0, 0.6], [0.6, 0.5]])
    pts = studies.covariance_ellipse(cov, num_std=2.0, num_points=50)
    radii = np.einsum("ni,ij,nj->n", pts, np.linalg.inv(cov), pts)
    np.testing.assert_allclose(radii, 4.0, rtol=1e-10)
    with pytest.raises(ValueError, match="cov"):
        studies.covariance_ellipse(np.eye(3))


# ------------------------------------------------------------------ timings


def test_delta_timings_dp_agrees_with_direct():
    table = studies.delta_timings(jax.random.key(0), [24], num_samples=6, rho=0.3, repeats=3)
    assert set(table.method) == {"dynamic program", "direct solve"}
    assert len(table) == 2 * 3
    assert (table.seconds > 0).all()
    assert table.rel_diff.max() < 1e-4
    with pytest.raises(ValueError, match="dims"):
        studies.delta_timings(jax.random.key(0), [])


# ------------------------------------------------------------------ convergence


def _small_problem(key):
    return fedpa.problems.least_squares(
        key, num_clients=6, samples_per_client=30, dim=3, heterogeneity=1.0
    )


def test_convergence_matches_fedpa_run_seed_by_seed():
    algos = {"FedAvg": fedpa.fedavg(local_steps=5, local_lr=0.05, batch_size=2)}
    opt = optax.sgd(1.0)
    key = jax.random.key(3)
    table = studies.convergence(
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
        problem = _small_problem(jax.random.split(k_problems, 2)[s])
        ref = fedpa.run(
            algos["FedAvg"],
            problem,
            rounds=4,
            clients_per_round=3,
            server_optimizer=opt,
            key=jax.random.split(k_runs, 2)[s],
        )
        got = table[table.seed == s].sort_values("round")
        np.testing.assert_allclose(got.dist_to_optimum, ref.history["dist_to_optimum"], rtol=1e-4)
        np.testing.assert_allclose(got.objective, ref.history["objective"], rtol=1e-4)
        opt_value = float(problem.objective(problem.global_optimum()))
        np.testing.assert_allclose(
            got.suboptimality, ref.history["objective"] - opt_value, atol=1e-5
        )


def test_convergence_fedpa_exact_reaches_the_optimum_and_fedavg_does_not():
    algos = [fedpa.fedpa_exact(), fedpa.fedavg(local_steps=50, local_lr=0.1, batch_size=5)]
    table = studies.convergence(algos, _small_problem, rounds=15, seeds=2, key=jax.random.key(4))
    final = studies.final_values(table, last=3).set_index("algorithm")
    assert final.loc["FedPA-exact", "dist_mean"] < 1e-3
    assert final.loc["FedAvg (50 steps)", "dist_mean"] > 3 * final.loc["FedPA-exact", "dist_mean"]
    assert (final.seeds == 2).all()


def test_convergence_validates_arguments():
    algo = {"a": fedpa.fedpa_exact()}
    with pytest.raises(ValueError, match="key"):
        studies.convergence(algo, _small_problem, rounds=2)
    with pytest.raises(ValueError, match="clients_per_round"):
        studies.convergence(
            algo, _small_problem, rounds=2, clients_per_round=7, key=jax.random.key(0)
        )
    with pytest.raises(ValueError, match="server_optimizer"):
        studies.convergence(
            algo,
            _small_problem,
            rounds=2,
            server_optimizer={"b": optax.sgd(1.0)},
            key=jax.random.key(0),
        )
    with pytest.raises(ValueError, match="Algorithm"):
        studies.convergence({"a": "fedavg"}, _small_problem, rounds=2, key=jax.random.key(0))


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
    out = studies.final_values(frame, last=2).iloc[0]
    assert out.dist_mean == pytest.approx((2.0 + 6.0) / 2)
    assert out.dist_std == pytest.approx(np.std([2.0, 6.0], ddof=1))
