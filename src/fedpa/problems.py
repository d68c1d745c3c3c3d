r"""Federated problems as stacked pytrees.

A :class:`FederatedProblem` holds every client's data stacked along a leading client axis, so a
round can ``vmap`` the client update over the sampled clients. Client ``i`` minimizes its
*average* loss ``f_i``; the server's objective is the example-weighted average
``F = Σ_i w_i f_i``.

For the least-squares problems here everything is exact:

.. math::

    f_i(x) = \frac{1}{2 n_i} \lVert X_i x - y_i \rVert^2 + \frac{\lambda}{2} \lVert x \rVert^2
           = \tfrac12 (x - \mu_i)^\top A_i (x - \mu_i) + \text{const},

with :math:`A_i = X_i^\top X_i / n_i + \lambda I`. The client's local posterior, scaled to its
average loss (:math:`p_i(x) \propto e^{-f_i(x)}`: a Gaussian likelihood with a weak Gaussian prior
of precision :math:`\lambda`), is :math:`\mathcal N(\mu_i, A_i^{-1})`. Its delta
:math:`A_i (x - \mu_i) = \nabla f_i(x)` is a gradient of the average loss, so a server learning
rate of 1 is a well-scaled step, and the global optimum
:math:`x^\star = (\sum_i w_i A_i)^{-1} \sum_i w_i A_i \mu_i` is the mode of the product of the
local posteriors (the paper's Proposition 1).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate

__all__ = [
    "Clients",
    "GaussianPosterior",
    "FederatedProblem",
    "least_squares",
    "least_squares_from_data",
    "quadratic",
    "quadratic_2d",
]


class GaussianPosterior(NamedTuple):
    """A Gaussian ``N(mean, (L Lᵀ)⁻¹)`` given by its mean and the Cholesky factor of its precision.

    Shapes: ``mean (d,)``, ``precision_cholesky (d, d)`` lower triangular (a leading client axis
    when stacked).
    """

    mean: jax.Array
    precision_cholesky: jax.Array

    def precision_matvec(self, v):
        """``A v`` with ``A = L Lᵀ``."""
        chol = self.precision_cholesky
        return chol @ (chol.T @ v)

    def precision(self):
        return self.precision_cholesky @ self.precision_cholesky.T

    def covariance(self):
        return jnp.linalg.inv(self.precision())


class Clients(NamedTuple):
    """All clients, stacked along a leading axis of size ``num_clients``.

    Attributes:
      data: pytree of arrays, leaves ``(num_clients, n, ...)``; client ``i`` owns ``leaf[i]``.
      num_examples: ``(num_clients,)`` int32, the number of valid examples of each client.
      posterior: :class:`GaussianPosterior` with stacked leaves, or ``None`` when no exact local
        posterior is known (non-quadratic losses).
    """

    data: Any
    num_examples: jax.Array
    posterior: GaussianPosterior | None = None


def _field(static: bool = False, **kw):
    return dataclasses.field(metadata={"static": static}, **kw)


@dataclasses.dataclass(frozen=True)
class FederatedProblem:
    """A federated learning problem, a pytree (its arrays are leaves; functions are static).

    Attributes:
      clients: stacked :class:`Clients`.
      init_params: the starting server model (a pytree; ``(d,)`` for least squares).
      optimum: the exact global optimum, or ``None`` when unknown.
      objective_data: arrays that ``objective_fn`` needs (e.g. the global quadratic form).
      loss_fn: ``loss_fn(params, batch) -> scalar``, the *average* loss over a batch, where a
        batch is the client data pytree with a leading batch axis.
      objective_fn: ``objective_fn(objective_data, params) -> scalar``, the global objective.
      name: a short label.
      metrics_fn: optional ``metrics_fn(objective_data, params) -> dict`` of extra scalar
        metrics (e.g. test accuracy), merged into :attr:`fedpa.Result.history` every round.
    """

    clients: Clients
    init_params: Any
    optimum: Any
    objective_data: Any
    loss_fn: Callable = _field(static=True)
    objective_fn: Callable = _field(static=True)
    name: str = _field(static=True, default="problem")
    metrics_fn: Callable | None = _field(static=True, default=None)

    @property
    def num_clients(self) -> int:
        return int(np.shape(self.clients.num_examples)[0])

    @property
    def dim(self) -> int:
        return int(sum(np.size(x) for x in jax.tree.leaves(self.init_params)))

    def global_optimum(self):
        """The exact minimizer of the global objective (``(dim,)`` for least squares)."""
        if self.optimum is None:
            raise ValueError(f"problem {self.name!r} has no known global optimum")
        return self.optimum

    def objective(self, params):
        """The global objective ``F(params) = Σ_i w_i f_i(params)``."""
        return self.objective_fn(self.objective_data, params)

    def client(self, i: int) -> Clients:
        """Client ``i`` (unstacked)."""
        i = _validate.integer("i", i, minimum=0)
        if i >= self.num_clients:
            raise ValueError(f"i={i} exceeds the last client index {self.num_clients - 1}")
        return jax.tree.map(lambda a: a[i], self.clients)

    def client_weights(self):
        """``(num_clients,)`` weights ``w_i ∝ n_i`` summing to one."""
        n = self.clients.num_examples.astype(jnp.result_type(float))
        return n / jnp.sum(n)


jax.tree_util.register_dataclass(
    FederatedProblem,
    data_fields=["clients", "init_params", "optimum", "objective_data"],
    meta_fields=["loss_fn", "objective_fn", "metrics_fn"],
    # The name is a label, not structure: problems that differ only in name share compiled code
    # (a tree operation, e.g. jit's output or stacking, resets it to "problem").
    drop_fields=["name"],
)


# --------------------------------------------------------------------------------------------
# Least squares


class QuadraticForm(NamedTuple):
    """``F(x) = ½ xᵀ H x - gᵀ x + c``."""

    hessian: jax.Array
    linear: jax.Array
    constant: jax.Array


def _quadratic_objective(form: QuadraticForm, params):
    return 0.5 * params @ (form.hessian @ params) - form.linear @ params + form.constant


def _least_squares_loss(prior_precision: float) -> Callable:
    def loss(params, batch):
        residual = batch["x"] @ params - batch["y"]
        return 0.5 * jnp.mean(residual**2) + 0.5 * prior_precision * jnp.sum(params**2)

    return loss


_LOSS_CACHE: dict[float, Callable] = {}


def _cached_loss(prior_precision: float) -> Callable:
    # One function object per prior so that jit caches compiled rounds across problems.
    if prior_precision not in _LOSS_CACHE:
        _LOSS_CACHE[prior_precision] = _least_squares_loss(prior_precision)
    return _LOSS_CACHE[prior_precision]


@jax.jit
def _least_squares_stats(features, targets, prior_precision):
    """Client posteriors ``(μ_i, chol A_i)`` and the global quadratic form, in one compile."""
    num_clients, n, dim = features.shape
    eye = jnp.eye(dim, dtype=features.dtype)
    hessians = jnp.einsum("cni,cnj->cij", features, features) / n + prior_precision * eye
    linears = jnp.einsum("cni,cn->ci", features, targets) / n
    constants = 0.5 * jnp.mean(targets**2, axis=1)
    chol = jnp.linalg.cholesky(hessians)
    means = jax.scipy.linalg.cho_solve((chol, True), linears[..., None])[..., 0]
    weights = jnp.full((num_clients,), 1.0 / num_clients, features.dtype)
    form = QuadraticForm(
        hessian=jnp.einsum("c,cij->ij", weights, hessians),
        linear=weights @ linears,
        constant=weights @ constants,
    )
    return means, chol, form, jnp.linalg.solve(form.hessian, form.linear)


def least_squares_from_data(
    features, targets, *, prior_precision: float = 1e-3, name: str = "least_squares"
) -> FederatedProblem:
    """A federated least-squares problem from stacked data (equal examples per client).

    Args:
      features: ``(num_clients, n, d)``.
      targets: ``(num_clients, n)``.
      prior_precision: ``λ >= 0``, the weak Gaussian prior (an L2 penalty ``λ/2 ‖x‖²`` in each
        ``f_i``). With ``λ = 0`` every ``X_iᵀX_i`` must be invertible.
    """
    fshape, tshape = np.shape(features), np.shape(targets)
    if len(fshape) != 3:
        raise ValueError(f"features must have shape (num_clients, n, d), got shape {fshape}")
    if tshape != fshape[:2]:
        raise ValueError(
            f"targets must have shape (num_clients, n) = {fshape[:2]} to match features, "
            f"got shape {tshape}"
        )
    _validate.real("prior_precision", prior_precision, low=0.0)
    features = jnp.asarray(features)
    targets = jnp.asarray(targets, features.dtype)
    num_clients, n, dim = fshape
    means, chol, form, optimum = _least_squares_stats(features, targets, prior_precision)
    clients = Clients(
        data={"x": features, "y": targets},
        num_examples=jnp.full((num_clients,), n, jnp.int32),
        posterior=GaussianPosterior(mean=means, precision_cholesky=chol),
    )
    return FederatedProblem(
        clients=clients,
        init_params=jnp.zeros((dim,), features.dtype),
        optimum=optimum,
        objective_data=form,
        loss_fn=_cached_loss(float(prior_precision)),
        objective_fn=_quadratic_objective,
        name=name,
    )


def _normal(key, shape, dtype):
    # Drawn flat and reshaped: XLA:CPU compiles threefry for rank-3 shapes very slowly.
    return jax.random.normal(key, (math.prod(shape),), dtype).reshape(shape)


def _random_rotations(key, num, dim, dtype):
    """``(num, dim, dim)`` Haar-random orthogonal matrices (QR with sign correction)."""
    q, r = jnp.linalg.qr(_normal(key, (num, dim, dim), dtype))
    return q * jnp.sign(jnp.diagonal(r, axis1=-2, axis2=-1))[..., None, :]


@partial(jax.jit, static_argnames=("num_clients", "n", "dim"))
def _generate_least_squares(
    key, optima_spread, hessian_spread, noise, prior_precision, *, num_clients, n, dim
):
    dtype = jnp.result_type(float)
    k_w, k_delta, k_rot, k_spec, k_x, k_eps = jax.random.split(key, 6)
    w = jax.random.normal(k_w, (dim,), dtype)
    optima = w + optima_spread * jax.random.normal(k_delta, (num_clients, dim), dtype)
    rotations = _random_rotations(k_rot, num_clients, dim, dtype)
    log_spectrum = hessian_spread * jax.random.uniform(
        k_spec, (num_clients, dim), dtype, minval=-1.0, maxval=1.0
    )
    # features = z diag(exp(h u / 2)) Qᵀ, so Cov = Q diag(exp(h u)) Qᵀ.
    z = _normal(k_x, (num_clients, n, dim), dtype)
    features = (z * jnp.exp(0.5 * log_spectrum)[:, None, :]) @ jnp.swapaxes(rotations, 1, 2)
    targets = jnp.einsum("cnd,cd->cn", features, optima)
    targets = targets + noise * jax.random.normal(k_eps, (num_clients, n), dtype)
    gram = jnp.einsum("cni,cnj->ij", features, features) / (num_clients * n)
    scale = jnp.sqrt(jnp.linalg.eigvalsh(gram + prior_precision * jnp.eye(dim, dtype=dtype))[-1])
    # Scaling features by 1/s scales the data Hessian by 1/s²; the prior term stays λ.
    return features / scale, targets


def least_squares(
    key,
    num_clients: int = 100,
    samples_per_client: int = 500,
    dim: int = 10,
    heterogeneity: float = 1.0,
    *,
    noise: float = 1.0,
    prior_precision: float = 1e-3,
    optima_spread: float | None = None,
    hessian_spread: float | None = None,
) -> FederatedProblem:
    """Synthetic federated least squares with heterogeneity knobs.

    Client ``i`` draws features ``a ~ N(0, Σ_i)`` and targets ``y = aᵀ w_i + ε``,
    ``ε ~ N(0, noise²)``. Two spreads move the clients apart, both ``heterogeneity = h`` unless
    given separately:

    * the client optima: ``w_i = w + s_opt · δ_i`` with ``w, δ_i ~ N(0, I)``
      (``optima_spread = s_opt``);
    * the client Hessians: ``Σ_i = Q_i diag(exp(s_hess u_i)) Q_iᵀ`` with ``Q_i`` a random
      rotation and ``u_i ~ U(-1, 1)^d`` (``hessian_spread = s_hess``).

    FedAvg's fixed point is biased when the client Hessians differ *and* the client optima differ
    (with equal optima every client's local solution is the global one; with equal Hessians the
    weighted average of the optima is the optimum), so at ``h = 0`` the effect the paper studies
    vanishes, and it also vanishes if either spread alone is zero (up to sampling noise in the
    data's Hessians).

    Features are finally rescaled so that the global Hessian ``Σ_i w_i A_i`` has largest
    eigenvalue one (up to the prior's ``λ``): a server step of size one on the averaged exact
    delta is then stable.

    Args:
      key: a PRNG key.
      num_clients: number of clients, ``>= 1``.
      samples_per_client: examples per client, ``>= 1``.
      dim: model dimension ``d``, ``>= 1``.
      heterogeneity: ``h >= 0``, the default of both spreads.
      noise: target noise standard deviation, ``>= 0``.
      prior_precision: ``λ > 0``, precision of the weak Gaussian prior.
      optima_spread: ``>= 0``, the spread of the client optima (default ``h``).
      hessian_spread: ``>= 0``, the spread of the client Hessians' log-spectra (default ``h``).
    """
    num_clients = _validate.integer("num_clients", num_clients, minimum=1)
    n = _validate.integer("samples_per_client", samples_per_client, minimum=1)
    dim = _validate.integer("dim", dim, minimum=1)
    _validate.real("heterogeneity", heterogeneity, low=0.0)
    _validate.real("noise", noise, low=0.0)
    _validate.real("prior_precision", prior_precision, low=0.0, low_open=True)
    spreads = {"optima_spread": optima_spread, "hessian_spread": hessian_spread}
    for name, value in spreads.items():
        if value is None:
            spreads[name] = float(heterogeneity)
        else:
            spreads[name] = float(_validate.real(name, value, low=0.0))
    features, targets = _generate_least_squares(
        key,
        spreads["optima_spread"],
        spreads["hessian_spread"],
        float(noise),
        float(prior_precision),
        num_clients=num_clients,
        n=n,
        dim=dim,
    )
    return least_squares_from_data(
        features,
        targets,
        prior_precision=prior_precision,
        name=(
            f"least_squares(d={dim}, optima={spreads['optima_spread']:g}, "
            f"hessians={spreads['hessian_spread']:g})"
        ),
    )


@partial(jax.jit, static_argnames=("n",))
def _generate_quadratic(key, means, hessians, *, n):
    num_clients, dim = means.shape
    k_z, k_e = jax.random.split(key)
    z = _normal(k_z, (num_clients, n, dim), means.dtype)
    # Whiten so that zᵀz / n = I exactly, then color with chol(A).
    z_chol = jnp.linalg.cholesky(jnp.einsum("cni,cnj->cij", z, z) / n)
    z = jnp.swapaxes(
        jax.scipy.linalg.solve_triangular(z_chol, jnp.swapaxes(z, 1, 2), lower=True), 1, 2
    )
    features = jnp.einsum("cnj,cij->cni", z, jnp.linalg.cholesky(hessians))
    # Residuals orthogonal to the features keep the exact optimum at μ_i.
    eps = jax.random.normal(k_e, (num_clients, n), means.dtype)
    eps = eps - jnp.einsum("cni,ci->cn", z, jnp.einsum("cni,cn->ci", z, eps) / n)
    targets = jnp.einsum("cni,ci->cn", features, means) + eps
    return features, targets


def quadratic(
    key,
    means,
    hessians,
    samples_per_client: int = 1000,
    *,
    name: str = "quadratic",
) -> FederatedProblem:
    """Least-squares data whose client objectives are *exactly* the given quadratics.

    Client ``i``'s data ``(X_i, y_i)`` is built so that ``X_iᵀX_i / n = A_i`` and the
    least-squares solution is ``μ_i`` exactly, so ``f_i(x) = ½ (x - μ_i)ᵀ A_i (x - μ_i) + c_i``
    while mini-batches still give noisy gradients (for SGD and FedAvg).

    Args:
      key: a PRNG key.
      means: ``(num_clients, d)`` client optima ``μ_i``.
      hessians: ``(num_clients, d, d)`` symmetric positive definite ``A_i``.
      samples_per_client: ``n > d``.
    """
    means = jnp.asarray(means, jnp.result_type(float))
    hessians = jnp.asarray(hessians, means.dtype)
    if means.ndim != 2:
        raise ValueError(f"means must have shape (num_clients, d), got shape {means.shape}")
    num_clients, dim = means.shape
    if hessians.shape != (num_clients, dim, dim):
        raise ValueError(
            f"hessians must have shape {(num_clients, dim, dim)} to match means, "
            f"got shape {hessians.shape}"
        )
    n = _validate.integer("samples_per_client", samples_per_client, minimum=dim + 1)
    if not np.all(np.linalg.eigvalsh(np.asarray(hessians)) > 0):
        raise ValueError("hessians must be symmetric positive definite")
    features, targets = _generate_quadratic(key, means, hessians, n=n)
    return least_squares_from_data(features, targets, prior_precision=0.0, name=name)


def quadratic_2d(key=None, samples_per_client: int = 1000) -> FederatedProblem:
    """The paper's two-client, two-dimensional illustration.

    Two elongated quadratics whose long axes cross: the global optimum (the mode of the product
    of the two local posteriors) is far from the midpoint of the client optima, where FedAvg with
    many local steps ends up.
    """
    if key is None:
        key = jax.random.key(0)

    def rotated(angle, eigs):
        c, s = np.cos(angle), np.sin(angle)
        q = np.array([[c, -s], [s, c]])
        return q @ np.diag(eigs) @ q.T

    means = np.array([[-1.0, 1.0], [1.0, 1.0]])
    hessians = np.stack([rotated(np.pi / 3, [1.0, 0.05]), rotated(-np.pi / 3, [1.0, 0.05])])
    return quadratic(key, means, hessians, samples_per_client, name="quadratic_2d")
