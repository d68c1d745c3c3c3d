"""Client updates (pytrees) and the paper's central claim on federated least squares."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fedpa
from fedpa import problems, samplers, updates


@pytest.fixture(scope="module")
def hetero():
    with jax.enable_x64(True):
        yield problems.least_squares(
            jax.random.key(0), num_clients=20, samples_per_client=100, dim=5, heterogeneity=1.0
        )


def _rel(prob, params):
    x_star = np.asarray(prob.global_optimum())
    return np.linalg.norm(np.asarray(params) - x_star) / np.linalg.norm(x_star)


def test_fedpa_exact_reaches_the_optimum_where_fedavg_stalls(hetero):
    """The paper's central claim (Section 3): FedAvg's fixed point is biased, FedPA's is not."""
    with jax.enable_x64(True):
        kw = dict(rounds=150, clients_per_round=20, key=jax.random.key(1))
        pa = fedpa.run(fedpa.fedpa_exact(), None, hetero, **kw)
        avg = fedpa.run(
            fedpa.fedavg(local_steps=100, local_lr=0.05, batch_size=10), None, hetero, **kw
        )
    rel_pa, rel_avg = _rel(hetero, pa.params), _rel(hetero, avg.params)
    assert rel_pa < 1e-4
    assert rel_avg > 10 * max(rel_pa, 1e-4)
    # FedAvg has converged (it stalls, it is not slow): its last rounds barely move.
    tail = avg.history["dist_to_optimum"][-30:]
    assert tail.std() < 0.2 * tail.mean()


def test_fedavg_is_unbiased_with_identical_clients(x64):
    prob = problems.least_squares(
        jax.random.key(0), num_clients=10, samples_per_client=2000, dim=3, heterogeneity=0.0
    )
    avg = fedpa.run(
        fedpa.fedavg(local_steps=20, local_lr=0.05, batch_size=50),
        optax.sgd(optax.exponential_decay(1.0, 10, 0.6)),
        prob,
        rounds=60,
        clients_per_round=10,
        key=jax.random.key(1),
    )
    assert _rel(prob, avg.params) < 0.02


def test_fedpa_with_many_exact_samples_approaches_the_exact_delta(hetero):
    with jax.enable_x64(True):
        client = hetero.client(3)
        x = jnp.ones(hetero.dim)
        exact, _ = fedpa.fedpa_exact()(None, hetero.loss_fn, x, client, 0)
        update = fedpa.fedpa(samplers.exact_gaussian(4000), rho=1.0)
        approx, _ = update(jax.random.key(2), hetero.loss_fn, x, client, 0)
        few = fedpa.fedpa(samplers.exact_gaussian(5), rho=1.0)
        approx_few, _ = few(jax.random.key(2), hetero.loss_fn, x, client, 0)
    err = lambda d: np.linalg.norm(d - exact) / np.linalg.norm(exact)  # noqa: E731
    assert err(approx) < 0.15
    assert err(approx_few) > 2 * err(approx)


def test_fedpa_exact_delta_is_the_client_gradient(hetero):
    with jax.enable_x64(True):
        client = hetero.client(0)
        x = jnp.linspace(-1, 1, hetero.dim)
        delta, _ = fedpa.fedpa_exact()(None, hetero.loss_fn, x, client, 0)
        grad = jax.grad(hetero.loss_fn)(x, client.data)
    np.testing.assert_allclose(delta, grad, rtol=1e-8)


def test_minibatch_gradient_is_unbiased(hetero):
    with jax.enable_x64(True):
        client = hetero.client(1)
        x = jnp.ones(hetero.dim)
        update = fedpa.minibatch_sgd(batch_size=10)
        keys = jax.random.split(jax.random.key(0), 4000)
        grads = jax.vmap(lambda k: update(k, hetero.loss_fn, x, client, 0)[0])(keys)
        full = jax.grad(hetero.loss_fn)(x, client.data)
    se = np.asarray(grads).std(0) / np.sqrt(len(keys))
    assert np.all(np.abs(np.asarray(grads).mean(0) - full) < 5 * se + 1e-12)


def test_vmap_over_clients_equals_a_loop(hetero):
    algo = fedpa.fedpa_iasg(num_samples=3, avg_steps=4, burnin_steps=5, local_lr=0.05)
    x = jnp.zeros(hetero.dim, jnp.float32)
    prob = jax.tree.map(lambda a: a.astype(jnp.float32) if a.dtype == jnp.float64 else a, hetero)
    keys = jax.random.split(jax.random.key(0), 4)
    clients = jax.tree.map(lambda a: a[:4], prob.clients)
    update = jax.jit(lambda c, k: algo(k, prob.loss_fn, x, c, 0)[0])
    batched = jax.jit(jax.vmap(lambda c, k: algo(k, prob.loss_fn, x, c, 0)[0]))
    looped = np.stack([update(prob.client(i), keys[i]) for i in range(4)])
    np.testing.assert_allclose(batched(clients, keys), looped, rtol=1e-5, atol=1e-6)


def test_burnin_rounds_run_the_burnin_algorithm_first(hetero):
    kw = dict(clients_per_round=5, key=jax.random.key(4))
    fedavg = fedpa.fedavg(local_steps=10, local_lr=0.05)
    combo = fedpa.with_burnin(fedpa.fedpa_exact(), fedavg, rounds=3)
    with jax.enable_x64(True):
        mixed = fedpa.run(combo, None, hetero, rounds=8, **kw)
        pure = fedpa.run(fedavg, None, hetero, rounds=3, **kw)
        exact = fedpa.run(fedpa.fedpa_exact(), None, hetero, rounds=8, **kw)
        after = fedpa.run(fedpa.fedpa_exact(), None, hetero, rounds=5, state=pure.state, **kw)
    # Same per-round keys, so the burn-in rounds are FedAvg's rounds exactly, and the rest are
    # FedPA-exact's rounds from FedAvg's model.
    np.testing.assert_array_equal(mixed.history["objective"][:3], pure.history["objective"])
    np.testing.assert_array_equal(mixed.history["objective"][3:], after.history["objective"])
    assert not np.allclose(mixed.history["objective"][:3], exact.history["objective"][:3])
    np.testing.assert_array_equal(mixed.history["local_grad_evals"], [10] * 3 + [0] * 5)
    iasg = fedpa.fedpa_iasg(num_samples=2, avg_steps=2, burnin_steps=1, burnin_rounds=4)
    assert isinstance(iasg, updates.Switch) and iasg.at_round == 4
    # The burn-in FedAvg takes as many local steps as one IASG chain.
    assert iasg.before.local_steps == 1 + 2 * 2 and iasg.after.sampler.num_samples == 2


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: fedpa.fedavg(local_steps=0), "local_steps must be >= 1, got local_steps=0"),
        (lambda: fedpa.fedavg(local_lr=-1.0), "local_lr must be in"),
        (lambda: fedpa.fedavg(batch_size=1.5), "batch_size must be an integer"),
        (lambda: fedpa.fedpa_iasg(rho=-2.0), r"rho must be in \[0.0, inf\), got rho=-2.0"),
        (lambda: fedpa.fedavg(momentum=1.5), r"momentum must be in \[0.0, 1.0\)"),
        (lambda: fedpa.fedpa(samplers.exact_gaussian(3), target="x"), "target must be one of"),
        (lambda: fedpa.fedpa_iasg(num_samples=1), "num_samples must be >= 2"),
        (lambda: fedpa.fedpa_iasg(burnin_rounds=-1), "burnin_rounds must be >= 0"),
        (lambda: fedpa.fedpa("iasg"), "sampler must be a fedpa.samplers.Sampler"),
        (lambda: fedpa.minibatch_sgd(0), "batch_size must be >= 1"),
        (lambda: fedpa.with_burnin(fedpa.fedpa_exact(), "fedavg", 3), "burnin must be"),
        (lambda: fedpa.with_burnin(fedpa.fedpa_exact(), fedpa.fedavg(), -1), "rounds must be"),
    ],
)
def test_bad_input(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_rho_above_one_is_allowed_and_changes_the_delta(hetero):
    """The paper's ρ is any value ≥ 0. With samples of the posterior's shape at 1/100 of its
    scale, ρ = 1 lets the identity dominate Σ̂ (ρ_ℓ = 1/50 against 0.01·A⁻¹), ρ = 100 lets the
    samples dominate: the delta's *direction* (its error after the best rescaling) improves."""
    with jax.enable_x64(True):
        client = hetero.client(2)
        x = client.posterior.mean + 3.0 * (-1.0) ** jnp.arange(hetero.dim)
        exact, _ = fedpa.fedpa_exact()(None, hetero.loss_fn, x, client, 0)
        err = {}
        for rho in (1.0, 100.0):
            # Exact-shape samples at 1/100 of the posterior's scale (like IASG's).
            update = fedpa.fedpa(samplers.exact_gaussian(50, scale=0.01), rho=rho)
            delta, _ = update(jax.random.key(0), hetero.loss_fn, x, client, 0)
            best = np.dot(delta, exact) / np.dot(delta, delta)
            err[rho] = np.linalg.norm(best * delta - exact) / np.linalg.norm(exact)
    assert err[100.0] < 0.5 * err[1.0]


def test_update_hyperparameters_are_leaves():
    a = fedpa.fedavg(10, 0.1, 5)
    assert jax.tree.leaves(a) == [0.1]
    b = fedpa.fedpa_iasg(3, 2, 1, local_lr=0.05, rho=2.0, burnin_rounds=7)
    assert sorted(jax.tree.leaves(b)) == [0.05, 0.05, 2.0, 7]
    c = fedpa.fedpa_iasg(3, 2, 1, local_lr=0.3, rho=0.5, burnin_rounds=2)
    assert jax.tree.structure(b) == jax.tree.structure(c)


def test_a_user_defined_client_update_runs_and_its_floats_are_traced(hetero):
    """A researcher's own client update: fedpa.pytree_dataclass, a float leaf, a static int."""

    @fedpa.pytree_dataclass
    class ScaledGradient(fedpa.ClientUpdate):
        scale: float = 1.0
        batch_size: int = fedpa.static(default=10)

        def __call__(self, key, loss_fn, params, client, round):
            rows = samplers.minibatch_indices(key, client.num_examples, (self.batch_size,))
            batch = jax.tree.map(lambda a: a[rows], client.data)
            grad = jax.grad(loss_fn)(params, batch)
            return jax.tree.map(lambda g: self.scale * g, grad), samplers.local_compute(1, 10)

    prob = jax.tree.map(lambda a: a.astype(jnp.float32) if a.dtype == jnp.float64 else a, hetero)
    assert jax.tree.leaves(ScaledGradient(0.5)) == [0.5]
    kw = dict(rounds=2, clients_per_round=3, key=jax.random.key(0))
    half = fedpa.run(ScaledGradient(0.5), optax.sgd(1.0), prob, **kw)
    full = fedpa.run(ScaledGradient(1.0), optax.sgd(0.5), prob, **kw)
    np.testing.assert_allclose(half.params, full.params, rtol=1e-6)
