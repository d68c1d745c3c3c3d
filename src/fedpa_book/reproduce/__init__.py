"""Regenerate the book: chapter specs, papermill execution, the ``--check``, the HTML build.

::

    spec      book/<stem>.yml (JSON Schema) + the parameters cell (papermill.inspect_notebook)
    execute   papermill runs, validated before the first notebook; atomic; progress; jobs
    check     committed figure data vs a regeneration, within per-figure tolerances
    build     jupyter-book 1.x, offline HTML, warnings as errors (also a Sphinx extension)
    cli       the ``fedpa`` command
"""

from .build import build_book, chapter_list, check_offline_html, figure_table
from .check import compare_file, compare_folders, regenerate_and_compare
from .cli import list_chapters, main
from .execute import (
    MissingFigureError,
    NotebookError,
    RunResult,
    check_figures,
    execute_chapter,
    format_summary,
    reproduce,
)
from .spec import (
    PROFILES,
    TYPES,
    Chapter,
    Figure,
    Parameter,
    SpecError,
    Tolerance,
    discover,
    find_root,
    load_chapter,
    parse_literal,
    resolve,
)

__all__ = [
    "PROFILES",
    "TYPES",
    "Chapter",
    "Figure",
    "MissingFigureError",
    "NotebookError",
    "Parameter",
    "RunResult",
    "SpecError",
    "Tolerance",
    "build_book",
    "chapter_list",
    "regenerate_and_compare",
    "check_figures",
    "check_offline_html",
    "compare_file",
    "compare_folders",
    "discover",
    "execute_chapter",
    "figure_table",
    "find_root",
    "format_summary",
    "list_chapters",
    "load_chapter",
    "main",
    "parse_literal",
    "reproduce",
    "resolve",
]
