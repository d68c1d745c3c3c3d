"""Small dot products as broadcast-multiply + sum: a jaxpr rewrite for XLA:CPU latency.

A local SGD step on a small model is a handful of tiny ``dot_general`` s (a ``(10, 10)`` batch
times a ``(10,)`` model). XLA:CPU runs each one as a library call, while a multiply followed by
a sum fuses with its neighbours into one generated loop: in setting R of the round-latency
benchmark (2 CPU cores) the rewrite took about an eighth off a FedAvg round and a quarter off a
FedPA-IASG round.
The mathematics is the same; only the order of the floating-point additions may differ.

:func:`small_dots_as_reductions` traces a function to a jaxpr and evaluates it again with every
small floating-point ``dot_general`` replaced, descending into nested ``jit`` calls. Every other
primitive (control flow, custom derivatives, ...) is bound unchanged, so any loss function
works; its derivatives are those of the rewritten computation. A function without a small dot
is called as it is (bit for bit the same program).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core

__all__ = ["small_dots_as_reductions", "BUDGET"]

BUDGET = 4096
"""Multiply-adds of one ``dot_general`` over everything computed at once (all the vmapped
examples) up to which the multiply + sum form was faster on XLA:CPU (2 cores, measured on the
round loop: 10 clients at d = 30 and 40 clients at d = 10 still gained, 10 clients at d = 100
and 100 clients at d = 10 ran 2x slower, the sum then being a poorly vectorized loop)."""


def small_dots_as_reductions(fn: Callable, max_size: int) -> Callable:
    """``fn`` with each floating-point ``dot_general`` of at most ``max_size`` multiply-adds
    computed as a broadcast multiply and a sum (same values up to float reassociation).

    ``fn`` takes and returns pytrees of arrays (positional arguments only). Under ``vmap`` the
    size is that of one example: pass :data:`BUDGET` divided by the number of examples.
    """

    @functools.wraps(fn)
    def rewritten(*args):
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        if not _has_small_float_dot(closed.jaxpr, max_size):
            return fn(*args)  # nothing to rewrite: the computation exactly as written
        outs = _eval(closed.jaxpr, closed.consts, jax.tree.leaves(args), max_size)
        return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

    return rewritten


def _is_small_float_dot(eqn, max_size: int) -> bool:
    lhs, rhs = (v.aval for v in eqn.invars)
    out = eqn.outvars[0].aval
    if not (jnp.issubdtype(lhs.dtype, jnp.floating) and lhs.dtype == rhs.dtype == out.dtype):
        return False
    (contract, _), _ = eqn.params["dimension_numbers"]
    size = math.prod(out.shape) * math.prod(lhs.shape[i] for i in contract)
    return size <= max_size


def _has_small_float_dot(jaxpr, max_size: int) -> bool:
    for eqn in jaxpr.eqns:
        if eqn.primitive is lax.dot_general_p and _is_small_float_dot(eqn, max_size):
            return True
        if _is_jit(eqn) and _has_small_float_dot(eqn.params["jaxpr"].jaxpr, max_size):
            return True
    return False


def _is_jit(eqn) -> bool:
    return eqn.primitive.name in ("jit", "pjit") and "jaxpr" in eqn.params


def _dot_as_reduction(lhs, rhs, dimension_numbers):
    """``lax.dot_general(lhs, rhs, dimension_numbers)`` as multiply + sum.

    The output axes of ``dot_general`` are: batch, lhs free, rhs free. Both operands are
    transposed to ``(batch, free, contracting)``, padded with unit axes so that their free axes
    broadcast against each other, multiplied, and summed over the contracting axes.
    """
    (lc, rc), (lb, rb) = dimension_numbers
    lfree = [i for i in range(lhs.ndim) if i not in (*lc, *lb)]
    rfree = [i for i in range(rhs.ndim) if i not in (*rc, *rb)]
    a = lax.transpose(lhs, (*lb, *lfree, *lc))
    b = lax.transpose(rhs, (*rb, *rfree, *rc))
    nb, nla, nra, nc = len(lb), len(lfree), len(rfree), len(lc)
    a = a.reshape(a.shape[: nb + nla] + (1,) * nra + a.shape[nb + nla :])
    b = b.reshape(b.shape[:nb] + (1,) * nla + b.shape[nb:])
    product = a * b
    if nc == 0:
        return product
    return jnp.sum(product, axis=tuple(range(product.ndim - nc, product.ndim)))


def _eval(jaxpr, consts, args, max_size: int) -> list:
    env = {}

    def read(v):
        return v.val if isinstance(v, core.Literal) else env[v]

    for v, x in zip(jaxpr.constvars, consts, strict=True):
        env[v] = x
    for v, x in zip(jaxpr.invars, args, strict=True):
        env[v] = x
    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        if eqn.primitive is lax.dot_general_p and _is_small_float_dot(eqn, max_size):
            outs = [_dot_as_reduction(*ins, eqn.params["dimension_numbers"])]
        elif _is_jit(eqn):
            inner = eqn.params["jaxpr"]
            outs = _eval(inner.jaxpr, inner.consts, ins, max_size)
        else:
            with eqn.ctx.manager:  # as jax.core.eval_jaxpr binds an equation
                outs = eqn.primitive.bind(*ins, **eqn.primitive.get_bind_params(eqn.params))
            if not eqn.primitive.multiple_results:
                outs = [outs]
        for v, x in zip(eqn.outvars, outs, strict=True):
            if not isinstance(v, core.DropVar):
                env[v] = x
    return [read(v) for v in jaxpr.outvars]
