"""fedpa: Federated Learning via Posterior Averaging (Al-Shedivat et al., ICLR 2021) in JAX.

Public names::

    fedpa.problems      federated problems (least squares, quadratics)
    fedpa.posterior     shrinkage covariance and the FedPA delta (dynamic program)
    fedpa.samplers      local posterior samplers as pytrees (IASG, SGLD, HMC/NUTS, exact Gaussian)
    fedpa.updates       client updates as pytrees, and their constructors:
    fedpa.minibatch_sgd, fedpa.fedavg, fedpa.fedpa, fedpa.fedpa_exact, fedpa.fedpa_iasg,
    fedpa.with_burnin
    fedpa.server        one round as a kernel: init(params) -> state, step(key, state, problem)
    fedpa.run_rounds    the pure, jittable loop over rounds
    fedpa.run           the compiled round loop -> Result(params, history, state)
    fedpa.sweep         a grid of hyperparameters × seeds in one compile -> SweepResult
    fedpa.theory        FedAvg's exact fixed point on quadratics, relative distances
    fedpa.models        logistic regression and an MLP (init, apply, masked loss)
    fedpa.data          federated digits (Dirichlet split), TFF EMNIST HDF5, classification problems

Hyperparameters are data: algorithms and samplers are pytrees whose float hyperparameters are
traced leaves, so new values never recompile. Write your own with ``fedpa.pytree_dataclass``
(subclassing ``fedpa.samplers.Sampler`` or ``fedpa.ClientUpdate``) and ``fedpa.static()`` for
fields that fix shapes. The book's machinery lives in ``fedpa_book``,
which this package never imports.
"""

from . import data, models, posterior, problems, samplers, theory, updates
from ._pytree import pytree_dataclass, static
from .rounds import (
    DivergenceError,
    Result,
    Server,
    ServerState,
    default_server_optimizer,
    run,
    run_rounds,
    server,
)
from .sweeps import SweepResult, grid_configs, stack_problems, sweep
from .updates import (
    ClientUpdate,
    fedavg,
    fedpa,
    fedpa_exact,
    fedpa_iasg,
    minibatch_sgd,
    with_burnin,
)

__version__ = "0.2.0"

__all__ = [
    "ClientUpdate",
    "DivergenceError",
    "Result",
    "Server",
    "ServerState",
    "SweepResult",
    "data",
    "default_server_optimizer",
    "fedavg",
    "fedpa",
    "fedpa_exact",
    "fedpa_iasg",
    "grid_configs",
    "minibatch_sgd",
    "models",
    "posterior",
    "problems",
    "pytree_dataclass",
    "run",
    "run_rounds",
    "samplers",
    "server",
    "stack_problems",
    "static",
    "sweep",
    "theory",
    "updates",
    "with_burnin",
]
