"""Built-in models of the paper (Sec. III), each a :class:`~twa_jax.Model` with default
parameters named as in the paper and its own observables. Their exact twins are read off these
functions by :func:`twa_jax.exact.twin`; the ensembles add a hand-written one in PIQS's
permutation-symmetric basis.

* :func:`driven_spin` (Sec. III B), :func:`tavis_cummings` (Eq. 28), :func:`central_spin`
  (Eq. 37), :func:`rydberg_chain` (Eq. 45), :func:`dipole_array` (Eqs. 50-56), :func:`dicke`
  (fully collective decay);
* :func:`dipole_couplings`: free-space ``(Gamma, J)`` of any geometry; :func:`chain_positions`.
"""

from ._dipole import dipole_couplings as dipole_couplings
from ._paper import central_spin as central_spin
from ._paper import chain_positions as chain_positions
from ._paper import dicke as dicke
from ._paper import dipole_array as dipole_array
from ._paper import driven_spin as driven_spin
from ._paper import emission_rate as emission_rate
from ._paper import rydberg_chain as rydberg_chain
from ._paper import tavis_cummings as tavis_cummings
