"""SGLD, HMC and NUTS: moments of the local posterior N(μ, A⁻¹) and the Sampler interface."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fedpa
from fedpa import models, problems, samplers

MEAN = np.array([[1.0, -1.0, 0.5]])
HESSIAN = np.array([[1.0, 0.6, 0.0], [0.6, 1.0, 0.0], [0.0, 0.0, 0.25]])
COV = np.linalg.inv(HESSIAN)


@pytest.fixture(scope="module")
def client_problem():
    with jax.enable_x64(True):
        p = problems.quadratic(jax.random.key(0), MEAN, HESSIAN[None], samples_per_client=200)
        yield p, p.client(0)


def _chains(sampler, p, client, chains=4):
    """``chains`` independent chains from 0, pooled: ``(chains · ℓ, d)``."""
    fn = jax.jit(jax.vmap(lambda k: sampler.sample(k, p.loss_fn, jnp.zeros(3), client)))
    draws, _ = fn(jax.random.split(jax.random.key(1), chains))
    return np.asarray(draws).reshape(-1, 3)


def test_sgld_moments_and_temperature(client_problem):
    """SGLD targets exp(-f/T): mean μ, covariance T·A⁻¹ (up to O(η) discretization bias)."""
    p, client = client_problem
    with jax.enable_x64(True):
        cold = samplers.sgld(400, 0.05, 20, burnin_steps=400, thinning=20, temperature=0.25)
        hot = samplers.sgld(400, 0.05, 20, burnin_steps=400, thinning=20, temperature=1.0)
        draws = _chains(hot, p, client)
        cold_draws = _chains(cold, p, client)
    np.testing.assert_allclose(draws.mean(0), MEAN[0], atol=0.25)
    np.testing.assert_allclose(np.cov(draws.T), COV, atol=0.25 * np.abs(COV).max())
    # A quarter of the temperature, a quarter of the covariance (this check can fail).
    ratio = np.trace(np.cov(cold_draws.T)) / np.trace(np.cov(draws.T))
    assert 0.18 < ratio < 0.33


@pytest.mark.parametrize("kind", ["hmc", "nuts"])
def test_hmc_and_nuts_moments(client_problem, kind):
    p, client = client_problem
    with jax.enable_x64(True):
        if kind == "hmc":
            s = samplers.hmc(300, step_size=0.6, num_integration_steps=4, burnin_steps=50)
        else:
            s = samplers.nuts(300, step_size=0.6, burnin_steps=50)
        draws = _chains(s, p, client)
    np.testing.assert_allclose(draws.mean(0), MEAN[0], atol=0.25)
    np.testing.assert_allclose(np.cov(draws.T), COV, atol=0.2 * np.abs(COV).max())


def test_hmc_chain_counts_gradient_evaluations(client_problem):
    p, client = client_problem

    def logdensity(x):
        return -p.loss_fn(x, client.data)

    @jax.jit
    def both(key):
        _, evals = samplers.hmc_chain(
            key, logdensity, jnp.zeros(3), num_samples=5, step_size=0.5,
            num_integration_steps=3, burnin_steps=7, thinning=2,
        )  # fmt: skip
        _, nuts_evals = samplers.hmc_chain(
            key, logdensity, jnp.zeros(3), num_samples=5, step_size=0.5,
            burnin_steps=7, thinning=2,
        )  # fmt: skip
        return evals, nuts_evals

    with jax.enable_x64(True):
        evals, nuts_evals = both(jax.random.key(0))
    assert int(evals) == (7 + 5 * 2) * 3
    assert 7 + 5 * 2 <= int(nuts_evals) <= (7 + 5 * 2) * 2**10


def test_samplers_take_pytrees_and_padded_clients():
    """Any params pytree in, samples with a leading ℓ axis out; padding is never sampled."""
    ds = fedpa.data.FederatedDataset(
        (np.eye(4, dtype=np.float32)[:2], np.eye(4, dtype=np.float32)),
        (np.array([0, 1]), np.array([0, 1, 2, 0])),
        np.eye(4, dtype=np.float32),
        np.array([0, 1, 2, 0]),
        3,
    )
    m = models.mlp(4, 3, (5,))
    prob = fedpa.data.classification_problem(m, ds, jax.random.key(0))
    client = prob.client(0)  # 2 valid rows, 2 padded rows
    for s in (
        samplers.sgld(3, 0.1, 2, burnin_steps=2, thinning=2),
        samplers.hmc(3, 0.1, 2, burnin_steps=2),
    ):
        out, info = jax.jit(lambda k, s=s: s.sample(k, m.loss, prob.init_params, client))(
            jax.random.key(1)
        )
        assert int(info.num_grad_evals) > 0
        shapes = jax.tree.map(lambda a: a.shape, out)
        want = jax.tree.map(lambda a: (3, *a.shape), prob.init_params)
        assert shapes == want
        assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(out))
    # FedPA with these samplers is a client update like any other.
    assert isinstance(fedpa.fedpa(samplers.nuts(4, 0.1)), fedpa.ClientUpdate)


@pytest.mark.parametrize(
    "build, word",
    [
        (lambda: samplers.sgld(1, 0.1, 10), "num_samples"),
        (lambda: samplers.sgld(5, 0.0, 10), "learning_rate"),
        (lambda: samplers.sgld(5, 0.1, 10, temperature=-1.0), "temperature"),
        (lambda: samplers.sgld(5, 0.1, 10, thinning=0), "thinning"),
        (lambda: samplers.hmc(5, 0.1, 0), "num_integration_steps"),
        (lambda: samplers.hmc(5, -0.1, 3), "step_size"),
        (lambda: samplers.nuts(5, 0.1, burnin_steps=-1), "burnin_steps"),
    ],
)
def test_bad_arguments_name_the_parameter(build, word):
    with pytest.raises(ValueError, match=word):
        build()


def test_window_adaptation_tunes_a_bad_step_size(client_problem):
    """From a far too small step size (0.001), blackjax's window adaptation recovers NUTS'
    moments in a short chain where the unadapted chain has barely moved; the adaptation's
    leapfrog steps are counted in the compute."""
    p, client = client_problem
    with jax.enable_x64(True):
        adapted = samplers.nuts(200, 0.001, burnin_steps=0, adaptation_steps=200)
        fixed = samplers.nuts(200, 0.001, burnin_steps=0, max_num_doublings=3)
        draws = _chains(adapted, p, client, chains=2)
        stuck = _chains(fixed, p, client, chains=2)
        _, info = adapted.sample(jax.random.key(0), p.loss_fn, jnp.zeros(3), client)
    np.testing.assert_allclose(draws.mean(0), MEAN[0], atol=0.3)
    np.testing.assert_allclose(np.cov(draws.T), COV, atol=0.35 * np.abs(COV).max())
    assert np.linalg.norm(stuck.mean(0) - MEAN[0]) > 0.5  # fixed tiny steps: still near 0
    assert int(info.num_grad_evals) > 200  # adaptation + sampling transitions
