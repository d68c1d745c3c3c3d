"""The ``fedpa`` command: ``fedpa reproduce`` (run the chapters), ``fedpa book`` (the HTML).

Examples::

    fedpa reproduce --profile smoke --output-dir /tmp/figs
    fedpa reproduce --only least_squares -p rounds 500 -p least_squares.seed 3
    fedpa reproduce --check --jobs 2        # regenerate the paper profile, compare with figures/
    fedpa reproduce --list
    fedpa book

Exit status: 0 success, 1 a notebook failed, the book failed or ``--check`` found a mismatch,
2 invalid parameters or specs (nothing ran).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from .build import build_book
from .check import regenerate_and_compare
from .execute import format_summary, reproduce
from .spec import SpecError, discover, find_root


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedpa", description="Reproduce the FedPA book (Al-Shedivat et al., ICLR 2021)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser(
        "reproduce",
        help="execute the chapter notebooks with papermill and write their figures",
        description="Execute every chapter notebook (or --only some) with the parameters of a "
        "profile from book/<stem>.yml; all parameters are validated before anything runs.",
    )
    r.add_argument("--profile", default="paper", help="profile from book/<stem>.yml (smoke, paper)")
    r.add_argument(
        "--only", action="append", default=[], metavar="NOTEBOOK", help="chapter stem(s) to run"
    )
    r.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="override a parameter (NAME or STEM.NAME; VALUE is parsed as JSON/YAML data)",
    )
    r.add_argument("--output-dir", help="figures root (default: figures/ in the repository)")
    r.add_argument("--build-dir", help="build folder (default: <repo>/_build)")
    r.add_argument("--list", action="store_true", help="list chapters, parameters and profiles")
    r.add_argument(
        "--check",
        action="store_true",
        help="regenerate into a temporary folder and compare every data file with the committed "
        "one (--output-dir, default figures/) within the tolerances of book/<stem>.yml",
    )
    r.add_argument("--keep-going", action="store_true", help="run the rest after a failure")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.add_argument("--timeout", type=float, help="per-cell timeout in seconds")
    r.add_argument("-j", "--jobs", type=int, default=1, help="notebooks run at the same time")
    b = sub.add_parser("book", help="build the HTML from the executed notebooks")
    b.add_argument("--build-dir", help="build folder (default: <repo>/_build)")
    b.add_argument("--no-strict", action="store_true", help="do not turn warnings into errors")
    return parser


def list_chapters(root=None) -> str:
    """Chapters with their parameters (type, range, default, profile values, help) and figures."""
    out = []
    for chapter in discover(find_root() if root is None else root):
        out += [
            f"{chapter.stem}  (book/{chapter.stem}.md)",
            f"  profiles: {', '.join(chapter.profiles) or 'none'}",
            f"  figures:  {', '.join(chapter.figures) or 'none'}",
        ]
        for name, p in chapter.parameters.items():
            values = [f"default={p.default!r}"] + [
                f"{prof}={vals[name]!r}" for prof, vals in chapter.profiles.items() if name in vals
            ]
            line = f"    {name:<18} {p.describe():<28} {'  '.join(values)}"
            out.append(line + (f"  # {p.help}" if p.help else ""))
        out.append("")
    return "\n".join(out) or "no chapters found"


def _reproduce(args) -> int:
    if args.list:
        print(list_chapters())
        return 0
    start = time.time()
    run_args = dict(
        profile=args.profile,
        only=args.only,
        overrides=[tuple(p) for p in args.parameter],
        build_dir=args.build_dir,
        progress=not args.no_progress,
        keep_going=args.keep_going,
        timeout=args.timeout,
        jobs=args.jobs,
    )
    mismatches: list[str] = []
    if args.check:
        figures = args.output_dir or find_root() / "figures"
        results, mismatches = regenerate_and_compare(figures_dir=figures, **run_args)
    else:
        results = reproduce(output_dir=args.output_dir, **run_args)
    print("\n" + format_summary(results))
    print(f"\nprofile {args.profile}: {len(results)} notebook(s) in {time.time() - start:.1f} s")
    for line in mismatches:
        print(f"MISMATCH {line}", file=sys.stderr)
    failed = [r.stem for r in results if not r.ok]
    if failed:
        print(f"fedpa reproduce: FAILED: {', '.join(failed)}", file=sys.stderr)
    if mismatches:
        print(f"fedpa reproduce --check: {len(mismatches)} mismatch(es)", file=sys.stderr)
    if failed or mismatches:
        return 1
    if args.check:
        print(f"--check: every committed data file in {figures} agrees within tolerance")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedpa`` console script and ``python -m fedpa_book``."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "reproduce":
            return _reproduce(args)
        index = build_book(build_dir=args.build_dir, strict=not args.no_strict)
    except SpecError as err:
        print(f"fedpa {args.command}: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"fedpa {args.command}: error: {err}", file=sys.stderr)
        return 1
    print(f"\nThe book: {index}")
    return 0
