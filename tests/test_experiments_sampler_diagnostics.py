"""fedpa_book.experiments.sampler_diagnostics: autocorrelation, ESS and per-set diagnostics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fedpa
from fedpa_book.experiments import sampler_diagnostics as sd


def _ar1(phi, num, dim, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros((num, dim))
    for t in range(1, num):
        x[t] = phi * x[t - 1] + rng.normal(size=dim)
    return x


@pytest.mark.parametrize("phi", [0.0, 0.5, 0.9])
def test_lag1_autocorrelation_recovers_ar1_coefficient(phi):
    assert sd.lag1_autocorrelation(_ar1(phi, 20000, 3)) == pytest.approx(phi, abs=0.03)


def test_effective_sample_size_is_ell_for_independent_and_small_for_sticky_chains():
    independent = np.random.default_rng(1).normal(size=(4000, 2))
    assert sd.effective_sample_size(independent) == pytest.approx(4000, rel=0.1)
    sticky = _ar1(0.9, 4000, 2)
    assert sd.effective_sample_size(sticky) == pytest.approx(4000 * 0.1 / 1.9, rel=0.2)


def test_lag1_rejects_bad_shapes():
    with pytest.raises(ValueError, match="samples"):
        sd.lag1_autocorrelation(np.zeros(5))
    with pytest.raises(ValueError, match="mean"):
        sd.lag1_autocorrelation(np.zeros((5, 2)), mean=np.zeros(3))


def test_sample_set_diagnostics_exact_samples_are_independent_and_well_shaped():
    problem = fedpa.problems.least_squares(
        jax.random.key(0), num_clients=2, samples_per_client=200, dim=2, heterogeneity=1.0
    )
    client = problem.client(0)
    start = jnp.zeros(2)
    exact = sd.sample_set_diagnostics(
        jax.random.key(1), fedpa.samplers.exact_gaussian(400), problem.loss_fn, start, client, 4
    )
    assert list(exact.columns) == [
        "repeat", "num_samples", "scale", "shape_error", "lag1", "ess", "mean_error"
    ]  # fmt: skip
    assert len(exact) == 4 and (exact.num_samples == 400).all()
    assert exact.scale.median() == pytest.approx(1.0, rel=0.2)
    assert exact.shape_error.max() < 0.3
    assert exact.lag1.abs().max() < 0.2
    # an SGD chain with a tiny step barely moves between samples: strongly autocorrelated
    slow = fedpa.samplers.iasg(20, 1, 0, 1e-3, 1)
    sticky = sd.sample_set_diagnostics(jax.random.key(2), slow, problem.loss_fn, start, client, 3)
    assert sticky.lag1.min() > 0.5
    assert sticky.ess.max() < exact.ess.min() / 10
