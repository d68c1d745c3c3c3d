r"""Federated classification data and the problems built from it.

* :func:`federated_digits`: scikit-learn's bundled 8×8 digits (1,797 images, no download), a
  stratified held-out test set, and the training examples split across clients *non-iid* with the
  Dirichlet label split of Hsu et al. (2019): for every class ``k`` the shares
  ``p_k ~ Dirichlet(α 1_N)`` say which fraction of class ``k`` each of the ``N`` clients gets.
  ``α → ∞`` is iid (``alpha=float("inf")`` gives exactly equal shares); ``α = 0.1`` leaves most
  clients with one or two classes.
* :func:`synthetic_fedprox`: the federated "Synthetic(α, β)" multinomial logistic regression
  data of Li et al. (FedProx, MLSys 2020), generated from its published recipe (60 features,
  10 classes, 30 clients, log-normal client sizes).
* :func:`load_emnist_hdf5`: TensorFlow Federated's federated EMNIST files
  (``examples/<client_id>/pixels`` and ``examples/<client_id>/label``), read with ``h5py``.
* :func:`classification_problem`: a :class:`~fedpa.problems.FederatedProblem` for a
  :class:`~fedpa.models.Model` and a :class:`FederatedDataset`: clients of different sizes are
  padded to a common length with a ``mask`` (so the model's masked loss ignores padding, SGD draws
  only valid rows and the server weights clients by example count), the global objective is the
  example-weighted average loss, and ``metrics_fn`` adds ``train_accuracy``, ``test_accuracy`` and
  ``test_loss`` to every round of :func:`fedpa.run`'s history.

Data preparation is host-side NumPy, deterministic from an integer ``seed``.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate
from .models import Model, accuracy, cross_entropy
from .problems import Clients, FederatedProblem

__all__ = [
    "FederatedDataset",
    "dirichlet_split",
    "federated_digits",
    "synthetic_fedprox",
    "load_emnist_hdf5",
    "classification_problem",
]


class FederatedDataset(NamedTuple):
    """Per-client training data and a shared test set (NumPy, host side).

    Attributes:
      client_x: tuple of ``(n_i, F)`` float arrays, one per client.
      client_y: tuple of ``(n_i,)`` int arrays, labels in ``[0, num_classes)``.
      test_x: ``(m, F)`` held-out features.
      test_y: ``(m,)`` held-out labels.
      num_classes: ``C``.
      name: a short label.
    """

    client_x: tuple
    client_y: tuple
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    name: str = "dataset"

    @property
    def num_clients(self) -> int:
        return len(self.client_x)

    @property
    def num_examples(self) -> np.ndarray:
        """``(num_clients,)`` examples per client."""
        return np.array([len(y) for y in self.client_y], dtype=np.int64)

    def label_counts(self) -> np.ndarray:
        """``(num_clients, num_classes)`` how many examples of each class every client holds."""
        return np.stack([np.bincount(y, minlength=self.num_classes) for y in self.client_y])


def _check_alpha(alpha) -> float:
    if isinstance(alpha, bool):
        raise ValueError(f"alpha must be a positive real number, got {alpha!r}")
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha must be a positive real number, got {alpha!r}") from None
    if math.isnan(a) or a <= 0:
        raise ValueError(
            f"alpha must be > 0 (Dirichlet concentration; inf = iid), got alpha={alpha!r}"
        )
    return a


def dirichlet_split(
    labels,
    num_clients: int,
    alpha: float,
    *,
    seed: int = 0,
    min_examples: int = 1,
    max_tries: int = 1000,
) -> list[np.ndarray]:
    """Splits example indices across clients with a Dirichlet(α) label distribution.

    For each class ``k`` its (shuffled) examples are cut into ``num_clients`` consecutive pieces
    of relative sizes ``p_k ~ Dirichlet(α 1)``. Draws are repeated (from the same seeded
    generator) until every client holds at least ``min_examples`` examples.

    Args:
      labels: ``(n,)`` int labels.
      num_clients: ``N >= 1``.
      alpha: concentration ``> 0``; ``inf`` gives equal shares (iid).
      seed: integer seed; the split is a deterministic function of it.
      min_examples: the smallest client size accepted, ``>= 1``.
      max_tries: give up (ValueError) after this many draws.

    Returns:
      ``num_clients`` sorted int index arrays that partition ``range(n)``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty (n,) array, got shape {labels.shape}")
    num_clients = _validate.integer("num_clients", num_clients, minimum=1)
    alpha = _check_alpha(alpha)
    seed = _validate.integer("seed", seed, minimum=0)
    min_examples = _validate.integer("min_examples", min_examples, minimum=1)
    max_tries = _validate.integer("max_tries", max_tries, minimum=1)
    if num_clients * min_examples > labels.size:
        raise ValueError(
            f"num_clients={num_clients} clients of min_examples={min_examples} need "
            f"{num_clients * min_examples} examples, only {labels.size} available"
        )
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    by_class = [rng.permutation(np.flatnonzero(labels == k)) for k in classes]
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for idx in by_class:
            if math.isinf(alpha):
                shares = np.full(num_clients, 1.0 / num_clients)
            else:
                shares = rng.dirichlet(np.full(num_clients, alpha))
            cuts = np.round(np.cumsum(shares)[:-1] * idx.size).astype(int)
            for client, piece in enumerate(np.split(idx, cuts)):
                parts[client].append(piece)
        out = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in out) >= min_examples:
            return out
    raise ValueError(
        f"could not give every client >= {min_examples} examples with alpha={alpha} in "
        f"{max_tries} draws; use fewer clients, a larger alpha or a smaller min_examples"
    )


def _stratified_holdout(labels, fraction, rng):
    test = []
    for k in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == k))
        test.append(idx[: int(round(fraction * idx.size))])
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(labels.size), test)
    return train, test


def federated_digits(
    num_clients: int = 20,
    alpha: float = 1.0,
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    min_examples: int = 5,
) -> FederatedDataset:
    """scikit-learn's digits, split across clients with a Dirichlet(α) label distribution.

    Pixels (0–16) are scaled to ``[0, 1]``: features ``(64,)``, 10 classes. A stratified
    ``test_fraction`` of the 1,797 images is held out (the same for every ``alpha`` and
    ``num_clients`` given the seed); the rest is split by :func:`dirichlet_split`.

    Args:
      num_clients: ``N >= 1``.
      alpha: Dirichlet concentration ``> 0`` (``inf``: iid; ``0.1``: very skewed).
      seed: integer seed for the test split and the client split.
      test_fraction: held-out fraction in ``(0, 1)``.
      min_examples: smallest accepted client size.
    """
    num_clients = _validate.integer("num_clients", num_clients, minimum=1)
    alpha = _check_alpha(alpha)
    seed = _validate.integer("seed", seed, minimum=0)
    _validate.real("test_fraction", test_fraction, low=0.0, high=1.0, low_open=True)
    if test_fraction >= 1.0:
        raise ValueError(f"test_fraction must be < 1, got test_fraction={test_fraction}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - sklearn is in the book extra
        raise ImportError("federated_digits needs scikit-learn: pip install 'fedpa[book]'") from e
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    rng = np.random.default_rng([seed, 0])
    train, test = _stratified_holdout(y, float(test_fraction), rng)
    parts = dirichlet_split(y[train], num_clients, alpha, seed=seed, min_examples=min_examples)
    return FederatedDataset(
        client_x=tuple(x[train][p] for p in parts),
        client_y=tuple(y[train][p] for p in parts),
        test_x=x[test],
        test_y=y[test],
        num_classes=10,
        name=f"digits(N={num_clients}, α={alpha:g})",
    )


# -------------------------------------------------------------------------------- Synthetic(α, β)


def synthetic_fedprox(
    alpha: float,
    beta: float,
    *,
    num_clients: int = 30,
    num_features: int = 60,
    num_classes: int = 10,
    iid: bool = False,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> FederatedDataset:
    r"""Federated "Synthetic(α, β)" of Li et al. (FedProx, MLSys 2020), from its recipe.

    Client ``k`` has ``n_k = ⌊LogNormal(4, 2)⌋ + 50`` examples, features
    ``x ~ N(v_k, Σ)`` with ``Σ = diag(j^{-1.2})``, ``v_k ~ N(B_k 1, I)``, ``B_k ~ N(0, β²)``, and
    labels ``y = argmax(x W_k + b_k)`` with ``W_k ~ N(u_k, 1)`` (``F × C``), ``b_k ~ N(u_k, 1)``,
    ``u_k ~ N(0, α²)`` (``α`` and ``β`` are standard deviations, as ``numpy.random.normal``'s
    scale in the published generator). ``iid=True`` is their "Synthetic IID": one ``W, b ~
    N(0, 1)`` for all clients and ``v_k = 0``. A ``test_fraction`` of each client's examples is
    held out into the shared test set (the recipe's per-client 90/10 split by default).

    Every random draw is made in the same order whatever ``α`` and ``β`` (standard normals,
    scaled afterwards), so datasets that differ only in ``α`` or ``β`` share their noise. Note
    what follows from the recipe: ``u_k`` shifts every class's logit by the same ``u_k (1 +
    Σ_j x_j)``, which leaves the argmax unchanged, so **the labels do not depend on α** (tested);
    the clients' models differ through ``W_k``'s unit-variance noise at every ``α``, and ``β``
    moves the clients' feature distributions apart.

    Args:
      alpha: ``>= 0``, spread of the clients' model means.
      beta: ``>= 0``, spread of the clients' feature means.
      num_clients, num_features, num_classes: ``>= 1`` (the recipe's 30, 60, 10).
      iid: the IID variant.
      test_fraction: held-out fraction of each client's examples, in ``[0, 1)``.
      seed: integer seed.
    """
    _validate.real("alpha", alpha, low=0.0)
    _validate.real("beta", beta, low=0.0)
    num_clients = _validate.integer("num_clients", num_clients, minimum=1)
    num_features = _validate.integer("num_features", num_features, minimum=1)
    num_classes = _validate.integer("num_classes", num_classes, minimum=2)
    _validate.real("test_fraction", test_fraction, low=0.0, high=1.0, high_open=True)
    seed = _validate.integer("seed", seed, minimum=0)
    rng = np.random.default_rng([seed, 1])
    sizes = rng.lognormal(4.0, 2.0, num_clients).astype(np.int64) + 50
    u = float(alpha) * rng.standard_normal(num_clients)
    big_b = float(beta) * rng.standard_normal(num_clients)
    std = np.arange(1, num_features + 1, dtype=np.float64) ** -0.6  # sqrt(j^-1.2)
    mean_noise = rng.standard_normal((num_clients, num_features))
    w_global = rng.standard_normal((num_features, num_classes))
    b_global = rng.standard_normal(num_classes)
    xs, ys, test_x, test_y = [], [], [], []
    for k in range(num_clients):
        w_noise = rng.standard_normal((num_features, num_classes))
        b_noise = rng.standard_normal(num_classes)
        z = rng.standard_normal((int(sizes[k]), num_features))
        if iid:
            mean, w, b = np.zeros(num_features), w_global, b_global
        else:
            mean, w, b = big_b[k] + mean_noise[k], u[k] + w_noise, u[k] + b_noise
        x = mean + z * std
        y = np.argmax(x @ w + b, axis=1).astype(np.int32)
        held = int(round(float(test_fraction) * len(y)))
        order = rng.permutation(len(y))
        xs.append(x[order[held:]].astype(np.float32))
        ys.append(y[order[held:]])
        test_x.append(x[order[:held]].astype(np.float32))
        test_y.append(y[order[:held]])
    label = "iid" if iid else f"α={float(alpha):g}, β={float(beta):g}"
    return FederatedDataset(
        client_x=tuple(xs),
        client_y=tuple(ys),
        test_x=np.concatenate(test_x).reshape(-1, num_features),
        test_y=np.concatenate(test_y),
        num_classes=num_classes,
        name=f"synthetic({label})",
    )


# -------------------------------------------------------------------------------- EMNIST (TFF)


def _read_tff_clients(path, client_ids=None, max_clients=None):
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - h5py is in the book extra
        raise ImportError("load_emnist_hdf5 needs h5py: pip install 'fedpa[book]'") from e
    if not os.path.isfile(path):
        raise ValueError(f"EMNIST file {str(path)!r} does not exist")
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with h5py.File(path, "r") as f:
        if "examples" not in f or not isinstance(f["examples"], h5py.Group):
            raise ValueError(
                f"{str(path)!r} is not a TFF federated EMNIST file: expected a group 'examples' "
                f"holding examples/<client_id>/pixels and label, found top-level keys "
                f"{sorted(f.keys())}"
            )
        examples = f["examples"]
        ids = sorted(examples.keys()) if client_ids is None else list(client_ids)
        if not ids:
            raise ValueError(f"{str(path)!r}: the group 'examples' holds no clients")
        if max_clients is not None:
            ids = ids[:max_clients]
        for cid in ids:
            if cid not in examples:
                continue
            group = examples[cid]
            missing = [k for k in ("pixels", "label") if k not in group]
            if missing:
                raise ValueError(
                    f"{str(path)!r}: client group 'examples/{cid}' lacks dataset(s) {missing} "
                    f"(expected 'pixels' and 'label'), found {sorted(group.keys())}"
                )
            pixels = np.asarray(group["pixels"], dtype=np.float32)
            label = np.asarray(group["label"])
            if pixels.ndim < 2 or label.shape != (pixels.shape[0],):
                raise ValueError(
                    f"{str(path)!r}: client 'examples/{cid}' has pixels of shape {pixels.shape} "
                    f"and label of shape {label.shape}; expected (n, 28, 28) and (n,)"
                )
            if label.dtype.kind not in "iu":
                raise ValueError(
                    f"{str(path)!r}: client 'examples/{cid}' labels must be integers, "
                    f"got dtype {label.dtype}"
                )
            out[cid] = (pixels.reshape(pixels.shape[0], -1), label.astype(np.int32))
    return out


def load_emnist_hdf5(
    path: str | os.PathLike,
    *,
    test_path: str | os.PathLike | None = None,
    max_clients: int | None = None,
    num_classes: int | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> FederatedDataset:
    """Federated EMNIST from TensorFlow Federated's HDF5 files (``h5py``; no TensorFlow).

    The files (``fed_emnist_train.h5``/``fed_emnist_test.h5``, or the ``_digitsonly`` pair) hold
    one group per writer: ``examples/<client_id>/pixels`` ``(n, 28, 28)`` float and
    ``examples/<client_id>/label`` ``(n,)`` int. Pixels are flattened to ``(n, 784)``.

    Args:
      path: the training file.
      test_path: the matching test file; its examples of the selected clients form the test set.
        Without it, a random ``test_fraction`` of every client's examples is held out.
      max_clients: keep the first ``max_clients`` client ids (sorted), ``None`` for all.
      num_classes: ``C``; default ``max label + 1`` (10 for the digits-only files, 62 for all).
      test_fraction: held-out fraction per client when ``test_path`` is ``None``.
      seed: seed of that hold-out.

    Raises:
      ValueError: a missing file, a file without the ``examples`` group, a client without
        ``pixels``/``label``, inconsistent shapes or labels outside ``[0, num_classes)``.
    """
    if max_clients is not None:
        max_clients = _validate.integer("max_clients", max_clients, minimum=1)
    seed = _validate.integer("seed", seed, minimum=0)
    clients = _read_tff_clients(os.fspath(path), max_clients=max_clients)
    ids = list(clients)
    if test_path is not None:
        test = _read_tff_clients(os.fspath(test_path), client_ids=ids)
        if not test:
            raise ValueError(f"{str(test_path)!r} holds none of the selected client ids")
        test_x = np.concatenate([v[0] for v in test.values()])
        test_y = np.concatenate([v[1] for v in test.values()])
        train = [clients[c] for c in ids]
    else:
        _validate.real("test_fraction", test_fraction, low=0.0, high=1.0, low_open=True)
        rng = np.random.default_rng(seed)
        train, held = [], []
        for c in ids:
            x, y = clients[c]
            perm = rng.permutation(len(y))
            k = min(len(y) - 1, int(round(test_fraction * len(y))))
            held.append((x[perm[:k]], y[perm[:k]]))
            train.append((x[np.sort(perm[k:])], y[np.sort(perm[k:])]))
        test_x = np.concatenate([h[0] for h in held])
        test_y = np.concatenate([h[1] for h in held])
    labels = np.concatenate([t[1] for t in train] + [test_y])
    if num_classes is None:
        num_classes = max(2, int(labels.max()) + 1)
    num_classes = _validate.integer("num_classes", num_classes, minimum=2)
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise ValueError(
            f"labels must lie in [0, {num_classes}) for num_classes={num_classes}, "
            f"found label {int(labels[bad][0])}"
        )
    return FederatedDataset(
        client_x=tuple(t[0] for t in train),
        client_y=tuple(t[1] for t in train),
        test_x=test_x,
        test_y=test_y,
        num_classes=num_classes,
        name=f"emnist({len(ids)} clients)",
    )


# ------------------------------------------------------------------------------ the problem


@functools.cache
def _problem_fns(model: Model):
    """One (objective_fn, metrics_fn) pair per model, so jit caches compiled runs."""

    def objective_fn(objective_data, params):
        return model.loss(params, objective_data["train"])

    def metrics_fn(objective_data, params):
        train, test = objective_data["train"], objective_data["test"]
        test_logits = model.apply(params, test["x"])
        return {
            "train_accuracy": accuracy(model.apply(params, train["x"]), train["y"], train["mask"]),
            "test_accuracy": accuracy(test_logits, test["y"]),
            "test_loss": jnp.mean(cross_entropy(test_logits, test["y"])),
        }

    return objective_fn, metrics_fn


def _check_labels(what: str, y, num_classes: int) -> None:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{what} labels must have shape (n,), got shape {y.shape}")
    if y.size and y.dtype.kind not in "iu":
        raise ValueError(f"{what} labels must be integers, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        bad = int(y[(y < 0) | (y >= num_classes)][0])
        raise ValueError(
            f"{what} has label {bad} outside [0, {num_classes}) "
            f"(the model has num_classes={num_classes})"
        )


def _check_features(what: str, x, y, num_features: int) -> None:
    shape = np.shape(x)
    if len(shape) != 2 or shape[1] != num_features:
        raise ValueError(
            f"{what} features have shape {shape}, but the model expects "
            f"(n, num_features={num_features})"
        )
    if shape[0] != np.shape(y)[0]:
        raise ValueError(
            f"{what} has {shape[0]} feature rows but {np.shape(y)[0]} labels; they must match"
        )


def classification_problem(
    model: Model,
    dataset: FederatedDataset,
    key: Any,
    *,
    pad_to: int | None = None,
    name: str | None = None,
) -> FederatedProblem:
    """A federated classification problem: padded stacked clients, masks and test metrics.

    Client data ``{"x": (N, P, F), "y": (N, P), "mask": (N, P)}`` with ``P = pad_to`` (default
    the largest client) and ``num_examples`` the true sizes. The objective is the model's loss on
    all training examples (the example-weighted average of the client losses);
    ``metrics_fn`` reports ``train_accuracy``, ``test_accuracy`` and ``test_loss``
    (cross-entropy without the prior).

    Every shape and label is checked against the model *before* anything is compiled.

    Args:
      model: a :class:`~fedpa.models.Model`.
      dataset: a :class:`FederatedDataset`.
      key: PRNG key for ``model.init``.
      pad_to: common client length ``P >= max n_i``; a fixed ``P`` lets problems with different
        splits share one compiled run.
      name: a label (default ``"<dataset> / <model>"``).
    """
    if not isinstance(model, Model):
        raise ValueError(f"model must be a fedpa.models.Model, got {type(model).__name__}")
    if not isinstance(dataset, FederatedDataset):
        raise ValueError(
            f"dataset must be a fedpa.data.FederatedDataset, got {type(dataset).__name__}"
        )
    if key is None:
        raise ValueError("key must be a PRNG key (e.g. jax.random.key(0)), got None")
    if dataset.num_clients == 0 or len(dataset.client_y) != dataset.num_clients:
        raise ValueError(
            f"dataset must hold >= 1 client with as many label arrays as feature arrays, got "
            f"{len(dataset.client_x)} feature and {len(dataset.client_y)} label arrays"
        )
    if dataset.num_classes > model.num_classes:
        raise ValueError(
            f"dataset has num_classes={dataset.num_classes} but the model only "
            f"num_classes={model.num_classes}"
        )
    for i, (x, y) in enumerate(zip(dataset.client_x, dataset.client_y, strict=True)):
        _check_features(f"client {i}", x, y, model.num_features)
        _check_labels(f"client {i}", y, model.num_classes)
        if len(y) == 0:
            raise ValueError(f"client {i} has no examples; every client needs >= 1")
    _check_features("the test set", dataset.test_x, dataset.test_y, model.num_features)
    _check_labels("the test set", dataset.test_y, model.num_classes)
    if len(dataset.test_y) == 0:
        raise ValueError("the test set is empty; it needs >= 1 example")
    sizes = dataset.num_examples
    longest = int(sizes.max())
    if pad_to is None:
        pad_to = longest
    pad_to = _validate.integer("pad_to", pad_to, minimum=1)
    if pad_to < longest:
        raise ValueError(f"pad_to={pad_to} is smaller than the largest client ({longest} examples)")
    params = model.init(key)
    probe = jax.eval_shape(
        model.apply, params, jax.ShapeDtypeStruct((1, model.num_features), jnp.float32)
    )
    if probe.shape != (1, model.num_classes):
        raise ValueError(
            f"model.apply maps (1, {model.num_features}) inputs to {probe.shape}, "
            f"expected (1, num_classes={model.num_classes})"
        )

    dtype = jnp.result_type(float)
    num_clients, num_features = dataset.num_clients, model.num_features
    xs = np.zeros((num_clients, pad_to, num_features), dtype)
    ys = np.zeros((num_clients, pad_to), np.int32)
    mask = np.zeros((num_clients, pad_to), dtype)
    for i, (x, y) in enumerate(zip(dataset.client_x, dataset.client_y, strict=True)):
        xs[i, : len(y)], ys[i, : len(y)], mask[i, : len(y)] = x, y, 1.0
    data = {"x": jnp.asarray(xs), "y": jnp.asarray(ys), "mask": jnp.asarray(mask)}
    train = jax.tree.map(lambda a: a.reshape((num_clients * pad_to, *a.shape[2:])), data)
    test = {
        "x": jnp.asarray(dataset.test_x, dtype),
        "y": jnp.asarray(dataset.test_y, jnp.int32),
    }
    objective_fn, metrics_fn = _problem_fns(model)
    return FederatedProblem(
        clients=Clients(data=data, num_examples=jnp.asarray(sizes, jnp.int32)),
        init_params=params,
        optimum=None,
        objective_data={"train": train, "test": test},
        loss_fn=model.loss,
        objective_fn=objective_fn,
        name=name or f"{dataset.name} / {model.name}",
        metrics_fn=metrics_fn,
    )
