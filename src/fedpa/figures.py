"""Figure helpers for the book: one theme, and figures saved atomically with their data.

Each figure's data is the truth; the PNG is a view of it. :func:`save` writes
``<output_dir>/<chapter>/<name>.png`` (and ``.svg`` on request) next to ``<name>.csv`` (a table)
or ``<name>.json`` (anything else), each through a temporary file and an atomic rename, so a crash
never leaves a half-written file. Data files are byte-for-byte deterministic for the same inputs.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["theme", "save", "atomic_write", "to_jsonable", "ALGORITHM_COLORS"]

# One color per algorithm family, the same in every chapter.
ALGORITHM_COLORS = {
    "mini-batch SGD": "#7f7f7f",
    "FedAvg": "#d62728",
    "FedPA": "#1f77b4",
    "FedPA-exact": "#1f77b4",
    "FedPA-IASG": "#2ca02c",
    "optimum": "#000000",
}


def theme() -> None:
    """The book's seaborn theme (call once per notebook)."""
    import matplotlib as mpl
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    mpl.rcParams.update(
        {
            "figure.dpi": 100,
            "savefig.dpi": 150,
            "savefig.bbox": "tight",
            "svg.hashsalt": "fedpa",  # deterministic SVG ids
            "axes.titleweight": "bold",
        }
    )


def to_jsonable(obj: Any) -> Any:
    """Converts NumPy/JAX scalars and arrays inside ``obj`` to plain Python for ``json``."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (str, bool, int)) or obj is None:
        return obj
    if isinstance(obj, float):
        return obj
    arr = np.asarray(obj)
    if arr.dtype.kind in "biuf":
        return arr.tolist()
    return str(obj)


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Writes ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    A crash or an interrupt leaves either the old file or the new one, never half of one. The
    file gets the usual permissions (``0o666`` less the umask). ``str`` is written as UTF-8.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def _figure_bytes(fig, fmt: str) -> bytes:
    buf = io.BytesIO()
    metadata = {"Software": None} if fmt == "png" else {"Date": None, "Creator": None}
    fig.savefig(buf, format=fmt, metadata=metadata)
    return buf.getvalue()


def save(
    fig,
    name: str,
    *,
    chapter: str,
    data: Any,
    params: Mapping[str, Any] | None = None,
    output_dir: str | os.PathLike = "figures",
    formats: Iterable[str] = ("png",),
) -> dict[str, Path]:
    """Saves a figure and the data behind it into ``<output_dir>/<chapter>/``.

    Args:
      fig: a matplotlib figure.
      name: file stem, e.g. ``"fig1_trajectories"``.
      chapter: subfolder, e.g. ``"02_posterior_inference"``.
      data: a pandas ``DataFrame`` (written as ``<name>.csv``, with ``params`` in a sidecar
        ``<name>.params.json``) or any JSON-able structure (written as ``<name>.json`` with
        ``params`` inside).
      params: the notebook parameters and seed that produced the figure.
      output_dir: root folder for figures.
      formats: image formats, ``"png"`` and/or ``"svg"``.

    Returns:
      ``{kind: path}`` of every file written.
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"name must be a plain file stem, got {name!r}")
    if not chapter or "/" in chapter:
        raise ValueError(f"chapter must be a plain folder name, got {chapter!r}")
    formats = tuple(formats)
    for fmt in formats:
        if fmt not in ("png", "svg"):
            raise ValueError(f"formats must be 'png' and/or 'svg', got {fmt!r}")
    folder = Path(output_dir) / chapter
    params = to_jsonable(dict(params or {}))
    written: dict[str, Path] = {}
    if hasattr(data, "to_csv"):
        csv = data.to_csv(index=False, float_format="%.10g", lineterminator="\n")
        written["csv"] = atomic_write(folder / f"{name}.csv", csv.encode())
        meta = json.dumps({"params": params}, indent=2, sort_keys=True) + "\n"
        written["params"] = atomic_write(folder / f"{name}.params.json", meta.encode())
    else:
        payload = {"params": params, "data": to_jsonable(data)}
        text = json.dumps(payload, indent=2, sort_keys=True) + "\n"
        written["json"] = atomic_write(folder / f"{name}.json", text.encode())
    for fmt in formats:
        written[fmt] = atomic_write(folder / f"{name}.{fmt}", _figure_bytes(fig, fmt))
    return written
