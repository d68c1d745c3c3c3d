"""Federated data: the Dirichlet split, padded problems with masks, the EMNIST HDF5 loader."""

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fedpa
from fedpa import data, models


@pytest.fixture(scope="module")
def digits_skewed():
    return data.federated_digits(10, 0.1, seed=3)


def _label_tv(ds):
    """Mean total-variation distance between client label distributions and the global one."""
    counts = ds.label_counts().astype(float)
    local = counts / counts.sum(1, keepdims=True)
    glob = counts.sum(0) / counts.sum()
    return float(np.mean(0.5 * np.abs(local - glob).sum(1)))


def test_dirichlet_split_partitions_and_is_deterministic():
    labels = np.repeat(np.arange(5), 40)
    a = data.dirichlet_split(labels, 8, 0.5, seed=1)
    b = data.dirichlet_split(labels, 8, 0.5, seed=1)
    c = data.dirichlet_split(labels, 8, 0.5, seed=2)
    allidx = np.sort(np.concatenate(a))
    np.testing.assert_array_equal(allidx, np.arange(200))  # disjoint and complete
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_alpha_controls_label_skew():
    labels = np.repeat(np.arange(10), 100)
    iid = data.dirichlet_split(labels, 10, float("inf"), seed=0)
    counts = np.stack([np.bincount(labels[p], minlength=10) for p in iid])
    assert counts.min() == counts.max() == 10  # α = ∞: exactly equal shares
    tv = {}
    for alpha in (0.1, 1.0, 100.0):
        parts = data.dirichlet_split(labels, 10, alpha, seed=0)
        ds = data.FederatedDataset(
            tuple(np.zeros((len(p), 1)) for p in parts),
            tuple(labels[p] for p in parts),
            np.zeros((1, 1)),
            np.zeros(1, int),
            10,
        )
        tv[alpha] = _label_tv(ds)
    assert tv[0.1] > 0.6 > tv[1.0] > 0.2 > 0.1 > tv[100.0]


def test_federated_digits_split(digits_skewed):
    ds = digits_skewed
    assert ds.num_clients == 10
    assert ds.num_examples.sum() + len(ds.test_y) == 1797
    assert ds.num_examples.min() >= 5
    assert all(x.shape[1] == 64 and 0 <= x.min() and x.max() <= 1 for x in ds.client_x)
    # Stratified test set: every class is ~20 % held out.
    assert np.bincount(ds.test_y, minlength=10).min() >= 34
    # Same seed, same split; the test set does not depend on alpha.
    again = data.federated_digits(10, 0.1, seed=3)
    np.testing.assert_array_equal(np.concatenate(again.client_y), np.concatenate(ds.client_y))
    iid = data.federated_digits(10, 1e6, seed=3)
    np.testing.assert_array_equal(iid.test_y, ds.test_y)
    assert _label_tv(ds) > 3 * _label_tv(iid)


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan"), "a", True])
def test_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha"):
        data.federated_digits(5, alpha)


def test_problem_pads_masks_and_weights_by_example_count(digits_skewed):
    ds = digits_skewed
    m = models.logistic_regression(64, 10)
    prob = data.classification_problem(m, ds, jax.random.key(0), pad_to=300)
    n = ds.num_examples
    assert prob.clients.data["x"].shape == (10, 300, 64)
    np.testing.assert_array_equal(prob.clients.data["mask"].sum(1), n)
    np.testing.assert_allclose(prob.client_weights(), n / n.sum(), rtol=1e-6)
    params = {
        "w": 0.1 * jax.random.normal(jax.random.key(1), (64, 10)),
        "b": jnp.linspace(-1, 1, 10),
    }
    # The objective is the example-weighted average of client losses (padding ignored) ...
    pairs = zip(ds.client_x, ds.client_y, strict=True)
    local = np.array([float(m.loss(params, {"x": x, "y": y})) for x, y in pairs])
    assert float(prob.objective(params)) == pytest.approx(float(local @ n / n.sum()), rel=1e-5)
    # ... which differs from the plain average over clients (so the check above can fail).
    assert abs(float(local.mean()) - float(local @ n / n.sum())) > 1e-3
    # Client losses on padded rows equal losses on the raw rows.
    i = int(np.argmin(n))
    padded = float(m.loss(params, jax.tree.map(lambda a: a[i], prob.clients.data)))
    assert padded == pytest.approx(local[i], rel=1e-5)


def test_run_reports_test_accuracy(digits_skewed):
    m = models.logistic_regression(64, 10)
    iid = data.federated_digits(10, float("inf"), seed=0)
    prob = data.classification_problem(m, iid, jax.random.key(0))
    algo = fedpa.fedavg(local_steps=20, local_lr=0.2, batch_size=20)
    res = fedpa.run(algo, None, prob, rounds=15, clients_per_round=5, key=jax.random.key(1))
    for k in ("test_accuracy", "train_accuracy", "test_loss", "objective"):
        assert res.history[k].shape == (15,)
    acc = res.history["test_accuracy"]
    assert 0.0 <= acc.min() and acc.max() <= 1.0
    assert acc[-1] > 0.85  # chance is 0.1
    logits = m.apply(res.params, jnp.asarray(iid.test_x))
    assert float(jnp.mean(jnp.argmax(logits, 1) == iid.test_y)) == pytest.approx(acc[-1])


def test_bad_problem_inputs_fail_before_training(digits_skewed):
    ds = digits_skewed
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="num_features=65"):
        data.classification_problem(models.logistic_regression(65, 10), ds, key)
    with pytest.raises(ValueError, match="num_classes"):
        data.classification_problem(models.logistic_regression(64, 5), ds, key)
    bad = ds._replace(client_y=(ds.client_y[0] + 10, *ds.client_y[1:]), num_classes=10)
    with pytest.raises(ValueError, match=r"client 0 has label 1\d outside \[0, 10\)"):
        data.classification_problem(models.logistic_regression(64, 10), bad, key)
    short = ds._replace(client_x=(ds.client_x[0][:-1], *ds.client_x[1:]))
    with pytest.raises(ValueError, match="client 0 has .* feature rows but .* labels"):
        data.classification_problem(models.logistic_regression(64, 10), short, key)
    with pytest.raises(ValueError, match="pad_to"):
        data.classification_problem(models.logistic_regression(64, 10), ds, key, pad_to=3)


def _write_tff(path, clients, with_label=True, group="examples"):
    with h5py.File(path, "w") as f:
        g = f.create_group(group)
        for cid, (pixels, label) in clients.items():
            c = g.create_group(cid)
            c.create_dataset("pixels", data=pixels)
            if with_label:
                c.create_dataset("label", data=label)


def _fake_clients(seed, sizes):
    rng = np.random.default_rng(seed)
    return {
        f"f{i:04d}_{seed}": (rng.random((n, 28, 28), dtype=np.float32), rng.integers(0, 10, n))
        for i, n in enumerate(sizes)
    }


def test_emnist_loader_reads_the_tff_schema(tmp_path):
    train = _fake_clients(0, [7, 3, 12])
    test = {cid: (px[:2], lb[:2]) for cid, (px, lb) in train.items()}
    _write_tff(tmp_path / "train.h5", train)
    _write_tff(tmp_path / "test.h5", test)
    ds = data.load_emnist_hdf5(tmp_path / "train.h5", test_path=tmp_path / "test.h5")
    assert ds.num_clients == 3 and ds.num_classes == 10
    ids = sorted(train)
    for k, cid in enumerate(ids):
        np.testing.assert_array_equal(ds.client_x[k], train[cid][0].reshape(-1, 784))
        np.testing.assert_array_equal(ds.client_y[k], train[cid][1])
    assert ds.test_x.shape == (6, 784)
    # Without a test file a fraction of each client is held out, deterministically.
    first = data.load_emnist_hdf5(tmp_path / "train.h5", max_clients=2, seed=1)
    again = data.load_emnist_hdf5(tmp_path / "train.h5", max_clients=2, seed=1)
    assert first.num_clients == 2
    assert first.num_examples.sum() + len(first.test_y) == 10
    np.testing.assert_array_equal(first.test_y, again.test_y)
    # It plugs into a problem with an MLP.
    prob = data.classification_problem(models.mlp(784, 10, (8,)), ds, jax.random.key(0))
    assert prob.clients.data["x"].shape == (3, 12, 784)


def test_emnist_loader_rejects_other_files(tmp_path):
    clients = _fake_clients(0, [4, 4])
    _write_tff(tmp_path / "wrong_group.h5", clients, group="snippets")
    with pytest.raises(ValueError, match="expected a group 'examples'.*snippets"):
        data.load_emnist_hdf5(tmp_path / "wrong_group.h5")
    _write_tff(tmp_path / "no_label.h5", clients, with_label=False)
    with pytest.raises(ValueError, match=r"examples/f0000_0' lacks dataset\(s\) \['label'\]"):
        data.load_emnist_hdf5(tmp_path / "no_label.h5")
    with pytest.raises(ValueError, match="does not exist"):
        data.load_emnist_hdf5(tmp_path / "missing.h5")
    _write_tff(tmp_path / "ok.h5", clients)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        data.load_emnist_hdf5(tmp_path / "ok.h5", num_classes=3)


def test_synthetic_fedprox_follows_its_recipe():
    """Sizes ⌊LogNormal(4, 2)⌋ + 50, within-client feature variances j^-1.2, feature means
    spread by β (variance 1 + β² across clients), labels independent of α (a common logit shift)."""
    ds = data.synthetic_fedprox(1.0, 1.0, seed=0, test_fraction=0.0)
    assert ds.num_clients == 30 and ds.num_classes == 10
    sizes = ds.num_examples
    assert sizes.min() >= 50 and np.median(sizes) > 60
    big = int(np.argmax(sizes))
    x = ds.client_x[big]
    np.testing.assert_allclose(x.var(0), np.arange(1, 61) ** -1.2, rtol=0.35)
    same_labels = data.synthetic_fedprox(5.0, 1.0, seed=0, test_fraction=0.0)
    for a, b in zip(ds.client_y, same_labels.client_y, strict=True):
        np.testing.assert_array_equal(a, b)
    spread = {}
    for beta in (0.0, 3.0):
        d = data.synthetic_fedprox(0.5, beta, num_clients=200, seed=1, test_fraction=0.0)
        means = np.stack([cx.mean(0) for cx in d.client_x])
        spread[beta] = means.var(0).mean()
    assert 0.7 < spread[0.0] < 1.3 and 7.0 < spread[3.0] < 13.0
    iid = data.synthetic_fedprox(0.0, 0.0, iid=True, seed=0, test_fraction=0.1)
    assert abs(np.concatenate(iid.client_x).mean()) < 0.05
    # 10% of each client's examples are held out (the same draws: sizes as with no test set).
    assert len(iid.test_y) == sum(int(round(0.1 * n)) for n in ds.num_examples)
    np.testing.assert_array_equal(iid.num_examples + [int(round(0.1 * n)) for n in sizes], sizes)


def test_synthetic_fedprox_bad_input():
    with pytest.raises(ValueError, match="alpha must be in"):
        data.synthetic_fedprox(-1.0, 0.0)
    with pytest.raises(ValueError, match="test_fraction must be in"):
        data.synthetic_fedprox(0.0, 0.0, test_fraction=1.0)
