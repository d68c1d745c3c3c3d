"""fedpa_book: the machinery of the FedPA book. It imports :mod:`fedpa`, never the reverse.

::

    fedpa_book.experiments   the chapters' experiment drivers (tidy tables)
    fedpa_book.plotting      theme, colours, figure panels, atomic save of figure + data + metadata
    fedpa_book.reproduce     chapter specs, papermill execution, ``--check``, the jupyter-book build
    fedpa_book.glue          myst-nb's ``glue``: a computed number into the prose ({glue:text})
    fedpa_book.parameters    a notebook's parameters (for a figure's metadata), read from its cell

Command line: ``fedpa reproduce ...``, ``fedpa book`` (or ``python -m fedpa_book ...``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["glue", "parameters"]


def glue(name: str, value: Any, display: bool = False) -> None:
    """Stores ``value`` under ``name`` for ``{glue:text}`name:fmt``` in the chapter's prose.

    A thin wrapper of :func:`myst_nb.glue` that shows nothing by default, so the number appears
    only where the prose places it. NumPy and JAX scalars are stored as Python numbers: myst-nb
    formats ``{glue:text}`name:.2f``` from the value's text form, and NumPy 2 writes
    ``np.float64(0.5)`` there, which it cannot parse.
    """
    from myst_nb import glue as _glue

    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()
    _glue(name, value, display=display)


def parameters(namespace: Mapping[str, Any], chapter: str) -> dict[str, Any]:
    """The values of ``chapter``'s parameters in ``namespace`` (a notebook's ``globals()``).

    The names are those of the notebook's cell tagged ``parameters`` (read with
    ``papermill.inspect_notebook``), less ``output_dir``: one declaration, so the figure metadata
    never drifts from the parameters the run actually used.
    """
    from .reproduce.spec import find_root, notebook_parameters

    root = find_root()
    notebook = root / "book" / f"{chapter}.md"
    names = [n for n in notebook_parameters(notebook) if n != "output_dir"]
    missing = [n for n in names if n not in namespace]
    if missing:
        raise ValueError(
            f"parameters: {', '.join(missing)} of chapter {chapter!r} are not defined in the "
            "namespace; pass the notebook's globals()"
        )
    return {name: namespace[name] for name in names}
