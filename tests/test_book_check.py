"""`fedpa reproduce --check`: committed figure data vs a regeneration, within tolerances."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_reproduce import SPEC, make_root

from fedpa_book.reproduce import check, cli, spec

REPO = Path(__file__).resolve().parents[1]


def _chapter(stem: str) -> spec.Chapter:
    return spec.load_chapter(REPO / "book" / f"{stem}.yml")


def _copy(stem: str, tmp_path: Path) -> Path:
    """A copy of the committed ``figures/<stem>/`` (the regeneration of an unchanged run)."""
    shutil.copytree(REPO / "figures" / stem, tmp_path / "copy" / stem)
    return tmp_path / "copy"


@pytest.mark.parametrize("stem", ["fedavg_bias", "posterior_inference_2d"])
def test_unchanged_committed_figures_pass(stem, tmp_path):
    assert (REPO / "figures" / stem).is_dir()
    assert check.compare_folders(REPO / "figures", _copy(stem, tmp_path), [_chapter(stem)]) == []


def test_one_perturbed_committed_value_fails_naming_file_column_row_and_values(tmp_path):
    copy = _copy("fedavg_bias", tmp_path)
    path = copy / "fedavg_bias" / "fig_bias.csv"
    table = pd.read_csv(path)
    row = int(table["relative_distance"].idxmax())
    old = float(table.loc[row, "relative_distance"])
    new = float(f"{old * 1.01:.10g}")  # 1%: far outside the declared tolerance
    table.loc[row, "relative_distance"] = new
    table.to_csv(path, index=False, float_format="%.10g", lineterminator="\n")
    found = check.compare_folders(REPO / "figures", copy, [_chapter("fedavg_bias")])
    assert len(found) == 1, found
    assert found[0].startswith(
        f"fedavg_bias/fig_bias.csv: column 'relative_distance', row {row}: committed {old!r}, "
        f"regenerated {new!r}"
    )


def test_perturbed_json_value_fails_and_provenance_is_ignored(tmp_path):
    copy = _copy("posterior_inference_2d", tmp_path)
    path = copy / "posterior_inference_2d" / "fig_trajectories.json"
    doc = json.loads(path.read_text())
    doc["provenance"] = {"date": "1999-01-01", "cpu": "another machine"}
    path.write_text(json.dumps(doc))
    chapter = _chapter("posterior_inference_2d")
    assert check.compare_folders(REPO / "figures", copy, [chapter]) == []
    leaves = check._leaves(doc["data"])
    where, value = next((p, v) for p, v in leaves.items() if isinstance(v, float) and abs(v) > 0.1)
    node = doc["data"]
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value + 0.5
    path.write_text(json.dumps(doc))
    found = check.compare_folders(REPO / "figures", copy, [chapter])
    assert len(found) == 1 and found[0].startswith("posterior_inference_2d/fig_trajectories.json")
    assert f"committed {value!r}, regenerated {value + 0.5!r}" in found[0]


def _pair(tmp_path, old: dict, new: dict) -> tuple[Path, Path]:
    paths = tmp_path / "old.csv", tmp_path / "new.csv"
    for path, data in zip(paths, (old, new), strict=True):
        pd.DataFrame(data).to_csv(path, index=False)
    return paths


def test_floor_tied_to_the_column_scale_and_relative_part(tmp_path):
    fig = spec.Figure("f", spec.Tolerance(rtol=1e-3, floor=1e-6))
    # float noise near zero in a column of order one: within the floor
    old, new = _pair(tmp_path, {"x": [1.0, 2e-7]}, {"x": [1.0, 9e-7]})
    assert check.compare_file(old, new, fig) == []
    # ... but not in a column whose scale is that small
    old, new = _pair(tmp_path, {"x": [3e-7, 2e-7]}, {"x": [3e-7, 9e-7]})
    assert check.compare_file(old, new, fig)[0].startswith("column 'x', row 1: committed 2e-07")
    # the relative part: 0.05% passes, 1% does not
    old, new = _pair(tmp_path, {"x": [100.0]}, {"x": [100.05]})
    assert check.compare_file(old, new, fig) == []
    old, new = _pair(tmp_path, {"x": [100.0]}, {"x": [101.0]})
    assert len(check.compare_file(old, new, fig)) == 1
    # text columns compare exactly, shapes and column names must agree
    old, new = _pair(tmp_path, {"m": ["FedAvg"]}, {"m": ["FedPA"]})
    assert "committed 'FedAvg', regenerated 'FedPA'" in check.compare_file(old, new, fig)[0]
    old, new = _pair(tmp_path, {"x": [1.0]}, {"x": [1.0, 2.0]})
    assert check.compare_file(old, new, fig) == ["rows: committed 1, regenerated 2"]
    old, new = _pair(tmp_path, {"x": [1.0]}, {"y": [1.0]})
    assert check.compare_file(old, new, fig)[0].startswith("columns: committed ['x']")


def test_measurements_are_checked_for_presence_and_shape_only(tmp_path):
    timed = spec.Figure("f", measurements=("seconds",))
    old, new = _pair(tmp_path, {"d": [10], "seconds": [0.1]}, {"d": [10], "seconds": [7.0]})
    assert check.compare_file(old, new, timed) == []
    whole = spec.Figure("f", measurement=True)
    old, new = _pair(tmp_path, {"d": [10]}, {"d": [99]})
    assert check.compare_file(old, new, whole) == []
    old, new = _pair(tmp_path, {"d": [10]}, {"d": [10, 20]})
    assert check.compare_file(old, new, whole) == ["rows: committed 1, regenerated 2"]


def test_every_real_spec_declares_valid_tolerances():
    for path in sorted((REPO / "book").glob("*.yml")):
        chapter = spec.load_chapter(path)
        for fig in chapter.figures.values():
            assert 0 <= fig.tolerance.rtol < 0.5 and 0 <= fig.tolerance.floor < 0.5, path


def test_cli_check_regenerates_and_compares(tmp_path, monkeypatch, capsys):
    """End to end on a tiny chapter: passes, then fails on a perturbed committed value."""
    root = make_root(tmp_path)
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/tiny\n")
    (root / "book" / "tiny.yml").write_text(
        yaml.safe_dump(dict(SPEC, figures={"fig_a": {"tolerance": {"rtol": 0.01}}}))
    )
    committed = tmp_path / "committed"
    monkeypatch.chdir(root)
    args = ["reproduce", "--profile", "smoke", "--no-progress", "--output-dir", str(committed)]
    assert cli.main(args) == 0
    capsys.readouterr()
    assert cli.main([*args, "--check"]) == 0
    assert "agrees within tolerance" in capsys.readouterr().out
    (committed / "tiny" / "fig_a.json").write_text('{"rounds": 4}')
    assert cli.main([*args, "--check"]) == 1
    err = capsys.readouterr().err
    assert "MISMATCH tiny/fig_a.json: column 'rounds', row 0: committed 4, regenerated 3" in err
