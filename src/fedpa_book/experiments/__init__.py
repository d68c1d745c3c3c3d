"""The book's experiment drivers: one module per experiment, each returning tidy tables.

::

    experiments.local_posterior  the FedPA delta from samples on one client: errors against ℓ and
                                 ρ, samplers compared at their reported compute, covariance shape
                                 fits and ellipses, dynamic program vs direct solve timings
    experiments.convergence      multi-seed convergence on problem families (labelled algorithms
                                 or a grid), final values, per-round trajectories
    experiments.classification   algorithms × classification problems (e.g. Dirichlet α × seed)

Chapters call these and only plot. They build on the public :mod:`fedpa` API
(:func:`fedpa.sweep`, :func:`fedpa.run`, the samplers and :mod:`fedpa.posterior`) and never on a
private name of :mod:`fedpa`.
"""

from . import classification, convergence, local_posterior

__all__ = ["classification", "convergence", "local_posterior"]
