"""``fedpa.run(..., mesh=...)``: clients sharded over devices give the unsharded result.

Runs in a subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (the flag must
be set before JAX starts), on one machine.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import fedpa

SCRIPT = textwrap.dedent(
    """
    import json
    import jax, numpy as np, fedpa
    from jax.sharding import Mesh

    assert jax.device_count() == 4, jax.devices()
    prob = fedpa.problems.least_squares(
        jax.random.key(0), num_clients=40, samples_per_client=50, dim=5
    )
    mesh = Mesh(np.array(jax.devices()), ("clients",))
    algo = fedpa.fedavg(local_steps=5, local_lr=0.05, batch_size=5)
    out = {}
    # 8 = 2 per device; 10 in chunks of 3: neither divides 4 (chunk rounded up to 4, the last
    # chunk padded with weight-zero clients).
    for m, chunk in [(8, None), (10, 3)]:
        kw = dict(rounds=3, clients_per_round=m, key=jax.random.key(2), client_chunk_size=chunk)
        plain = fedpa.run(algo, None, prob, **kw)
        sharded = fedpa.run(algo, None, prob, mesh=mesh, **kw)
        out[f"{m}/{chunk}"] = {
            "plain": np.asarray(plain.params).tolist(),
            "sharded": np.asarray(sharded.params).tolist(),
            "replicated": sharded.params.sharding.is_fully_replicated,
        }
    # The client axis really is split: the compiled round has a cross-device reduction.
    opt = fedpa.default_server_optimizer()
    state = fedpa.server(algo, 8, opt).init(prob.init_params)
    one_round = jax.jit(
        lambda k, s, p: fedpa.run_rounds(
            k, s, p, algo, opt, rounds=1, clients_per_round=8, mesh=mesh
        )
    )
    text = one_round.lower(jax.random.key(0), state, prob).compile().as_text()
    out["all_reduce"] = "all-reduce" in text
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def sharded_results():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    env.pop("JAX_PLATFORMS", None)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


@pytest.mark.parametrize("case", ["8/None", "10/3"])
def test_sharded_run_matches_unsharded(sharded_results, case):
    res = sharded_results[case]
    plain, sharded = np.array(res["plain"]), np.array(res["sharded"])
    assert np.abs(plain).max() > 0.01  # the runs moved away from x = 0
    np.testing.assert_allclose(sharded, plain, rtol=1e-5, atol=1e-6)
    assert res["replicated"]  # server state


def test_client_axis_is_split_across_devices(sharded_results):
    assert sharded_results["all_reduce"]


def test_mesh_must_be_a_mesh():
    prob = fedpa.problems.quadratic_2d()
    with pytest.raises(ValueError, match="mesh must be a jax.sharding.Mesh"):
        fedpa.run(
            fedpa.fedpa_exact(),
            None,
            prob,
            rounds=1,
            clients_per_round=1,
            key=jax.random.key(0),
            mesh=4,
        )
