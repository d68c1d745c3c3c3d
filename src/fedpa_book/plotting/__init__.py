"""The book's plotting: one theme and palette, figure panels, atomic save with provenance.

Notebooks call ``plotting.theme()`` once, draw with the panel helpers (or seaborn), and write each
figure with ``plotting.save(fig, name, chapter=..., data=..., params=..., output_dir=...)``.
"""

from .io import METADATA_KEYS, atomic_write, provenance, save, to_jsonable
from .panels import (
    animate_trajectories,
    bias_figure,
    gif_html,
    objective_grid,
    plot_distances,
    plot_objectives,
    plot_trajectories,
    save_animation,
    trajectory_figure,
)
from .style import ALGORITHM_COLORS, CLIENT_COLORS, FAMILIES, algorithm_color, theme

__all__ = [
    "ALGORITHM_COLORS",
    "CLIENT_COLORS",
    "FAMILIES",
    "METADATA_KEYS",
    "algorithm_color",
    "animate_trajectories",
    "atomic_write",
    "bias_figure",
    "gif_html",
    "objective_grid",
    "plot_distances",
    "plot_objectives",
    "plot_trajectories",
    "provenance",
    "save",
    "save_animation",
    "theme",
    "to_jsonable",
    "trajectory_figure",
]
