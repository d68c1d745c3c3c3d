"""The compiled federated round loop.

:func:`server` returns a blackjax-style kernel pair ``init(params) -> ServerState`` and
``step(state, key, problem) -> (state, metrics)`` for one round; :func:`run` scans ``step`` over
rounds inside one ``jit``. Inside a round: sample ``clients_per_round`` clients uniformly without
replacement, ``vmap`` the client update over them, average the deltas weighted by example counts,
and let an optax optimizer apply the average as a pseudo-gradient. No Python loop over clients or
rounds; no host round-trip inside the loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from . import _validate
from .algorithms import Algorithm
from .problems import FederatedProblem

__all__ = [
    "ServerState",
    "Server",
    "Result",
    "DivergenceError",
    "server",
    "run",
    "run_many",
    "stack_problems",
    "check_run_args",
]


class ServerState(NamedTuple):
    params: Any
    opt_state: Any
    round: jax.Array


class Server(NamedTuple):
    init: Callable[[Any], ServerState]
    step: Callable[..., tuple[ServerState, dict]]


class Result(NamedTuple):
    """What :func:`run` returns.

    Attributes:
      params: the final server model.
      history: per-round NumPy arrays, each ``(rounds,)``, measured *after* the round's update:
        ``objective`` (global objective), ``dist_to_optimum`` (``‖x - x*‖``, when the optimum is
        known) and ``finite`` (all params finite).
      state: the final :class:`ServerState` (to continue a run).
    """

    params: Any
    history: dict[str, np.ndarray]
    state: ServerState


class DivergenceError(FloatingPointError):
    """A run produced NaN or inf parameters; ``round`` is the first bad round (0-based)."""

    def __init__(self, round_index: int, name: str):
        self.round = round_index
        super().__init__(
            f"{name} diverged: the server parameters became NaN/inf at round {round_index} "
            "(0-based); try a smaller server or local learning rate"
        )


def _tree_dist(a, b):
    leaves = jax.tree.leaves(jax.tree.map(lambda x, y: jnp.sum((x - y) ** 2), a, b))
    return jnp.sqrt(sum(leaves))


def _all_finite(tree):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def metrics(problem: FederatedProblem, params) -> dict:
    """The per-round metrics of :class:`Result.history` for ``params``."""
    out = {"objective": problem.objective(params), "finite": _all_finite(params)}
    if problem.optimum is not None:
        out["dist_to_optimum"] = _tree_dist(params, problem.optimum)
    if problem.metrics_fn is not None:
        out.update(problem.metrics_fn(problem.objective_data, params))
    return out


def server(
    client_update: Callable,
    clients_per_round: int,
    server_optimizer: optax.GradientTransformation,
    *,
    client_chunk_size: int | None = None,
    mesh: Mesh | None = None,
) -> Server:
    """One federated round as a pure kernel.

    Args:
      client_update: ``(loss_fn, params, client, key) -> delta``.
      clients_per_round: ``m``, clients sampled without replacement each round.
      server_optimizer: an optax transformation; the averaged delta is its gradient.
      client_chunk_size: evaluate the ``m`` client updates ``client_chunk_size`` at a time (a
        ``lax.scan`` over chunks of a ``vmap``, accumulating the weighted sum of deltas) to bound
        memory; only the chunk's clients' data is gathered. ``None`` vmaps all ``m`` at once.
      mesh: a ``jax.sharding.Mesh``; the clients of a round (of a chunk) are sharded over all of
        its devices, server state replicated. When the device count does not divide the clients,
        the round is padded with repeated clients of weight zero (same result).
    """
    num_devices = 1 if mesh is None else int(mesh.size)
    chunk = clients_per_round if client_chunk_size is None else client_chunk_size
    chunk = -(-min(chunk, clients_per_round) // num_devices) * num_devices
    num_chunks = -(-clients_per_round // chunk)
    pad = num_chunks * chunk - clients_per_round
    mesh_axes = None if mesh is None else tuple(mesh.axis_names)

    def shard(x, spec):
        if mesh is None:
            return x
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))

    def init(params) -> ServerState:
        return ServerState(params, server_optimizer.init(params), jnp.zeros((), jnp.int32))

    def step(state: ServerState, key, problem: FederatedProblem):
        k_select, k_clients = jax.random.split(key)
        selected = jax.random.choice(
            k_select, problem.num_clients, (clients_per_round,), replace=False
        )
        keys = jax.random.split(k_clients, clients_per_round)
        counts = problem.clients.num_examples[selected].astype(jnp.result_type(float))
        weights = counts / jnp.sum(counts)
        if pad:  # repeat the first client with weight zero up to whole chunks
            selected = jnp.concatenate([selected, jnp.broadcast_to(selected[0], (pad,))])
            keys = jnp.concatenate([keys, jnp.broadcast_to(keys[0], (pad,))])
            weights = jnp.concatenate([weights, jnp.zeros((pad,), weights.dtype)])
        params = shard(state.params, P())

        def weighted_sum(sel, ks, w):
            # Gather only these clients' data; with a mesh each device gathers its own clients.
            sel, ks, w = shard(sel, P(mesh_axes)), shard(ks, P(mesh_axes)), shard(w, P(mesh_axes))
            clients = jax.tree.map(lambda a: a[sel], problem.clients)
            deltas = jax.vmap(lambda c, k: client_update(problem.loss_fn, params, c, k))(
                clients, ks
            )
            return jax.tree.map(lambda d: jnp.tensordot(w.astype(d.dtype), d, 1), deltas)

        if num_chunks == 1:
            mean_delta = weighted_sum(selected, keys, weights)
        else:

            def body(total, xs):
                return jax.tree.map(jnp.add, total, weighted_sum(*xs)), None

            xs = jax.tree.map(
                lambda a: a.reshape(num_chunks, chunk, *a.shape[1:]), (selected, keys, weights)
            )
            mean_delta, _ = jax.lax.scan(body, jax.tree.map(jnp.zeros_like, params), xs)
        mean_delta = shard(mean_delta, P())
        updates, opt_state = server_optimizer.update(mean_delta, state.opt_state, params)
        params = optax.apply_updates(params, updates)
        new_state = ServerState(params, opt_state, state.round + 1)
        return new_state, metrics(problem, params)

    return Server(init, step)


@partial(
    jax.jit,
    static_argnames=(
        "algorithm",
        "rounds",
        "clients_per_round",
        "optimizer",
        "chunk",
        "mesh",
        "trace_params",
    ),
)
def _run_compiled(
    key,
    state,
    problem,
    *,
    algorithm,
    rounds,
    clients_per_round,
    optimizer,
    chunk,
    mesh=None,
    trace_params=False,
):
    """The round loop: burn-in rounds, then the algorithm's rounds, each phase a ``lax.scan``.

    With ``trace_params`` the history also holds ``"params"``: the flattened server model after
    each round, ``(rounds, d)``.
    """
    phases = []
    burnin = min(algorithm.burnin_rounds, rounds) if algorithm.burnin_update is not None else 0
    if burnin:
        phases.append((algorithm.burnin_update, burnin))
    if rounds - burnin:
        phases.append((algorithm.client_update, rounds - burnin))
    keys = jax.random.split(key, rounds)
    histories, start = [], 0
    for update, length in phases:
        srv = server(update, clients_per_round, optimizer, client_chunk_size=chunk, mesh=mesh)

        def body(s, k, srv=srv):
            s, hist = srv.step(s, k, problem)
            if trace_params:
                hist = {**hist, "params": ravel_pytree(s.params)[0]}
            return s, hist

        state, hist = jax.lax.scan(body, state, keys[start : start + length])
        histories.append(hist)
        start += length
    history = jax.tree.map(lambda *h: jnp.concatenate(h), *histories)
    return state, history


@partial(
    jax.jit,
    static_argnames=("algorithm", "rounds", "clients_per_round", "optimizer", "trace_params"),
)
def _run_many_compiled(
    keys, problems, *, algorithm, rounds, clients_per_round, optimizer, trace_params=False
):
    def one(key, problem):
        state = ServerState(
            problem.init_params, optimizer.init(problem.init_params), jnp.zeros((), jnp.int32)
        )
        _, history = _run_compiled(
            key,
            state,
            problem,
            algorithm=algorithm,
            rounds=rounds,
            clients_per_round=clients_per_round,
            optimizer=optimizer,
            chunk=None,
            trace_params=trace_params,
        )
        return history

    return jax.vmap(one)(keys, problems)


def stack_problems(problems) -> FederatedProblem:
    """Stacks same-shaped problems along a new leading axis (to ``vmap`` runs over them).

    The problems must share shapes, model and functions. Their names may differ: the stack is
    named ``"stacked"``, so that runs of problems that differ only in data share one compiled
    loop (the name is static pytree metadata).
    """
    problems = list(problems)
    if not problems:
        raise ValueError("problems must hold at least one FederatedProblem, got none")
    first = problems[0]
    renamed = []
    for i, p in enumerate(problems):
        if not isinstance(p, FederatedProblem):
            raise ValueError(f"problems[{i}] must be a FederatedProblem, got {type(p).__name__}")
        q = dataclasses.replace(p, name="stacked")
        same_structure = jax.tree.structure(q) == jax.tree.structure(renamed[0] if renamed else q)
        shapes = [np.shape(x) for x in jax.tree.leaves(q)]
        if not same_structure or shapes != [np.shape(x) for x in jax.tree.leaves(first)]:
            raise ValueError(
                f"problems[{i}] ({p.name}) must have the same shapes, model and functions as "
                f"problems[0] ({first.name}) to be run together"
            )
        renamed.append(q)
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *renamed)


def run_many(
    algorithm: Algorithm,
    problems,
    rounds: int,
    clients_per_round: int,
    server_optimizer: optax.GradientTransformation | None = None,
    keys=None,
    *,
    trace_params: bool = False,
) -> dict[str, np.ndarray]:
    """Runs ``algorithm`` on several same-shaped problems in one compiled, ``vmap``-ed call.

    Problem ``j`` runs from its own ``init_params`` with run key ``keys[j]`` and gets the history
    that ``fedpa.run(algorithm, problems[j], ..., key=keys[j])`` returns.

    Args:
      problems: a :func:`stack_problems` stack, or a sequence of problems to stack.
      keys: ``(num_problems,)`` PRNG keys (required).
      trace_params: also return ``"params"``, the flattened server model after every round.

    Returns:
      ``{metric: (num_problems, rounds[, d])}`` NumPy arrays. Divergence is not checked: look
      at ``"finite"``.
    """
    if not isinstance(problems, FederatedProblem):
        problems = stack_problems(problems)
    if keys is None:
        raise ValueError("keys must be PRNG keys, one per problem, got None")
    num = int(np.shape(problems.clients.num_examples)[0])
    if np.shape(keys)[:1] != (num,):
        raise ValueError(f"keys must hold one key per problem ({num}), got shape {np.shape(keys)}")
    first = jax.tree.map(lambda a: a[0], problems)
    rounds, clients_per_round, server_optimizer = check_run_args(
        algorithm, first, rounds, clients_per_round, server_optimizer, keys
    )
    history = _run_many_compiled(
        keys,
        problems,
        algorithm=algorithm,
        rounds=rounds,
        clients_per_round=clients_per_round,
        optimizer=server_optimizer,
        trace_params=trace_params,
    )
    return {k: np.asarray(v) for k, v in history.items()}


def check_run_args(algorithm, problem, rounds, clients_per_round, server_optimizer, key):
    """Validates the arguments shared by :func:`run` and its batched variants.

    Returns:
      ``(rounds, clients_per_round, server_optimizer)`` with the default optimizer filled in.
    """
    if not isinstance(algorithm, Algorithm):
        raise ValueError(f"algorithm must be a fedpa Algorithm, got {type(algorithm).__name__}")
    if not isinstance(problem, FederatedProblem):
        raise ValueError(f"problem must be a fedpa FederatedProblem, got {type(problem).__name__}")
    rounds = _validate.integer("rounds", rounds, minimum=1)
    clients_per_round = _validate.integer("clients_per_round", clients_per_round, minimum=1)
    if clients_per_round > problem.num_clients:
        raise ValueError(
            f"clients_per_round={clients_per_round} exceeds num_clients={problem.num_clients}"
        )
    if key is None:
        raise ValueError("key must be a PRNG key (e.g. jax.random.key(0)), got None")
    if server_optimizer is None:
        server_optimizer = _default_optimizer()
    if not isinstance(server_optimizer, optax.GradientTransformation):
        raise ValueError(
            "server_optimizer must be an optax.GradientTransformation, "
            f"got {type(server_optimizer).__name__}"
        )
    return rounds, clients_per_round, server_optimizer


def run(
    algorithm: Algorithm,
    problem: FederatedProblem,
    rounds: int,
    clients_per_round: int,
    server_optimizer: optax.GradientTransformation | None = None,
    key=None,
    *,
    init_params=None,
    state: ServerState | None = None,
    client_chunk_size: int | None = None,
    mesh: Mesh | None = None,
    check_divergence: bool = True,
) -> Result:
    """Runs ``rounds`` federated rounds in one compiled call.

    Args:
      algorithm: an :class:`~fedpa.algorithms.Algorithm` (``fedpa.fedavg(...)``, ...).
      problem: a :class:`~fedpa.problems.FederatedProblem`.
      rounds: number of rounds, ``>= 1``.
      clients_per_round: clients sampled uniformly without replacement each round,
        ``1 <= clients_per_round <= problem.num_clients``.
      server_optimizer: optax transformation applied to the averaged delta
        (default ``optax.sgd(1.0)``).
      key: PRNG key (required). The same key gives bit-identical results.
      init_params: starting model (default ``problem.init_params``).
      state: a :class:`ServerState` to continue from (overrides ``init_params``).
      client_chunk_size: bound memory by evaluating clients in chunks of this size (only a
        chunk's client data is gathered at a time; 10,000 clients per round fit in a few GiB).
      mesh: a ``jax.sharding.Mesh``: each round's clients are sharded over all its devices
        (``NamedSharding``; XLA inserts the all-reduce of the weighted delta), problem data and
        server state are replicated. Clients per round (per chunk) need not divide the device
        count: the round is padded with weight-zero repeats. Multi-host: call
        ``jax.distributed.initialize()`` on every host first and pass a mesh over
        ``jax.devices()``.
      check_divergence: raise :class:`DivergenceError` naming the first round with NaN/inf.

    Returns:
      A :class:`Result`.
    """
    rounds, clients_per_round, server_optimizer = check_run_args(
        algorithm, problem, rounds, clients_per_round, server_optimizer, key
    )
    if client_chunk_size is not None:
        client_chunk_size = _validate.integer("client_chunk_size", client_chunk_size, minimum=1)
    if mesh is not None and not isinstance(mesh, Mesh):
        raise ValueError(f"mesh must be a jax.sharding.Mesh or None, got {type(mesh).__name__}")
    if state is None:
        params = problem.init_params if init_params is None else init_params
        _check_params_like(params, problem.init_params)
        state = server(algorithm.client_update, clients_per_round, server_optimizer).init(params)
    if mesh is not None:
        replicated = NamedSharding(mesh, P())
        problem, state, key = jax.device_put((problem, state, key), replicated)
    state, history = _run_compiled(
        key,
        state,
        problem,
        algorithm=algorithm,
        rounds=rounds,
        clients_per_round=clients_per_round,
        optimizer=server_optimizer,
        chunk=client_chunk_size,
        mesh=mesh,
    )
    history = {k: np.asarray(v) for k, v in history.items()}
    if check_divergence and not history["finite"].all():
        raise DivergenceError(int(np.argmin(history["finite"])), algorithm.name)
    return Result(state.params, history, state)


_DEFAULT_OPTIMIZER: list = []


def _default_optimizer() -> optax.GradientTransformation:
    # One object, so jit caches compiled runs that use the default.
    if not _DEFAULT_OPTIMIZER:
        _DEFAULT_OPTIMIZER.append(optax.sgd(1.0))
    return _DEFAULT_OPTIMIZER[0]


def _check_params_like(params, reference) -> None:
    got = jax.tree.structure(params)
    want = jax.tree.structure(reference)
    if got != want:
        raise ValueError(f"init_params must have the structure {want}, got {got}")
    for p, r in zip(jax.tree.leaves(params), jax.tree.leaves(reference), strict=True):
        if np.shape(p) != np.shape(r):
            raise ValueError(
                f"init_params must have leaf shapes like {np.shape(r)}, got {np.shape(p)}"
            )
