"""twa_jax: the dissipative truncated Wigner approximation in JAX.

Write a model as plain JAX functions (Hamiltonian, jump operators, dissipation matrix), pick an
initial state, and call :func:`simulate`. See README.md, the docs site (``mkdocs serve``), and
``docs/conventions.md`` for the conventions (rates, normalizations, Weyl symbols, standard errors,
accuracy).
"""

from . import _cpu_devices, _xla_workaround

_xla_workaround.apply()  # before anything starts JAX's backends
_cpu_devices.apply()  # one CPU device per core, if JAX has not started and the user did not choose

from . import models as models, observables as observables, states as states, weyl as weyl  # noqa: E402
from ._compare import Comparison as Comparison, compare as compare
from ._correlation import Correlation as Correlation, correlation as correlation, spectrum as spectrum
from ._brackets import effective_hamiltonian as effective_hamiltonian
from ._forms import quadratic_form as quadratic_form
from ._fit import FitResult as FitResult, fit as fit
from ._grad import value_and_grad as value_and_grad
from ._model import Model as Model
from ._quantize import SameSiteWarning as SameSiteWarning
from ._noise import NoiseBasis as NoiseBasis, decompose as decompose_gamma
from ._observables import boson_number as boson_number
from ._protocol import Pulse as Pulse
from ._result import Result as Result
from ._solve import simulate as simulate
from ._sweep import sweep as sweep
from . import _sweep_plot as sweep_plot  # noqa: E402  (errorbars, time_bands, overview, reduce_time, peak)
from ._solvers import RotationHeun as RotationHeun, StochasticHeun as StochasticHeun, TWATerm as TWATerm
from ._brackets import drift as drift, noise_increment as noise_increment, velocity as velocity

__version__ = "0.5.0"


def __getattr__(name):
    # `tw.exact` needs QuTiP (an optional dependency): import it on first use only
    if name == "exact":
        import importlib

        return importlib.import_module(".exact", __name__)
    raise AttributeError(f"module 'twa_jax' has no attribute {name!r}")
