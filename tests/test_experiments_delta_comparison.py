"""fedpa_book.experiments.delta_comparison: two client updates at the same model."""

import jax
import numpy as np
import pytest

import fedpa
from fedpa_book.experiments import delta_comparison as dc


def _problem():
    return fedpa.problems.least_squares(
        jax.random.key(0), num_clients=3, samples_per_client=100, dim=4, heterogeneity=1.0
    )


def test_same_update_gives_ratio_one_and_cosine_one():
    problem = _problem()
    update = fedpa.fedavg(20, 0.05, 5)
    table = dc.compare_deltas(jax.random.key(1), update, update, problem, problem.init_params)
    assert list(table.columns) == ["client", "norm_a", "norm_b", "ratio", "cosine"]
    assert len(table) == 3
    np.testing.assert_allclose(table.ratio, 1.0, rtol=1e-6)
    np.testing.assert_allclose(table.cosine, 1.0, rtol=1e-6)


def test_exact_delta_is_the_client_gradient_and_minibatch_gradient_points_with_it():
    # the exact posterior delta A_i (x - μ_i) is the client's gradient: a large mini-batch
    # gradient (sampled with replacement, so noisy in size) points the same way
    problem = _problem()
    x = problem.init_params + 3.0
    table = dc.compare_deltas(
        jax.random.key(2), fedpa.fedpa_exact(), fedpa.minibatch_sgd(100), problem, x
    )
    assert table.cosine.min() > 0.95
    assert np.all((table.ratio > 0.3) & (table.ratio < 3.0)), table


def test_fedpa_iasg_with_tiny_sample_spread_is_a_scaled_mean_delta():
    # IASG samples far below the identity's scale: Σ̂ ≈ ρ_ℓ I, so the FedPA delta is about
    # (1 + (ℓ - 1) ρ) times x - mean(samples), close to FedAvg's delta on the same SGD path once
    # the chain has converged (long burn-in)
    problem = _problem()
    ell, window, burnin, lr, batch, rho = 5, 8, 200, 0.1, 5, 0.1
    fedavg = fedpa.fedavg(burnin + ell * window, lr, batch)
    fedpa_iasg = fedpa.fedpa_iasg(ell, window, burnin, lr, batch, rho)
    x = problem.init_params + 2.0
    table = dc.compare_deltas(jax.random.key(3), fedavg, fedpa_iasg, problem, x)
    assert table.cosine.min() > 0.95
    assert table.ratio.median() == pytest.approx(1 + (ell - 1) * rho, rel=0.15)


def test_round_must_be_a_non_negative_integer():
    problem = _problem()
    update = fedpa.minibatch_sgd(5)
    with pytest.raises(ValueError, match="round"):
        dc.compare_deltas(jax.random.key(0), update, update, problem, problem.init_params, -1)
