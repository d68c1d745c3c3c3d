"""``fedpa reproduce --check``: do the committed figures still follow from the code?

:func:`check` regenerates a profile into a temporary folder and :func:`compare_folders` compares
every committed data file (``figures/<stem>/*.csv`` and ``*.json``) with its regenerated twin,
column by column, within the tolerances the chapter's spec declares (:class:`spec.Tolerance`:
an absolute floor tied to the column's scale plus a relative part). Columns declared as
``measurements`` (timings) and files declared ``measurement: true`` are checked for presence and
shape only; the ``provenance`` of a run (versions, CPU, date) is never compared. Bit-identical
files are a property of one machine and one set of library versions; this check is not.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..plotting import METADATA_KEYS
from .execute import RunResult, reproduce
from .spec import Chapter, Figure, Tolerance

MAX_REPORTED = 5  # mismatching rows reported per column


def _close(old: float, new: float, tol: Tolerance, scale: float) -> bool:
    if math.isnan(old) or math.isnan(new):
        return math.isnan(old) and math.isnan(new)
    return abs(new - old) <= tol.floor * scale + tol.rtol * abs(old)


def _compare_column(name, old: list, new: list, tol: Tolerance, rows: list) -> list[str]:
    """Mismatches of one column: numbers within ``tol``, everything else equal."""
    numbers = [v for v in old if isinstance(v, (int, float)) and not isinstance(v, bool)]
    scale = max((abs(v) for v in numbers if math.isfinite(v)), default=0.0)
    out = []
    for row, a, b in zip(rows, old, new, strict=True):
        is_num = [isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)]
        same = _close(float(a), float(b), tol, scale) if all(is_num) else a == b
        if not same:
            bound = f" (tolerance {tol.floor:g} x {scale:.3g} + {tol.rtol:g} x |committed|)"
            out.append(
                f"column {name!r}, row {row}: committed {a!r}, regenerated {b!r}"
                + (bound if all(is_num) else "")
            )
    if len(out) > MAX_REPORTED:
        out = out[:MAX_REPORTED] + [f"column {name!r}: ... {len(out) - MAX_REPORTED} more rows"]
    return out


def _compare_csv(old_path: Path, new_path: Path, figure: Figure) -> list[str]:
    import pandas as pd

    old, new = pd.read_csv(old_path), pd.read_csv(new_path)
    if list(old.columns) != list(new.columns):
        return [f"columns: committed {list(old.columns)}, regenerated {list(new.columns)}"]
    if len(old) != len(new):
        return [f"rows: committed {len(old)}, regenerated {len(new)}"]
    if figure.measurement:
        return []
    out = []
    for col in old.columns:
        if col not in figure.measurements:
            values = [old[col].tolist(), new[col].tolist()]
            out += _compare_column(col, *values, figure.column_tolerance(col), list(old.index))
    return out


def _leaves(node: Any, path: tuple = ()) -> dict[tuple, Any]:
    """``{path: leaf}`` of a JSON document; list positions are ``int`` path entries."""
    if isinstance(node, Mapping):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return {path: node}
    out: dict[tuple, Any] = {}
    for key, value in items:
        out.update(_leaves(value, (*path, key)))
    return out


def _compare_json(old_path: Path, new_path: Path, figure: Figure) -> list[str]:
    docs = [json.loads(p.read_text()) for p in (old_path, new_path)]
    for doc in docs:
        for key in METADATA_KEYS:
            doc.pop(key, None)
    old, new = (_leaves(d) for d in docs)
    if set(old) != set(new):
        gone = sorted(set(old) - set(new), key=str)[:MAX_REPORTED]
        extra = sorted(set(new) - set(old), key=str)[:MAX_REPORTED]
        return [f"structure differs: only committed {gone}, only regenerated {extra}"]
    if figure.measurement:
        return []
    columns: dict[str, list[tuple]] = {}
    for path in old:  # a column: the path without list positions; a row: the positions
        names = [str(p) for p in path if not isinstance(p, int)]
        columns.setdefault(".".join(names), []).append(path)
    out = []
    for col, paths in columns.items():
        if not any(part in figure.measurements for part in col.split(".")):
            rows = [tuple(p for p in path if isinstance(p, int)) or 0 for path in paths]
            olds, news = [old[p] for p in paths], [new[p] for p in paths]
            out += _compare_column(col, olds, news, figure.column_tolerance(col), rows)
    return out


def compare_file(committed: Path, regenerated: Path, figure: Figure) -> list[str]:
    """Mismatches between a committed data file and its regeneration (empty: they agree)."""
    compare = _compare_csv if committed.suffix == ".csv" else _compare_json
    return compare(Path(committed), Path(regenerated), figure)


def _data_files(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("*") if p.suffix in (".csv", ".json")}


def compare_folders(
    committed: str | Path, regenerated: str | Path, chapters: Iterable[Chapter]
) -> list[str]:
    """Every mismatch between ``<committed>/<stem>/`` and ``<regenerated>/<stem>/``, as text.

    Each line names the file (``<stem>/<name>``), and for values the column, the row (0-based,
    data rows only) and both values.
    """
    out = []
    for chapter in chapters:
        old, new = Path(committed) / chapter.stem, Path(regenerated) / chapter.stem
        old_files, new_files = _data_files(old), _data_files(new)
        for name in sorted(old_files | new_files):
            where = f"{chapter.stem}/{name}"
            if name not in new_files:
                out.append(f"{where}: committed, but the regeneration did not write it")
            elif name not in old_files:
                out.append(f"{where}: regenerated, but not committed")
            else:
                figure = chapter.figure(name.split(".")[0])
                out += [f"{where}: {m}" for m in compare_file(old / name, new / name, figure)]
    return out


def regenerate_and_compare(
    *,
    figures_dir: str | Path,
    log=print,
    **reproduce_args,
) -> tuple[list[RunResult], list[str]]:
    """Regenerates into a temporary folder and compares it with ``figures_dir``.

    Args:
      figures_dir: the committed figures (``<root>/figures``).
      log: ``print``-like function.
      **reproduce_args: passed to :func:`execute.reproduce` (``profile``, ``only``, ``jobs``, ...).

    Returns:
      the run results and the mismatches of the chapters that ran (a failed chapter is in the
      results, not compared). On a mismatch the regenerated folder is kept (its path is logged).
    """
    from .spec import discover

    tmp = Path(tempfile.mkdtemp(prefix="fedpa-check-"))
    results = reproduce(output_dir=tmp, log=log, **reproduce_args)
    ran = {r.stem for r in results if r.ok}
    chapters = discover(reproduce_args.get("root"), reproduce_args.get("only", ()))
    mismatches = compare_folders(figures_dir, tmp, [c for c in chapters if c.stem in ran])
    if mismatches:
        log(f"the regenerated figures are kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return results, mismatches
