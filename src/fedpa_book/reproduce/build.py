"""``fedpa book``: the HTML book from the executed notebooks (jupyter-book 1.x, offline).

Sphinx builds one source folder in which each page name maps to one file. The chapters' sources
(``book/<stem>.md``, no outputs) and their executed notebooks (``_build/executed/<stem>.ipynb``)
would share page names, so :func:`build_book` lays out ``<build_dir>/site``: the executed
notebooks under ``book/``, the plain pages (``book/api.md``), ``_config.yml``, ``_toc.yml`` and
``references.bib`` copied unchanged (nothing is rewritten). It then runs jupyter-book with warnings
as errors and checks that the HTML loads nothing from the network. Notebooks embed their figures,
so no figure folder is needed.

This module is also the book's small Sphinx extension (``_config.yml``: ``extra_extensions``).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from .spec import SpecError, discover, find_root, toc_stems


def _links(book_dir: str | os.PathLike):
    root = Path(book_dir).resolve().parent
    chapters = discover(root)
    import yaml

    toc = root / "_toc.yml"
    in_toc = set(toc_stems(yaml.safe_load(toc.read_text()))) if toc.is_file() else set()

    def link(stem: str) -> str:
        return f"{{doc}}`{stem}`" if stem in in_toc else f"`{stem}` (not in the table of contents)"

    return chapters, link


def chapter_list(book_dir: str | os.PathLike = ".", *, skip=("intro",)) -> str:
    """A MyST numbered list linking every chapter, in the book's order."""
    chapters, link = _links(book_dir)
    lines = [f"1. {link(c.stem)}" for c in chapters if c.stem not in skip]
    return "\n".join(lines) or "*(no chapters yet)*"


def figure_table(book_dir: str | os.PathLike = ".", output_dir: str = "figures") -> str:
    """A MyST table: each chapter, the figures it writes and the command that makes them."""
    chapters, link = _links(book_dir)
    lines = [
        f"| Chapter | Figures (`{output_dir}/<chapter>/<figure>.png`) | Command |",
        "| --- | --- | --- |",
    ]
    for c in chapters:
        if c.figures:
            figs = ", ".join(f"`{f}`" for f in c.figures)
            lines.append(f"| {link(c.stem)} | {figs} | `fedpa reproduce --only {c.stem}` |")
    return "\n".join(lines)


def _stage(root: Path, build_dir: Path) -> Path:
    """``<build_dir>/site``: executed chapters, plain pages and the book's config, unchanged."""
    import yaml

    site = build_dir / "site"
    shutil.rmtree(site, ignore_errors=True)
    (site / "book").mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml", "references.bib"):
        if (root / name).is_file():
            shutil.copy2(root / name, site / name)
    chapters = {c.stem for c in discover(root)}
    missing, not_run = [], []
    for stem in toc_stems(yaml.safe_load((root / "_toc.yml").read_text())):
        executed = build_dir / "executed" / f"{stem}.ipynb"
        if stem in chapters and executed.is_file():
            shutil.copy2(executed, site / "book" / executed.name)
        elif stem in chapters:
            not_run.append(stem)
        elif (root / "book" / f"{stem}.md").is_file():
            shutil.copy2(root / "book" / f"{stem}.md", site / "book" / f"{stem}.md")
        else:
            missing.append(stem)
    if not_run:
        raise SpecError(
            f"not executed yet: {', '.join(not_run)}; run `fedpa reproduce --only "
            f"{','.join(not_run)}` first"
        )
    if missing:
        raise SpecError(f"_toc.yml lists pages that do not exist: {', '.join(missing)}")
    return site


def check_offline_html(html_dir: str | os.PathLike) -> list[str]:
    """Problems that would make the HTML fetch something from the network (empty: none)."""
    html_dir = Path(html_dir)
    problems = []
    remote = re.compile(
        r"<(script|link|img|iframe)\b[^>]*?\b(src|href)\s*=\s*[\"']((?:https?:)?//[^\"']+)", re.I
    )
    mathjax_pages = 0
    for page in sorted(html_dir.rglob("*.html")):
        text = page.read_text(errors="replace")
        for match in remote.finditer(text):
            if not re.search(r"rel=[\"']canonical", match.group(0)):
                problems.append(f"{page.relative_to(html_dir)}: loads {match.group(3)}")
        mathjax_pages += "mathjax/tex-chtml.js" in text
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
    """Builds ``<build_dir>/html`` with jupyter-book (``-W --keep-going`` when ``strict``).

    Returns:
      the path of ``<build_dir>/html/index.html``.

    Raises:
      SpecError: a chapter was not executed or a toc entry does not exist.
      RuntimeError: the build failed (warnings count) or the HTML would use the network.
    """
    root = (find_root() if root is None else Path(root)).resolve()
    build_dir = Path(build_dir or root / "_build").resolve()
    site = _stage(root, build_dir)
    exe = Path(sys.executable).parent / "jupyter-book"
    out = build_dir / "jb"
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(site)]
    cmd += ["--path-output", str(out), "--builder", "html"] + (["-W", "--keep-going"] * strict)
    log("$ " + shlex.join(cmd))
    proc = subprocess.run(cmd, cwd=root)
    if proc.returncode != 0:
        raise RuntimeError(f"jupyter-book build failed (exit {proc.returncode}); see above")
    html = build_dir / "html"
    shutil.rmtree(html, ignore_errors=True)
    os.replace(out / "_build" / "html", html)
    problems = check_offline_html(html)
    if problems:
        raise RuntimeError("the HTML is not self-contained:\n  " + "\n  ".join(problems))
    return html / "index.html"


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
    """Hides NamedTuple/dataclass field entries on the API page (the class docstrings list them)."""
    from sphinx.ext.autodoc import INSTANCEATTR, UNINITIALIZED_ATTR

    if (getattr(obj, "__doc__", None) or "").startswith("Alias for field number"):
        return True
    plain = obj is None or isinstance(obj, (str, int, float, bool, tuple))
    if what == "class" and (obj is INSTANCEATTR or obj is UNINITIALIZED_ATTR or plain):
        return True
    return None


def setup(app):
    """Sphinx entry point: tidies the API page."""
    app.connect("autodoc-skip-member", _skip_namedtuple_fields)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
