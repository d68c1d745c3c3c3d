import jax
import pytest


@pytest.fixture
def x64():
    """Runs a test in float64 (tests of mathematics)."""
    with jax.enable_x64(True):
        yield


def count_compilations(fn, name: str):
    """Runs ``fn()``; returns ``(result, n)`` with ``n`` the XLA compilations of functions whose
    name contains ``name`` (JAX's public monitoring events, no private API)."""
    names = []

    def listen(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            names.append(kwargs.get("fun_name", ""))

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        out = fn()
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    return out, sum(name in n for n in names)
