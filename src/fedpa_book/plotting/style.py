"""The book's look: one seaborn theme and one colour per algorithm family, in every chapter."""

from __future__ import annotations

import numpy as np

__all__ = ["ALGORITHM_COLORS", "CLIENT_COLORS", "FAMILIES", "algorithm_color", "theme"]

# One color per algorithm family, the same in every chapter.
ALGORITHM_COLORS = {
    "mini-batch SGD": "#7f7f7f",
    "FedAvg": "#d62728",
    "FedPA": "#1f77b4",
    "FedPA-exact": "#1f77b4",
    "FedPA-IASG": "#2ca02c",
    "optimum": "#000000",
}


def theme() -> None:
    """The book's seaborn theme (call once per notebook)."""
    import matplotlib as mpl
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    mpl.rcParams.update(
        {
            "figure.dpi": 100,
            "savefig.dpi": 150,
            "savefig.bbox": "tight",
            "svg.hashsalt": "fedpa",  # deterministic SVG ids
            "axes.titleweight": "bold",
        }
    )


CLIENT_COLORS = ("#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#f0e442", "#d55e00")

FAMILIES = ("FedPA-IASG", "FedPA-exact", "FedPA", "FedAvg", "mini-batch SGD")


def algorithm_color(name: str, index: int = 0, count: int = 1):
    """The color of algorithm ``name`` (matched by family prefix), variant ``index`` of ``count``.

    Variants of one family get shades from light (``index = 0``) to the family color
    (``index = count - 1``). Returns an RGB tuple.
    """
    from matplotlib.colors import to_rgb

    if count < 1 or not 0 <= index < count:
        raise ValueError(f"index must be in [0, count) with count >= 1, got {index=}, {count=}")
    base = next(
        (ALGORITHM_COLORS[f] for f in FAMILIES if name.startswith(f)), ALGORITHM_COLORS["optimum"]
    )
    rgb = np.asarray(to_rgb(base))
    lighten = 0.55 * (count - 1 - index) / max(count - 1, 1)
    return tuple(float(c) for c in rgb + (1.0 - rgb) * lighten)
