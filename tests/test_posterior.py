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
@pytest.mark.parametrize("rho", [0.0, 0.01, 0.5, 1.0, 10.0, 1000.0])
@pytest.mark.parametrize("target", ["identity", "scaled_identity"])
def test_dp_delta_equals_direct_solve(x64, num, dim, rho, target):
    samples, x = _draw(num, dim, seed=num * 100 + dim)
    dp = np.asarray(posterior.delta(samples, x, rho, target=target))
    # Independent reference in NumPy: np.cov divides by l - 1.
    weight = 1.0 / (1.0 + (num - 1) * rho)
    cov = np.atleast_2d(np.cov(samples.T, ddof=1))
    scale = 1.0 if target == "identity" else np.trace(cov) / dim
    sigma = weight * scale * np.eye(dim) + (1 - weight) * cov
    reference = np.linalg.solve(sigma, x - samples.mean(0))
    direct = np.asarray(posterior.delta_direct(samples, x, rho, target=target))
    rel = np.linalg.norm(dp - reference) / np.linalg.norm(reference)
    # rho -> inf with l <= d makes Sigma nearly singular: compare relative to its conditioning.
    tol = 1e-5 * max(1.0, np.linalg.cond(sigma) * 1e-9)
    assert rel < tol
    assert np.linalg.norm(direct - reference) / np.linalg.norm(reference) < 1e3 * tol


def test_scaled_identity_target_is_scale_invariant(x64):
    """Samples c·x_j, server model c·x: Σ̂ scales by c², so the delta scales by 1/c; with the
    identity target it does not (the target ignores the samples' scale)."""
    samples, x = _draw(6, 4)
    for c in (0.01, 100.0):
        scaled = posterior.delta(c * samples, c * x, 0.5, target="scaled_identity")
        base = posterior.delta(samples, x, 0.5, target="scaled_identity")
        np.testing.assert_allclose(np.asarray(scaled) * c, base, rtol=1e-9)
        plain = posterior.delta(c * samples, c * x, 0.5)
        assert not np.allclose(np.asarray(plain) * c, posterior.delta(samples, x, 0.5), rtol=1e-3)


def test_large_rho_tends_to_the_sample_covariance(x64):
    """ρ → ∞ gives ρ_ℓ → 0: Σ̂ → S (full rank here, ℓ > d)."""
    samples, x = _draw(30, 3)
    reference = np.linalg.solve(np.cov(samples.T, ddof=1), x - samples.mean(0))
    near = np.asarray(posterior.delta(samples, x, 1e5))  # ρ_ℓ ≈ 3e-7
    np.testing.assert_allclose(near, reference, rtol=1e-4)
    # ... and is far from it at the paper's rho = 1 (not a vacuous comparison).
    assert not np.allclose(posterior.delta(samples, x, 1.0), reference, rtol=1e-2)


def test_shrinkage_covariance_matches_definition(x64):
    samples, _ = _draw(7, 4)
    cov = np.cov(samples.T, ddof=1)
    for rho in (0.0, 0.3, 1.0, 5.0):
        weight = 1.0 / (1.0 + 6 * rho)
        expected = weight * np.eye(4) + (1 - weight) * cov
        np.testing.assert_allclose(
            posterior.shrinkage_covariance(samples, rho), expected, rtol=1e-12
        )
        expected = weight * np.trace(cov) / 4 * np.eye(4) + (1 - weight) * cov
        np.testing.assert_allclose(
            posterior.shrinkage_covariance(samples, rho, target="scaled_identity"),
            expected,
            rtol=1e-12,
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


def test_bad_target():
    with pytest.raises(ValueError, match="target must be one of"):
        posterior.delta(np.ones((4, 3)), np.zeros(3), 0.5, target="ledoit")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rho": -0.1}, r"rho must be in \[0.0, inf\), got rho=-0.1"),
        ({"rho": float("inf")}, "rho must be finite"),
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
