r"""Small classification models in plain JAX: multinomial logistic regression and an MLP.

A :class:`Model` bundles pure functions over a params pytree:

* ``init(key) -> params``;
* ``apply(params, x) -> logits``, ``x (B, num_features)`` to ``(B, num_classes)``;
* ``loss(params, batch) -> scalar``: the *average* cross-entropy over the valid examples of a
  batch ``{"x": (B, F), "y": (B,) int, "mask": (B,) optional}`` plus a weak Gaussian prior
  ``λ/2 ‖params‖²``. ``mask`` (1 for a real example, 0 for padding) lets padded client data be
  used directly: padded rows contribute nothing and the average is over the valid rows only.

The loss matches the package convention (see :mod:`fedpa.problems`): client ``i`` minimizes its
average loss ``f_i`` and its local posterior is ``p_i(x) ∝ exp(-f_i(x))``.

Constructors are cached, so the same arguments return the *same* function objects and
``jax.jit`` reuses compiled rounds across problems built with the same model.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from . import _validate

__all__ = ["Model", "logistic_regression", "mlp", "cross_entropy", "accuracy"]


class Model(NamedTuple):
    """A classifier as pure functions (see the module docstring for shapes).

    Attributes:
      init: ``init(key) -> params`` pytree.
      apply: ``apply(params, x (B, F)) -> logits (B, C)``.
      loss: ``loss(params, batch) -> scalar``, masked mean cross-entropy + ``λ/2 ‖params‖²``.
      num_features: ``F``, the input size the model expects.
      num_classes: ``C``.
      name: a short label.
    """

    init: Callable
    apply: Callable
    loss: Callable
    num_features: int
    num_classes: int
    name: str


def cross_entropy(logits, labels):
    """Per-example cross-entropy ``(B,)`` of ``logits (B, C)`` against int ``labels (B,)``."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]


def accuracy(logits, labels, mask=None):
    """Fraction of valid examples whose arg-max logit is the label."""
    hit = (jnp.argmax(logits, axis=-1) == labels).astype(logits.dtype)
    if mask is None:
        return jnp.mean(hit)
    return jnp.sum(hit * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def _sq_norm(params):
    return sum(jnp.sum(p**2) for p in jax.tree.leaves(params))


def _make_loss(apply: Callable, prior_precision: float) -> Callable:
    def loss(params, batch):
        ce = cross_entropy(apply(params, batch["x"]), batch["y"])
        mask = batch.get("mask") if isinstance(batch, dict) else None
        if mask is None:
            data = jnp.mean(ce)
        else:
            mask = mask.astype(ce.dtype)
            data = jnp.sum(ce * mask) / jnp.maximum(jnp.sum(mask), 1.0)
        return data + 0.5 * prior_precision * _sq_norm(params)

    return loss


def _check_sizes(num_features, num_classes, prior_precision):
    num_features = _validate.integer("num_features", num_features, minimum=1)
    num_classes = _validate.integer("num_classes", num_classes, minimum=2)
    _validate.real("prior_precision", prior_precision, low=0.0)
    return num_features, num_classes, float(prior_precision)


def logistic_regression(
    num_features: int, num_classes: int, *, prior_precision: float = 1e-4
) -> Model:
    """Multinomial logistic regression ``logits = x W + b``.

    Params: ``{"w": (F, C), "b": (C,)}``, initialized at zero (the loss is convex, so the
    starting point only matters for speed).

    Args:
      num_features: ``F >= 1``.
      num_classes: ``C >= 2``.
      prior_precision: ``λ >= 0``, the Gaussian prior (L2 penalty ``λ/2 ‖params‖²``).
    """
    return _logistic(*_check_sizes(num_features, num_classes, prior_precision))


@functools.cache
def _logistic(num_features: int, num_classes: int, prior_precision: float) -> Model:
    def init(key):
        del key
        dtype = jnp.result_type(float)
        return {
            "w": jnp.zeros((num_features, num_classes), dtype),
            "b": jnp.zeros((num_classes,), dtype),
        }

    def apply(params, x):
        return x @ params["w"] + params["b"]

    return Model(
        init,
        apply,
        _make_loss(apply, prior_precision),
        num_features,
        num_classes,
        name="logistic regression",
    )


def mlp(
    num_features: int,
    num_classes: int,
    hidden: tuple[int, ...] | list[int] = (32,),
    *,
    prior_precision: float = 1e-4,
) -> Model:
    """A multi-layer perceptron with ``tanh`` hidden units.

    Params: a list of ``{"w": (fan_in, fan_out), "b": (fan_out,)}`` layers; weights are
    initialized ``N(0, 1/fan_in)`` (LeCun), biases at zero.

    Args:
      num_features: ``F >= 1``.
      num_classes: ``C >= 2``.
      hidden: widths of the hidden layers, each ``>= 1`` (at least one layer).
      prior_precision: ``λ >= 0``.
    """
    sizes = _check_sizes(num_features, num_classes, prior_precision)
    if isinstance(hidden, int) or len(hidden) == 0:
        raise ValueError(f"hidden must be a non-empty list of layer widths, got {hidden!r}")
    widths = tuple(_validate.integer("hidden[i]", h, minimum=1) for h in hidden)
    return _mlp(sizes[0], sizes[1], widths, sizes[2])


@functools.cache
def _mlp(num_features: int, num_classes: int, hidden: tuple, prior_precision: float) -> Model:
    dims = (num_features, *hidden, num_classes)

    def init(key):
        dtype = jnp.result_type(float)
        keys = jax.random.split(key, len(dims) - 1)
        return [
            {
                "w": jax.random.normal(k, (i, o), dtype) / math.sqrt(i),
                "b": jnp.zeros((o,), dtype),
            }
            for k, i, o in zip(keys, dims[:-1], dims[1:], strict=True)
        ]

    def apply(params, x):
        for layer in params[:-1]:
            x = jnp.tanh(x @ layer["w"] + layer["b"])
        return x @ params[-1]["w"] + params[-1]["b"]

    label = "MLP " + "-".join(str(d) for d in dims)
    return Model(
        init,
        apply,
        _make_loss(apply, prior_precision),
        num_features,
        num_classes,
        name=label,
    )
