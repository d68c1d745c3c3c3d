"""Run chapter notebooks with papermill: validated parameters, atomic outputs, progress, jobs.

:func:`reproduce` resolves the parameters of every selected chapter (:func:`spec.resolve`) before
the first notebook starts, then runs each through :func:`papermill.execute_notebook` (a tqdm bar
over its cells) with its own folder as working directory and ``output_dir`` injected. The
executed notebook is written atomically to ``<build_dir>/executed/<stem>.ipynb`` only when every
cell ran and every declared figure was freshly written; a failed run leaves its partial notebook
in ``<build_dir>/failed/``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import shlex
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..plotting import atomic_write
from .spec import Chapter, SpecError, discover, find_root, resolve


class NotebookError(RuntimeError):
    """A chapter notebook failed while executing; ``str()`` shows the failing cell."""

    def __init__(self, stem: str, message: str, *, cell_source: str = "", traceback: str = ""):
        self.stem = stem
        text = f"notebook {stem!r} failed: {message}"
        if cell_source:
            text += "\n--- failing cell " + "-" * 50 + "\n" + cell_source.rstrip()
        if traceback:
            text += "\n--- error " + "-" * 57 + "\n" + traceback.rstrip()
        super().__init__(text)


class MissingFigureError(RuntimeError):
    """A chapter finished without writing a figure its spec declares."""


@dataclasses.dataclass
class RunResult:
    """What :func:`execute_chapter` did for one chapter."""

    stem: str
    ok: bool
    seconds: float
    figures: list[str]
    executed: Path | None = None
    error: str = ""


def papermill_command(stem: str, params: Mapping[str, Any]) -> str:
    """The shell command that runs chapter ``stem`` with ``params`` through papermill directly."""
    lines = [
        f"jupytext --to ipynb -o - book/{stem}.md \\",
        f"  | papermill - _build/executed/{stem}.ipynb --cwd book -p output_dir ../figures",
    ]
    for k, v in params.items():
        if isinstance(v, str):  # -r: raw string
            arg = f"-r {shlex.quote(k)} {shlex.quote(v)}"
        elif isinstance(v, list):  # -y: YAML
            arg = f"-y {shlex.quote(f'{k}: {json.dumps(v)}')}"
        else:
            arg = f"-p {shlex.quote(k)} {v!r}"
        lines[-1] += " \\"
        lines.append(f"      {arg}")
    return "\n".join(lines)


def _finish(nb, chapter: Chapter, profile: str, params: Mapping[str, Any]):
    """Folds the injected parameters cell and adds a collapsed "Rerun this page" note."""
    import nbformat

    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "hide-input" not in tags:
            tags.append("hide-input")
            cell.metadata.setdefault("mystnb", {}).update(
                code_prompt_show="Show the parameters of this run",
                code_prompt_hide="Hide the parameters of this run",
            )
    note = nbformat.v4.new_markdown_cell(
        ":::{admonition} Rerun this page\n:class: tip dropdown\n\n"
        f"This page was executed with the `{profile}` profile. "
        f"Regenerate it and its figures (in `figures/{chapter.stem}/`) with\n\n"
        f"```bash\nfedpa reproduce --only {chapter.stem} --profile {profile}\n```\n\n"
        "add `-p NAME VALUE` to change a parameter (`fedpa reproduce --list` shows them). "
        "The same run with papermill directly:\n\n"
        f"```bash\n{papermill_command(chapter.stem, params)}\n```\n:::\n",
        id="fedpa-rerun-note",
    )
    title = next(
        (
            i + 1
            for i, c in enumerate(nb.cells)
            if c.cell_type == "markdown" and c.source.startswith("# ")
        ),
        0,
    )
    nb.cells.insert(title, note)
    nb.metadata["papermill"].pop("environment_variables", None)
    nb.metadata["papermill"].update(
        input_path=f"book/{chapter.stem}.md", output_path=f"_build/executed/{chapter.stem}.ipynb"
    )
    return nb


def check_figures(chapter: Chapter, output_dir: str | os.PathLike, since: float = 0.0) -> list[str]:
    """Checks that every declared figure has a PNG and CSV/JSON data written after ``since``.

    Returns:
      the names of the PNG files written into ``<output_dir>/<stem>/`` since ``since``.

    Raises:
      MissingFigureError: naming the notebook and the figure.
    """
    folder = Path(output_dir) / chapter.stem
    for fig in chapter.figures:
        png = folder / f"{fig}.png"
        data = [p for p in (folder / f"{fig}.csv", folder / f"{fig}.json") if p.is_file()]
        problem = ""
        if not png.is_file():
            problem = f"{png} is missing"
        elif png.stat().st_mtime < since:
            problem = f"{png} is older than the run (not written in this run)"
        elif not data:
            problem = f"written without its data: no {fig}.csv or {fig}.json in {folder}"
        elif max(p.stat().st_mtime for p in data) < since:
            problem = "its data was not rewritten in this run"
        if problem:
            raise MissingFigureError(
                f"notebook {chapter.stem!r} did not write figure {fig!r}: {problem}"
            )
    pngs = folder.glob("*.png") if folder.is_dir() else []
    return sorted(p.name for p in pngs if p.stat().st_mtime >= since)


def execute_chapter(
    chapter: Chapter,
    params: Mapping[str, Any],
    *,
    output_dir: str | os.PathLike,
    build_dir: str | os.PathLike,
    profile: str = "custom",
    progress: bool = True,
    timeout: float | None = None,
    bar_position: int | None = None,
) -> RunResult:
    """Runs one chapter through papermill; writes ``<build_dir>/executed/<stem>.ipynb``.

    Raises:
      NotebookError: a cell raised (the message shows the cell and the traceback).
      MissingFigureError: a declared figure was not written.
    """
    import jupytext
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError, strip_color

    executed = Path(build_dir) / "executed"
    executed.mkdir(parents=True, exist_ok=True)
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    nb = jupytext.read(chapter.notebook)
    nb.metadata.pop("jupytext", None)
    cwd = chapter.notebook.parent.resolve()
    injected = dict(params, output_dir=os.path.relpath(Path(output_dir).resolve(), cwd))
    bar: Any = progress and {"desc": chapter.stem, "leave": True, "file": sys.stderr}
    if bar and bar_position is not None:
        bar["position"] = bar_position
    start = time.time()
    with tempfile.TemporaryDirectory(dir=executed, prefix=f".{chapter.stem}.") as tmp:
        source, partial = Path(tmp) / "source.ipynb", Path(tmp) / "partial.ipynb"
        source.write_text(nbformat.writes(nb))
        try:
            out = papermill.execute_notebook(
                source,
                partial,
                parameters=injected,
                kernel_name="python3",
                progress_bar=bar,
                request_save_on_cell_execute=False,
                cwd=str(cwd),
                execution_timeout=timeout,
                start_timeout=120,
                extra_arguments=["--IPKernelApp.log_level=ERROR"],
            )
        except PapermillExecutionError as err:
            if partial.is_file():
                (Path(build_dir) / "failed").mkdir(exist_ok=True)
                os.replace(partial, Path(build_dir) / "failed" / f"{chapter.stem}.ipynb")
            raise NotebookError(
                chapter.stem,
                f"{err.ename}: {strip_color(str(err.evalue))} (cell {err.exec_count})",
                cell_source=err.source,
                traceback=strip_color("\n".join(err.traceback)),
            ) from None
        except Exception as err:  # the kernel died, a timeout, ...
            raise NotebookError(chapter.stem, f"{type(err).__name__}: {err}") from None
    figures = check_figures(chapter, output_dir, since=start - 1.0)  # coarse mtimes
    out = _finish(out, chapter, profile, params)
    target = atomic_write(executed / f"{chapter.stem}.ipynb", nbformat.writes(out))
    return RunResult(chapter.stem, True, time.time() - start, figures, executed=target)


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
    """Validates every selected chapter, then executes them (``jobs`` at a time).

    Args:
      profile: a profile every selected spec declares (``smoke``, ``paper``).
      only: chapter stems (or comma lists); all when empty.
      overrides: ``(name, text)`` pairs from ``-p``, see :func:`spec.resolve`.
      output_dir: figures root (default ``<root>/figures``); chapter ``<stem>`` writes to
        ``<output_dir>/<stem>/``.
      build_dir: executed notebooks go to ``<build_dir>/executed`` (default ``<root>/_build``).
      root: the repository (default: found from the working directory).
      progress: a tqdm bar over the cells of each notebook.
      keep_going: run the remaining chapters after a failure.
      timeout: per-cell timeout in seconds (``None``: none).
      jobs: notebooks executed at the same time, each in its own kernel.
      log: ``print``-like function for error reports.

    Returns:
      one :class:`RunResult` per chapter run, in the book's order.

    Raises:
      SpecError: before anything runs.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise SpecError(f"jobs must be an integer >= 1, got {jobs!r}")
    # Absolute paths: papermill changes the working directory while a notebook runs.
    root = (find_root() if root is None else Path(root)).resolve()
    build_dir = Path(build_dir or root / "_build").resolve()
    output_dir = Path(output_dir or root / "figures").resolve()
    chapters = discover(root, only)
    if not chapters:
        raise SpecError(f"no chapters in {root / 'book'} (book/<stem>.md + book/<stem>.yml)")
    resolved = resolve(chapters, profile, overrides)
    failed = threading.Event()

    def run(index: int, chapter: Chapter) -> RunResult | None:
        if failed.is_set() and not keep_going:
            return None
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
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            outcomes = list(pool.map(run, range(len(chapters)), chapters))
    finally:
        os.chdir(cwd)
    return [r for r in outcomes if r is not None]


def format_summary(results: Sequence[RunResult]) -> str:
    """A plain-text table: notebook, status, seconds, figures written, and the sum."""
    rows = [("notebook", "status", "seconds", "figures written")]
    for r in results:
        names = ", ".join(Path(f).stem for f in r.figures)
        status = "ok" if r.ok else "FAILED"
        rows.append((r.stem, status, f"{r.seconds:.1f}", f"{len(r.figures)}: {names}"))
    total = sum(r.seconds for r in results)
    rows.append(("sum", "", f"{total:.1f}", str(sum(len(r.figures) for r in results))))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)
