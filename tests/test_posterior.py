"""The shrinkage covariance and the dynamic-program delta."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from fedpa import posterior


def _draw(num, dim, seed=0):
    rng = np.random.default_rng(seed)
    # Anisotropic samples so the covariance matters.
    scales = np.exp(rng.uniform(-1.5, 1.5, size=dim))
    samples = rng.normal(size=(num, dim)) * scales + rng.normal(size=dim)
    x = rng.normal(size=dim) * 2
    return samples, x


@pytest.mark.parametrize("num", [2, 3, 10, 25])
@pytest.mark.parametrize("dim", [1, 5, 40])
@pytest.mark.parametrize("rho", [0.0, 0.01, 0.5, 1.0])
def test_dp_delta_equals_direct_solve(x64, num, dim, rho):
    samples, x = _draw(num, dim, seed=num * 100 + dim)
    dp = np.asarray(posterior.delta(samples, x, rho))
    # Independent reference in NumPy: np.cov divides by l - 1.
    weight = 1.0 / (1.0 + (num - 1) * rho)
    cov = np.atleast_2d(np.cov(samples.T, ddof=1))
    sigma = weight * np.eye(dim) + (1 - weight) * cov
    reference = np.linalg.solve(sigma, x - samples.mean(0))
    direct = np.asarray(posterior.delta_direct(samples, x, rho))
    rel = np.linalg.norm(dp - reference) / np.linalg.norm(reference)
    assert rel < 1e-5
    assert np.linalg.norm(direct - reference) / np.linalg.norm(reference) < 1e-8


def test_shrinkage_covariance_matches_definition(x64):
    samples, _ = _draw(7, 4)
    for rho in (0.0, 0.3, 1.0):
        weight = 1.0 / (1.0 + 6 * rho)
        expected = weight * np.eye(4) + (1 - weight) * np.cov(samples.T, ddof=1)
        np.testing.assert_allclose(
            posterior.shrinkage_covariance(samples, rho), expected, rtol=1e-12
        )


def test_rho_zero_is_the_fedavg_like_delta(x64):
    samples, x = _draw(6, 3)
    np.testing.assert_allclose(posterior.delta(samples, x, 0.0), x - samples.mean(0), rtol=1e-12)


def test_dp_float32_accuracy():
    samples, x = _draw(10, 1000)
    dp = posterior.delta(jnp.float32(samples), jnp.float32(x), 0.1)
    with jax.enable_x64(True):
        ref = np.asarray(posterior.delta_direct(samples, x, 0.1))
    assert np.linalg.norm(dp - ref) / np.linalg.norm(ref) < 1e-4


def test_dp_never_forms_a_d_by_d_matrix():
    num, dim = 5, 300
    samples, x = _draw(num, dim)
    jaxpr = jax.make_jaxpr(lambda s, v: posterior.delta(s, v, 0.1))(samples, x)

    def shapes(jpr):
        for eqn in jpr.eqns:
            for var in eqn.outvars:
                yield tuple(getattr(var.aval, "shape", ()))
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                yield from shapes(sub)

    biggest = max(int(np.prod(s)) for s in shapes(jaxpr.jaxpr))
    assert biggest <= num * dim, f"an intermediate of {biggest} elements exceeds O(l d)"
    # The reference solve does form it, so this check can fail.
    jaxpr_direct = jax.make_jaxpr(lambda s, v: posterior.delta_direct(s, v, 0.1))(samples, x)
    assert max(int(np.prod(s)) for s in shapes(jaxpr_direct.jaxpr)) >= dim * dim


def test_delta_jits_with_traced_rho():
    samples, x = _draw(4, 3)
    f = jax.jit(posterior.delta)
    np.testing.assert_allclose(f(samples, x, 0.2), posterior.delta(samples, x, 0.2), rtol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rho": 1.5}, r"rho must be in \[0.0, 1.0\], got rho=1.5"),
        ({"rho": -0.1}, r"rho must be in \[0.0, 1.0\]"),
        ({"samples": np.zeros((1, 3))}, "num_samples >= 2"),
        ({"samples": np.zeros(3)}, r"samples must have shape \(num_samples, dim\)"),
        ({"x": np.zeros(4)}, r"x must have shape \(3,\), got shape \(4,\)"),
    ],
)
def test_bad_input(kwargs, message):
    args = {"samples": np.ones((4, 3)), "x": np.zeros(3), "rho": 0.5} | kwargs
    for fn in (posterior.delta, posterior.delta_direct):
        with pytest.raises(ValueError, match=message):
            fn(**args)
    if "x" not in kwargs:
        with pytest.raises(ValueError, match=message):
            posterior.shrinkage_covariance(args["samples"], args["rho"])
