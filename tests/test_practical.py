"""fedpa_book.experiments.practical: diagnostics, matched budgets, tuning/evaluation split."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest

import fedpa
from fedpa import samplers
from fedpa_book.experiments import practical


def ar1(phi, n, chains, dim=1, seed=0):
    """``chains`` stationary AR(1) chains ``x_t = φ x_{t-1} + sqrt(1 - φ²) ε_t``."""
    rng = np.random.default_rng(seed)
    x = np.empty((chains, n, dim))
    x[:, 0] = rng.standard_normal((chains, dim))
    eps = rng.standard_normal((chains, n, dim)) * np.sqrt(1 - phi**2)
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + eps[:, t]
    return x


@pytest.mark.parametrize("phi", [0.0, 0.5, 0.9])
def test_autocorrelation_of_ar1_is_phi_to_the_lag(phi):
    rho = practical.autocorrelation(ar1(phi, 2000, 20, dim=2), max_lag=3)
    assert rho[0] == pytest.approx(1.0)
    np.testing.assert_allclose(rho[1:], phi ** np.arange(1, 4), atol=0.02)


@pytest.mark.parametrize("phi", [0.0, 0.5, 0.9])
def test_ess_of_ar1_is_n_times_one_minus_phi_over_one_plus_phi(phi):
    n = 4000
    ess = practical.effective_sample_size(ar1(phi, n, 20, seed=1))
    assert ess == pytest.approx(n * (1 - phi) / (1 + phi), rel=0.1)


def test_ess_of_a_constant_direction_and_short_chains():
    # a perfectly correlated chain (a ramp) has ESS far below n; white noise about n
    ramp = np.linspace(0, 1, 50)[None, :, None]
    assert practical.effective_sample_size(ramp) < 5
    assert practical.autocorrelation(np.ones((3, 5, 2)), max_lag=2).tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="chains"):
        practical.autocorrelation(np.ones((3, 1, 2)))


def test_budget_accounting_matches_what_the_updates_report():
    prob = fedpa.problems.least_squares(jax.random.key(0), 4, 50, dim=5)
    budget, ell = 120, 4
    for avg, discard, chains in [(10, 0, 1), (5, 10, 1), (10, 0, 2), (3, 4, 4)]:
        burn = practical.iasg_burnin(budget, ell, avg, discard, chains)
        assert chains * (burn + (ell // chains) * (discard + avg)) == budget
        sampler = samplers.iasg(ell, avg, burn, 0.05, 5, discard_steps=discard, num_chains=chains)
        assert practical.grad_evals(fedpa.fedpa(sampler, 1.0), prob) == budget
    burn = practical.sgld_burnin(budget, ell, 7)
    sgld = samplers.sgld(ell, 0.01, 5, burnin_steps=burn, thinning=7)
    assert practical.grad_evals(fedpa.fedpa(sgld, 1.0), prob) == budget
    assert practical.grad_evals(fedpa.fedavg(budget, 0.05, 5), prob) == budget
    assert practical.grad_evals(fedpa.fedpa_exact(), prob) == 0
    # the rounds record the same count, burn-in rounds included
    algo = fedpa.with_burnin(fedpa.fedpa(sgld, 1.0), fedpa.fedavg(budget, 0.05, 5), 2)
    res = fedpa.run(algo, optax.sgd(0.1), prob, 4, 4, key=jax.random.key(1))
    np.testing.assert_array_equal(res.history["local_grad_evals"], budget)
    with pytest.raises(ValueError, match="too small"):
        practical.iasg_burnin(30, 4, 10)
    with pytest.raises(ValueError, match="divide"):
        practical.iasg_burnin(120, 4, 10, num_chains=3)


def test_mixing_steps_is_one_over_lr_times_smallest_eigenvalue():
    prob = fedpa.problems.least_squares(jax.random.key(0), 3, 40, dim=4)
    lam = np.linalg.eigvalsh(
        np.asarray(
            jax.vmap(lambda c: c @ c.T)(prob.clients.posterior.precision_cholesky), np.float64
        )
    )[:, 0]
    np.testing.assert_allclose(practical.mixing_steps(prob, 0.1), 1 / (0.1 * lam), rtol=1e-5)


def test_exact_samples_have_unit_scale_and_no_autocorrelation():
    prob = fedpa.problems.least_squares(jax.random.key(0), 30, 50, dim=3)
    d = practical.sampler_diagnostics(
        samplers.exact_gaussian(40, scale=0.25), prob, prob.global_optimum(), jax.random.key(1)
    )
    assert d["scale"] == pytest.approx(0.25, rel=0.15)
    assert abs(d["lag1"]) < 0.1
    assert d["ess_fraction"] > 0.6
    assert d["grad_evals"] == 0


def test_split_keys_give_disjoint_problems_and_runs():
    keys = practical.split_keys(jax.random.key(3))
    flat = [jax.random.key_data(k).tolist() for pair in keys.values() for k in pair]
    assert len({tuple(f) for f in flat}) == 4

    def make(k):
        return fedpa.problems.least_squares(k, 3, 20, dim=2)

    tune = practical.problems_for(make, keys["tune"][0], 3)
    evaluate = practical.problems_for(make, keys["eval"][0], 3)
    for a in tune:
        for b in evaluate:
            assert not np.allclose(a.optimum, b.optimum)


def test_select_uses_tuning_finals_only_and_per_axis():
    configs = [{"rho": r, "lr": lr} for r in (0.1, 1.0) for lr in (0.1, 1.0)]
    finals = np.array([[1.0, 1.0], [0.5, 0.5], [np.inf, 0.1], [0.2, 0.3]])
    assert practical.select(configs, finals) == [3]  # the diverged run is never chosen
    assert practical.select(configs, finals, per="rho") == [1, 3]
    assert practical.select(configs, 2 - finals, mode="max") == [3]  # 1.75 beats 1.5; inf lost
    assert practical.select(configs, 2 - finals, mode="max", per="rho") == [1, 3]


def test_tune_and_evaluate_picks_the_best_on_tuning_seeds_and_evaluates_elsewhere():
    def make(k):
        return fedpa.problems.least_squares(k, 4, 30, dim=3, heterogeneity=0.5)

    def factory(server_lr):
        return fedpa.fedpa_exact(), optax.sgd(server_lr)

    grid = {"server_lr": [0.01, 0.5]}
    for merge in (False, True):
        tuning, curves = practical.tune_and_evaluate(
            factory,
            make,
            grid,
            rounds=6,
            clients_per_round=4,
            tune_seeds=2,
            eval_seeds=3,
            key=jax.random.key(0),
            merge=merge,
        )
        assert tuning.loc[tuning.best, "server_lr"].tolist() == [0.5]
        assert curves.server_lr.unique().tolist() == [0.5]
        assert sorted(curves.seed.unique()) == [0, 1, 2]
        # evaluation seed j is the evaluation problem j: its final distance is that run's
        keys = practical.split_keys(jax.random.key(0))
        prob = make(jax.random.fold_in(keys["eval"][0], 1))
        res = fedpa.run(*factory(0.5), prob, 6, 4, key=jax.random.key(9))
        last = curves[(curves.seed == 1) & (curves["round"] == 6)].dist_to_optimum.iloc[0]
        # the exact delta is deterministic with all clients: the run key does not matter
        assert last == pytest.approx(float(res.history["dist_to_optimum"][-1]), rel=1e-4)


def test_paired_ratios_geometric_mean_and_interval():
    rows = []
    for seed, (a, b) in enumerate([(1.0, 0.5), (2.0, 0.5), (4.0, 4.0)]):
        rows += [
            {"method": "ref", "seed": seed, "final": a},
            {"method": "new", "seed": seed, "final": b},
        ]
    out = practical.paired_ratios(pd.DataFrame(rows), reference="ref").set_index("method")
    logs = np.log([0.5, 0.25, 1.0])
    assert out.loc["new", "ratio"] == pytest.approx(np.exp(logs.mean()))
    half = 4.302652729911275 * logs.std(ddof=1) / np.sqrt(3)  # t(0.975, 2)
    assert out.loc["new", "low"] == pytest.approx(np.exp(logs.mean() - half))
    assert out.loc["new", "high"] == pytest.approx(np.exp(logs.mean() + half))
    assert out.loc["new", "wins"] == 2 and out.loc["ref", "ratio"] == pytest.approx(1.0)


def test_rounds_to_target():
    curves = pd.DataFrame(
        {
            "method": "a",
            "seed": [0] * 4 + [1] * 4,
            "round": [1, 2, 3, 4] * 2,
            "dist_to_optimum": [4, 3, 1, 0.5, 4, 4, 4, 4],
        }
    )
    out = practical.rounds_to_target(curves, 1.0, by=["method"])
    assert out.rounds.tolist()[0] == 3 and np.isnan(out.rounds.tolist()[1])


def test_final_errors_marks_divergence():
    h = jnp.array([[[1.0, 2.0, 3.0], [1.0, np.nan, np.nan]]])
    np.testing.assert_allclose(practical.final_errors(h, 2), [[2.5, np.inf]])


def test_edge_choices_flags_best_values_on_the_grid_edge():
    grid = {"a": [1.0, 2.0, 3.0], "b": [0.1, 0.2], "c": [5]}
    configs = fedpa.sweeps.grid_configs(grid)
    tuning = pd.DataFrame(configs).assign(best=False)
    interior = [i for i, c in enumerate(configs) if c["a"] == 2.0 and c["b"] == 0.2]
    tuning.loc[interior[0], "best"] = True
    # a = 2 is inside its grid; b = 0.2 is its largest; c has one value (never an edge)
    assert practical.edge_choices(tuning, grid) == ["b=0.2"]
    tuning["best"] = False
    tuning.loc[[i for i, c in enumerate(configs) if c["a"] == 1.0][0], "best"] = True
    assert "a=1" in practical.edge_choices(tuning, grid)
    # a list of configurations works too: the axes are the values the list takes
    assert practical.edge_choices(tuning, configs) == practical.edge_choices(tuning, grid)
    # a natural bound (here a = 1) is not reported: the grid cannot reach past it
    assert "a=1" not in practical.edge_choices(tuning, grid, bounds={"a": 1.0})
    assert "a=1" in practical.edge_choices(tuning, grid, bounds={"a": 0.0})
