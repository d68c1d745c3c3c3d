"""fedpa.sweep: a grid × seeds in one compile per structure, equal to the individual runs."""

import jax
import numpy as np
import optax
import pytest
from conftest import count_compilations

import fedpa
from fedpa import problems


@pytest.fixture(scope="module")
def small():
    return problems.least_squares(jax.random.key(2), 13, 17, 3, heterogeneity=1.0)


def _factory(local_lr, rho, server_lr, num_samples=3, burnin_rounds=0):
    algo = fedpa.fedpa_iasg(
        num_samples, 2, 2, local_lr=local_lr, rho=rho, burnin_rounds=burnin_rounds
    )
    return algo, optax.sgd(server_lr, momentum=0.5)


def _compiles(fn):
    return count_compilations(fn, "sweep_group")


def test_sweep_equals_individual_runs_in_one_compile(small):
    grid = {"local_lr": [0.01, 0.05], "rho": [0.1, 3.0], "server_lr": [0.5, 1.0]}
    key = jax.random.key(3)
    res, compiles = _compiles(lambda: fedpa.sweep(_factory, small, grid, 5, 4, seeds=3, key=key))
    assert compiles == 1
    assert len(res.configs) == 8 and res.history["dist_to_optimum"].shape == (8, 3, 5)
    assert res.configs[5] == {"local_lr": 0.05, "rho": 0.1, "server_lr": 1.0}
    for i in range(8):
        for j in range(3):
            one = fedpa.run(
                *_factory(**res.configs[i]), small, 5, 4, key=jax.random.fold_in(key, j)
            )
            np.testing.assert_allclose(
                res.history["objective"][i, j], one.history["objective"], rtol=2e-5
            )
            np.testing.assert_allclose(res.params[i, j], one.params, rtol=2e-5, atol=1e-6)
    # Configurations differ (the comparison above can fail).
    assert not np.allclose(res.params[0], res.params[7], rtol=1e-3)


def test_integers_that_fix_shapes_split_the_grid_and_traced_integers_do_not(small):
    grid = {
        "local_lr": [0.02],
        "rho": [0.5],
        "server_lr": [1.0],
        "num_samples": [2, 3],  # static: one compile each
        "burnin_rounds": [1, 3],  # a leaf of the switch: traced
    }
    key = jax.random.key(0)
    res, compiles = _compiles(lambda: fedpa.sweep(_factory, small, grid, 4, 4, key=key))
    assert compiles == 2
    for i, config in enumerate(res.configs):
        one = fedpa.run(*_factory(**config), small, 4, 4, key=jax.random.fold_in(key, 0))
        np.testing.assert_allclose(
            res.history["objective"][i, 0], one.history["objective"], rtol=2e-5
        )
        evals = res.history["local_grad_evals"][i, 0]
        burn = config["burnin_rounds"]
        assert (evals[:burn] == 2 + 2 * config["num_samples"]).all()


def test_config_chunks_and_problem_factories(small):
    grid = [
        {"local_lr": 0.01, "rho": 0.1, "server_lr": 1.0},
        {"local_lr": 0.03, "rho": 1.0, "server_lr": 0.5},
        {"local_lr": 0.05, "rho": 5.0, "server_lr": 0.7},
    ]
    key = jax.random.key(1)
    whole = fedpa.sweep(_factory, small, grid, 3, 4, seeds=2, key=key)
    chunked = fedpa.sweep(_factory, small, grid, 3, 4, seeds=2, key=key, chunk_size=2)
    np.testing.assert_allclose(whole.params, chunked.params, rtol=1e-5)

    def make(k):
        return problems.least_squares(k, 13, 17, 3, heterogeneity=1.0)

    pkey = jax.random.key(9)
    per_seed = fedpa.sweep(_factory, make, grid[:1], 3, 4, seeds=2, key=key, problem_key=pkey)
    for j in range(2):
        one = fedpa.run(
            *_factory(**grid[0]),
            make(jax.random.fold_in(pkey, j)),
            3,
            4,
            key=jax.random.fold_in(key, j),
        )
        np.testing.assert_allclose(per_seed.params[0, j], one.params, rtol=2e-5)


def test_kept_configurations_reuse_the_tuning_compilation(small):
    """A tuning sweep, then its kept configurations on other problems and seeds (with the same
    chunk size and traced names): one compilation for both, and each run still equals its
    individual run (so the padding of the last chunk and the per-run problems line up)."""

    def make(k):
        return problems.least_squares(k, 13, 17, 3, heterogeneity=1.0)

    grid = {"local_lr": [0.01, 0.03], "rho": [0.1, 3.0], "server_lr": [0.5, 1.0]}
    names = ("local_lr", "rho", "server_lr")
    key, pkey = jax.random.key(4), jax.random.key(5)

    def both():
        tuned = fedpa.sweep(_factory, make, grid, 3, 4, 2, key, problem_key=pkey, chunk_size=3)
        assert tuned.traced == names
        kept = [tuned.configs[6]]  # one configuration: nothing varies, all three still traced
        evaluated = fedpa.sweep(
            _factory, make, kept, 3, 4, 3, key, problem_key=pkey, chunk_size=3, trace=tuned.traced
        )
        return tuned, evaluated

    (tuned, evaluated), compiles = _compiles(both)
    assert compiles == 1
    np.testing.assert_allclose(evaluated.params[0, :2], tuned.params[6], rtol=1e-5, atol=1e-7)
    for j in range(3):
        one = fedpa.run(
            *_factory(**tuned.configs[6]),
            make(jax.random.fold_in(pkey, j)),
            3,
            4,
            key=jax.random.fold_in(key, j),
        )
        np.testing.assert_allclose(evaluated.params[0, j], one.params, rtol=2e-5, atol=1e-7)
    # Without trace names the single configuration compiles its constants in: a new program.
    _, compiles = _compiles(
        lambda: fedpa.sweep(_factory, make, [tuned.configs[6]], 3, 4, 3, key, problem_key=pkey)
    )
    assert compiles == 1


def test_to_frame_is_tidy(small):
    pd = pytest.importorskip("pandas")
    res = fedpa.sweep(
        _factory,
        small,
        {"local_lr": [0.01, 0.02], "rho": [0.1], "server_lr": [1.0]},
        3,
        4,
        seeds=2,
        key=jax.random.key(0),
    )
    frame = res.to_frame()
    assert isinstance(frame, pd.DataFrame) and len(frame) == 2 * 2 * 3
    assert {"local_lr", "rho", "server_lr", "seed", "round", "objective"} <= set(frame.columns)
    row = frame[(frame.local_lr == 0.02) & (frame.seed == 1) & (frame["round"] == 3)]
    assert float(row.objective.iloc[0]) == pytest.approx(res.history["objective"][1, 1, 2])


@pytest.mark.parametrize(
    ("grid", "kwargs", "message"),
    [
        (
            {"local_lr": [-0.1], "rho": [0.1], "server_lr": [1.0]},
            {},
            r"configuration 0 \({'local_lr': -0.1.*local_lr must be in \(0.0, inf\)",
        ),
        ({"local_lr": [0.1], "rho": [-1.0], "server_lr": [1.0]}, {}, "rho must be in"),
        ({"local_lr": [], "rho": [0.1], "server_lr": [1.0]}, {}, "non-empty list"),
        ({"local_lr": [0.1], "rho": [0.1], "server_lr": [1.0]}, {"seeds": 0}, "seeds must be"),
        ({"local_lr": [0.1], "rho": [0.1], "server_lr": [1.0]}, {"key": None}, "key must be"),
        (
            {"local_lr": [0.1], "rho": [0.1], "server_lr": [1.0]},
            {"clients_per_round": 99},
            "exceeds num_clients",
        ),
        ({"local_lr": [0.1], "rho": [0.1], "server_lr": [1.0]}, {"trace": ["lr"]}, "not a grid"),
        ({"local_lr": [0.1], "rho": [0.1], "server_lr": [1.0]}, {"trace": "rho"}, "sequence"),
        ({"local_lr": [0.1], "rho": [0.1], "server_lr": [1.0]}, {"chunk_size": 0}, "chunk_size"),
    ],
)
def test_bad_input_fails_before_any_compute(small, grid, kwargs, message):
    args = dict(rounds=3, clients_per_round=4, key=jax.random.key(0)) | kwargs
    with pytest.raises(ValueError, match=message):
        fedpa.sweep(_factory, small, grid, **args)


def test_bad_factory(small):
    with pytest.raises(ValueError, match="factory must return"):
        fedpa.sweep(
            lambda lr: fedpa.fedavg(local_lr=lr), small, {"lr": [0.1]}, 2, 2, key=jax.random.key(0)
        )


def test_programs_with_a_custom_call_are_detected():
    from fedpa.sweeps import _has_custom_call

    lower = np.tril(np.ones((4, 4), np.float32)) + 3 * np.eye(4, dtype=np.float32)
    solve = jax.jit(lambda a, b: jax.scipy.linalg.solve_triangular(a, b, lower=True))
    assert _has_custom_call(solve, (lower, np.ones(4, np.float32)))  # LAPACK on the CPU
    assert not _has_custom_call(jax.jit(lambda a, b: a @ b), (lower, np.ones(4, np.float32)))


_EXACT_SWEEP = """
import jax, optax, fedpa
from fedpa import samplers
p = fedpa.problems.least_squares(jax.random.key(0), num_clients=4, samples_per_client=120,
                                 dim=100, heterogeneity=1.0)
def exact(rho, server_lr):
    return fedpa.fedpa(samplers.exact_gaussian(4), rho), optax.sgd(server_lr)
for _ in range(3):
    fedpa.sweep(exact, p, {"rho": [0.1, 1.0], "server_lr": [0.1, 0.3]}, rounds=3,
                clients_per_round=4, seeds=2, key=jax.random.key(1), chunk_size=2)
print("finished")
"""


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="host threads run chunks on the CPU")
def test_chunked_sweep_with_lapack_finishes():
    # exact samples at d = 100 (a LAPACK triangular solve) in chunks: with two executions at
    # once on host threads this deadlocked on XLA:CPU (jaxlib 0.10.2); such programs now run
    # their chunks one after another. A subprocess with a timeout, so a regression fails.
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _EXACT_SWEEP], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0 and "finished" in out.stdout, out.stderr[-2000:]
