"""Chapter specs: ``book/<stem>.yml`` validated by JSON Schema, parameters read by papermill.

A chapter is ``book/<stem>.md`` (a jupytext MyST notebook) and its spec ``book/<stem>.yml``.
Each parameter is declared once: its name, default, type and help come from the notebook's cell
tagged ``parameters`` (``name: type = literal  # help``; without an annotation the type is the
default's), read with :func:`papermill.inspect_notebook`. The spec adds what a literal cannot say::

    parameters:                  # optional per parameter: min, max, choices, type, help
      rounds: {min: 1}
    profiles:
      smoke: {rounds: 20}        # seconds per notebook, for CI
      paper: {}                  # the parameters cell's defaults are the paper profile
    tolerance: {rtol: 1e-4, floor: 1e-6}       # --check, for every figure of the chapter
    figures:
      fig_convergence:                          # a figure the notebook must write
        tolerance: {rtol: 1e-3}                 # ... checked within these
        columns: {loss: {rtol: 1e-2}}           # ... per column
        measurements: [seconds]                 # timings: presence and shape only
      fig_timings: {measurement: true}          # the whole file is a measurement

``figures`` may also be a plain list of names. The document is checked against the JSON Schema
``spec_schema.yml`` and every value (cell defaults, profiles, ``-p``) against the parameter's
schema (:meth:`Parameter.schema`), all before a notebook starts; errors are :class:`SpecError`
naming the notebook and the parameter.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from jsonschema.exceptions import best_match

TYPES = ("int", "float", "str", "bool", "list[int]", "list[float]", "list[str]")
PROFILES = ("smoke", "paper")
IMPLICIT = "output_dir"  # set by `fedpa reproduce`; every parameters cell assigns it
REQUIRED = ("output_dir", "seed")

SPEC_SCHEMA_PATH = Path(__file__).with_name("spec_schema.yml")


class SpecError(ValueError):
    """A chapter spec, profile or parameter value is invalid (raised before any execution)."""


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """``|new - old| <= floor * scale + rtol * |old|``; ``scale`` is the column's max ``|old|``.

    The floor is tied to the column's scale, so float noise around values near zero (``1e-7``
    in a column of order one) passes, while relative changes of the large values are caught.
    """

    rtol: float = 1e-4
    floor: float = 1e-6

    def merged(self, raw: Mapping[str, float] | None) -> Tolerance:
        return dataclasses.replace(self, **(raw or {}))


DEFAULT_TOLERANCE = Tolerance()


@dataclasses.dataclass(frozen=True)
class Figure:
    """A figure a chapter writes, and how ``--check`` compares its data."""

    name: str
    tolerance: Tolerance = DEFAULT_TOLERANCE
    columns: Mapping[str, Tolerance] = dataclasses.field(default_factory=dict)
    measurements: tuple[str, ...] = ()
    measurement: bool = False

    def column_tolerance(self, column: str) -> Tolerance:
        return self.columns.get(column, self.tolerance)


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One notebook parameter: type, default and help from the cell; range from the spec."""

    name: str
    type: str
    default: Any
    help: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple | None = None

    def describe(self) -> str:
        bits = [self.type]
        if self.min is not None or self.max is not None:
            lo = "-inf" if self.min is None else f"{self.min:g}"
            hi = "inf" if self.max is None else f"{self.max:g}"
            bits.append(f"in [{lo}, {hi}]")
        if self.choices is not None:
            bits.append("one of " + ", ".join(map(repr, self.choices)))
        return " ".join(bits)

    def schema(self) -> dict[str, Any]:
        """The JSON Schema of a value of this parameter."""
        base, is_list = self.type.removeprefix("list[").removesuffix("]"), "[" in self.type
        item: dict[str, Any] = {
            "type": {"int": "integer", "float": "number", "str": "string", "bool": "boolean"}[base]
        }
        if self.min is not None:
            item["minimum"] = self.min
        if self.max is not None:
            item["maximum"] = self.max
        if self.choices is not None:
            item["enum"] = list(self.choices)
        return {"type": "array", "items": item} if is_list else item

    def check(self, stem: str, value: Any, source: str) -> Any:
        """``value`` validated (floats for ``float`` types); :class:`SpecError` if invalid."""
        error = next(_validator(self.schema()).iter_errors(value), None)
        if error is not None:
            raise SpecError(
                f"notebook {stem!r}: parameter {self.name!r} must be {self.describe()}, got "
                f"{value!r} (from {source}): {error.message}"
            )
        if self.type == "float":
            return float(value)
        if self.type == "list[float]":
            return [float(v) for v in value]
        return value


@dataclasses.dataclass(frozen=True)
class Chapter:
    """A chapter notebook, its parameters (cell defaults merged with the spec) and figures."""

    stem: str
    notebook: Path
    spec_path: Path
    parameters: Mapping[str, Parameter]
    profiles: Mapping[str, Mapping[str, Any]]
    figures: Mapping[str, Figure]
    tolerance: Tolerance = DEFAULT_TOLERANCE
    title: str = ""

    def figure(self, name: str) -> Figure:
        """The declared figure ``name``, or one with the chapter's tolerance."""
        return self.figures.get(name) or Figure(name, self.tolerance)


def _validator(schema: Mapping[str, Any]):
    """A Draft 2020-12 validator whose integers are ints (not ``1.0``) and numbers finite."""
    import jsonschema

    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine_many(
        {
            "integer": lambda _, x: isinstance(x, int) and not isinstance(x, bool),
            "number": lambda _, x: (
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
            ),
        }
    )
    return jsonschema.validators.extend(base, type_checker=checker)(schema)


def find_root(start: str | os.PathLike | None = None) -> Path:
    """The first folder at or above ``start`` (default: cwd) holding ``_toc.yml`` or ``book/``."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").is_file() or (folder / "book").is_dir():
            return folder
    return here


def notebook_parameters(notebook: str | os.PathLike) -> dict[str, dict[str, str]]:
    """``papermill.inspect_notebook`` of a jupytext notebook: ``{name: {default, help, ...}}``.

    ``default`` is the source text of the value (parse it with :func:`ast.literal_eval`).
    """
    import jupytext
    import nbformat
    import papermill

    nb = jupytext.read(notebook)
    fd, tmp = tempfile.mkstemp(suffix=".ipynb")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(nbformat.writes(nb))
        return papermill.inspect_notebook(tmp)
    finally:
        os.unlink(tmp)


def _infer_type(value: Any) -> str | None:
    for kind, py in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if type(value) is py:
            return kind
    if isinstance(value, list) and value:
        kinds = {_infer_type(v) for v in value}
        kinds = {"float"} if kinds == {"int", "float"} else kinds
        if len(kinds) == 1 and next(iter(kinds)) in ("int", "float", "str"):
            return f"list[{kinds.pop()}]"
    return None


def _cell_type(stem: str, name: str, info: Mapping[str, str], default: Any, declared: Any) -> str:
    annotated = info.get("inferred_type_name", "None")
    kind = declared or (None if annotated == "None" else annotated.replace("List", "list"))
    kind = kind or _infer_type(default)
    if kind not in TYPES:
        raise SpecError(
            f"notebook {stem!r}: parameter {name!r} has type {kind!r} (default {default!r}); "
            f"expected one of {', '.join(TYPES)} (annotate it in the cell or set type in the spec)"
        )
    return kind


@functools.cache
def _spec_validator():
    import yaml

    return _validator(yaml.safe_load(SPEC_SCHEMA_PATH.read_text()))


def _read_yaml(path: Path, stem: str) -> dict:
    import yaml

    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise SpecError(f"notebook {stem!r}: cannot read spec {path}: {err}") from None
    return {} if raw is None else raw


def load_chapter(spec_path: str | os.PathLike) -> Chapter:
    """Reads ``book/<stem>.yml`` and the parameters cell of ``book/<stem>.md``; checks both.

    Raises:
      SpecError: naming the notebook (and the parameter) for a malformed spec, a parameters
        cell that is not literals, a spec parameter the cell lacks, or an invalid value.
    """
    spec_path = Path(spec_path)
    stem = spec_path.stem
    raw = _read_yaml(spec_path, stem)
    if isinstance(raw, dict) and isinstance(raw.get("figures"), list):
        raw["figures"] = dict.fromkeys(map(str, raw["figures"]))
    error = best_match(_spec_validator().iter_errors(raw))
    if error is not None:
        where = "/".join(map(str, error.absolute_path)) or "the document"
        if list(error.absolute_path)[:1] == ["parameters"] and len(error.absolute_path) > 1:
            where = f"parameter {error.absolute_path[1]!r}" + "".join(
                f" {p}" for p in list(error.absolute_path)[2:]
            )
        raise SpecError(f"notebook {stem!r}: {spec_path.name}: {where}: {error.message}")
    notebook = spec_path.with_suffix(".md")
    if not notebook.is_file():
        raise SpecError(f"notebook {stem!r}: {notebook} does not exist")
    try:
        cell = notebook_parameters(notebook)
    except Exception as err:  # jupytext / papermill could not read it
        raise SpecError(f"notebook {stem!r}: cannot read {notebook}: {err}") from None
    for name in REQUIRED:
        if name not in cell:
            raise SpecError(
                f"notebook {stem!r}: parameter {name!r} is missing from the cell tagged "
                "'parameters' (every chapter assigns output_dir and seed there)"
            )
    declared = raw.get("parameters") or {}
    for name in declared:
        if name not in cell or name == IMPLICIT:
            raise SpecError(
                f"notebook {stem!r}: parameter {name!r} is declared in {spec_path.name} but not "
                "assigned in the parameters cell"
            )
    parameters = {}
    for name, info in cell.items():
        try:
            default = ast.literal_eval(info["default"])
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise SpecError(
                f"notebook {stem!r}: parameter {name!r} = {info['default']!r} in the parameters "
                "cell is not a plain literal"
            ) from None
        if name == IMPLICIT:
            if not isinstance(default, str):
                raise SpecError(f"notebook {stem!r}: parameter {name!r} must default to a str")
            continue
        extra = declared.get(name) or {}
        p = Parameter(
            name=name,
            type=_cell_type(stem, name, info, default, extra.get("type")),
            default=default,
            help=extra.get("help") or info.get("help", ""),
            min=extra.get("min"),
            max=extra.get("max"),
            choices=tuple(extra["choices"]) if "choices" in extra else None,
        )
        parameters[name] = dataclasses.replace(
            p, default=p.check(stem, default, "the parameters cell")
        )
    profiles = {}
    for profile, values in raw.get("profiles", {}).items():
        source = f"profile {profile!r} in {spec_path.name}"
        profiles[profile] = {
            name: _known(stem, parameters, name, source).check(stem, value, source)
            for name, value in (values or {}).items()
        }
    tolerance = DEFAULT_TOLERANCE.merged(raw.get("tolerance"))
    figures = {}
    for name, fig in (raw.get("figures") or {}).items():
        fig = fig or {}
        own = tolerance.merged(fig.get("tolerance"))
        figures[name] = Figure(
            name=name,
            tolerance=own,
            columns={c: own.merged(t) for c, t in fig.get("columns", {}).items()},
            measurements=tuple(fig.get("measurements", ())),
            measurement=bool(fig.get("measurement", False)),
        )
    return Chapter(
        stem, notebook, spec_path, parameters, profiles, figures, tolerance, raw.get("title", "")
    )


def _known(stem: str, parameters: Mapping[str, Parameter], name: str, source: str) -> Parameter:
    if name == IMPLICIT:
        raise SpecError(f"notebook {stem!r}: {source}: set {name!r} with --output-dir")
    if name not in parameters:
        raise SpecError(
            f"notebook {stem!r}: unknown parameter {name!r} (from {source}); the parameters "
            f"cell assigns {', '.join(sorted(parameters)) or 'nothing'}"
        )
    return parameters[name]


def spec_paths(root: str | os.PathLike) -> dict[str, Path]:
    """``{stem: book/<stem>.yml}`` for every chapter, in the order of ``_toc.yml`` (then sorted)."""
    import yaml

    root = Path(root)
    specs = {
        p.stem: p for p in sorted((root / "book").glob("*.yml")) if p.with_suffix(".md").is_file()
    }
    order: list[str] = []
    if (root / "_toc.yml").is_file():
        order = [
            s for s in toc_stems(yaml.safe_load((root / "_toc.yml").read_text())) if s in specs
        ]
    order += sorted(set(specs) - set(order))
    return {stem: specs[stem] for stem in dict.fromkeys(order)}


def toc_stems(node: Any) -> list[str]:
    """The stems of every ``root:``/``file:`` entry of a jupyter-book ``_toc.yml``, in order."""
    if isinstance(node, list):
        return [s for item in node for s in toc_stems(item)]
    if not isinstance(node, dict):
        return []
    found = [Path(node[k]).stem for k in ("root", "file") if isinstance(node.get(k), str)]
    return found + [s for v in node.values() if isinstance(v, (list, dict)) for s in toc_stems(v)]


def discover(root: str | os.PathLike | None = None, only: Iterable[str] = ()) -> list[Chapter]:
    """The chapters in the book's order; ``only`` (stems or comma lists) selects some first.

    Only the selected chapters' specs are read, so a broken spec elsewhere does not matter.
    """
    specs = spec_paths(find_root() if root is None else root)
    wanted = [Path(s.strip()).stem for item in only for s in str(item).split(",") if s.strip()]
    for stem in wanted:
        if stem not in specs:
            raise SpecError(f"--only: unknown notebook {stem!r}; chapters: {', '.join(specs)}")
    return [load_chapter(p) for s, p in specs.items() if not wanted or s in wanted]


def parse_literal(text: str) -> Any:
    """A command-line value as data: JSON, then YAML (``safe_load``), else the text itself.

    Never evaluates code: ``"__import__('os')"`` is just a string, and so is anything YAML reads
    as other than plain data (dates, tagged objects).
    """
    import yaml

    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            return text
    plain = (type(None), bool, int, float, str)
    if isinstance(value, plain) or (
        isinstance(value, list) and all(isinstance(v, plain) for v in value)
    ):
        return value
    return text


def _from_cli(p: Parameter, text: str) -> Any:
    """A ``-p`` value: the text itself for ``str``, comma lists for ``list[...]``, else data."""
    value = parse_literal(text)
    if p.type == "str":
        return value if isinstance(value, str) else text
    if p.type.startswith("list[") and not isinstance(value, list):
        parts = str(text).split(",") if isinstance(value, str) else [text]
        value = [parse_literal(t.strip()) for t in parts if t.strip()]
        if p.type == "list[str]":
            value = [str(v) for v in value]
    return value


def resolve(
    chapters: Sequence[Chapter], profile: str, overrides: Iterable[tuple[str, str]] = ()
) -> dict[str, dict[str, Any]]:
    """Parameters of every chapter: the cell's defaults, then ``profile``, then ``overrides``.

    ``overrides`` are ``(name, text)`` pairs from ``-p``: ``name`` is ``param`` (every selected
    chapter with that parameter; at least one must have it) or ``stem.param``.

    Returns:
      ``{stem: {name: value}}`` without ``output_dir``.

    Raises:
      SpecError: before anything runs, naming the notebook and the parameter.
    """
    resolved = {}
    for chapter in chapters:
        if profile not in chapter.profiles:
            raise SpecError(
                f"notebook {chapter.stem!r}: unknown profile {profile!r}; its spec declares "
                f"{', '.join(sorted(chapter.profiles)) or 'none'}"
            )
        resolved[chapter.stem] = {n: p.default for n, p in chapter.parameters.items()}
        resolved[chapter.stem].update(chapter.profiles[profile])
    by_stem = {c.stem: c for c in chapters}
    for key, text in overrides:
        stem, _, name = key.rpartition(".")
        if stem and stem not in by_stem:
            raise SpecError(f"-p {key}: notebook {stem!r} is not selected ({', '.join(by_stem)})")
        targets = [by_stem[stem]] if stem else list(chapters)
        having = [c for c in targets if name in c.parameters]
        source = f"-p {key} {text}"
        if name == IMPLICIT:
            raise SpecError(f"{source}: set {name!r} with --output-dir")
        if not having:
            raise SpecError(
                f"notebook {', '.join(repr(c.stem) for c in targets)}: unknown parameter "
                f"{name!r} (from {source}); "
                + "; ".join(f"{c.stem} has {', '.join(sorted(c.parameters))}" for c in targets)
            )
        for chapter in having:
            p = chapter.parameters[name]
            resolved[chapter.stem][name] = p.check(chapter.stem, _from_cli(p, text), source)
    return resolved
