"""fedpa: Federated Learning via Posterior Averaging (Al-Shedivat et al., ICLR 2021) in JAX.

Public names::

    fedpa.problems      federated problems (least squares, quadratics)
    fedpa.posterior     shrinkage covariance and the FedPA delta (dynamic program)
    fedpa.samplers      local posterior samplers (exact Gaussian, IASG)
    fedpa.minibatch_sgd, fedpa.fedavg, fedpa.fedpa, fedpa.fedpa_exact, fedpa.fedpa_iasg,
    fedpa.with_burnin   algorithms (client updates)
    fedpa.run           the compiled round loop -> Result(params, history, state)
    fedpa.run_many      the same loop vmapped over same-shaped problems (seeds, sweeps)
    fedpa.server        one round as a kernel: init(params) -> state, step(state, key, problem)
    fedpa.analysis      per-round trajectories, FedAvg's exact fixed point on quadratics
    fedpa.plots         the book's plotting helpers (contours, trajectories, animations)
    fedpa.models        logistic regression and an MLP (init, apply, masked loss)
    fedpa.data          federated digits (Dirichlet split), TFF EMNIST HDF5, classification problems
"""

from . import (
    algorithms,
    analysis,
    data,
    figures,
    models,
    plots,
    posterior,
    problems,
    samplers,
    studies,
)
from .algorithms import (
    Algorithm,
    fedavg,
    fedpa,
    fedpa_exact,
    fedpa_iasg,
    minibatch_sgd,
    with_burnin,
)
from .run import DivergenceError, Result, ServerState, run, run_many, server, stack_problems

__version__ = "0.1.0"

__all__ = [
    "Algorithm",
    "DivergenceError",
    "Result",
    "ServerState",
    "algorithms",
    "analysis",
    "data",
    "fedavg",
    "fedpa",
    "fedpa_exact",
    "fedpa_iasg",
    "figures",
    "minibatch_sgd",
    "models",
    "plots",
    "posterior",
    "problems",
    "run",
    "run_many",
    "samplers",
    "server",
    "stack_problems",
    "studies",
    "with_burnin",
]
