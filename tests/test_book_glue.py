"""fedpa_book.glue stores NumPy/JAX scalars as Python numbers (myst-nb formats their text)."""

import jax.numpy as jnp
import myst_nb
import numpy as np

import fedpa_book


def test_numpy_and_jax_scalars_are_glued_as_python_numbers(monkeypatch):
    seen = {}
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display: seen.update({name: value}))
    fedpa_book.glue("a", np.float64(0.5))
    fedpa_book.glue("b", jnp.float32(2.0))
    fedpa_book.glue("c", np.int64(3))
    fedpa_book.glue("d", "text")
    assert seen == {"a": 0.5, "b": 2.0, "c": 3, "d": "text"}
    assert [type(seen[k]) for k in "abcd"] == [float, float, int, str]
    # The text form myst-nb parses for a format spec: NumPy 2's repr would not parse.
    assert float(repr(seen["a"])) == 0.5 and repr(np.float64(0.5)) != "0.5"
