"""fedpa_book.plotting: objective grids, panels, the GIF animation, the bias figure, save."""

import dataclasses

import matplotlib

matplotlib.use("Agg")

import jax  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from PIL import Image  # noqa: E402

from fedpa import problems  # noqa: E402
from fedpa_book import plotting as plots  # noqa: E402
from fedpa_book.plotting import ALGORITHM_COLORS  # noqa: E402


@pytest.fixture(scope="module")
def two_d():
    return problems.quadratic_2d(jax.random.key(0), samples_per_client=50)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _paths(length=21):
    rng = np.random.default_rng(0)
    walk = lambda s: np.cumsum(rng.normal(scale=s, size=(length, 2)), axis=0)  # noqa: E731
    return {"FedAvg (10 steps)": walk(0.1), "FedAvg (100 steps)": walk(0.2)}, {
        "FedPA (10 samples)": walk(0.1)
    }


def test_objective_grid_matches_the_problem_objectives(two_d):
    grid = plots.objective_grid(two_d, (-2.0, 2.0), (-1.0, 3.0), num=7)
    assert grid["clients"].shape == (2, 7, 7) and grid["global"].shape == (7, 7)
    xs, ys = np.meshgrid(grid["x"], grid["y"])
    points = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)
    # The global objective, shifted to minimum zero.
    f = jax.vmap(two_d.objective)(points) - two_d.objective(two_d.global_optimum())
    np.testing.assert_allclose(grid["global"].ravel(), f, rtol=1e-4, atol=1e-4)
    # Client i's average loss on its own data, shifted to minimum zero.
    for i in range(2):
        data = two_d.client(i).data
        mu = two_d.clients.posterior.mean[i]
        fi = jax.vmap(lambda x, d=data: two_d.loss_fn(x, d))(points) - two_d.loss_fn(mu, data)
        np.testing.assert_allclose(grid["clients"][i].ravel(), fi, rtol=1e-4, atol=1e-4)


def test_objective_grid_rejects_problems_without_2d_posteriors(two_d):
    no_posterior = dataclasses.replace(two_d, clients=two_d.clients._replace(posterior=None))
    with pytest.raises(ValueError, match="2-D quadratic"):
        plots.objective_grid(no_posterior, (-1, 1), (-1, 1))
    post = two_d.clients.posterior
    three_d = post._replace(
        mean=np.zeros((2, 3)), precision_cholesky=np.broadcast_to(np.eye(3), (2, 3, 3))
    )
    with pytest.raises(ValueError, match="2-D quadratic"):
        plots.objective_grid(
            dataclasses.replace(two_d, clients=two_d.clients._replace(posterior=three_d)),
            (-1, 1),
            (-1, 1),
        )


def test_plot_objectives_marks_client_and_global_optima(two_d):
    fig, ax = plt.subplots()
    plots.plot_objectives(ax, two_d, (-3, 3), (-2, 3))
    lines = {line.get_label(): line for line in ax.get_lines()}
    star = lines["global optimum"]
    np.testing.assert_allclose(
        np.ravel(star.get_xydata()), np.asarray(two_d.global_optimum()), atol=1e-6
    )
    for i in range(2):
        np.testing.assert_allclose(
            np.ravel(lines[f"client {i + 1} optimum"].get_xydata()),
            np.asarray(two_d.clients.posterior.mean[i]),
            atol=1e-6,
        )
    # One contour set per client plus the global objective's.
    assert len(ax.collections) == 3
    assert ax.get_xlim() == (-3, 3) and ax.get_ylim() == (-2, 3)


def test_plot_trajectories_draws_the_paths(two_d):
    fedavg, _ = _paths()
    fig, ax = plt.subplots()
    arts = plots.plot_trajectories(ax, fedavg, upto=5)
    for name, (line, end) in arts.items():
        np.testing.assert_allclose(line.get_xydata(), fedavg[name][:6])
        np.testing.assert_allclose(np.ravel(end.get_xydata()), fedavg[name][5])
    # Two FedAvg variants: distinct shades, the last one the family color.
    colors = [arts[n][0].get_color() for n in fedavg]
    assert colors[0] != colors[1]
    np.testing.assert_allclose(to_rgb(colors[1]), to_rgb(ALGORITHM_COLORS["FedAvg"]))
    with pytest.raises(ValueError, match=r"shape \(T, 2\)"):
        plots.plot_trajectories(ax, {"x": np.zeros((4, 3))})


def test_algorithm_color_families():
    assert plots.algorithm_color("FedPA (100 samples)") == to_rgb(ALGORITHM_COLORS["FedPA"])
    light = plots.algorithm_color("mini-batch SGD", 0, 3)
    base = to_rgb(ALGORITHM_COLORS["mini-batch SGD"])
    assert all(lc >= bc for lc, bc in zip(light, base, strict=True)) and light != base
    with pytest.raises(ValueError, match="index"):
        plots.algorithm_color("FedAvg", 3, 2)


def test_trajectory_figure_panels_and_points(two_d):
    fedavg, fedpa_paths = _paths()
    fp = np.array([[0.0, 0.5], [0.0, 0.8]])
    fig = plots.trajectory_figure(
        two_d, [("a", fedavg), ("b", fedpa_paths)], points=[{"FedAvg fixed points": fp}, None]
    )
    assert len(fig.axes) == 3
    squares = [ln for ln in fig.axes[1].get_lines() if ln.get_label() == "FedAvg fixed points"]
    assert len(squares) == 1
    np.testing.assert_allclose(squares[0].get_xydata(), fp)
    with pytest.raises(ValueError, match="one entry per panel"):
        plots.trajectory_figure(two_d, [("a", fedavg)], points=[None, None])


def test_animation_frames_and_gif(two_d, tmp_path):
    fedavg, fedpa_paths = _paths(length=31)
    images = plots.animate_trajectories(
        two_d, [("a", fedavg), ("b", fedpa_paths)], (-3, 3), (-2, 3), frames=6, dpi=40
    )
    assert len(images) == 6
    first, last = (np.asarray(im) for im in (images[0], images[-1]))
    assert first.shape == last.shape and first.shape[-1] == 3
    assert np.any(first != last)  # the paths grow
    path = plots.save_animation(images, "anim", chapter="ch", output_dir=tmp_path, fps=5)
    assert path == tmp_path / "ch" / "anim.gif"
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == 6
        gif.seek(5)
        assert gif.info["duration"] > 200  # the last frame is held
    assert not [p for p in (tmp_path / "ch").iterdir() if p.name.startswith(".")]
    html = plots.gif_html(path).data
    assert html.startswith('<img src="data:image/gif;base64,') and len(html) > 1000
    with pytest.raises(ValueError, match="same length"):
        plots.animate_trajectories(two_d, [("a", {"x": np.zeros((3, 2)), "y": np.zeros((4, 2))})])
    with pytest.raises(ValueError, match="name"):
        plots.save_animation(images, "a/b", chapter="ch", output_dir=tmp_path)


def test_bias_figure_draws_every_heterogeneity():
    hs, ks = [0.0, 1.0, 2.0], [1, 10, 100]
    exact = pd.DataFrame(
        [
            {"heterogeneity": h, "local_steps": k, "relative_distance": h * k / 100}
            for h in hs
            for k in ks
        ]
    )
    sim = exact[exact["local_steps"] > 1]
    fig = plots.bias_figure(exact, sim, fedpa=exact.assign(relative_distance=1e-7))
    linear, log = fig.axes
    assert linear.get_yscale() == "linear" and log.get_yscale() == "log"
    assert log.get_xscale() == "log"
    labels = [t.get_text() for t in log.get_legend().get_texts()]
    assert sum("exact fixed point" in t for t in labels) == len(hs)
    assert any("FedPA-exact" in t for t in labels)


def test_save_writes_data_params_and_provenance_and_returns_nothing(tmp_path):
    import json

    import jax as _jax

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    table = pd.DataFrame({"round": [0, 1], "loss": [1.0, 0.5]})
    out = plots.save(fig, "fig_a", chapter="ch", data=table, params={"seed": np.int64(3)},
                     output_dir=tmp_path)  # fmt: skip
    assert out is None  # a final save(...) in a cell shows nothing
    folder = tmp_path / "ch"
    assert sorted(p.name for p in folder.iterdir()) == [
        "fig_a.csv",
        "fig_a.params.json",
        "fig_a.png",
    ]
    assert (folder / "fig_a.csv").read_text() == "round,loss\n0,1\n1,0.5\n"
    meta = json.loads((folder / "fig_a.params.json").read_text())
    assert meta["params"] == {"seed": 3}
    prov = meta["provenance"]
    assert prov["jax"] == _jax.__version__ and prov["numpy"] == np.__version__
    assert prov["backend"] == _jax.default_backend() and prov["cpu"] and prov["jaxlib"]
    assert prov["date"][:2] == "20"
    plots.save(fig, "fig_b", chapter="ch", data={"x": np.arange(3)}, output_dir=tmp_path)
    doc = json.loads((folder / "fig_b.json").read_text())
    assert doc["data"] == {"x": [0, 1, 2]} and set(doc) == {"data", "params", "provenance"}
    with pytest.raises(ValueError, match="name must be a plain file stem"):
        plots.save(fig, "a/b", chapter="ch", data=table, output_dir=tmp_path)
