"""The compiled round loop: determinism, the README example, server optimizers, divergence."""

import jax
import numpy as np
import optax
import pytest
from conftest import count_compilations

import fedpa
from fedpa import problems


@pytest.fixture(scope="module")
def prob():
    return problems.least_squares(
        jax.random.key(0), num_clients=100, samples_per_client=500, dim=10, heterogeneity=1.0
    )


def test_readme_example_converges_as_written(prob):
    algos = [
        fedpa.fedavg(local_steps=100, local_lr=0.01, batch_size=10),
        fedpa.fedpa_exact(),
        fedpa.fedpa_iasg(
            num_samples=10, avg_steps=10, burnin_steps=50, local_lr=0.01, batch_size=10, rho=0.1
        ),
    ]
    x_norm = np.linalg.norm(prob.global_optimum())
    best = float(prob.objective(prob.global_optimum()))
    start = float(prob.objective(prob.init_params))
    for algo in algos:
        res = fedpa.run(
            algo, optax.sgd(1.0), prob, rounds=100, clients_per_round=10, key=jax.random.key(1)
        )
        dist = res.history["dist_to_optimum"]
        assert res.params.shape == (10,) and dist.shape == (100,)
        # From ||x*|| at x = 0 to within client-sampling noise of the optimum.
        assert dist[-20:].mean() < 0.5 * x_norm, algo
        assert res.history["objective"][-20:].mean() - best < 0.2 * (start - best), algo


def test_same_key_is_bit_identical_and_other_key_differs(prob):
    algo = fedpa.fedpa_iasg(num_samples=3, avg_steps=2, burnin_steps=2)
    kw = dict(rounds=5, clients_per_round=7)
    a = fedpa.run(algo, None, prob, key=jax.random.key(7), **kw)
    b = fedpa.run(algo, None, prob, key=jax.random.key(7), **kw)
    c = fedpa.run(algo, None, prob, key=jax.random.key(8), **kw)
    np.testing.assert_array_equal(a.params, b.params)
    for name in a.history:
        np.testing.assert_array_equal(a.history[name], b.history[name])
    assert not np.array_equal(a.params, c.params)


@pytest.mark.parametrize(
    "optimizer", [optax.sgd(0.5, momentum=0.5), optax.adam(0.05)], ids=["momentum", "adam"]
)
def test_any_optax_server_optimizer_reaches_the_optimum(x64, optimizer):
    p = problems.least_squares(jax.random.key(1), 8, 50, 4, heterogeneity=1.0)
    res = fedpa.run(
        fedpa.fedpa_exact(), optimizer, p, rounds=400, clients_per_round=8, key=jax.random.key(0)
    )
    rel = np.linalg.norm(res.params - p.global_optimum()) / np.linalg.norm(p.global_optimum())
    assert rel < 1e-3


@pytest.mark.parametrize("switch", [2, 4, 6])
def test_continuing_from_state_equals_one_long_run(prob, switch):
    """Continuing is bit-identical to one long run, also across the FedAvg burn-in boundary
    (before, inside and after the second call), with a stateful server optimizer."""
    algo = fedpa.fedpa_iasg(3, 2, 2, burnin_rounds=switch)
    opt = optax.sgd(0.5, momentum=0.9)
    kw = dict(clients_per_round=5, key=jax.random.key(0))
    one = fedpa.run(algo, opt, prob, rounds=7, **kw)
    first = fedpa.run(algo, opt, prob, rounds=3, **kw)
    second = fedpa.run(algo, opt, prob, rounds=4, state=first.state, **kw)
    assert int(second.state.round) == 7
    np.testing.assert_array_equal(second.params, one.params)
    for name in one.history:
        joined = np.concatenate([first.history[name], second.history[name]])
        np.testing.assert_array_equal(joined, one.history[name], err_msg=name)
    # The switch is visible in the compute: FedAvg burn-in rounds, then IASG rounds.
    evals = one.history["local_grad_evals"]
    assert evals[:switch].tolist() == [2 + 3 * 2] * min(switch, 7)


def test_new_float_hyperparameters_never_recompile(prob):
    """Five values each of local_lr, rho and the server learning rate: one compilation."""
    small = problems.least_squares(jax.random.key(2), 13, 17, 3, heterogeneity=1.0)

    def runs():
        for value in (0.01, 0.02, 0.03, 0.04, 0.05):
            for algo, server_lr in [
                (fedpa.fedpa_iasg(3, 2, 2, local_lr=value, rho=0.1), 1.0),
                (fedpa.fedpa_iasg(3, 2, 2, local_lr=0.01, rho=20 * value), 1.0),
                (fedpa.fedpa_iasg(3, 2, 2, local_lr=0.01, rho=0.1), 10 * value),
            ]:
                opt = fedpa.default_server_optimizer(server_lr)
                fedpa.run(algo, opt, small, rounds=3, clients_per_round=4, key=jax.random.key(0))

    _, compiles = count_compilations(runs, "run_jit")
    assert compiles == 1
    # A new structure (another number of samples) does compile, so the count can move.
    _, compiles = count_compilations(
        lambda: fedpa.run(fedpa.fedpa_iasg(4, 2, 2), None, small, 3, 4, key=jax.random.key(0)),
        "run_jit",
    )
    assert compiles == 1


def test_server_learning_rate_in_the_state_is_used(prob):
    kw = dict(rounds=3, clients_per_round=4, key=jax.random.key(0))
    algo = fedpa.fedpa_exact()
    a = fedpa.run(algo, fedpa.default_server_optimizer(0.5), prob, **kw)
    b = fedpa.run(algo, optax.sgd(0.5), prob, **kw)
    c = fedpa.run(algo, fedpa.default_server_optimizer(1.0), prob, **kw)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-6)
    assert not np.allclose(a.params, c.params, rtol=1e-3)


def test_client_chunks_give_the_same_result(prob):
    algo = fedpa.fedavg(local_steps=5)
    kw = dict(rounds=3, clients_per_round=12, key=jax.random.key(3))
    whole = fedpa.run(algo, None, prob, **kw)
    chunked = fedpa.run(algo, None, prob, client_chunk_size=5, **kw)
    np.testing.assert_allclose(whole.params, chunked.params, rtol=1e-5, atol=1e-6)


def test_divergence_names_the_first_bad_round(prob):
    algo = fedpa.fedpa_exact()
    kw = dict(rounds=200, clients_per_round=10, key=jax.random.key(0))
    algo = (algo, optax.sgd(50.0))
    raw = fedpa.run(*algo, prob, check_divergence=False, **kw)
    first_bad = int(np.argmin(raw.history["finite"]))
    assert first_bad > 0 and not raw.history["finite"][first_bad]
    with pytest.raises(fedpa.DivergenceError, match=f"at round {first_bad} ") as info:
        fedpa.run(*algo, prob, **kw)
    assert info.value.round == first_bad


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"clients_per_round": 200}, "clients_per_round=200 exceeds num_clients=100"),
        ({"clients_per_round": 0}, "clients_per_round must be >= 1"),
        ({"rounds": 0}, "rounds must be >= 1, got rounds=0"),
        ({"key": None}, "key must be a PRNG key"),
        ({"server_optimizer": "sgd"}, "server_optimizer must be an optax.GradientTransformation"),
        ({"state": (1, 2, 3)}, "state must be a fedpa ServerState"),
        ({"client_chunk_size": 0}, "client_chunk_size must be >= 1"),
        ({"init_params": np.zeros(3)}, r"init_params must have leaf shapes like \(10,\)"),
    ],
)
def test_bad_input(prob, kwargs, message):
    args = dict(rounds=2, clients_per_round=10, key=jax.random.key(0), server_optimizer=None)
    args |= kwargs
    with pytest.raises(ValueError, match=message):
        fedpa.run(fedpa.fedpa_exact(), problem=prob, **args)


def test_bad_algorithm_and_problem(prob):
    with pytest.raises(ValueError, match="algorithm must be a fedpa ClientUpdate"):
        fedpa.run("fedavg", None, prob, 2, 10, key=jax.random.key(0))
    with pytest.raises(ValueError, match="problem must be a fedpa FederatedProblem"):
        fedpa.run(fedpa.fedpa_exact(), None, {"x": 1}, 2, 10, key=jax.random.key(0))
