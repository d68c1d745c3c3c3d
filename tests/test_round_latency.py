"""The round-latency changes keep the mathematics: the same clients and mini-batches for a key,
the same values up to float reassociation (issue "Round latency")."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fedpa
from fedpa import _dots, problems
from fedpa import rounds as R

# ------------------------------------------------------------------ small dots as reductions

DOTS = [  # (lhs shape, rhs shape, dimension numbers)
    ((7,), (7,), (([0], [0]), ([], []))),  # inner product
    ((5, 7), (7,), (([1], [0]), ([], []))),  # matrix-vector
    ((7,), (7, 3), (([0], [0]), ([], []))),  # vector-matrix
    ((5, 7), (7, 3), (([1], [0]), ([], []))),  # matrix-matrix
    ((7, 5), (3, 7), (([0], [1]), ([], []))),  # transposed operands
    ((4, 5, 7), (4, 7), (([2], [1]), ([0], [0]))),  # batched matrix-vector
    ((2, 3, 4, 5), (3, 5, 4, 6), (([2, 3], [2, 1]), ([1], [0]))),  # two contracting axes
    ((5,), (3,), (([], []), ([], []))),  # outer product
]


@pytest.mark.parametrize(("lhs", "rhs", "dims"), DOTS)
def test_dot_as_reduction_is_dot_general(x64, lhs, rhs, dims):
    k1, k2 = jax.random.split(jax.random.key(0))
    a, b = jax.random.normal(k1, lhs), jax.random.normal(k2, rhs)
    np.testing.assert_allclose(
        _dots._dot_as_reduction(a, b, dims), jax.lax.dot_general(a, b, dims), rtol=1e-13
    )


def _primitives(fn, *args):
    return {str(e.primitive) for e in jax.make_jaxpr(fn)(*args).jaxpr.eqns}


def test_small_dots_rewritten_large_kept_and_values_equal(x64):
    def loss(params, batch):
        hidden = jax.nn.relu(batch["x"] @ params["w"])  # relu: a custom_jvp function
        inner = jax.jit(lambda h, v: h @ v)(hidden, params["v"])  # a nested jit
        return jnp.mean(jax.nn.softplus(inner - batch["y"])) + 1e-3 * jnp.sum(params["w"] ** 2)

    keys = jax.random.split(jax.random.key(1), 4)
    params = {"w": jax.random.normal(keys[0], (6, 4)), "v": jax.random.normal(keys[1], (4,))}
    batch = {"x": jax.random.normal(keys[2], (8, 6)), "y": jax.random.normal(keys[3], (8,))}
    small = _dots.small_dots_as_reductions(loss, max_size=4096)
    assert "dot_general" in _primitives(loss, params, batch)
    assert "dot_general" not in _primitives(small, params, batch)
    np.testing.assert_allclose(small(params, batch), loss(params, batch), rtol=1e-13)
    grads, expected = jax.grad(small)(params, batch), jax.grad(loss)(params, batch)
    for g, e in zip(jax.tree.leaves(grads), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-14)
    # Under vmap the size is per example; 8 x 6 x 4 = 192 multiply-adds: kept above the limit.
    kept = _dots.small_dots_as_reductions(loss, max_size=191)
    assert "dot_general" in _primitives(kept, params, batch)
    # With nothing to rewrite the function is called as written: the very same program.
    none = _dots.small_dots_as_reductions(loss, max_size=31)  # 8 x 4 = 32 is the smallest dot
    assert str(jax.make_jaxpr(none)(params, batch)) == str(jax.make_jaxpr(loss)(params, batch))
    vmapped = jax.vmap(small, in_axes=(None, 0))
    stacked = jax.tree.map(lambda a: jnp.stack([a, 2 * a]), batch)
    np.testing.assert_allclose(
        vmapped(params, stacked), jax.vmap(loss, in_axes=(None, 0))(params, stacked), rtol=1e-13
    )


def test_integer_dots_are_left_alone():
    a = jnp.arange(12, dtype=jnp.int32).reshape(3, 4)
    small = _dots.small_dots_as_reductions(lambda a: a @ a.T, max_size=4096)
    assert "dot_general" in _primitives(small, a)
    np.testing.assert_array_equal(small(a), a @ a.T)


# ------------------------------------------------------------------ client sampling


@pytest.mark.parametrize(
    ("num_clients", "count"), [(1, 1), (2, 2), (7, 3), (100, 10), (100, 100), (400, 37), (401, 5)]
)
def test_sample_clients_is_jax_random_choice(num_clients, count):
    sample = jax.jit(R._sample_clients, static_argnums=(1, 2))
    for i in range(50):
        key = jax.random.key(i)
        expected = jax.random.choice(key, num_clients, (count,), replace=False)
        got = sample(key, num_clients, count)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


def test_first_in_stable_order_breaks_ties_by_index():
    rng = np.random.default_rng(0)
    for _ in range(20):
        words = rng.integers(0, 4, size=30).astype(np.uint32)  # many ties
        got = R._first_in_stable_order(jnp.asarray(words), 12)
        np.testing.assert_array_equal(got, np.argsort(words, kind="stable")[:12])


# ------------------------------------------------------------------ the round loop


def _rounds(algo, problem, small_dots, clients=4):
    opt = optax.sgd(1.0)
    state = R.ServerState(problem.init_params, opt.init(problem.init_params), jnp.int32(0))
    return R.run_rounds(
        jax.random.key(3), state, problem, algo, opt, rounds=6, clients_per_round=clients,
        small_dots=small_dots,
    )  # fmt: skip


@pytest.mark.parametrize("name", ["fedavg", "iasg"])
def test_small_dots_change_only_float_rounding(name):
    problem = problems.least_squares(jax.random.key(2), 12, 40, 5, heterogeneity=1.0)
    algo = {
        "fedavg": fedpa.fedavg(local_steps=7, local_lr=0.05, batch_size=4),
        "iasg": fedpa.fedpa_iasg(4, 3, 5, local_lr=0.05, batch_size=4, rho=0.1),
    }[name]
    (plain, plain_hist), (small, small_hist) = (_rounds(algo, problem, s) for s in (False, True))
    np.testing.assert_allclose(small.params, plain.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(small_hist["objective"], plain_hist["objective"], rtol=1e-5)
    np.testing.assert_array_equal(small_hist["local_grad_evals"], plain_hist["local_grad_evals"])

    def dots(small_dots):
        lowered = jax.jit(lambda a, p: _rounds(a, p, small_dots)).lower(algo, problem)
        return lowered.as_text().count("dot_general")

    # Only the loss's dots go; the rest of the round (the metrics' quadratic form) keeps its own.
    assert 0 < dots(True) < dots(False)


def test_run_uses_small_dots_on_the_cpu():
    assert R._platform(None) == jax.default_backend()
    problem = problems.least_squares(jax.random.key(2), 12, 40, 5, heterogeneity=1.0)
    algo = fedpa.fedavg(local_steps=7, local_lr=0.05, batch_size=4)
    res = fedpa.run(algo, optax.sgd(1.0), problem, 6, 4, key=jax.random.key(3))
    state, _ = _rounds(algo, problem, jax.default_backend() == "cpu")
    np.testing.assert_array_equal(res.params, state.params)
