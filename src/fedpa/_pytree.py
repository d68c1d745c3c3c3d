"""Frozen dataclasses registered as pytrees: numbers are leaves, structure is static.

Algorithms, client updates and samplers are written with :func:`pytree_dataclass`. Fields made
with :func:`static` (integers that fix array shapes, names of variants, functions) are part of
the tree structure, so ``jit`` compiles once per structure; every other field is a leaf
(float hyperparameters), traced by ``jit`` and batched by ``vmap``: a new value never recompiles.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

__all__ = ["pytree_dataclass", "static", "replace"]


def static(**kwargs: Any) -> Any:
    """A dataclass field that belongs to the tree structure (hashable, never traced)."""
    return dataclasses.field(metadata={"static": True}, **kwargs)


def pytree_dataclass(cls: type) -> type:
    """``@dataclass(frozen=True)`` plus ``jax.tree_util.register_dataclass``.

    Constructors of these classes do no validation (``jax`` rebuilds them with tracers and
    placeholders); the public factory functions validate concrete values before any compute.
    """
    cls = dataclasses.dataclass(frozen=True)(cls)
    fields = dataclasses.fields(cls)
    meta = [f.name for f in fields if f.metadata.get("static", False)]
    data = [f.name for f in fields if not f.metadata.get("static", False)]
    return jax.tree_util.register_dataclass(cls, data_fields=data, meta_fields=meta)


def replace(obj: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` (a copy with some fields changed)."""
    return dataclasses.replace(obj, **changes)
