"""Command line: ``fedpa reproduce`` (run the chapter notebooks) and ``fedpa book`` (HTML).

Examples::

    fedpa reproduce --profile smoke --output-dir /tmp/figs
    fedpa reproduce --only least_squares -p rounds 500 -p least_squares.seed 3
    fedpa reproduce --list
    fedpa book
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from . import reproduce as rp


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
        "--only",
        action="append",
        default=[],
        metavar="NOTEBOOK",
        help="chapter stem(s) to run; repeatable or a comma list (default: all)",
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
    r.add_argument(
        "--output-dir", default=None, help="figures root (default: figures/ in the repository)"
    )
    r.add_argument("--build-dir", default=None, help="build folder (default: <repo>/_build)")
    r.add_argument("--list", action="store_true", help="list chapters, parameters and profiles")
    r.add_argument("--keep-going", action="store_true", help="run the rest after a failure")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.add_argument("--timeout", type=float, default=None, help="per-cell timeout in seconds")
    r.add_argument(
        "-j", "--jobs", type=int, default=1, help="notebooks run at the same time (default 1)"
    )
    b = sub.add_parser(
        "book",
        help="build the HTML book from the executed notebooks (after `fedpa reproduce`)",
    )
    b.add_argument("--build-dir", default=None, help="build folder (default: <repo>/_build)")
    b.add_argument("--no-strict", action="store_true", help="do not turn warnings into errors")
    return parser


def _reproduce(args) -> int:
    if args.list:
        print(rp.list_chapters())
        return 0
    start = time.time()
    try:
        results = rp.reproduce(
            profile=args.profile,
            only=args.only,
            overrides=[tuple(p) for p in args.parameter],
            output_dir=args.output_dir,
            build_dir=args.build_dir,
            progress=not args.no_progress,
            keep_going=args.keep_going,
            timeout=args.timeout,
            jobs=args.jobs,
        )
    except rp.SpecError as err:
        print(f"fedpa reproduce: error: {err}", file=sys.stderr)
        return 2
    print()
    print(rp.format_summary(results))
    failed = [r.stem for r in results if not r.ok]
    print(f"\nprofile {args.profile}: {len(results)} notebook(s) in {time.time() - start:.1f} s")
    if failed:
        print(f"fedpa reproduce: FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _book(args) -> int:
    try:
        index = rp.build_book(build_dir=args.build_dir, strict=not args.no_strict)
    except (rp.SpecError, RuntimeError) as err:
        print(f"fedpa book: error: {err}", file=sys.stderr)
        return 1
    print(f"\nThe book: {index}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedpa`` console script and ``python -m fedpa``."""
    args = _parser().parse_args(argv)
    if args.command == "reproduce":
        return _reproduce(args)
    return _book(args)


if __name__ == "__main__":
    sys.exit(main())
