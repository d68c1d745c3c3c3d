"""A grid of configurations × seeds in one compiled, vmapped call.

:func:`sweep` calls a *factory* ``factory(**config) -> (algorithm, server_optimizer)`` inside
one ``vmap`` over the grid's numeric values and another over the seeds, so a whole tuning grid
costs one compile. Grid values that change the algorithm's *structure* (integers that fix shapes,
such as ``local_steps`` or ``num_samples``, strings, ``None`` vs a number) split the grid into
groups, one compile each; every other numeric value is traced. Compiled groups are cached on
(factory, fixed values, traced names, shapes): sweeps that differ only in their traced values,
such as a tuning grid and the configurations kept for evaluation, run one compiled function
(give both the same ``chunk_size`` and ``trace`` names).

Contract: configuration ``i``, seed ``j`` gives what
``fedpa.run(*factory(**configs[i]), problem_j, rounds, clients_per_round,
key=jax.random.fold_in(key, j))`` gives, to float tolerance, where ``problem_j`` is the problem
(or ``problem(jax.random.fold_in(problem_key, j))`` for a problem factory).
"""

from __future__ import annotations

import itertools
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import _validate
from .problems import FederatedProblem
from .rounds import ServerState, check_run_args, run_rounds

__all__ = ["SweepResult", "sweep", "grid_configs", "stack_problems"]


class SweepResult(NamedTuple):
    """What :func:`sweep` returns.

    Attributes:
      configs: the configurations, in the order of the first axis (a list of dicts).
      history: ``{metric: (num_configs, num_seeds, rounds[, d])}`` NumPy arrays (the metrics of
        :class:`fedpa.Result`; no divergence check: see ``"finite"``).
      params: the final server models, a pytree with leaves ``(num_configs, num_seeds, ...)``.
      seeds: the number of seeds.
      traced: the grid names traced (not compiled in) in some structure group; pass them as
        ``trace`` to a later sweep of chosen configurations to reuse this sweep's compilation.
    """

    configs: list[dict]
    history: dict[str, np.ndarray]
    params: Any
    seeds: int
    traced: tuple[str, ...] = ()

    def to_frame(self, metrics: Sequence[str] | None = None):
        """A tidy pandas table: one row per configuration, seed and round (1-based, after the
        round's update), the configuration's values as columns, one column per metric.

        Needs pandas (the ``book`` extra).
        """
        try:
            import pandas as pd
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("SweepResult.to_frame needs pandas (pip install pandas)") from err
        names = [
            m
            for m in (metrics if metrics is not None else self.history)
            if np.ndim(self.history[m]) == 3
        ]
        num_configs, seeds, rounds = np.shape(self.history[names[0]])
        index = pd.MultiIndex.from_product(
            [range(num_configs), range(seeds), range(1, rounds + 1)],
            names=["config", "seed", "round"],
        )
        frame = pd.DataFrame({m: np.asarray(self.history[m]).reshape(-1) for m in names}, index)
        frame = frame.reset_index()
        settings = pd.DataFrame(self.configs)
        settings.index.name = "config"
        return settings.reset_index().merge(frame, on="config").drop(columns="config")


def grid_configs(grid: Mapping[str, Sequence] | Sequence[Mapping[str, Any]]) -> list[dict]:
    """The configurations of ``grid``: the Cartesian product of a ``{name: values}`` mapping
    (the last name varies fastest), or a sequence of configuration dicts as given."""
    if isinstance(grid, Mapping):
        names = list(grid)
        for name in names:
            values = grid[name]
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
                raise ValueError(
                    f"grid[{name!r}] must be a non-empty list of values, got {values!r}"
                )
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grid.values())]
    configs = [dict(c) for c in grid]
    if not configs:
        raise ValueError("grid must hold at least one configuration, got none")
    keys = set(configs[0])
    for i, c in enumerate(configs):
        if set(c) != keys:
            raise ValueError(f"grid[{i}] must have the keys {sorted(keys)}, got {sorted(c)}")
    return configs


def stack_problems(problems: Sequence[FederatedProblem]) -> FederatedProblem:
    """Stacks same-shaped problems along a new leading axis (to ``vmap`` runs over them)."""
    problems = list(problems)
    if not problems:
        raise ValueError("problems must hold at least one FederatedProblem, got none")
    first = problems[0]
    for i, p in enumerate(problems):
        if not isinstance(p, FederatedProblem):
            raise ValueError(f"problems[{i}] must be a FederatedProblem, got {type(p).__name__}")
        same = jax.tree.structure(p) == jax.tree.structure(first)
        shapes = [np.shape(x) for x in jax.tree.leaves(p)]
        if not same or shapes != [np.shape(x) for x in jax.tree.leaves(first)]:
            raise ValueError(
                f"problems[{i}] ({p.name}) must have the same shapes, model and functions as "
                f"problems[0] ({first.name}) to be run together"
            )
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *problems)


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _build(factory, config, where: str):
    try:
        out = factory(**config)
    except ValueError as err:
        raise ValueError(f"{where} ({config}): {err}") from err
    if not (isinstance(out, tuple) and len(out) == 2):
        raise ValueError(
            f"factory must return (algorithm, server_optimizer), got {type(out).__name__}"
        )
    return out


def _groups(factory, configs, trace=()):
    """Splits configurations by structure.

    Returns:
      ``([(indices, traced names), ...], factory(**configs[0]))``: the groups, and the first
      configuration's ``(algorithm, optimizer)`` (built once here, checked by the caller).
    """
    names = list(configs[0])
    numeric = {n for n in names if all(_is_number(c[n]) for c in configs)}
    by_structure: dict[Any, list[int]] = {}
    first = None
    for i, config in enumerate(configs):
        algorithm, optimizer = _build(factory, config, f"configuration {i}")
        _check_factory_output(algorithm, optimizer)
        first = first or (algorithm, optimizer)
        key = (
            jax.tree.structure(algorithm),
            tuple((n, repr(config[n])) for n in names if n not in numeric),
        )
        by_structure.setdefault(key, []).append(i)
    groups = []
    for indices in by_structure.values():
        traced = [
            n for n in sorted(numeric) if n in trace or len({configs[i][n] for i in indices}) > 1
        ]
        groups.append((indices, traced))
    return groups, first


def _check_factory_output(algorithm, optimizer) -> None:
    from .updates import ClientUpdate

    if not isinstance(algorithm, ClientUpdate):
        raise ValueError(
            "factory must return (algorithm, server_optimizer) with algorithm a fedpa "
            f"ClientUpdate, got {type(algorithm).__name__}"
        )
    if not isinstance(optimizer, optax.GradientTransformation):
        raise ValueError(
            "factory must return (algorithm, server_optimizer) with server_optimizer an "
            f"optax.GradientTransformation, got {type(optimizer).__name__}"
        )


def _seed_problems(problem, seeds: int, problem_key):
    """``(problem, batched)``: one shared problem, or a stack with one problem per seed."""
    if isinstance(problem, FederatedProblem):
        return problem, False
    if callable(problem):
        if problem_key is None:
            raise ValueError("problem_key must be a PRNG key when problem is a factory, got None")
        made = [problem(jax.random.fold_in(problem_key, j)) for j in range(seeds)]
        return stack_problems(made), True
    problems = list(problem)
    if len(problems) != seeds:
        raise ValueError(
            f"problem must be a FederatedProblem, a factory key -> problem or one problem per "
            f"seed ({seeds}), got {len(problems)} problems"
        )
    return stack_problems(problems), True


def sweep(
    factory: Callable[..., tuple[Any, optax.GradientTransformation]],
    problem,
    grid: Mapping[str, Sequence] | Sequence[Mapping[str, Any]],
    rounds: int,
    clients_per_round: int,
    seeds: int = 1,
    key=None,
    *,
    problem_key=None,
    chunk_size: int | None = None,
    trace: Sequence[str] = (),
    client_chunk_size: int | None = None,
    trace_params: bool = False,
) -> SweepResult:
    """Runs every configuration of ``grid`` on ``seeds`` seeds: one compile per structure.

    Args:
      factory: ``factory(**config) -> (algorithm, server_optimizer)``. It is called once per
        configuration on concrete values (to validate them and find the structure, before any
        compute) and once more inside the compiled function with the grid's numeric values
        traced, so build the optimizer inside it (``optax.sgd(server_lr)``).
      problem: a :class:`~fedpa.problems.FederatedProblem` shared by all seeds, a sequence of
        ``seeds`` same-shaped problems, or a factory ``key -> problem`` called with
        ``jax.random.fold_in(problem_key, j)`` for seed ``j``.
      grid: ``{name: [values]}`` (Cartesian product, last name fastest) or a list of dicts.
      rounds, clients_per_round: as in :func:`fedpa.run`.
      seeds: independent runs per configuration, ``>= 1``; seed ``j`` uses the run key
        ``jax.random.fold_in(key, j)``.
      key: PRNG key (required).
      problem_key: PRNG key for a problem factory.
      chunk_size: runs (configuration × seed pairs) per compiled call; a group's runs are
        evaluated in calls of exactly this many (the last one padded by repeating a run), so
        every sweep with the same structure and ``chunk_size`` reuses one compilation, and memory
        stays bounded for large grids. ``None``: all of a group's runs in one call.
      trace: grid names to trace even where a structure group holds a single value (by default
        only values that vary within a group are traced; the others are compiled in as
        constants). Name every numeric axis of a tuning grid here when sweeping its chosen
        configurations again, so that they reuse the tuning sweep's compilation. Names that
        fix shapes (integers the algorithm's structure depends on) cannot be traced.
      client_chunk_size: as in :func:`fedpa.run`.
      trace_params: also record the flattened model after every round.

    Returns:
      A :class:`SweepResult`.
    """
    configs = grid_configs(grid)
    seeds = _validate.integer("seeds", seeds, minimum=1)
    if chunk_size is not None:
        chunk_size = _validate.integer("chunk_size", chunk_size, minimum=1)
    trace = _check_trace(trace, configs)
    if client_chunk_size is not None:
        client_chunk_size = _validate.integer("client_chunk_size", client_chunk_size, minimum=1)
    problems, batched = _seed_problems(problem, seeds, problem_key)
    first = jax.tree.map(lambda a: a[0], problems) if batched else problems
    groups, (algorithm, optimizer) = _groups(factory, configs, trace)
    rounds, clients_per_round, _ = check_run_args(
        algorithm, first, rounds, clients_per_round, optimizer, key
    )
    seed_keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(seeds))
    static = (
        ("rounds", rounds),
        ("clients_per_round", clients_per_round),
        ("client_chunk_size", client_chunk_size),
        ("trace_params", trace_params),
    )
    histories: list = [None] * len(configs)
    traced_names: set = set()
    finals: list = [None] * len(configs)
    for indices, traced in groups:
        fixed = {n: v for n, v in configs[indices[0]].items() if n not in traced}
        values = {n: _stack([configs[i][n] for i in indices]) for n in traced}
        traced_names.update(traced)
        fn = _compiled(factory, fixed, tuple(traced), static, batched)
        hist, params = _run_group(
            fn, values, len(indices), seeds, seed_keys, problems, batched, chunk_size
        )
        for pos, i in enumerate(indices):
            histories[i] = jax.tree.map(lambda a, pos=pos: a[pos], hist)
            finals[i] = jax.tree.map(lambda a, pos=pos: a[pos], params)
    history = {k: np.stack([h[k] for h in histories]) for k in histories[0]}
    params = jax.tree.map(lambda *p: np.stack(p), *finals)
    return SweepResult(configs, history, params, seeds, tuple(sorted(traced_names)))


def _stack(values):
    if all(isinstance(v, numbers.Integral) for v in values):
        return jnp.asarray(values, jnp.int32)
    return jnp.asarray(values, jnp.result_type(float))


def _check_trace(trace, configs) -> frozenset:
    if isinstance(trace, str) or not isinstance(trace, Sequence | set | frozenset):
        raise ValueError(f"trace must be a sequence of grid names, got {trace!r}")
    for name in trace:
        if name not in configs[0]:
            raise ValueError(
                f"trace names {name!r}, which is not a grid name ({sorted(configs[0])})"
            )
        if not all(_is_number(c[name]) for c in configs):
            raise ValueError(f"trace names {name!r}, whose grid values are not all numbers")
    return frozenset(trace)


_CACHE_SIZE = 64
_cache: dict = {}  # insertion-ordered: the oldest entry is evicted first


def _compiled(factory, fixed, traced, static, batched):
    """The jitted function of one structure group, cached across sweeps (jit then caches one
    executable per shape: per ``chunk_size`` and problem shapes)."""
    key = (factory, tuple((n, repr(v)) for n, v in sorted(fixed.items())), traced, static, batched)
    try:
        hash(key)
    except TypeError:  # an unhashable factory: no cache
        key = None
    if key is not None and key in _cache:
        _cache[key] = _cache.pop(key)  # most recently used last
        return _cache[key]
    options = dict(static)

    @jax.jit
    def sweep_group(values, keys, problems):
        def one_run(traced_values, key, problem):
            algorithm, optimizer = factory(**fixed, **traced_values)
            params = problem.init_params
            state = ServerState(params, optimizer.init(params), jnp.zeros((), jnp.int32))
            state, history = run_rounds(key, state, problem, algorithm, optimizer, **options)
            return history, state.params

        return jax.vmap(one_run, in_axes=(0, 0, 0 if batched else None))(values, keys, problems)

    if key is not None:
        _cache[key] = sweep_group
        while len(_cache) > _CACHE_SIZE:
            _cache.pop(next(iter(_cache)))
    return sweep_group


def _host_workers() -> int:
    """Host threads that run chunks at once: one per core on the CPU backend (XLA:CPU runs these
    small programs on one core each), one elsewhere (an accelerator runs them in turn)."""
    if jax.default_backend() != "cpu":
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - platforms without sched_getaffinity
        return max(1, os.cpu_count() or 1)


def _has_custom_call(fn, args) -> bool:
    """Whether the compiled program calls a custom kernel (e.g. LAPACK's triangular solve, which
    exact Gaussian samples use). Two such programs executing at once on host threads deadlocked
    on XLA:CPU (jaxlib 0.10.2: exact samples at d = 100, never at d = 10), so their chunks run
    one after another. Compiling here fills the cache that the calls then use."""
    return "custom_call_target=" in fn.lower(*args).compile().as_text()


def _run_group(fn, values, num_configs, seeds, seed_keys, problems, batched, chunk):
    """Runs ``num_configs × seeds`` runs (configuration-major) through ``fn`` in calls of
    ``chunk`` runs; returns NumPy ``(history, params)`` with leading axes ``(configs, seeds)``.
    ``problems``: one problem per seed stacked (``batched``), or one shared problem.
    Calls are independent, so on the CPU they run on one host thread per core (same results)."""
    runs = num_configs * seeds
    config_of = np.repeat(np.arange(num_configs), seeds)
    seed_of = np.tile(np.arange(seeds), num_configs)
    chunk = runs if chunk is None else chunk

    def arguments(start):
        take = np.arange(start, start + chunk).clip(max=runs - 1)  # pad with the last run
        c, j = jnp.asarray(config_of[take]), jnp.asarray(seed_of[take])
        probs = jax.tree.map(lambda a: a[j], problems) if batched else problems
        return {n: v[c] for n, v in values.items()}, seed_keys[j], probs

    def call(start):
        return jax.tree.map(np.asarray, fn(*arguments(start)))

    starts = range(0, runs, chunk)
    workers = min(len(starts), _host_workers())
    if workers > 1 and _has_custom_call(fn, arguments(0)):
        workers = 1
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            outputs = list(pool.map(call, starts))
    else:
        outputs = [call(start) for start in starts]
    out = jax.tree.map(lambda *a: np.concatenate(a)[:runs], *outputs)
    return jax.tree.map(lambda a: a.reshape(num_configs, seeds, *a.shape[1:]), out)
