"""fedpa_book.experiments.classification: algorithms × classification problems in one sweep."""

import jax
import numpy as np
import pytest

import fedpa
from fedpa import data, models
from fedpa_book.experiments import classification


@pytest.fixture(scope="module")
def digits_problems():
    m = models.logistic_regression(64, 10)
    splits = [data.federated_digits(6, a, seed=1) for a in (0.5, float("inf"))]
    pad = max(int(d.num_examples.max()) for d in splits)
    probs = [data.classification_problem(m, d, jax.random.key(0), pad_to=pad) for d in splits]
    return m, splits, probs


def test_classification_runs_match_fedpa_run(digits_problems):
    """The vmapped driver gives, per problem, exactly what fedpa.run gives with that key."""
    m, splits, probs = digits_problems
    algo = fedpa.fedavg(local_steps=5, local_lr=0.1, batch_size=8)
    table = classification.classification_runs(
        {"FedAvg": algo},
        probs,
        rounds=3,
        clients_per_round=3,
        key=jax.random.key(4),
        labels=[{"alpha": 0.5}, {"alpha": float("inf")}],
    )
    assert list(table.columns[:4]) == ["alpha", "problem", "algorithm", "round"]
    for j, p in enumerate(probs):
        k = jax.random.fold_in(jax.random.key(4), j)
        ref = fedpa.run(algo, None, p, rounds=3, clients_per_round=3, key=k).history
        got = table[table["problem"] == j]
        np.testing.assert_allclose(got["test_accuracy"], ref["test_accuracy"], rtol=1e-5)
        np.testing.assert_allclose(got["objective"], ref["objective"], rtol=1e-5)
    unpadded = data.classification_problem(m, splits[0], jax.random.key(0))
    if unpadded.clients.data["x"].shape != probs[1].clients.data["x"].shape:
        with pytest.raises(ValueError, match="pad_to"):
            classification.classification_runs(
                {"FedAvg": algo},
                [unpadded, probs[1]],
                rounds=3,
                clients_per_round=3,
                key=jax.random.key(4),
            )


def test_burnin_rounds_are_the_same_fedavg_run(digits_problems):
    """FedPA with FedAvg burn-in equals FedAvg, round for round, until the switch."""
    _, _, probs = digits_problems
    algos = {
        "FedAvg": fedpa.fedavg(20, 0.1, 8),
        "FedPA": fedpa.fedpa_iasg(4, 2, 12, 0.1, 8, 0.1, burnin_rounds=2),
    }
    table = classification.classification_runs(
        algos, probs, rounds=3, clients_per_round=3, key=jax.random.key(1)
    )
    wide = table.pivot_table(index=["problem", "round"], columns="algorithm", values="test_loss")
    early = wide.xs(slice(1, 2), level="round", drop_level=False)
    np.testing.assert_array_equal(early["FedAvg"], early["FedPA"])
    assert not np.allclose(wide.xs(3, level="round")["FedAvg"], wide.xs(3, level="round")["FedPA"])


def test_classification_runs_validates_arguments(digits_problems):
    _, _, probs = digits_problems
    algo = fedpa.fedavg(2, 0.1, 4)
    with pytest.raises(ValueError, match="key"):
        classification.classification_runs({"a": algo}, probs, rounds=2, clients_per_round=2)
    with pytest.raises(ValueError, match="ClientUpdate"):
        classification.classification_runs(
            {"a": "fedavg"}, probs, rounds=2, clients_per_round=2, key=jax.random.key(0)
        )
    with pytest.raises(ValueError, match="labels"):
        classification.classification_runs(
            {"a": algo}, probs, rounds=2, clients_per_round=2, key=jax.random.key(0), labels=[{}]
        )
