"""The benchmark script runs at tiny sizes and writes valid JSON and markdown (not timed)."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root holds benchmarks/

from benchmarks import rounds  # noqa: E402


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert rounds.main(["--profile", "tiny", "--out", str(out)]) == 0
    return json.loads((out / "tiny.json").read_text()), (out / "tiny.md").read_text()


def test_json_has_hardware_and_every_part(written):
    result, _ = written
    hw = result["hardware"]
    assert hw["cpu_count"] >= 1 and hw["backend"] == "cpu" and hw["jax"]
    assert {r["algorithm"] for r in result["rounds"]} == {"FedAvg", "FedPA-exact"}
    for row in result["rounds"] + result["scaling"]:
        assert row["s_per_round"] > 0 and row["compile_s"] >= 0
        assert row["s_per_round_min"] <= row["s_per_round"]
        assert row["peak_rss_bytes"] > 0
    (delta,) = result["delta"]
    assert delta["dp_s"] > 0 and delta["direct_s"] > 0
    assert delta["max_rel_diff"] < 1e-4  # the DP and the direct solve agree
    assert result["scaling"][0]["client_chunk_size"] == 8


def test_markdown_has_the_three_tables(written):
    result, text = written
    for title in ("Seconds per round", "dynamic program vs direct", "Scaling"):
        assert f"## {title}" in text or title in text
    table_rows = [line for line in text.splitlines() if line.startswith("| FedAvg |")]
    assert len(table_rows) == len(
        [r for r in result["rounds"] + result["scaling"] if r["algorithm"] == "FedAvg"]
    )


def test_unknown_profile_is_rejected():
    with pytest.raises(ValueError, match="profile must be one of"):
        rounds.run_benchmark("huge")
