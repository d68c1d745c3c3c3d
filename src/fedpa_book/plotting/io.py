"""Figures saved atomically with their data and provenance.

Each figure's data is the truth; the PNG is a view of it. :func:`save` writes
``<output_dir>/<chapter>/<name>.png`` (and ``.svg`` on request) next to ``<name>.csv`` (a table,
with ``<name>.params.json`` beside it) or ``<name>.json`` (anything else), each through a
temporary file and an atomic rename, so a crash never leaves a half-written file. The metadata
holds the parameters and the :func:`provenance` of the run (library versions, backend, CPU,
date); the data itself is byte-for-byte deterministic for the same inputs on the same machine
and library versions, and ``fedpa reproduce --check`` compares it elsewhere within tolerances.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import importlib.metadata
import io
import json
import os
import platform
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["save", "atomic_write", "to_jsonable", "provenance", "METADATA_KEYS"]

# Keys of the JSON metadata that describe the run, not the result (``--check`` skips them).
METADATA_KEYS = ("provenance",)


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


@functools.cache
def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def provenance() -> dict[str, Any]:
    """Where and with what a figure was made: library versions, JAX backend, CPU model, date."""
    import jax

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "jax": _version("jax"),
        "jaxlib": _version("jaxlib"),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "backend": jax.default_backend(),
        "devices": [str(d.device_kind) for d in jax.devices()],
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
    }


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
) -> None:
    """Saves a figure, the data behind it and its provenance into ``<output_dir>/<chapter>/``.

    Args:
      fig: a matplotlib figure.
      name: file stem, e.g. ``"fig1_trajectories"``.
      chapter: subfolder, e.g. ``"02_posterior_inference"``.
      data: a pandas ``DataFrame`` (written as ``<name>.csv``, with ``params`` in a sidecar
        ``<name>.params.json``) or any JSON-able structure (written as ``<name>.json`` with
        ``params`` inside). Both metadata files also hold ``provenance`` (:func:`provenance`).
      params: the notebook parameters and seed that produced the figure.
      output_dir: root folder for figures.
      formats: image formats, ``"png"`` and/or ``"svg"``.

    Nothing is returned, so a ``save(...)`` call that ends a notebook cell shows no output.
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
    meta = {"params": to_jsonable(dict(params or {})), "provenance": provenance()}
    if hasattr(data, "to_csv"):
        csv = data.to_csv(index=False, float_format="%.10g", lineterminator="\n")
        atomic_write(folder / f"{name}.csv", csv)
        atomic_write(
            folder / f"{name}.params.json", json.dumps(meta, indent=2, sort_keys=True) + "\n"
        )
    else:
        payload = dict(meta, data=to_jsonable(data))
        atomic_write(folder / f"{name}.json", json.dumps(payload, indent=2, sort_keys=True) + "\n")
    for fmt in formats:
        atomic_write(folder / f"{name}.{fmt}", _figure_bytes(fig, fmt))
