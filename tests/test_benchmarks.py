"""The benchmark script runs at tiny sizes and writes valid JSON and markdown (not timed)."""

import json

import pytest

from benchmarks import rounds  # the repo root is on pytest's pythonpath (pyproject.toml)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert rounds.main(["--profile", "tiny", "--out", str(out)]) == 0
    stem = rounds.results_stem("tiny")
    assert stem == "tiny-cpu"
    return json.loads((out / f"{stem}.json").read_text()), (out / f"{stem}.md").read_text()


def test_json_has_hardware_and_every_part(written):
    result, _ = written
    hw = result["hardware"]
    assert hw["cpu_count"] >= 1 and hw["backend"] == "cpu" and hw["jax"] and hw["cpu"]
    # No ratio against numbers from other hardware: the original's figures carry their machine.
    assert "machine" in result["original"]
    assert not any("speedup" in key for row in result["rounds"] for key in row)
    assert {r["algorithm"] for r in result["rounds"]} == {"FedAvg", "FedPA-exact"}
    for row in result["rounds"] + result["scaling"]:
        assert row["s_per_round"] > 0 and row["compile_s"] >= 0
        assert row["s_per_round_min"] <= row["s_per_round"]
        assert row["peak_rss_bytes"] > 0
    (delta,) = result["delta"]
    assert delta["dynprog_s"] > 0 and delta["direct_s"] > 0
    assert delta["max_rel_diff"] < 1e-4  # the dynamic program and the direct solve agree
    assert result["scaling"][0]["client_chunk_size"] == 8


def test_markdown_has_the_three_tables(written):
    result, text = written
    for title in ("Seconds per round", "dynamic program vs direct", "Scaling", "Hardware: CPU"):
        assert title in text
    table_rows = [line for line in text.splitlines() if line.startswith("| FedAvg |")]
    assert len(table_rows) == len(
        [r for r in result["rounds"] + result["scaling"] if r["algorithm"] == "FedAvg"]
    )


def test_unknown_profile_is_rejected():
    with pytest.raises(ValueError, match="profile must be one of"):
        rounds.run_benchmark("huge")


# ------------------------------------------------------- speed internals keep the statistics


def test_fast_minibatch_rows_are_uniform_and_independent():
    import jax
    import numpy as np

    from fedpa import samplers

    n, size = 7, 70_000
    idx = np.asarray(samplers.minibatch_indices(jax.random.key(0), n, (size,)))
    assert idx.min() == 0 and idx.max() == n - 1
    counts = np.bincount(idx, minlength=n)
    chi2 = ((counts - size / n) ** 2 / (size / n)).sum()
    assert chi2 < 22.5  # chi-square, 6 dof: p ≈ 0.001
    # consecutive rows are independent: the 49 ordered pairs are uniform too (48 dof)
    pairs = np.bincount(idx[:-1] * n + idx[1:], minlength=n * n)
    expected = (size - 1) / n**2
    assert ((pairs - expected) ** 2 / expected).sum() < 84.0  # p ≈ 0.001
    # different keys give different streams; the same key the same stream
    other = np.asarray(samplers.minibatch_indices(jax.random.key(1), n, (size,)))
    again = np.asarray(samplers.minibatch_indices(jax.random.key(0), n, (size,)))
    assert np.mean(idx == other) < 0.2 and np.array_equal(idx, again)


def test_mulhi_is_exact():
    import jax.numpy as jnp
    import numpy as np

    from fedpa import samplers

    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**32, 10_000, dtype=np.uint64)
    b = rng.integers(1, 2**31, 10_000, dtype=np.uint64)
    got = samplers._mulhi_u32(jnp.asarray(a.astype(np.uint32)), jnp.asarray(b.astype(np.uint32)))
    np.testing.assert_array_equal(np.asarray(got).astype(np.uint64), (a * b) >> np.uint64(32))


def test_sweep_benchmark_compiles_the_run_loop_once(tmp_path):
    from benchmarks import sweep

    result = sweep.run_benchmark("tiny", tmp_path, log=lambda s: None)
    assert result["run_loop"]["compilations"] == 1 and result["run_loop"]["runs"] == 2
    assert result["sweep"]["end_to_end_s"] > 0 and result["old_loop"]["total_s"] > 0
    assert (tmp_path / "sweep_tiny.json").exists()
    text = (tmp_path / "sweep_tiny.md").read_text()
    assert "Hardware: CPU" in text and "(a) `fedpa.sweep`" in text
