"""Plotting helpers for the book chapters (matplotlib; the notebooks only call these).

* :func:`objective_grid` evaluates every client objective and the global objective of a 2-D
  quadratic problem on a grid; :func:`plot_objectives` draws their contours, the client optima
  and the global optimum.
* :func:`plot_trajectories` draws server trajectories (from :func:`fedpa.analysis.trajectory`);
  :func:`trajectory_figure` puts the objectives and groups of trajectories side by side.
* :func:`animate_trajectories` moves the same panels round by round; :func:`save_animation`
  writes it as a GIF atomically and :func:`gif_html` embeds that GIF in a page.
* :func:`plot_distances` and :func:`bias_figure` are the line plots of the FedAvg-bias chapter.

Colors follow :data:`fedpa_book.plotting.ALGORITHM_COLORS` (one hue per algorithm family,
lighter shades for the variants of a family).
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from fedpa.problems import FederatedProblem

from .io import atomic_write
from .style import ALGORITHM_COLORS, CLIENT_COLORS, FAMILIES, algorithm_color

__all__ = [
    "objective_grid",
    "plot_objectives",
    "plot_trajectories",
    "trajectory_figure",
    "plot_distances",
    "animate_trajectories",
    "save_animation",
    "gif_html",
    "bias_figure",
]


def _quadratic_parts(problem: FederatedProblem):
    post = problem.clients.posterior
    if post is None or np.shape(post.mean)[-1] != 2:
        raise ValueError(
            f"problem must be a 2-D quadratic problem with exact local posteriors, got "
            f"{problem.name!r}"
        )
    chol = np.asarray(post.precision_cholesky, np.float64)
    hessians = chol @ np.swapaxes(chol, -1, -2)
    return np.asarray(post.mean, np.float64), hessians


def objective_grid(problem: FederatedProblem, xlim, ylim, num: int = 150) -> dict:
    """Client and global objectives of a 2-D quadratic problem on a ``num × num`` grid.

    Each objective is shifted to have minimum zero: ``f_i(x) = ½ (x - μ_i)ᵀ A_i (x - μ_i)`` and
    ``F(x) = ½ (x - x*)ᵀ H (x - x*)`` with ``H = Σ_i w_i A_i``.

    Returns:
      ``{"x": (num,), "y": (num,), "clients": (num_clients, num, num), "global": (num, num)}``
      where ``[..., j, k]`` is the value at ``(x[k], y[j])`` (matplotlib's ``contour`` layout).
    """
    if num < 2:
        raise ValueError(f"num must be >= 2, got num={num}")
    means, hessians = _quadratic_parts(problem)
    weights = np.asarray(problem.client_weights(), np.float64)
    xs = np.linspace(*xlim, num)
    ys = np.linspace(*ylim, num)
    points = np.stack(np.meshgrid(xs, ys), axis=-1)  # (num, num, 2)

    def form(h, center):
        diff = points - center
        return 0.5 * np.einsum("...i,ij,...j->...", diff, h, diff)

    clients = np.stack([form(h, m) for h, m in zip(hessians, means, strict=True)])
    global_h = np.einsum("c,cij->ij", weights, hessians)
    optimum = np.linalg.solve(global_h, np.einsum("c,cij,cj->i", weights, hessians, means))
    return {"x": xs, "y": ys, "clients": clients, "global": form(global_h, optimum)}


def plot_objectives(
    ax,
    problem: FederatedProblem,
    xlim=(-3.0, 3.0),
    ylim=(-2.0, 4.0),
    *,
    levels: Sequence[float] = (0.02, 0.1, 0.3, 0.8),
    show_global: bool = True,
    num: int = 150,
    legend: bool = True,
):
    """Contours of each client objective, the client optima and the global optimum.

    Args:
      ax: a matplotlib axes.
      problem: a 2-D quadratic problem (e.g. :func:`fedpa.problems.quadratic_2d`).
      xlim, ylim: the plotted box.
      levels: objective values of the contour lines (objectives have minimum zero).
      show_global: also draw the global objective's contours (thin, grey).
    """
    grid = objective_grid(problem, xlim, ylim, num)
    means, _ = _quadratic_parts(problem)
    for i, values in enumerate(grid["clients"]):
        color = CLIENT_COLORS[i % len(CLIENT_COLORS)]
        ax.contour(grid["x"], grid["y"], values, levels=list(levels), colors=[color], alpha=0.8)
        ax.plot(*means[i], "X", color=color, ms=10, mec="white", label=f"client {i + 1} optimum")
    if show_global:
        ax.contour(
            grid["x"],
            grid["y"],
            grid["global"],
            levels=list(levels),
            colors=["0.6"],
            linewidths=0.6,
            linestyles="dotted",
        )
    optimum = np.asarray(problem.global_optimum())
    ax.plot(
        *optimum,
        "*",
        color=ALGORITHM_COLORS["optimum"],
        ms=15,
        mec="white",
        label="global optimum",
        zorder=6,
    )
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    if legend:
        ax.legend(loc="upper left", fontsize="small", framealpha=0.9)
    return ax


def _colors(trajectories: Mapping[str, np.ndarray], colors) -> dict:
    if colors is not None:
        return dict(colors)
    families: dict[str, list[str]] = {}
    for name in trajectories:
        fam = next((f for f in FAMILIES if name.startswith(f)), name)
        families.setdefault(fam, []).append(name)
    out = {}
    for names in families.values():
        for j, name in enumerate(names):
            out[name] = algorithm_color(name, j, len(names))
    return out


def plot_trajectories(ax, trajectories: Mapping[str, np.ndarray], *, colors=None, upto=None):
    """Draws ``(T, 2)`` server trajectories: a line with a dot per round, a circle at the end.

    Args:
      trajectories: ``{label: (T, 2) array}``.
      colors: ``{label: color}``; default from the algorithm families.
      upto: draw rounds ``0 … upto`` only (for animations); default all.

    Returns:
      ``{label: (line, end_marker)}``.
    """
    colors = _colors(trajectories, colors)
    artists = {}
    for name, path in trajectories.items():
        path = np.asarray(path)
        if path.ndim != 2 or path.shape[1] != 2:
            raise ValueError(f"trajectory {name!r} must have shape (T, 2), got {path.shape}")
        shown = path if upto is None else path[: upto + 1]
        (line,) = ax.plot(
            shown[:, 0],
            shown[:, 1],
            "-",
            color=colors[name],
            lw=1.6,
            alpha=0.9,
            marker=".",
            ms=3,
            label=name,
        )
        (end,) = ax.plot(*shown[-1], "o", color=colors[name], ms=8, mec="black", mew=0.8)
        artists[name] = (line, end)
    return artists


def _legend(ax, arts, loc, extra=()):
    handles = [line for line, _ in arts.values()] + list(extra)
    ax.legend(handles=handles, loc=loc, fontsize="x-small", framealpha=0.9)


def trajectory_figure(
    problem: FederatedProblem,
    panels: Sequence[tuple[str, Mapping[str, np.ndarray]]],
    xlim=(-3.0, 3.0),
    ylim=(-2.0, 4.0),
    *,
    points: Sequence[Mapping[str, np.ndarray] | None] | None = None,
    objectives_title: str = "Client objectives",
    panel_size: float = 4.2,
    legend_loc: str = "lower right",
):
    """A row of panels: the objectives alone, then one panel per group of trajectories.

    Args:
      panels: ``[(title, {label: (T, 2) trajectory}), ...]``.
      points: optional, one ``{label: (n, 2) points}`` (or ``None``) per trajectory panel, drawn
        as hollow squares in the label's algorithm color (e.g. FedAvg's exact fixed points).

    Returns:
      the matplotlib figure.
    """
    import matplotlib.pyplot as plt

    if points is None:
        points = [None] * len(panels)
    if len(points) != len(panels):
        raise ValueError(f"points must have one entry per panel ({len(panels)}), got {len(points)}")
    ncols = len(panels) + 1
    fig, axes = plt.subplots(1, ncols, figsize=(panel_size * ncols, panel_size))
    plot_objectives(axes[0], problem, xlim, ylim)
    axes[0].set_title(objectives_title)
    for ax, (title, trajs), pts in zip(axes[1:], panels, points, strict=True):
        plot_objectives(ax, problem, xlim, ylim, legend=False)
        arts = plot_trajectories(ax, trajs)
        extra = []
        for label, xy in (pts or {}).items():
            xy = np.atleast_2d(np.asarray(xy))
            (h,) = ax.plot(
                xy[:, 0],
                xy[:, 1],
                "s",
                color=algorithm_color(label),
                mfc="none",
                ms=9,
                mew=1.5,
                label=label,
                ls="none",
            )
            extra.append(h)
        _legend(ax, arts, legend_loc, extra)
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_distances(ax, trajectories: Mapping[str, np.ndarray], optimum, *, colors=None):
    """``‖x_r - x*‖`` against rounds ``r`` (log scale) for each trajectory."""
    colors = _colors(trajectories, colors)
    optimum = np.asarray(optimum)
    for name, path in trajectories.items():
        dist = np.linalg.norm(np.asarray(path) - optimum, axis=-1)
        ax.plot(np.arange(len(dist)), dist, color=colors[name], lw=1.6, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("round")
    ax.set_ylabel(r"$\|x_r - x^\star\|$")
    ax.legend(fontsize="small")
    return ax


def animate_trajectories(
    problem: FederatedProblem,
    panels: Sequence[tuple[str, Mapping[str, np.ndarray]]],
    xlim=(-3.0, 3.0),
    ylim=(-2.0, 4.0),
    *,
    frames: int = 40,
    panel_size: float = 4.0,
    dpi: int = 80,
    legend_loc: str = "lower right",
) -> list:
    """The algorithms moving side by side, round by round, over the client objectives.

    The static part (contours, axes, legends) is drawn once; each frame restores it and draws
    only the trajectories and the round counter (Agg blitting), so a frame costs milliseconds.

    Args:
      panels: ``[(title, {label: (T, 2) trajectory}), ...]``, all with the same ``T``.
      frames: number of frames (rounds are subsampled evenly, first and last included).
      dpi: resolution of the frames.

    Returns:
      a list of ``PIL.Image`` frames (RGB); write them with :func:`save_animation`.
    """
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    lengths = {len(np.asarray(p)) for _, trajs in panels for p in trajs.values()}
    if len(lengths) != 1:
        raise ValueError(f"trajectories must all have the same length, got lengths {lengths}")
    if frames < 2:
        raise ValueError(f"frames must be >= 2, got frames={frames}")
    (length,) = lengths
    rounds = np.unique(np.linspace(0, length - 1, frames).round().astype(int))
    fig, axes = plt.subplots(
        1, len(panels), figsize=(panel_size * len(panels), panel_size + 0.3), dpi=dpi
    )
    plt.close(fig)  # never shown by the notebook; only rendered here
    canvas = FigureCanvasAgg(fig)
    axes = np.atleast_1d(axes)
    moving = []
    for ax, (title, trajs) in zip(axes, panels, strict=True):
        plot_objectives(ax, problem, xlim, ylim, legend=False)
        arts = plot_trajectories(ax, trajs, upto=0)
        _legend(ax, arts, legend_loc)
        ax.set_title(title)
        for line, end in arts.values():
            line.set_animated(True)
            end.set_animated(True)
        stars = [ln for ln in ax.get_lines() if ln.get_label() == "global optimum"]
        moving.append((ax, trajs, arts, stars))
    counter = fig.text(0.5, 0.01, "", ha="center", va="bottom", fontsize="large", animated=True)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    canvas.draw()
    background = canvas.copy_from_bbox(fig.bbox)
    images = []
    for r in rounds:
        canvas.restore_region(background)
        for ax, trajs, arts, stars in moving:
            for name, (line, end) in arts.items():
                path = np.asarray(trajs[name])[: r + 1]
                line.set_data(path[:, 0], path[:, 1])
                end.set_data([path[-1, 0]], [path[-1, 1]])
                ax.draw_artist(line)
                ax.draw_artist(end)
            for star in stars:  # the optimum stays on top of the paths
                ax.draw_artist(star)
        counter.set_text(f"round {int(r)} of {length - 1}")
        fig.draw_artist(counter)
        rgba = np.asarray(canvas.buffer_rgba())
        images.append(Image.fromarray(rgba[..., :3].copy()))
    return images


def save_animation(
    images: Sequence,
    name: str,
    *,
    chapter: str,
    output_dir: str | os.PathLike = "figures",
    fps: int = 8,
    hold_last: int = 8,
) -> Path:
    """Writes frames (from :func:`animate_trajectories`) as ``<output_dir>/<chapter>/<name>.gif``.

    The GIF (looping, ``fps`` frames per second, the last frame held ``hold_last`` times longer)
    is encoded in memory and written atomically with :func:`fedpa_book.plotting.atomic_write`.
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"name must be a plain file stem, got {name!r}")
    if not chapter or "/" in chapter:
        raise ValueError(f"chapter must be a plain folder name, got {chapter!r}")
    if fps < 1:
        raise ValueError(f"fps must be >= 1, got fps={fps}")
    if hold_last < 1:
        raise ValueError(f"hold_last must be >= 1, got hold_last={hold_last}")
    images = list(images)
    if not images:
        raise ValueError("images must hold at least one frame, got none")
    from PIL import Image

    frame_ms = round(1000 / fps)
    durations = [frame_ms] * (len(images) - 1) + [frame_ms * hold_last]
    # One palette for all frames, from the last (it shows every trajectory): mapping each frame
    # onto it is fast and keeps the file small.
    palette = images[-1].convert("RGB").quantize(colors=255, method=Image.Quantize.MEDIANCUT)
    frames = [
        im.convert("RGB").quantize(palette=palette, dither=Image.Dither.NONE) for im in images
    ]
    buf = io.BytesIO()
    frames[0].save(
        buf, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0
    )
    return atomic_write(Path(output_dir) / chapter / f"{name}.gif", buf.getvalue())


def gif_html(path: str | os.PathLike, width: str = "100%"):
    """An ``IPython.display.HTML`` that embeds the GIF at ``path`` (base64, self-contained)."""
    from IPython.display import HTML

    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return HTML(f'<img src="data:image/gif;base64,{data}" style="width:{width}" alt="animation"/>')


def bias_figure(exact, simulated, *, fedpa=None, figsize=(11.0, 4.2)):
    """Relative distance of FedAvg's fixed point from the optimum against local steps.

    Two panels with the same data: a linear y axis (left: the size of the bias) and a log y axis
    (right: small values, e.g. ``h = 0`` and FedPA at float rounding).

    Args:
      exact: DataFrame with columns ``heterogeneity, local_steps, relative_distance`` (the exact
        fixed-point curves, one line per heterogeneity).
      simulated: the same columns, simulated stochastic FedAvg (markers).
      fedpa: optional, the same columns for FedPA-exact (dashed blue lines, one per
        heterogeneity; they sit at the bottom).

    Returns:
      the matplotlib figure.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=figsize)
    hs = sorted(set(exact["heterogeneity"]))
    cmap = plt.get_cmap("magma")
    for ax, yscale in zip(axes, ("linear", "log"), strict=True):
        for j, h in enumerate(hs):
            color = cmap(0.15 + 0.65 * j / max(len(hs) - 1, 1))
            e = exact[exact["heterogeneity"] == h].sort_values("local_steps")
            ax.plot(
                e["local_steps"],
                e["relative_distance"],
                "-",
                color=color,
                lw=2,
                label=f"FedAvg, exact fixed point, $h={h:g}$",
            )
            s = simulated[simulated["heterogeneity"] == h].sort_values("local_steps")
            ax.plot(s["local_steps"], s["relative_distance"], "o", color=color, mec="white", ms=8)
        ax.plot([], [], "o", color="0.4", mec="white", ms=8, label="FedAvg, simulated (local SGD)")
        if fedpa is not None:
            for j, h in enumerate(sorted(set(fedpa["heterogeneity"]))):
                f = fedpa[fedpa["heterogeneity"] == h].sort_values("local_steps")
                ax.plot(
                    f["local_steps"],
                    f["relative_distance"],
                    "--",
                    color=ALGORITHM_COLORS["FedPA"],
                    lw=1.5,
                    label="FedPA-exact (every $h$)" if j == 0 else None,
                )
        ax.set_xscale("log")
        ax.set_yscale(yscale)
        ax.set_xlabel("local steps $K$")
        ax.set_ylabel(r"$\|\bar x_K - x^\star\| \,/\, \|x^\star\|$")
        ax.set_title("linear scale" if yscale == "linear" else "log scale")
    axes[1].legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig
