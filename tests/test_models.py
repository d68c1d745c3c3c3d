"""Models: the losses are the mathematics they claim (cross-entropy, masks, the prior)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedpa import models


def _batch(key, n=12, f=5, c=3):
    kx, ky = jax.random.split(key)
    return {
        "x": jax.random.normal(kx, (n, f)),
        "y": jax.random.randint(ky, (n,), 0, c),
    }


def test_logistic_loss_at_zero_is_log_num_classes():
    m = models.logistic_regression(5, 3)
    p = m.init(jax.random.key(0))
    assert m.loss(p, _batch(jax.random.key(1))) == pytest.approx(np.log(3), rel=1e-6)


def test_logistic_gradient_matches_the_closed_form(x64):
    """∇_W mean CE = Xᵀ(softmax(XW + b) - onehot(y)) / n, ∇_b = mean(softmax - onehot)."""
    m = models.logistic_regression(5, 3, prior_precision=0.0)
    batch = _batch(jax.random.key(1))
    p = {"w": jax.random.normal(jax.random.key(2), (5, 3)), "b": jnp.array([0.1, -0.2, 0.3])}
    g = jax.grad(m.loss)(p, batch)
    probs = jax.nn.softmax(batch["x"] @ p["w"] + p["b"])
    resid = probs - jax.nn.one_hot(batch["y"], 3)
    np.testing.assert_allclose(g["w"], batch["x"].T @ resid / 12, rtol=1e-10)
    np.testing.assert_allclose(g["b"], resid.mean(0), rtol=1e-10)


def test_mask_ignores_padding_and_averages_valid_rows():
    m = models.mlp(5, 3, (4,))
    p = m.init(jax.random.key(0))
    batch = _batch(jax.random.key(1), n=7)
    garbage = _batch(jax.random.key(9), n=5)
    padded = {
        "x": jnp.concatenate([batch["x"], 100.0 * garbage["x"]]),
        "y": jnp.concatenate([batch["y"], garbage["y"]]),
        "mask": jnp.concatenate([jnp.ones(7), jnp.zeros(5)]),
    }
    assert m.loss(p, padded) == pytest.approx(float(m.loss(p, batch)), rel=1e-6)
    # Without the mask the garbage rows count: the check above can fail.
    unmasked = {k: v for k, v in padded.items() if k != "mask"}
    assert abs(float(m.loss(p, unmasked)) - float(m.loss(p, batch))) > 1e-2


def test_prior_adds_half_lambda_squared_norm():
    lam = 0.3
    m0 = models.mlp(5, 3, (4, 2), prior_precision=0.0)
    m1 = models.mlp(5, 3, (4, 2), prior_precision=lam)
    p = m1.init(jax.random.key(0))
    batch = _batch(jax.random.key(1))
    sq = sum(float(jnp.sum(leaf**2)) for leaf in jax.tree.leaves(p))
    assert float(m1.loss(p, batch) - m0.loss(p, batch)) == pytest.approx(0.5 * lam * sq, rel=1e-5)


def test_mlp_shapes_and_lecun_init():
    m = models.mlp(64, 10, (256,))
    p = m.init(jax.random.key(0))
    assert [layer["w"].shape for layer in p] == [(64, 256), (256, 10)]
    assert m.apply(p, jnp.ones((7, 64))).shape == (7, 10)
    assert float(jnp.var(p[0]["w"])) == pytest.approx(1 / 64, rel=0.1)


def test_training_reduces_loss():
    m = models.mlp(5, 3, (8,))
    batch = _batch(jax.random.key(1), n=40)
    p = m.init(jax.random.key(0))
    start = float(m.loss(p, batch))
    step = jax.jit(lambda p: jax.tree.map(lambda w, g: w - 0.5 * g, p, jax.grad(m.loss)(p, batch)))
    for _ in range(100):
        p = step(p)
    assert float(m.loss(p, batch)) < 0.5 * start


def test_constructors_are_cached_so_jit_reuses_compiles():
    assert models.logistic_regression(64, 10) is models.logistic_regression(64, 10)
    assert models.mlp(64, 10, [32]).loss is models.mlp(64, 10, (32,)).loss
    assert models.mlp(64, 10, (32,)) is not models.mlp(64, 10, (16,))


@pytest.mark.parametrize(
    "build, word",
    [
        (lambda: models.logistic_regression(0, 3), "num_features"),
        (lambda: models.logistic_regression(5, 1), "num_classes"),
        (lambda: models.logistic_regression(5, 3, prior_precision=-1.0), "prior_precision"),
        (lambda: models.mlp(5, 3, ()), "hidden"),
        (lambda: models.mlp(5, 3, (4, 0)), "hidden"),
    ],
)
def test_bad_arguments_name_the_parameter(build, word):
    with pytest.raises(ValueError, match=word):
        build()
