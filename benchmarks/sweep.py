"""A tuning grid as one ``fedpa.sweep`` vs a loop of ``fedpa.run`` calls (issue "hyperparameters
as data").

Setting R (federated least squares, 100 clients × 500 points, d = 10, 10 clients per round,
100 rounds) and the FedPA-IASG grid ``local_lr × rho × server_lr`` (3 × 3 × 3 = 27
configurations) × 3 seeds = 81 runs, timed side by side in one process:

* (a) ``fedpa.sweep`` end to end, its compile included (a fresh factory compiles once);
* (b) a Python loop of 81 ``fedpa.run`` calls with new values each time (server learning rate in
  the optimizer state via ``fedpa.default_server_optimizer``): the number of compilations is
  recorded (target: one, the first call's);
* (c) one compile alone (the first ``fedpa.run`` call minus a steady call), and the work of the
  81 runs (81 steady calls).

Optionally (``--baseline-src``, the ``src`` folder of a checkout of the code before this change,
e.g. ``git worktree add /tmp/fedpa-old 8d7c9fd``), (d) the same grid one by one with the old API,
where every new value recompiles, in a subprocess. Without it, the result records the figure
measured before the change (32.5 s on 2 cores).

Run ``python -m benchmarks.sweep [--profile smoke] [--baseline-src PATH]``; writes
``benchmarks/results/sweep_<profile>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import optax

import fedpa

from .common import hardware, hardware_line, write_results

RECORDED_OLD_LOOP_S = 32.5  # 27 configurations x 3 seeds one by one before the change, 2 cores

PROFILES = {
    "full": {
        "grid": {
            "local_lr": [0.01, 0.02, 0.03],
            "rho": [0.1, 1.0, 10.0],
            "server_lr": [0.3, 0.5, 1.0],
        },
        "seeds": 3,
        "rounds": 100,
    },
    "smoke": {
        "grid": {"local_lr": [0.01, 0.02], "rho": [0.1, 1.0], "server_lr": [0.5]},
        "seeds": 2,
        "rounds": 20,
    },
    "tiny": {  # for the test suite
        "grid": {"local_lr": [0.01, 0.02], "rho": [0.1], "server_lr": [1.0]},
        "seeds": 1,
        "rounds": 2,
    },
}


def _problem():
    return fedpa.problems.least_squares(
        jax.random.key(0), num_clients=100, samples_per_client=500, dim=10, heterogeneity=1.0
    )


def _iasg(local_lr, rho):
    return fedpa.fedpa_iasg(
        num_samples=10, avg_steps=10, burnin_steps=50, local_lr=local_lr, batch_size=10, rho=rho
    )


def sweep_factory(local_lr, rho, server_lr):
    return _iasg(local_lr, rho), optax.sgd(server_lr)


def run_factory(local_lr, rho, server_lr):
    return _iasg(local_lr, rho), fedpa.default_server_optimizer(server_lr)


def _block(res):
    jax.block_until_ready(res.params)
    return res


def time_sweep(problem, cfg) -> dict:
    key = jax.random.key(1)
    kw = dict(rounds=cfg["rounds"], clients_per_round=10, seeds=cfg["seeds"], key=key)
    t = time.perf_counter()
    res = fedpa.sweep(lambda **c: sweep_factory(**c), problem, cfg["grid"], **kw)
    first = time.perf_counter() - t
    t = time.perf_counter()
    fedpa.sweep(sweep_factory, problem, cfg["grid"], **kw)  # a second factory: compiles again
    again = time.perf_counter() - t
    return {
        "end_to_end_s": first,
        "second_call_s": again,
        "runs": res.history["objective"].size // cfg["rounds"],
    }


def time_run_loop(problem, cfg) -> dict:
    configs = fedpa.grid_configs(cfg["grid"])
    key = jax.random.key(1)
    compiled = []

    def listen(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(kwargs.get("fun_name", ""))

    jax.monitoring.register_event_duration_secs_listener(listen)
    times = []
    t0 = time.perf_counter()
    for config in configs:
        for j in range(cfg["seeds"]):
            t = time.perf_counter()
            _block(
                fedpa.run(
                    *run_factory(**config),
                    problem,
                    cfg["rounds"],
                    10,
                    key=jax.random.fold_in(key, j),
                    check_divergence=False,
                )
            )
            times.append(time.perf_counter() - t)
    total = time.perf_counter() - t0
    jax.monitoring.unregister_event_duration_listener(listen)
    compiles = sum("run_jit" in name for name in compiled)
    steady = sorted(times[1:])[len(times[1:]) // 2] if len(times) > 1 else times[0]
    return {
        "total_s": total,
        "compilations": compiles,
        "first_call_s": times[0],
        "steady_call_s": steady,
        "compile_s": max(times[0] - steady, 0.0),
        "work_s": steady * len(times),
        "runs": len(times),
    }


_OLD_LOOP = textwrap.dedent(
    """
    import json, sys, time, jax, optax, fedpa
    grid, seeds, rounds = json.loads(sys.argv[1])
    prob = fedpa.problems.least_squares(jax.random.key(0), num_clients=100,
                                        samples_per_client=500, dim=10, heterogeneity=1.0)
    t = time.perf_counter()
    for lr in grid["local_lr"]:
        for rho in grid["rho"]:
            for slr in grid["server_lr"]:
                # One algorithm and one optimizer object per configuration, reused by its seeds:
                # the old API's best case, one compilation per configuration.
                algo = fedpa.fedpa_iasg(num_samples=10, avg_steps=10, burnin_steps=50,
                                        local_lr=lr, batch_size=10, rho=min(rho, 1.0))
                opt = optax.sgd(slr)
                for s in range(seeds):
                    r = fedpa.run(algo, prob, rounds=rounds, clients_per_round=10,
                                  server_optimizer=opt, key=jax.random.key(s),
                                  check_divergence=False)
                    jax.block_until_ready(r.params)
    print(json.dumps({"total_s": time.perf_counter() - t}))
    """
)


def time_old_loop(baseline_src: str, cfg) -> dict:
    """The old API, one configuration at a time (rho capped at 1 there), in a subprocess."""
    env = {**os.environ, "PYTHONPATH": str(baseline_src)}
    args = json.dumps([cfg["grid"], cfg["seeds"], cfg["rounds"]])
    out = subprocess.run(
        [sys.executable, "-c", _OLD_LOOP, args], env=env, check=True, capture_output=True, text=True
    )
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "source": str(baseline_src)}


def markdown(result: dict) -> str:
    a, b = result["sweep"], result["run_loop"]
    c_plus_work = b["compile_s"] + b["work_s"]
    old = result["old_loop"]
    lines = [
        f"# Sweep vs loop ({result['profile']})",
        "",
        f"Hardware: {hardware_line(result['hardware'])}",
        "",
        f"Grid: {result['configs']} configurations × {result['seeds']} seeds = {b['runs']} runs, "
        f"{result['rounds']} rounds each, setting R (FedPA-IASG ℓ = 10).",
        "",
        "| what | seconds |",
        "|---|---:|",
        f"| (a) `fedpa.sweep`, end to end (one compile) | {a['end_to_end_s']:.2f} |",
        f"| (b) loop of {b['runs']} `fedpa.run` calls ({b['compilations']} compilation(s)) | "
        f"{b['total_s']:.2f} |",
        f"| (c) one compile | {b['compile_s']:.2f} |",
        f"| work of the {b['runs']} runs ({b['steady_call_s'] * 1e3:.1f} ms each) | "
        f"{b['work_s']:.2f} |",
        f"| (d) old API, one by one ({old['kind']}) | {old['total_s']:.2f} |",
        "",
        f"(a) / ((c) + work) = {a['end_to_end_s'] / c_plus_work:.2f} (target ≤ 3); "
        f"(d) / (a) = {old['total_s'] / a['end_to_end_s']:.1f}× (target ≥ 8×).",
        "",
    ]
    return "\n".join(lines)


def run_benchmark(profile="full", out=None, baseline_src=None, log=print) -> dict:
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {profile!r}")
    cfg = PROFILES[profile]
    problem = _problem()
    jax.block_until_ready(problem)
    result = {
        "profile": profile,
        "hardware": hardware(),
        "rounds": cfg["rounds"],
        "seeds": cfg["seeds"],
        "configs": len(fedpa.grid_configs(cfg["grid"])),
        "grid": cfg["grid"],
    }
    log("(b) loop of fedpa.run")
    result["run_loop"] = time_run_loop(problem, cfg)
    log("(a) fedpa.sweep")
    result["sweep"] = time_sweep(problem, cfg)
    if baseline_src:
        log("(d) old API one by one")
        result["old_loop"] = {**time_old_loop(baseline_src, cfg), "kind": "measured here"}
    else:
        result["old_loop"] = {
            "total_s": RECORDED_OLD_LOOP_S,
            "kind": "recorded before the change, 2 cores",
        }
    if out is not None:
        write_results(out, f"sweep_{profile}", result, markdown(result))
    log(markdown(result))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="full", choices=sorted(PROFILES))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument(
        "--baseline-src",
        default=None,
        help="src folder of the code before the change (measures (d) live)",
    )
    args = parser.parse_args(argv)
    run_benchmark(args.profile, args.out, args.baseline_src, log=lambda s: print(s, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
