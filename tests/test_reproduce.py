"""`fedpa reproduce` (fedpa_book.reproduce): specs, validation, parsing, execution, the book.

Real chapters are never executed here: one tiny synthetic notebook (no imports) runs through
papermill end to end, everything else is checked without a kernel.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nbformat
import pytest
import yaml

from fedpa_book import reproduce as rp
from fedpa_book.plotting import io as plotting_io
from fedpa_book.reproduce import build, execute
from fedpa_book.reproduce.cli import main

REPO = Path(__file__).resolve().parents[1]
PAPER_ORDER = [
    "intro",
    "posterior_inference_2d",
    "fedavg_bias",
    "local_inference",
    "least_squares",
    "practical_fedpa",
    "beyond_quadratics",
    "performance",
    "api",
]

HEADER = """\
---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
"""

TINY = (
    HEADER
    + """
# Tiny

A synthetic chapter.

```{{code-cell}} ipython3
:tags: [parameters]

output_dir = "figures"
seed = 0
rounds = 100
lr = 0.5
method = "fedpa"
sizes = [1, 2]
verbose = False
```

```{{code-cell}} ipython3
import os

folder = os.path.join(output_dir, "{stem}")
os.makedirs(folder, exist_ok=True)
{body}
```
"""
)

WRITE_FIGURE = """\
with open(os.path.join(folder, "fig_a.png"), "wb") as f:
    f.write(b"png")
with open(os.path.join(folder, "fig_a.json"), "w") as f:
    f.write('{"rounds": %d}' % rounds)
print("rounds", rounds, "lr", lr, "method", method, "sizes", sizes)
"""

# Types come from the parameters cell's literals; the spec adds ranges and choices only
# (``verbose`` is not in the spec at all).
SPEC = {
    "parameters": {
        "rounds": {"min": 1, "max": 1000, "help": "server rounds"},
        "lr": {"min": 0.0, "max": 1.0},
        "method": {"choices": ["fedavg", "fedpa"]},
        "sizes": {"min": 1},
        "seed": {"min": 0},
    },
    "profiles": {"smoke": {"rounds": 3}, "paper": {}},
    "figures": ["fig_a"],
}


def make_root(tmp_path: Path, body: str = WRITE_FIGURE, spec: dict | None = None) -> Path:
    """A minimal book: _toc.yml, book/tiny.md + book/tiny.yml."""
    root = tmp_path / "repo"
    (root / "book").mkdir(parents=True)
    (root / "_toc.yml").write_text(
        "format: jb-book\nroot: book/tiny\nchapters:\n  - file: book/missing\n"
    )
    (root / "book" / "tiny.md").write_text(TINY.format(body=body, stem="tiny"))
    (root / "book" / "tiny.yml").write_text(yaml.safe_dump(spec or SPEC))
    return root


@pytest.fixture
def root(tmp_path):
    return make_root(tmp_path)


@pytest.fixture
def no_execution(monkeypatch):
    """Fails the test if anything tries to execute a notebook."""
    calls = []

    def forbidden(*args, **kwargs):
        calls.append(args)
        raise AssertionError("a notebook was executed before validation finished")

    monkeypatch.setattr(execute, "execute_chapter", forbidden)
    return calls


# --------------------------------------------------------------------------------------------
# Validation happens before execution and names the notebook and the parameter


@pytest.mark.parametrize(
    "override, fragment",
    [
        (("nonexistent", "3"), "unknown parameter 'nonexistent'"),
        (("rounds", "1.5"), "parameter 'rounds' must be int in [1, 1000], got 1.5"),
        (("rounds", "abc"), "parameter 'rounds' must be int in [1, 1000], got 'abc'"),
        (("rounds", "true"), "parameter 'rounds' must be int in [1, 1000], got True"),
        (("rounds", "0"), "parameter 'rounds' must be int in [1, 1000]"),
        (("rounds", "1001"), "parameter 'rounds' must be int in [1, 1000]"),
        (("lr", "1.5"), "parameter 'lr' must be float in [0, 1]"),
        (("lr", "nan"), "parameter 'lr' must be float in [0, 1]"),
        (("method", "sgd"), "parameter 'method' must be str one of"),
        (("sizes", "[1, 0]"), "parameter 'sizes' must be list[int] in [1, inf]"),
        (("sizes", "[1, 2.5]"), "parameter 'sizes' must be list[int]"),
        (("verbose", "maybe"), "parameter 'verbose' must be bool, got 'maybe'"),
        (("tiny.nonexistent", "1"), "unknown parameter 'nonexistent'"),
    ],
)
def test_bad_overrides_are_rejected_before_execution(root, no_execution, override, fragment):
    with pytest.raises(rp.SpecError) as err:
        rp.reproduce(profile="smoke", overrides=[override], root=root, output_dir=root / "f")
    message = str(err.value)
    assert "notebook 'tiny'" in message
    assert fragment in message
    assert not no_execution
    assert not (root / "_build" / "executed").exists()


def test_cli_reports_validation_errors_with_exit_2(root, no_execution, monkeypatch, capsys):
    monkeypatch.chdir(root)
    assert main(["reproduce", "--profile", "smoke", "-p", "rounds", "0"]) == 2
    err = capsys.readouterr().err
    assert "notebook 'tiny'" in err and "parameter 'rounds'" in err
    assert main(["reproduce", "--profile", "nightly"]) == 2
    assert "unknown profile 'nightly'" in capsys.readouterr().err
    assert main(["reproduce", "--only", "nope"]) == 2
    assert "unknown notebook 'nope'" in capsys.readouterr().err
    assert main(["reproduce", "-p", "output_dir", "x"]) == 2
    assert "--output-dir" in capsys.readouterr().err
    assert not no_execution


def test_resolution_order_defaults_profile_overrides(root):
    chapters = rp.discover(root)
    paper = rp.resolve(chapters, "paper")["tiny"]
    assert paper == {
        "seed": 0,
        "rounds": 100,
        "lr": 0.5,
        "method": "fedpa",
        "sizes": [1, 2],
        "verbose": False,
    }
    smoke = rp.resolve(chapters, "smoke", [("lr", "1"), ("tiny.sizes", "3,4"), ("verbose", "true")])
    assert smoke["tiny"]["rounds"] == 3  # from the profile
    assert smoke["tiny"]["lr"] == 1.0 and isinstance(smoke["tiny"]["lr"], float)
    assert smoke["tiny"]["sizes"] == [3, 4]
    assert smoke["tiny"]["verbose"] is True
    # later overrides win; str parameters keep the raw text
    again = rp.resolve(chapters, "smoke", [("rounds", "7"), ("rounds", "9"), ("method", "fedavg")])
    assert again["tiny"]["rounds"] == 9 and again["tiny"]["method"] == "fedavg"


def test_spec_errors_name_notebook_and_parameter(tmp_path):
    bad_profile = dict(SPEC, profiles={"smoke": {"rounds": 0}, "paper": {}})
    root = make_root(tmp_path / "a", spec=bad_profile)
    with pytest.raises(
        rp.SpecError, match=r"notebook 'tiny': parameter 'rounds' .*profile 'smoke'"
    ):
        rp.discover(root)
    bad_type = dict(SPEC, parameters=dict(SPEC["parameters"], lr={"type": "double"}))
    root = make_root(tmp_path / "b", spec=bad_type)
    with pytest.raises(rp.SpecError, match=r"notebook 'tiny': .*parameter 'lr' type: 'double'"):
        rp.discover(root)
    unknown_key = dict(SPEC, parameters=dict(SPEC["parameters"], lr={"type": "float", "mn": 0}))
    root = make_root(tmp_path / "c", spec=unknown_key)
    with pytest.raises(rp.SpecError, match=r"parameter 'lr': .*'mn' was unexpected"):
        rp.discover(root)
    bad_tolerance = dict(SPEC, figures={"fig_a": {"tolerance": {"rtol": -1}}})
    root = make_root(tmp_path / "d", spec=bad_tolerance)
    with pytest.raises(rp.SpecError, match=r"figures/fig_a/tolerance/rtol: -1 is less than"):
        rp.discover(root)


def test_spec_and_parameters_cell_must_agree(tmp_path):
    # declared in the spec but not in the cell
    extra = dict(SPEC, parameters=dict(SPEC["parameters"], clients={"type": "int"}))
    root = make_root(tmp_path / "a", spec=extra)
    with pytest.raises(rp.SpecError, match=r"notebook 'tiny': parameter 'clients' is declared"):
        rp.discover(root)
    # in the cell only: declared once, its type is its default's
    chapter = rp.discover(make_root(tmp_path / "b"))[0]
    types = {name: p.type for name, p in chapter.parameters.items()}
    assert types == {
        "seed": "int",
        "rounds": "int",
        "lr": "float",
        "method": "str",
        "sizes": "list[int]",
        "verbose": "bool",
    }
    assert chapter.parameters["rounds"].help == "server rounds"
    # a default that violates the spec
    narrow = dict(SPEC, parameters=dict(SPEC["parameters"], rounds={"type": "int", "max": 10}))
    root = make_root(tmp_path / "c", spec=narrow)
    with pytest.raises(rp.SpecError, match=r"parameter 'rounds' .*the parameters cell"):
        rp.discover(root)
    # the spec's type wins over the literal's (a float parameter written as 1)
    wide = dict(SPEC, parameters=dict(SPEC["parameters"], rounds={"type": "float"}))
    chapter = rp.discover(make_root(tmp_path / "d", spec=wide))[0]
    assert chapter.parameters["rounds"].default == 100.0
    assert rp.resolve([chapter], "paper", [("rounds", "2.5")])["tiny"]["rounds"] == 2.5


# --------------------------------------------------------------------------------------------
# Parameters are data, never code


def test_parse_literal_never_evaluates(tmp_path):
    marker = tmp_path / "pwned"
    attacks = [
        f"__import__('pathlib').Path({str(marker)!r}).touch()",
        f"!!python/object/apply:os.system ['touch {marker}']",
        "!!python/object/apply:pathlib.Path.touch "
        f"[!!python/object/apply:pathlib.Path ['{marker}']]",
    ]
    for text in attacks:
        assert rp.parse_literal(text) == text  # comes back as plain text
    assert not marker.exists()
    assert rp.parse_literal("1e-3") == pytest.approx(1e-3)  # JSON handles what YAML 1.1 misses
    assert rp.parse_literal("[1, 2]") == [1, 2]
    assert rp.parse_literal("true") is True
    assert rp.parse_literal("fedpa") == "fedpa"
    assert rp.parse_literal("2021-01-01") == "2021-01-01"  # a YAML date stays text


def test_parameters_cell_is_read_as_literals_never_run(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "evil.yml").write_text("profiles: {paper: {}}\n")
    for body in (
        f"import pathlib\nrounds = pathlib.Path({str(marker)!r}).touch()",
        f"rounds = __import__('pathlib').Path({str(marker)!r}).touch()",
    ):
        (tmp_path / "evil.md").write_text(
            HEADER + "\n# Evil\n\n```{code-cell} ipython3\n:tags: [parameters]\n\n"
            f"output_dir = 'figures'\nseed = 0\n{body}\n```\n"
        )
        with pytest.raises(rp.SpecError, match=r"parameter '\w+' = .* is not a plain literal"):
            rp.load_chapter(tmp_path / "evil.yml")
    assert not marker.exists()


# --------------------------------------------------------------------------------------------
# Execution: atomic executed notebooks, figure checks, failures shown and non-zero


def test_end_to_end_success_then_failure_is_atomic(tmp_path, monkeypatch, capsys):
    root = make_root(tmp_path)
    figures = tmp_path / "figs"
    monkeypatch.chdir(root)
    rc = main(["reproduce", "--profile", "smoke", "--output-dir", str(figures), "-p", "lr", "0.25"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    executed = root / "_build" / "executed" / "tiny.ipynb"
    nb = json.loads(executed.read_text())
    text = json.dumps(nb)
    assert "rounds 3 lr 0.25 method fedpa sizes [1, 2]" in text  # profile + override injected
    assert "Rerun this page" in text and "fedpa reproduce --only tiny --profile smoke" in text
    assert (figures / "tiny" / "fig_a.png").is_file()
    assert re.search(r"tiny\s+ok\s+[\d.]+\s+1: fig_a", out.out)  # the summary table
    before = executed.read_bytes()

    # Now the notebook raises: non-zero exit, the error cell shown, the old output untouched,
    # no temporary or half-written notebook left in the executed folder.
    failing = TINY.format(body='raise RuntimeError("boom in cell")', stem="tiny")
    (root / "book" / "tiny.md").write_text(failing)
    rc = main(["reproduce", "--profile", "smoke", "--output-dir", str(figures), "--no-progress"])
    out = capsys.readouterr()
    assert rc == 1
    assert "notebook 'tiny' failed: RuntimeError: boom in cell" in out.err
    assert 'raise RuntimeError("boom in cell")' in out.err  # the failing cell's source
    assert re.search(r"tiny\s+FAILED", out.out)
    assert executed.read_bytes() == before
    assert sorted(p.name for p in executed.parent.iterdir()) == ["tiny.ipynb"]
    assert (root / "_build" / "failed" / "tiny.ipynb").is_file()


def test_parallel_jobs_keep_the_books_order(root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (root / "book" / "tiny2.md").write_text(TINY.format(body=WRITE_FIGURE, stem="tiny2"))
    (root / "book" / "tiny2.yml").write_text(yaml.safe_dump(SPEC))
    # relative paths must survive papermill's chdir in two threads
    results = rp.reproduce(profile="smoke", root="repo", output_dir="figs", jobs=2, progress=False)
    assert Path.cwd() == tmp_path
    assert (tmp_path / "figs" / "tiny2" / "fig_a.png").is_file()
    assert [(r.stem, r.ok, r.figures) for r in results] == [
        ("tiny", True, ["fig_a.png"]),
        ("tiny2", True, ["fig_a.png"]),
    ]
    executed = sorted(p.name for p in (root / "_build" / "executed").iterdir())
    assert executed == ["tiny.ipynb", "tiny2.ipynb"]
    with pytest.raises(rp.SpecError, match="jobs must be an integer >= 1"):
        rp.reproduce(root=root, jobs=0)


def test_atomic_write_leaves_old_file_or_new_never_half(tmp_path, monkeypatch):
    target = tmp_path / "executed" / "tiny.ipynb"
    plotting_io.atomic_write(target, "old")
    assert target.read_text() == "old" and (target.stat().st_mode & 0o777) == 0o644

    def crash(src, dst):
        assert Path(src).read_text() == "new, complete"  # fully written before the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(plotting_io.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        plotting_io.atomic_write(target, "new, complete")
    assert target.read_text() == "old"
    assert [p.name for p in target.parent.iterdir()] == ["tiny.ipynb"]  # no temporary left


def test_missing_or_stale_figures_fail_naming_them(root, tmp_path):
    chapter = rp.discover(root)[0]
    out = tmp_path / "figs"
    with pytest.raises(
        rp.MissingFigureError, match=r"notebook 'tiny' did not write figure 'fig_a'"
    ):
        rp.check_figures(chapter, out)
    (out / "tiny").mkdir(parents=True)
    (out / "tiny" / "fig_a.png").write_bytes(b"png")
    with pytest.raises(rp.MissingFigureError, match="figure 'fig_a': written without its data"):
        rp.check_figures(chapter, out)
    (out / "tiny" / "fig_a.csv").write_text("a\n1\n")
    assert rp.check_figures(chapter, out) == ["fig_a.png"]
    old = 1_000_000.0
    os.utime(out / "tiny" / "fig_a.png", (old, old))
    with pytest.raises(rp.MissingFigureError, match="in this run"):
        rp.check_figures(chapter, out, since=old + 10)


# --------------------------------------------------------------------------------------------
# The real book: specs match notebooks, the toc follows the paper, the intro's figure table


REAL_SPECS = sorted((REPO / "book").glob("*.yml"))


@pytest.mark.parametrize("spec", REAL_SPECS, ids=[p.stem for p in REAL_SPECS])
def test_every_book_spec_matches_its_notebook(spec):
    assert spec.with_suffix(".md").is_file(), f"{spec.name} has no notebook beside it"
    chapter = rp.load_chapter(spec)
    assert "seed" in chapter.parameters
    for profile in rp.PROFILES:
        assert profile in chapter.profiles, f"{spec.name} lacks the {profile!r} profile"
        params = rp.resolve([chapter], profile)[chapter.stem]
        assert set(params) == set(chapter.parameters)


def test_toc_lists_the_chapters_in_the_papers_order():
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    stems = rp.spec.toc_stems(toc)
    assert stems == PAPER_ORDER
    for spec in REAL_SPECS:
        assert spec.stem in stems, f"chapter {spec.stem} is missing from _toc.yml"
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "off"
    assert "sphinx-mathjax-offline" in config["sphinx"]["extra_extensions"]
    assert "fedpa_book.reproduce.build" in config["sphinx"]["extra_extensions"]


def test_intro_figure_table_lists_only_declared_figures():
    intro = (REPO / "book" / "intro.md").read_text()
    assert "reproduce.figure_table(" in intro  # generated from the specs at execution time
    declared = {}
    for spec in REAL_SPECS:
        for fig in rp.load_chapter(spec).figures:
            declared[fig] = spec.stem
    table = build.figure_table(REPO / "book")
    listed = {}
    for row in table.splitlines()[2:]:
        chapter, figs, command = (cell.strip() for cell in row.strip("|").split("|"))
        stem = re.fullmatch(r"`fedpa reproduce --only (\w+)`", command).group(1)
        assert chapter == f"{{doc}}`{stem}`"
        for fig in re.findall(r"`(\w+)`", figs):
            listed[fig] = stem
    assert listed == declared  # every declared figure, with its own chapter's command
    # figure names written by hand in the intro must be declared too
    for name in re.findall(r"`(fig_\w+)`", intro):
        assert name in declared, f"the intro mentions {name}, which no spec declares"


# --------------------------------------------------------------------------------------------
# Book staging and the offline check


def test_staged_site_holds_executed_chapters_and_plain_pages_unchanged(root):
    (root / "_config.yml").write_text("title: t\n")
    with pytest.raises(rp.SpecError, match="not executed yet: tiny"):
        build._stage(root, root / "_build")
    executed = root / "_build" / "executed"
    executed.mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Tiny\n\nSee {doc}`api`.")]
    nbformat.write(nb, executed / "tiny.ipynb")
    with pytest.raises(rp.SpecError, match="pages that do not exist: missing"):
        build._stage(root, root / "_build")
    (root / "book" / "missing.md").write_text("# A plain page\n")
    site = build._stage(root, root / "_build")
    assert (site / "_toc.yml").read_text() == (root / "_toc.yml").read_text()
    assert (site / "book" / "tiny.ipynb").read_bytes() == (executed / "tiny.ipynb").read_bytes()
    assert (site / "book" / "missing.md").read_text() == "# A plain page\n"
    assert not (site / "book" / "tiny.md").exists()  # one file per page name


def test_offline_check_flags_cdn_assets(tmp_path):
    html = tmp_path / "html"
    (html / "_static" / "mathjax").mkdir(parents=True)
    (html / "_static" / "mathjax" / "tex-chtml.js").write_text("")
    page = html / "index.html"
    page.write_text(
        '<script defer src="_static/mathjax/tex-chtml.js"></script><a href="https://x">'
    )
    assert build.check_offline_html(html) == []
    page.write_text(
        '<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"></script>'
    )
    problems = build.check_offline_html(html)
    assert any("cdn.jsdelivr.net" in p for p in problems)
    assert any("local MathJax" in p for p in problems)


def test_notebook_parameters_come_from_the_parameters_cell(root, monkeypatch):
    import fedpa_book

    monkeypatch.chdir(root / "book")  # where papermill runs a chapter
    namespace = dict(output_dir="x", seed=1, rounds=3, lr=0.5, method="fedpa", sizes=[1, 2])
    with pytest.raises(ValueError, match="verbose of chapter 'tiny' are not defined"):
        fedpa_book.parameters(namespace, "tiny")
    namespace.update(verbose=True, unrelated=42)
    assert fedpa_book.parameters(namespace, "tiny") == {
        "seed": 1,
        "rounds": 3,
        "lr": 0.5,
        "method": "fedpa",
        "sizes": [1, 2],
        "verbose": True,
    }
