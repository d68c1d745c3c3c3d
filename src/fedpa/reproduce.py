"""Regenerate the book: chapter specs, parameter validation and papermill execution.

Every chapter is a jupytext MyST notebook ``book/<stem>.md`` with a spec ``book/<stem>.yml``::

    parameters:            # name: {type, min, max, choices, help}
      rounds: {type: int, min: 1, help: server rounds}
      seed: {type: int, min: 0, help: PRNG seed}
    profiles:
      smoke: {rounds: 20}  # seconds per notebook, for CI
      paper: {}            # the parameters cell's defaults are the paper profile
    figures: [fig_convergence]

``fedpa reproduce`` (see :func:`main`) resolves the parameters of every selected chapter
(the ``parameters`` cell's defaults, then the profile, then ``-p NAME VALUE`` overrides) and
validates all of them *before* the first notebook starts: unknown names, wrong types,
out-of-range values and a spec that disagrees with its notebook's ``parameters`` cell are
:class:`SpecError` naming the notebook and the parameter. Values are data: the parameters cell is
read with :func:`ast.literal_eval` and ``-p`` values with JSON/YAML literal parsing, never
``eval``. Each notebook then runs through papermill (a tqdm bar over its cells); the executed
notebook is written atomically to ``<build_dir>/executed/<stem>.ipynb`` and its figures must
appear, freshly written, in ``<output_dir>/<stem>/`` (PNG plus CSV/JSON data).

:func:`build_book` stages the executed notebooks with the book's config into
``<build_dir>/site`` (writing a ``_toc.yml`` of the chapters that exist), runs jupyter-book with
warnings as errors and checks that the HTML loads nothing from the network.
"""

from __future__ import annotations

import ast
import concurrent.futures
import contextlib
import dataclasses
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .figures import atomic_write as _atomic_write

__all__ = [
    "TYPES",
    "PROFILES",
    "Parameter",
    "Chapter",
    "RunResult",
    "SpecError",
    "NotebookError",
    "MissingFigureError",
    "find_root",
    "load_spec",
    "discover",
    "parameters_cell",
    "check_chapter",
    "parse_literal",
    "check_value",
    "resolve",
    "execute_chapter",
    "check_figures",
    "reproduce",
    "figure_table",
    "chapter_list",
    "stage_book",
    "build_book",
    "check_offline_html",
    "format_summary",
    "list_chapters",
]

TYPES = ("int", "float", "str", "bool", "list[int]", "list[float]", "list[str]")
PROFILES = ("smoke", "paper")
IMPLICIT = ("output_dir",)  # set by `fedpa reproduce`, never declared in a spec
REQUIRED_IN_CELL = ("output_dir", "seed")
_PARAM_KEYS = {"type", "min", "max", "choices", "help"}
_SPEC_KEYS = {"parameters", "profiles", "figures", "title"}
_INJECTED_TAG = "injected-parameters"
_RERUN_MARKER = "fedpa-rerun-note"


class SpecError(ValueError):
    """A chapter spec, profile or parameter value is invalid (raised before any execution)."""


class NotebookError(RuntimeError):
    """A chapter notebook failed while executing; ``str()`` shows the failing cell."""

    def __init__(self, stem: str, message: str, *, cell_source: str = "", traceback: str = ""):
        self.stem = stem
        self.cell_source = cell_source
        self.traceback = traceback
        text = f"notebook {stem!r} failed: {message}"
        if cell_source:
            text += "\n--- failing cell " + "-" * 50 + "\n" + cell_source.rstrip()
        if traceback:
            text += "\n--- error " + "-" * 57 + "\n" + traceback.rstrip()
        super().__init__(text)


class MissingFigureError(RuntimeError):
    """A chapter finished without writing a figure its spec declares."""


# --------------------------------------------------------------------------------------------
# Specs


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One declared notebook parameter: ``type`` is one of :data:`TYPES`."""

    name: str
    type: str
    min: float | None = None
    max: float | None = None
    choices: tuple | None = None
    help: str = ""

    @property
    def element_type(self) -> str:
        return self.type[5:-1] if self.type.startswith("list[") else self.type

    def describe(self) -> str:
        bits = [self.type]
        if self.min is not None or self.max is not None:
            lo = "-inf" if self.min is None else f"{self.min:g}"
            hi = "inf" if self.max is None else f"{self.max:g}"
            bits.append(f"in [{lo}, {hi}]")
        if self.choices is not None:
            bits.append("one of " + ", ".join(map(repr, self.choices)))
        return " ".join(bits)


@dataclasses.dataclass(frozen=True)
class Chapter:
    """A chapter notebook and its spec."""

    stem: str
    notebook: Path
    spec_path: Path
    parameters: Mapping[str, Parameter]
    profiles: Mapping[str, Mapping[str, Any]]
    figures: tuple[str, ...]
    title: str = ""


@dataclasses.dataclass
class RunResult:
    """What :func:`execute_chapter` did for one chapter."""

    stem: str
    ok: bool
    seconds: float
    figures: list[str]
    executed: Path | None = None
    error: str = ""


def _yaml():
    import yaml

    return yaml


def find_root(start: str | os.PathLike | None = None) -> Path:
    """The first folder at or above ``start`` (default: cwd) holding ``_toc.yml`` or ``book/``."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").is_file() or (folder / "book").is_dir():
            return folder
    return here


def _check_bound(stem: str, name: str, key: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(
            f"notebook {stem!r}: parameter {name!r} has {key}={value!r} in its spec; "
            "expected a finite number"
        )
    return value


def load_spec(spec_path: str | os.PathLike, notebook: str | os.PathLike | None = None) -> Chapter:
    """Reads and checks ``book/<stem>.yml``; profile values are validated against the spec.

    Args:
      spec_path: the YAML spec.
      notebook: the notebook it describes (default: the ``.md`` beside it).

    Returns:
      the :class:`Chapter`.

    Raises:
      SpecError: naming the notebook (and parameter) when the spec is malformed.
    """
    spec_path = Path(spec_path)
    stem = spec_path.stem
    notebook = Path(notebook) if notebook is not None else spec_path.with_suffix(".md")
    try:
        raw = _yaml().safe_load(spec_path.read_text()) or {}
    except Exception as err:  # yaml.YAMLError, OSError
        raise SpecError(f"notebook {stem!r}: cannot read spec {spec_path}: {err}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"notebook {stem!r}: spec {spec_path} must be a mapping")
    unknown = set(raw) - _SPEC_KEYS
    if unknown:
        raise SpecError(
            f"notebook {stem!r}: spec has unknown keys {sorted(unknown)}; "
            f"expected {sorted(_SPEC_KEYS)}"
        )
    params_raw = raw.get("parameters") or {}
    if not isinstance(params_raw, dict):
        raise SpecError(f"notebook {stem!r}: 'parameters' must be a mapping of name -> spec")
    parameters: dict[str, Parameter] = {}
    for name, p in params_raw.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise SpecError(f"notebook {stem!r}: parameter name {name!r} is not an identifier")
        if not isinstance(p, dict):
            raise SpecError(f"notebook {stem!r}: parameter {name!r} must map to {{type: ...}}")
        bad = set(p) - _PARAM_KEYS
        if bad:
            hint = ""
            if any(p[k] is None for k in bad):
                hint = " (a comma inside {...}? quote that text)"
            raise SpecError(
                f"notebook {stem!r}: parameter {name!r} has unknown keys {sorted(bad)}{hint}; "
                f"expected some of {sorted(_PARAM_KEYS)}"
            )
        if p.get("type") not in TYPES:
            raise SpecError(
                f"notebook {stem!r}: parameter {name!r} has type {p.get('type')!r}; "
                f"expected one of {', '.join(TYPES)}"
            )
        choices = p.get("choices")
        if choices is not None and not isinstance(choices, list):
            raise SpecError(f"notebook {stem!r}: parameter {name!r} choices must be a list")
        parameters[name] = Parameter(
            name=name,
            type=p["type"],
            min=_check_bound(stem, name, "min", p.get("min")),
            max=_check_bound(stem, name, "max", p.get("max")),
            choices=tuple(choices) if choices is not None else None,
            help=str(p.get("help", "")),
        )
    for name in IMPLICIT:
        if name in parameters and parameters[name].type != "str":
            raise SpecError(f"notebook {stem!r}: parameter {name!r} is implicit (type str)")
    profiles_raw = raw.get("profiles") or {}
    if not isinstance(profiles_raw, dict):
        raise SpecError(f"notebook {stem!r}: 'profiles' must be a mapping of name -> values")
    profiles: dict[str, dict[str, Any]] = {}
    for profile, values in profiles_raw.items():
        values = values or {}
        if not isinstance(values, dict):
            raise SpecError(f"notebook {stem!r}: profile {profile!r} must be a mapping")
        checked = {}
        for name, value in values.items():
            checked[name] = check_value(
                stem, parameters, name, value, source=f"profile {profile!r} in {spec_path.name}"
            )
        profiles[str(profile)] = checked
    figures = raw.get("figures") or []
    if not isinstance(figures, list) or not all(
        isinstance(f, str) and f and "/" not in f for f in figures
    ):
        raise SpecError(f"notebook {stem!r}: 'figures' must be a list of file stems")
    return Chapter(
        stem=stem,
        notebook=notebook,
        spec_path=spec_path,
        parameters=parameters,
        profiles=profiles,
        figures=tuple(figures),
        title=str(raw.get("title", "")),
    )


def _toc_files(toc: Any) -> list[str]:
    """Every ``file:`` entry of a jupyter-book ``_toc.yml``, in order."""
    found: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            for key in ("root", "file"):
                if isinstance(node.get(key), str):
                    found.append(node[key])
            for value in node.values():
                if isinstance(value, (list, dict)):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return found


def _strip_suffix(entry: str) -> str:
    for suffix in (".md", ".ipynb"):
        if entry.endswith(suffix):
            return entry[: -len(suffix)]
    return entry


def discover(root: str | os.PathLike | None = None, only: Iterable[str] = ()) -> list[Chapter]:
    """Every chapter (a ``book/<stem>.yml`` beside ``book/<stem>.md``) in the book's order.

    The order is that of ``_toc.yml``; chapters the toc does not list come last, sorted.
    ``only`` selects chapters (stems, file names or comma lists; see :func:`select`) before
    their specs are read, so a broken spec elsewhere does not matter.
    """
    root = find_root(root) if root is None else Path(root)
    specs = _spec_paths(root)
    stems = _select_stems(list(specs), only)
    return [load_spec(specs[stem]) for stem in stems]


def _spec_paths(root: Path) -> dict[str, Path]:
    """``{stem: spec path}`` in the book's order."""
    book = root / "book"
    specs = {p.stem: p for p in sorted(book.glob("*.yml")) if p.with_suffix(".md").is_file()}
    order: list[str] = []
    toc_path = root / "_toc.yml"
    if toc_path.is_file():
        toc = _yaml().safe_load(toc_path.read_text())
        for entry in _toc_files(toc):
            stem = Path(_strip_suffix(entry)).name
            if stem in specs and stem not in order:
                order.append(stem)
    order += sorted(set(specs) - set(order))
    return {stem: specs[stem] for stem in order}


# --------------------------------------------------------------------------------------------
# The parameters cell


def _read_notebook(path: Path):
    import jupytext

    return jupytext.read(path)


def parameters_cell(notebook: str | os.PathLike, *, stem: str | None = None) -> dict[str, Any]:
    """The literal assignments of a notebook's cell tagged ``parameters``.

    The cell may only hold ``name = <literal>`` lines (and comments); anything else is a
    :class:`SpecError`: the values are read with :func:`ast.literal_eval`, never executed.
    """
    notebook = Path(notebook)
    stem = stem or notebook.stem
    try:
        nb = _read_notebook(notebook)
    except Exception as err:
        raise SpecError(f"notebook {stem!r}: cannot read {notebook}: {err}") from None
    cells = [
        c
        for c in nb.cells
        if c.cell_type == "code" and "parameters" in c.get("metadata", {}).get("tags", [])
    ]
    if not cells:
        raise SpecError(f"notebook {stem!r}: no code cell tagged 'parameters' in {notebook}")
    if len(cells) > 1:
        raise SpecError(f"notebook {stem!r}: more than one cell tagged 'parameters'")
    source = cells[0].source
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise SpecError(
            f"notebook {stem!r}: the parameters cell is not plain Python: {err}"
        ) from None
    values: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # a docstring/comment string
        else:
            raise SpecError(
                f"notebook {stem!r}: the parameters cell may only assign literals "
                f"(line {node.lineno}: {ast.get_source_segment(source, node)!r})"
            )
        if not isinstance(target, ast.Name):
            raise SpecError(
                f"notebook {stem!r}: parameters cell line {node.lineno} must assign one name"
            )
        try:
            values[target.id] = ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise SpecError(
                f"notebook {stem!r}: parameter {target.id!r} = "
                f"{ast.get_source_segment(source, value)!r} in the parameters cell is not a "
                "plain literal"
            ) from None
    return values


def check_chapter(chapter: Chapter) -> dict[str, Any]:
    """Checks the spec against the notebook's parameters cell; returns the cell's defaults.

    The cell must assign ``output_dir`` and ``seed``; every other name it assigns must be
    declared in the spec and vice versa, and every default must satisfy its declaration.
    """
    stem = chapter.stem
    if not chapter.notebook.is_file():
        raise SpecError(f"notebook {stem!r}: {chapter.notebook} does not exist")
    defaults = parameters_cell(chapter.notebook, stem=stem)
    for name in REQUIRED_IN_CELL:
        if name not in defaults:
            raise SpecError(
                f"notebook {stem!r}: parameter {name!r} is missing from the parameters cell "
                "(every chapter assigns output_dir and seed there)"
            )
    declared = set(chapter.parameters) - set(IMPLICIT)
    in_cell = set(defaults) - set(IMPLICIT)
    for name in sorted(in_cell - declared):
        raise SpecError(
            f"notebook {stem!r}: parameter {name!r} is in the parameters cell but not declared "
            f"in {chapter.spec_path.name}"
        )
    for name in sorted(declared - in_cell):
        raise SpecError(
            f"notebook {stem!r}: parameter {name!r} is declared in {chapter.spec_path.name} "
            "but not assigned in the parameters cell"
        )
    if not isinstance(defaults["output_dir"], str):
        raise SpecError(f"notebook {stem!r}: parameter 'output_dir' must default to a string")
    for name in sorted(in_cell):
        defaults[name] = check_value(
            stem, chapter.parameters, name, defaults[name], source="the parameters cell"
        )
    return defaults


# --------------------------------------------------------------------------------------------
# Values


def parse_literal(text: str) -> Any:
    """Parses a command-line value as data: JSON first, then YAML (``safe_load``), else text.

    Never evaluates code: ``"__import__('os')"`` is just a string. YAML scalars that are not
    plain data (dates, ...) come back as the original text.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        try:
            value = _yaml().safe_load(text)
        except Exception:  # yaml.YAMLError: not data, keep the text
            return text
    if not _is_plain(value):
        return text
    return value


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, list):
        return all(_is_plain(v) for v in value)
    return False


def _check_scalar(kind: str, value: Any) -> Any:
    """Returns the value converted to ``kind`` or raises ``TypeError`` with the expectation."""
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise TypeError("a bool (true/false)")
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer() and math.isfinite(value):
            raise TypeError("an int (write it without a decimal point)")
        raise TypeError("an int")
    if kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise TypeError("a finite float")
            return float(value)
        raise TypeError("a float")
    if kind == "str":
        if isinstance(value, str):
            return value
        raise TypeError("a str")
    raise TypeError(f"one of {TYPES}")  # pragma: no cover - specs are checked on load


def check_value(
    stem: str,
    parameters: Mapping[str, Parameter],
    name: str,
    value: Any,
    *,
    source: str = "",
) -> Any:
    """Validates ``value`` for parameter ``name`` of notebook ``stem``; returns it converted.

    Raises:
      SpecError: ``notebook '<stem>': parameter '<name>' ...`` for an unknown name, a wrong
        type or a value out of range / not among the choices.
    """
    where = f" (from {source})" if source else ""
    if name in IMPLICIT:
        if isinstance(value, str):
            return value
        raise SpecError(
            f"notebook {stem!r}: parameter {name!r} must be a str, got {value!r}{where}"
        )
    if name not in parameters:
        known = ", ".join(sorted(parameters)) or "none"
        raise SpecError(
            f"notebook {stem!r}: unknown parameter {name!r}{where}; declared parameters: {known}"
        )
    p = parameters[name]
    is_list = p.type.startswith("list[")
    if is_list and not isinstance(value, (list, tuple)):
        raise SpecError(
            f"notebook {stem!r}: parameter {name!r} must be a {p.type}, got {value!r}{where}"
        )
    items = list(value) if is_list else [value]
    out = []
    for item in items:
        try:
            item = _check_scalar(p.element_type, item)
        except TypeError as err:
            what = f"a {p.type} (elements {err})" if is_list else str(err)
            raise SpecError(
                f"notebook {stem!r}: parameter {name!r} must be {what}, got {value!r} "
                f"({type(value).__name__}){where}"
            ) from None
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            if (p.min is not None and item < p.min) or (p.max is not None and item > p.max):
                raise SpecError(
                    f"notebook {stem!r}: parameter {name!r} must be {p.describe()}, "
                    f"got {value!r}{where}"
                )
        if p.choices is not None and item not in p.choices:
            raise SpecError(
                f"notebook {stem!r}: parameter {name!r} must be {p.describe()}, "
                f"got {value!r}{where}"
            )
        out.append(item)
    return out if is_list else out[0]


def _convert_cli(p: Parameter | None, text: str) -> Any:
    """A ``-p`` value: text for ``str`` parameters, comma lists for ``list[...]``, else data."""
    if p is not None and p.type == "str":
        value = parse_literal(text)
        return value if isinstance(value, str) else text
    value = parse_literal(text)
    if p is not None and p.type.startswith("list["):
        if isinstance(value, str):
            value = [parse_literal(t.strip()) for t in value.split(",") if t.strip()]
            if p.element_type == "str":
                value = [str(v) for v in value]
        elif not isinstance(value, list):
            value = [value]
    return value


def resolve(
    chapters: Sequence[Chapter],
    profile: str,
    overrides: Iterable[tuple[str, str]] = (),
) -> dict[str, dict[str, Any]]:
    """Parameters of every chapter: the cell's defaults, then ``profile``, then ``overrides``.

    Args:
      chapters: the selected chapters.
      profile: a profile every selected spec declares (``smoke``, ``paper``).
      overrides: ``(name, text)`` pairs from ``-p``; ``name`` is ``param`` (every selected
        chapter declaring it; at least one must) or ``stem.param`` (one chapter). ``text`` is
        parsed with :func:`parse_literal`.

    Returns:
      ``{stem: {name: value}}`` without ``output_dir``.

    Raises:
      SpecError: before anything runs, naming the notebook and the parameter.
    """
    resolved: dict[str, dict[str, Any]] = {}
    by_stem = {c.stem: c for c in chapters}
    for chapter in chapters:
        defaults = check_chapter(chapter)
        if profile not in chapter.profiles:
            raise SpecError(
                f"notebook {chapter.stem!r}: unknown profile {profile!r}; its spec declares "
                f"{', '.join(sorted(chapter.profiles)) or 'none'}"
            )
        params = {k: v for k, v in defaults.items() if k not in IMPLICIT}
        params.update(chapter.profiles[profile])
        resolved[chapter.stem] = params
    for key, text in overrides:
        if "." in key:
            stem, name = key.split(".", 1)
            if stem not in by_stem:
                raise SpecError(
                    f"-p {key}: notebook {stem!r} is not selected "
                    f"(selected: {', '.join(by_stem) or 'none'})"
                )
            targets = [by_stem[stem]]
        else:
            name, targets = key, list(chapters)
        if name in IMPLICIT:
            raise SpecError(f"-p {key}: set {name!r} with --output-dir")
        declaring = [c for c in targets if name in c.parameters]
        if not declaring:
            stems = ", ".join(repr(c.stem) for c in targets) or "none"
            raise SpecError(
                f"notebook {stems}: unknown parameter {name!r} (from -p {key} {text}); "
                + "; ".join(
                    f"{c.stem} declares {', '.join(sorted(c.parameters)) or 'nothing'}"
                    for c in targets
                )
            )
        for chapter in declaring:
            value = _convert_cli(chapter.parameters[name], text)
            resolved[chapter.stem][name] = check_value(
                chapter.stem, chapter.parameters, name, value, source=f"-p {key} {text}"
            )
    return resolved


def select(chapters: Sequence[Chapter], only: Iterable[str] = ()) -> list[Chapter]:
    """The chapters named in ``only`` (stems, file names or comma lists); all when empty."""
    stems = _select_stems([c.stem for c in chapters], only)
    return [c for c in chapters if c.stem in stems]


def _select_stems(stems: Sequence[str], only: Iterable[str]) -> list[str]:
    wanted: list[str] = []
    for item in only:
        for part in str(item).split(","):
            part = part.strip()
            if part:
                wanted.append(Path(_strip_suffix(part.removesuffix(".yml"))).name)
    if not wanted:
        return list(stems)
    for stem in wanted:
        if stem not in stems:
            raise SpecError(
                f"--only: unknown notebook {stem!r}; chapters: {', '.join(stems) or 'none'}"
            )
    return [stem for stem in stems if stem in wanted]


# --------------------------------------------------------------------------------------------
# Execution


def _papermill_command(stem: str, params: Mapping[str, Any]) -> str:
    args = []
    for k, v in params.items():
        if isinstance(v, str):  # -r: raw string, never converted
            args.append(f"-r {shlex.quote(k)} {shlex.quote(v)}")
        elif isinstance(v, (list, tuple)):  # -y: YAML, for lists
            args.append(f"-y {shlex.quote(f'{k}: {json.dumps(list(v))}')}")
        else:  # papermill reads True/False and numbers
            args.append(f"-p {shlex.quote(k)} {v!r}")
    lines = [
        f"jupytext --to ipynb -o - book/{stem}.md \\",
        f"  | papermill - _build/executed/{stem}.ipynb --cwd book -p output_dir ../figures",
    ]
    for arg in args:
        lines[-1] += " \\"
        lines.append(f"      {arg}")
    return "\n".join(lines)


def _rerun_note(stem: str, profile: str, params: Mapping[str, Any]) -> str:
    return (
        ":::{admonition} Rerun this page\n:class: tip dropdown\n\n"
        f"This page was executed with the `{profile}` profile. Regenerate it and its figures "
        f"(in `figures/{stem}/`) with\n\n"
        f"```bash\nfedpa reproduce --only {stem} --profile {profile}\n```\n\n"
        f"add `-p NAME VALUE` to change a parameter (`fedpa reproduce --list` shows them). "
        "The same run with papermill directly:\n\n"
        f"```bash\n{_papermill_command(stem, params)}\n```\n:::\n"
    )


def _has_rerun_note(nb) -> bool:
    return any(c.cell_type == "markdown" and "Rerun this page" in c.source for c in nb.cells)


_SAVE_CALL = re.compile(r"\bsave\(\s*[\w.\[\]]+\s*,\s*[\"'](\w+)[\"']")


def _ends_with_save_call(source: str) -> bool:
    """Whether a cell's last statement is a bare ``...save(...)`` call (its value is shown)."""
    try:
        body = ast.parse(source).body
    except SyntaxError:  # IPython magics
        return False
    if not body or not isinstance(body[-1], ast.Expr) or not isinstance(body[-1].value, ast.Call):
        return False
    func = body[-1].value.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return name == "save"


def _drop_save_results(nb) -> None:
    """Removes the ``{'png': PosixPath(...), ...}`` result that ends a ``figures.save`` cell.

    It is the return value of :func:`fedpa.figures.save` (the paths written), shown only because
    the call is the cell's last expression; the book shows the figure instead.
    """
    for cell in nb.cells:
        if cell.cell_type == "code" and _ends_with_save_call(cell.source):
            cell.outputs = [o for o in cell.outputs if o.get("output_type") != "execute_result"]


def _caption_figures(nb, stem: str, figures: Sequence[str]) -> None:
    """Gives each declared figure's output a numbered caption and the label ``<stem>-<fig>``.

    Applies to a code cell that saves exactly one declared figure (``figures.save(fig,
    "<name>", ...)``) and whose only rich output is one image, unless the cell sets its own
    ``mystnb.figure``.
    """
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        names = [n for n in _SAVE_CALL.findall(cell.source) if n in figures]
        # myst-nb puts the caption and label on every rich output of the cell, so the image
        # must be the only one (streams do not count).
        rich = [
            o
            for o in cell.get("outputs", [])
            if o.get("output_type") in ("display_data", "execute_result")
        ]
        single_image = len(rich) == 1 and any(k.startswith("image/") for k in rich[0]["data"])
        mystnb = cell.metadata.get("mystnb", {})
        if len(names) != 1 or not single_image or "figure" in mystnb:
            continue
        fig = names[0]
        mystnb["figure"] = {
            "caption": f"`{fig}`, saved to `figures/{stem}/{fig}.png` next to its data; "
            f"regenerate it with `fedpa reproduce --only {stem}`.",
            "name": f"{stem}-{fig}",
        }
        cell.metadata["mystnb"] = mystnb


def _finish_notebook(
    nb,
    stem: str,
    profile: str,
    params: Mapping[str, Any],
    source: str,
    figures: Sequence[str] = (),
):
    """Tags the injected parameters cell, adds the "Rerun this page" note, captions figures."""
    import nbformat

    _drop_save_results(nb)
    _caption_figures(nb, stem, figures)

    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if _INJECTED_TAG in tags and "hide-input" not in tags:
            tags.append("hide-input")
            cell.metadata.setdefault("mystnb", {})["code_prompt_show"] = (
                "Show the parameters of this run"
            )
            cell.metadata["mystnb"]["code_prompt_hide"] = "Hide the parameters of this run"
    if not _has_rerun_note(nb):
        note = nbformat.v4.new_markdown_cell(_rerun_note(stem, profile, params))
        note.metadata["tags"] = [_RERUN_MARKER]
        note["id"] = _RERUN_MARKER
        at = 0
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "markdown" and cell.source.lstrip().startswith("# "):
                at = i + 1
                break
        nb.cells.insert(at, note)
    nb.metadata.setdefault("papermill", {})["input_path"] = source
    nb.metadata["papermill"]["output_path"] = f"_build/executed/{stem}.ipynb"
    nb.metadata["papermill"].pop("environment_variables", None)
    return nb


def check_figures(chapter: Chapter, output_dir: str | os.PathLike, since: float = 0.0) -> list[str]:
    """Checks that every declared figure has a PNG and CSV/JSON data written after ``since``.

    Returns:
      the names of the figure files (``.png``) written into ``<output_dir>/<stem>/``.

    Raises:
      MissingFigureError: naming the notebook and the figure.
    """
    folder = Path(output_dir) / chapter.stem
    for fig in chapter.figures:
        png = folder / f"{fig}.png"
        data = [folder / f"{fig}.csv", folder / f"{fig}.json"]
        if not png.is_file():
            raise MissingFigureError(
                f"notebook {chapter.stem!r} did not write figure {fig!r}: {png} is missing"
            )
        if png.stat().st_mtime < since:
            raise MissingFigureError(
                f"notebook {chapter.stem!r} did not write figure {fig!r} in this run: {png} is "
                "older than the run"
            )
        found = [d for d in data if d.is_file()]
        if not found:
            raise MissingFigureError(
                f"notebook {chapter.stem!r} wrote figure {fig!r} without its data: neither "
                f"{data[0].name} nor {data[1].name} is in {folder}"
            )
        if max(d.stat().st_mtime for d in found) < since:
            raise MissingFigureError(
                f"notebook {chapter.stem!r} did not rewrite the data of figure {fig!r}"
            )
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.glob("*.png") if p.stat().st_mtime >= since)


def _relative(path: Path, start: Path) -> str:
    path, start = path.resolve(), start.resolve()
    try:
        path.relative_to(start.parent)
    except ValueError:
        return str(path)
    return os.path.relpath(path, start)


def execute_chapter(
    chapter: Chapter,
    params: Mapping[str, Any],
    *,
    output_dir: str | os.PathLike = "figures",
    build_dir: str | os.PathLike = "_build",
    profile: str = "custom",
    progress: bool = True,
    kernel_name: str = "python3",
    timeout: float | None = None,
    bar_position: int | None = None,
) -> RunResult:
    """Runs one chapter through papermill and writes ``<build_dir>/executed/<stem>.ipynb``.

    The notebook runs with its own folder as working directory and ``output_dir`` injected.
    The executed notebook is written atomically, only when every cell ran and every declared
    figure was written; a failed run leaves the partial notebook in ``<build_dir>/failed/``.

    Raises:
      NotebookError: a cell raised (the message shows the cell and the traceback).
      MissingFigureError: a declared figure was not written.
    """
    import jupytext
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    build_dir = Path(build_dir)
    executed_dir = build_dir / "executed"
    failed_dir = build_dir / "failed"
    executed_dir.mkdir(parents=True, exist_ok=True)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    cwd = chapter.notebook.parent.resolve()
    source = _relative(chapter.notebook, find_root(cwd))
    nb = jupytext.read(chapter.notebook)
    nb.metadata["kernelspec"] = {
        "name": kernel_name,
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata.pop("jupytext", None)
    params = dict(params)
    injected = dict(params, output_dir=_relative(output_dir, cwd))
    fd, src_tmp = tempfile.mkstemp(
        prefix=f".{chapter.stem}.", suffix=".src.ipynb", dir=executed_dir
    )
    os.close(fd)
    fd, out_tmp = tempfile.mkstemp(
        prefix=f".{chapter.stem}.", suffix=".partial.ipynb", dir=executed_dir
    )
    os.close(fd)
    start = time.time()
    since = start - 1.0  # file systems with coarse mtimes
    try:
        Path(src_tmp).write_text(nbformat.writes(nb))
        bar: dict[str, Any] | bool = False
        if progress:
            bar = {"desc": chapter.stem, "leave": True, "file": sys.stderr}
            if bar_position is not None:
                bar["position"] = bar_position
        try:
            out = papermill.execute_notebook(
                src_tmp,
                out_tmp,
                parameters=injected,
                kernel_name=kernel_name,
                progress_bar=bar,
                request_save_on_cell_execute=False,
                cwd=str(cwd),
                execution_timeout=timeout,
                start_timeout=120,
                # the kernel's own log (not cell output): keep errors, drop its TCP warning
                extra_arguments=["--IPKernelApp.log_level=ERROR"],
            )
        except PapermillExecutionError as err:
            if Path(out_tmp).is_file() and Path(out_tmp).stat().st_size:
                failed_dir.mkdir(parents=True, exist_ok=True)
                os.replace(out_tmp, failed_dir / f"{chapter.stem}.ipynb")
            from papermill.exceptions import strip_color

            raise NotebookError(
                chapter.stem,
                f"{err.ename}: {strip_color(str(err.evalue))} (cell {err.exec_count})",
                cell_source=err.source,
                traceback=strip_color("\n".join(err.traceback)),
            ) from None
        except Exception as err:  # kernel died, timeout, ...
            raise NotebookError(chapter.stem, f"{type(err).__name__}: {err}") from None
        figures = check_figures(chapter, output_dir, since)
        out = _finish_notebook(out, chapter.stem, profile, params, source, chapter.figures)
        target = _atomic_write(executed_dir / f"{chapter.stem}.ipynb", nbformat.writes(out))
    finally:
        for tmp in (src_tmp, out_tmp):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    return RunResult(chapter.stem, True, time.time() - start, figures, executed=target)


def _update_manifest(build_dir: Path, profile: str, output_dir: Path, results, resolved) -> None:
    path = build_dir / "executed" / "manifest.json"
    manifest: dict[str, Any] = {}
    with contextlib.suppress(FileNotFoundError, ValueError):
        manifest = json.loads(path.read_text())
    notebooks = manifest.get("notebooks", {})
    for r in results:
        if r.ok:
            notebooks[r.stem] = {
                "profile": profile,
                "output_dir": str(output_dir.resolve()),
                "parameters": resolved[r.stem],
                "seconds": round(r.seconds, 2),
                "figures": r.figures,
            }
    manifest = {"notebooks": notebooks, "output_dir": str(output_dir.resolve()), "profile": profile}
    _atomic_write(path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def format_summary(results: Sequence[RunResult]) -> str:
    """A plain-text table: notebook, status, seconds, figures written."""
    rows = [("notebook", "status", "seconds", "figures written")]
    for r in results:
        figs = (
            f"{len(r.figures)}: " + ", ".join(Path(f).stem for f in r.figures) if r.figures else "0"
        )
        rows.append((r.stem, "ok" if r.ok else "FAILED", f"{r.seconds:.1f}", figs))
    total = sum(r.seconds for r in results)
    rows.append(("sum", "", f"{total:.1f}", str(sum(len(r.figures) for r in results))))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = []
    for i, row in enumerate(rows):
        lines.append(
            f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}"
        )
        if i == 0 or i == len(rows) - 2:
            lines.append("-" * min(100, max(len(line) for line in lines)))
    return "\n".join(lines)


def reproduce(
    *,
    profile: str = "paper",
    only: Iterable[str] = (),
    overrides: Iterable[tuple[str, str]] = (),
    output_dir: str | os.PathLike | None = None,
    build_dir: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    progress: bool = True,
    keep_going: bool = False,
    timeout: float | None = None,
    jobs: int = 1,
    log=print,
) -> list[RunResult]:
    """Validates every selected chapter, then executes them in the book's order.

    Args:
      profile: profile of every selected spec (``smoke``, ``paper``).
      only: chapter stems (or comma lists) to run; all when empty.
      overrides: ``(name, text)`` pairs, see :func:`resolve`.
      output_dir: figures root; chapter ``<stem>`` writes to ``<output_dir>/<stem>/``
        (default ``<root>/figures``).
      build_dir: executed notebooks go to ``<build_dir>/executed`` (default ``<root>/_build``).
      root: the repository (default: found from the working directory).
      progress: a tqdm bar over the cells of each notebook.
      keep_going: run the remaining chapters after a failure.
      timeout: per-cell timeout in seconds (``None``: none).
      jobs: notebooks executed at the same time (each in its own kernel); results and the
        summary keep the book's order.
      log: ``print``-like function for error reports.

    Returns:
      one :class:`RunResult` per executed chapter (a failed one has ``ok=False``; without
      ``keep_going`` the run stops there).

    Raises:
      SpecError: before anything runs.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise SpecError(f"jobs must be an integer >= 1, got {jobs!r}")
    # Absolute paths: papermill changes the process's working directory while a notebook runs
    # (and concurrent runs may restore it in any order), so nothing below may depend on it.
    root = (find_root(root) if root is None else Path(root)).resolve()
    build_dir = (Path(build_dir) if build_dir is not None else root / "_build").resolve()
    output_dir = (Path(output_dir) if output_dir is not None else root / "figures").resolve()
    chapters = discover(root, only)
    if not chapters:
        raise SpecError(f"no chapters found in {root / 'book'} (book/<stem>.md + book/<stem>.yml)")
    overrides = list(overrides)
    resolved = resolve(chapters, profile, overrides)
    failed = threading.Event()

    def run_one(index: int, chapter: Chapter) -> RunResult | None:
        if failed.is_set() and not keep_going:
            return None  # an earlier chapter failed: skip the rest
        start = time.time()
        try:
            return execute_chapter(
                chapter,
                resolved[chapter.stem],
                output_dir=output_dir,
                build_dir=build_dir,
                profile=profile,
                progress=progress,
                timeout=timeout,
                bar_position=index if jobs > 1 else None,
            )
        except (NotebookError, MissingFigureError) as err:
            failed.set()
            log(f"\n{err}\n", file=sys.stderr)
            return RunResult(chapter.stem, False, time.time() - start, [], error=str(err))

    cwd = os.getcwd()
    try:
        if jobs <= 1:
            outcomes = [run_one(i, c) for i, c in enumerate(chapters)]
        else:
            with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
                outcomes = list(pool.map(run_one, range(len(chapters)), chapters))
    finally:
        os.chdir(cwd)
    results = [r for r in outcomes if r is not None]
    _update_manifest(build_dir, profile, output_dir, results, resolved)
    return results


def list_chapters(root: str | os.PathLike | None = None) -> str:
    """A human-readable listing of chapters, parameters (type, range, defaults, profiles)."""
    root = find_root(root) if root is None else Path(root)
    out = []
    for stem, spec in _spec_paths(root).items():
        try:
            chapter = load_spec(spec)
        except SpecError as err:
            out += [f"{stem}  (book/{stem}.md)", f"  !! {err}", ""]
            continue
        try:
            defaults = check_chapter(chapter)
            problem = ""
        except SpecError as err:
            defaults, problem = {}, f"  !! {err}"
        profiles = sorted(chapter.profiles)
        out.append(f"{chapter.stem}  ({chapter.notebook.relative_to(root)})")
        if problem:
            out.append(problem)
        out.append(f"  profiles: {', '.join(profiles) or 'none'}")
        out.append(f"  figures:  {', '.join(chapter.figures) or 'none'}")
        for name, p in chapter.parameters.items():
            vals = [f"default={defaults.get(name, '?')!r}"]
            vals += [
                f"{prof}={chapter.profiles[prof][name]!r}"
                for prof in profiles
                if name in chapter.profiles[prof]
            ]
            line = f"    {name:<18} {p.describe():<28} {'  '.join(vals)}"
            if p.help:
                line += f"  # {p.help}"
            out.append(line)
        out.append("")
    return "\n".join(out) if out else "no chapters found"


# --------------------------------------------------------------------------------------------
# The book


def _book_chapters(book_dir: str | os.PathLike) -> tuple[list[Chapter], set[str]]:
    """The chapters beside ``book_dir`` and the stems the repository's ``_toc.yml`` lists."""
    book_dir = Path(book_dir).resolve()
    root = book_dir.parent
    in_toc: set[str] = set()
    if (root / "_toc.yml").is_file():
        toc = _yaml().safe_load((root / "_toc.yml").read_text())
        in_toc = {Path(_strip_suffix(e)).name for e in _toc_files(toc)}
    if book_dir.name == "book":
        return discover(root), in_toc
    specs = sorted(book_dir.glob("*.yml"))
    return [load_spec(p) for p in specs if p.with_suffix(".md").is_file()], in_toc


def _doc_link(stem: str, in_toc: set[str]) -> str:
    return f"{{doc}}`{stem}`" if stem in in_toc else f"`{stem}` (not in the table of contents)"


def chapter_list(book_dir: str | os.PathLike = ".", *, skip: Iterable[str] = ("intro",)) -> str:
    """A MyST numbered list linking every chapter that exists, in the book's order."""
    skip = set(skip)
    lines = []
    chapters, in_toc = _book_chapters(book_dir)
    for chapter in chapters:
        if chapter.stem in skip:
            continue
        lines.append(f"1. {_doc_link(chapter.stem, in_toc)}")
    return "\n".join(lines) if lines else "*(no chapters yet)*"


def figure_table(book_dir: str | os.PathLike = ".", output_dir: str = "figures") -> str:
    """A MyST table: each chapter, the figures it writes and the command that makes them.

    Built from the ``book/*.yml`` specs at execution time, so it never goes stale.
    """
    chapters, in_toc = _book_chapters(book_dir)
    lines = [
        f"| Chapter | Figures (`{output_dir}/<chapter>/<figure>.png`) | Command |",
        "| --- | --- | --- |",
    ]
    for chapter in chapters:
        if not chapter.figures:
            continue
        figs = ", ".join(f"`{fig}`" for fig in chapter.figures)
        lines.append(
            f"| {_doc_link(chapter.stem, in_toc)} | {figs} "
            f"| `fedpa reproduce --only {chapter.stem}` |"
        )
    if len(lines) == 2:
        lines.append("| (no figures declared yet) | | |")
    return "\n".join(lines)


def _copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(
        src,
        dst,
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", ".*"),
        dirs_exist_ok=True,
    )


def stage_book(
    root: str | os.PathLike | None = None,
    build_dir: str | os.PathLike | None = None,
    *,
    log=print,
) -> Path:
    """Assembles ``<build_dir>/site``: config, references, executed notebooks, plain pages.

    Chapters with a spec must have been executed (``fedpa reproduce``); plain pages (such as
    ``book/api.md``) are copied; toc entries whose file does not exist yet are left out of the
    staged ``_toc.yml`` (with a note).

    Returns:
      the staged source folder.
    """
    yaml = _yaml()
    root = find_root(root) if root is None else Path(root)
    build_dir = Path(build_dir) if build_dir is not None else root / "_build"
    site = build_dir / "site"
    if site.exists():
        shutil.rmtree(site)
    (site / "book").mkdir(parents=True)
    for name in ("_config.yml", "references.bib"):
        if (root / name).is_file():
            shutil.copy2(root / name, site / name)
    if (root / "book" / "_static").is_dir():
        _copy_tree(root / "book" / "_static", site / "book" / "_static")
    executed = build_dir / "executed"
    manifest: dict[str, Any] = {}
    with contextlib.suppress(FileNotFoundError, ValueError):
        manifest = json.loads((executed / "manifest.json").read_text())
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    missing_runs: list[str] = []

    def keep(entry: str) -> bool:
        stem_path = _strip_suffix(entry)
        stem = Path(stem_path).name
        rel = Path(stem_path).parent
        spec = root / rel / f"{stem}.yml"
        md = root / rel / f"{stem}.md"
        nb = executed / f"{stem}.ipynb"
        (site / rel).mkdir(parents=True, exist_ok=True)
        if spec.is_file() and md.is_file():
            if not nb.is_file():
                missing_runs.append(stem)
                return False
            shutil.copy2(nb, site / rel / f"{stem}.ipynb")
            return True
        if md.is_file():
            shutil.copy2(md, site / rel / f"{stem}.md")
            return True
        if (root / rel / f"{stem}.ipynb").is_file():
            shutil.copy2(root / rel / f"{stem}.ipynb", site / rel / f"{stem}.ipynb")
            return True
        log(f"note: {entry} is in _toc.yml but does not exist yet; leaving it out of the book")
        return False

    def prune(node):
        if isinstance(node, list):
            kept = []
            for item in node:
                if isinstance(item, dict) and "file" in item and not keep(item["file"]):
                    continue
                kept.append(prune(item))
            return kept
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key == "root" and isinstance(value, str):
                    if not keep(value):
                        raise SpecError(f"the book's root page {value} does not exist")
                out[key] = prune(value) if isinstance(value, (list, dict)) else value
            return out
        return node

    try:
        staged = prune(toc)
    except SpecError:
        if not missing_runs:
            raise
        staged = None
    if missing_runs:
        raise SpecError(
            "these chapters were not executed yet, run `fedpa reproduce --only "
            + ",".join(missing_runs)
            + "` first: "
            + ", ".join(missing_runs)
        )
    # Drop parts/sections left empty by pruning.
    for part in staged.get("parts", []) or []:
        part["chapters"] = [c for c in part.get("chapters", []) if c]
    if "parts" in staged:
        staged["parts"] = [p for p in staged["parts"] if p.get("chapters")]
    (site / "_toc.yml").write_text(yaml.safe_dump(staged, sort_keys=False))
    _relink(site)
    # The figures the notebooks wrote (for MyST figure directives such as ../figures/<stem>/x.png)
    # and the package source (for the API page).
    # Each chapter's figures come from the folder its last run wrote to (the manifest).
    if (root / "figures").is_dir():
        _copy_tree(root / "figures", site / "figures")
    for stem, run in manifest.get("notebooks", {}).items():
        folder = Path(run.get("output_dir", root / "figures")) / stem
        if folder.is_dir() and folder.resolve() != (root / "figures" / stem).resolve():
            _copy_tree(folder, site / "figures" / stem)
    if (root / "src").is_dir():
        _copy_tree(root / "src", site / "src")
    return site


def _relink(site: Path) -> None:
    """Points Markdown links to chapters (``[text](least_squares.md#x)``) at the staged ``.ipynb``.

    Chapters are written as ``book/<stem>.md`` but staged as executed notebooks, so a link that
    names the ``.md`` file would not resolve; links to plain pages are left alone.
    """
    import nbformat

    notebooks = {p.stem for p in site.rglob("*.ipynb")}
    if not notebooks:
        return
    names = "|".join(re.escape(n) for n in sorted(notebooks))
    pattern = re.compile(rf"(\]\((?:\./)?(?:[\w./-]*/)?(?:{names}))\.md(?=[#)])")

    def fix(text: str) -> str:
        return pattern.sub(r"\1.ipynb", text)

    for page in site.rglob("*.md"):
        page.write_text(fix(page.read_text()))
    for path in site.rglob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        changed = False
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                new = fix(cell.source)
                changed |= new != cell.source
                cell.source = new
        if changed:
            nbformat.write(nb, path)


def check_offline_html(html_dir: str | os.PathLike) -> list[str]:
    """Problems that would make the HTML fetch something from the network (empty: none).

    Looks for ``<script src=``/``<link href=`` pointing at ``http(s)://`` or ``//`` URLs and
    checks that MathJax is the local copy from sphinx-mathjax-offline.
    """
    html_dir = Path(html_dir)
    problems = []
    pattern = re.compile(
        r"<(script|link|img|iframe)\b[^>]*?\b(src|href)\s*=\s*[\"']((?:https?:)?//[^\"']+)",
        re.I,
    )
    mathjax_pages = 0
    for page in sorted(html_dir.rglob("*.html")):
        text = page.read_text(errors="replace")
        for match in pattern.finditer(text):
            tag = match.group(0)
            if match.group(1).lower() == "link" and re.search(r"rel=[\"'](canonical)", tag):
                continue
            problems.append(f"{page.relative_to(html_dir)}: loads {match.group(3)}")
        if "mathjax/tex-chtml.js" in text:
            mathjax_pages += 1
    if not (html_dir / "_static" / "mathjax" / "tex-chtml.js").is_file():
        problems.append("_static/mathjax/tex-chtml.js is missing (sphinx-mathjax-offline)")
    if mathjax_pages == 0:
        problems.append("no page loads the local MathJax (_static/mathjax/tex-chtml.js)")
    return problems


def build_book(
    root: str | os.PathLike | None = None,
    build_dir: str | os.PathLike | None = None,
    *,
    strict: bool = True,
    log=print,
) -> Path:
    """Stages the executed notebooks and builds the HTML with jupyter-book (``-W --keep-going``).

    Returns:
      the path of ``<build_dir>/html/index.html``.

    Raises:
      RuntimeError: when the build fails (warnings count) or the HTML would use the network.
    """
    root = find_root(root) if root is None else Path(root)
    build_dir = (Path(build_dir) if build_dir is not None else root / "_build").resolve()
    site = stage_book(root, build_dir, log=log)
    exe = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(exe) if exe.exists() else (shutil.which("jupyter-book") or "jupyter-book")]
    # jupyter-book writes to <path-output>/_build/html; build into a scratch folder, then move.
    out = build_dir / "jb"
    cmd += ["build", str(site), "--path-output", str(out), "--builder", "html"]
    if strict:
        cmd += ["-W", "--keep-going"]
    log("$ " + shlex.join(cmd))
    proc = subprocess.run(cmd, cwd=root)
    if proc.returncode != 0:
        raise RuntimeError(f"jupyter-book build failed (exit {proc.returncode}); see above")
    html = build_dir / "html"
    if html.exists():
        shutil.rmtree(html)
    os.replace(out / "_build" / "html", html)
    problems = check_offline_html(html)
    if problems:
        raise RuntimeError("the HTML is not self-contained:\n  " + "\n  ".join(problems))
    return html / "index.html"


# --------------------------------------------------------------------------------------------
# This module doubles as the book's small Sphinx extension (``_config.yml``: extra_extensions).


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
    """Hides bare field entries of NamedTuples and dataclasses on the API page.

    Their class docstrings list the fields (napoleon's ``Attributes:`` as ``:ivar:``); autodoc
    would add each field again, with "Alias for field number N" or nothing at all.
    """
    from sphinx.ext.autodoc import INSTANCEATTR, UNINITIALIZED_ATTR

    doc = getattr(obj, "__doc__", None) or ""
    if doc.startswith("Alias for field number"):
        return True
    if what == "class" and (
        obj is INSTANCEATTR
        or obj is UNINITIALIZED_ATTR
        or obj is None
        or isinstance(obj, (str, int, float, bool, tuple))
    ):
        return True
    return None


def setup(app):
    """Sphinx entry point: ``fedpa.reproduce`` in ``extra_extensions`` tidies the API page."""
    app.connect("autodoc-skip-member", _skip_namedtuple_fields)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
