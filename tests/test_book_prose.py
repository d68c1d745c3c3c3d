"""Numbers in the chapters' prose are glued from the computation or are allow-listed facts.

A number a notebook computes is written ``{glue:text}`name:fmt``` (``fedpa_book.glue(name, value)``
in a code cell), so a rerun with other parameters rewrites the text. Fixed facts (the paper's
settings, a formula's constants, years, section numbers) may stay literal: they are on
:data:`ALLOWED` (every chapter) or :data:`CHAPTER_ALLOWED` (one chapter).

Only the markdown cells are scanned, without code spans, roles (``{glue:text}``, ``{cite}``,
``{doc}``), link targets, labels, directive options and LaTeX command names. Chapters are
checked once their prose is converted (:data:`CONVERTED`); ``unglued(stem)`` lists what the
others still type by hand.
"""

from __future__ import annotations

import re
from pathlib import Path

import jupytext
import pytest

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(p.stem for p in (REPO / "book").glob("*.yml"))

# Chapters whose prose has no unglued computed number (the test runs on these).
CONVERTED: list[str] = [
    "intro",
    "beyond_quadratics",
    "posterior_inference_2d",
    "local_inference",
    "fedavg_bias",
    "least_squares",
    "practical_fedpa",
    "performance",
]

# Fixed facts any chapter may write: small counts and formula constants, years of the papers
# cited, and powers of ten used as orders of magnitude.
ALLOWED = {str(i) for i in range(11)} | {"2004", "1950", "2017", "2021", "100", "1000"}

# Fixed facts of one chapter: paper settings and constants of its formulas, never results.
CHAPTER_ALLOWED: dict[str, set[str]] = {
    "intro": {"2010.05273"},  # the paper's arXiv number
    # the digits data set (1,797 images, a 20 % test split, Hsu et al. 2019), the Dirichlet
    # alpha of the skewed split, and the samplers' fixed settings (steps, burn-in)
    "beyond_quadratics": {"1,797", "20", "2019", "0.1", "0.2", "0.5", "200"},
    # the built-in problems: the crossing ellipses (eigenvalues 1 and 0.05, rotated by 60°) and
    # the public re-creations' A_i = diag(2, 15) - 1.5·11ᵀ with client step 10^-1.5
    "posterior_inference_2d": {"0.05", "60", "15", "1.5", "10^-1"},
    # local SGD step 0.5/d, the server step decay 0.05^(t/T), 95 % intervals
    "least_squares": {"0.5", "0.05", "95"},
    # the confidence level, the client momentum of the IASG variant, FedProx's year and its
    # Synthetic recipe's 30 clients and 60 features
    "practical_fedpa": {"95", "0.9", "2020", "30", "60"},
    # setting R: 500 points per client, IASG burn-in 50 and 150 local steps, 200 timed rounds
    "performance": {"500", "50", "150", "200"},
}

_FENCED = re.compile(r"^(```|~~~)(?!\{(?:admonition|note|tip|warning)).*?^\1\s*$", re.M | re.S)
_DROP = [
    r"`[^`\n]*`",  # code spans, and the backticked part of roles
    r"\{[\w:-]+\}(?=`)",  # role names ({glue:text}, {cite}, {doc}, {numref}, ...)
    r"\]\([^)]*\)",  # link targets
    r"^\([\w-]+\)=\s*$",  # labels
    r"^:[\w-]+:.*$",  # directive options
    r"^(```|:::).*$",  # directive fences
    r"<!--.*?-->",  # comments
    r"\\[A-Za-z]+\d*",  # LaTeX command names (\tfrac12, \mathbb, ...)
]
POWER = re.compile(r"10\^\{?(-?\d+)\}?")  # orders of magnitude: 10^{-7} is read as "10^-7"
NUMBER = re.compile(r"(?<![\w.])(?:10\^-?\d+|\d+(?:[.,]\d+)*(?:[eE][-+]?\d+)?)")


def prose_numbers(text: str) -> list[tuple[str, str]]:
    """``(number, line)`` for every number in the markdown cells of a MyST notebook."""
    nb = jupytext.reads(text, fmt="md:myst")
    found = []
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for line in _FENCED.sub("", cell.source).splitlines():
            stripped = line
            for pattern in _DROP:
                stripped = re.sub(pattern, " ", stripped, flags=re.M)
            stripped = POWER.sub(r" 10^\1 ", stripped)
            found += [(m.group(0), line.strip()) for m in NUMBER.finditer(stripped)]
    return found


def unglued(stem: str) -> list[tuple[str, str]]:
    """Numbers of chapter ``stem``'s prose that are neither glued nor allow-listed."""
    text = (REPO / "book" / f"{stem}.md").read_text()
    allowed = ALLOWED | CHAPTER_ALLOWED.get(stem, set())
    return [(n, line) for n, line in prose_numbers(text) if n not in allowed]


def test_scanner_sees_typed_numbers_and_skips_glue_code_and_citations():
    text = (
        "---\njupytext: {text_representation: {format_name: myst}}\n---\n\n"
        "# T\n\nThe error falls from 0.96 to {glue:text}`end:.2f` after `rounds = 500`\n"
        "steps {cite}`alshedivat2021federated`, see [x](https://a.b/12).\n\n"
        "```{code-cell} ipython3\nx = 0.75\n```\n\n$\\tfrac12 x^2$ and 3.5e-7, near $10^{-3}$.\n"
        "\n```bash\nfedpa reproduce -p rounds 500\n```\n"
    )
    assert [n for n, _ in prose_numbers(text)] == ["0.96", "2", "3.5e-7", "10^-3"]


@pytest.mark.parametrize("stem", CONVERTED)
def test_prose_numbers_are_glued_or_allowed(stem):
    found = unglued(stem)
    assert not found, f"{stem}: glue these or allow-list them as fixed facts: {found}"


def test_unconverted_chapters_still_need_glue():
    """Keeps :data:`CONVERTED` honest: a chapter whose prose passes must be listed there.

    The others still type computed numbers (the prose rewrite glues them): at the time of
    writing ``fedavg_bias`` (orders of magnitude), ``least_squares``, ``local_inference``,
    ``performance`` (timings) and ``posterior_inference_2d``.
    """
    for stem in sorted(set(CHAPTERS) - set(CONVERTED)):
        assert unglued(stem), f"{stem}: every prose number is glued or allowed; add it to CONVERTED"
