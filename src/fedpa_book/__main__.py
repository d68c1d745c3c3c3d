"""``python -m fedpa_book``: the same command line as the ``fedpa`` console script."""

import sys

from .reproduce.cli import main

if __name__ == "__main__":
    sys.exit(main())
