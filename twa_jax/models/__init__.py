"""Built-in models of the paper (issue 4 is building this out).

So far: :func:`dipole_couplings`, the free-space dipole-dipole couplings of Sec. III F.
"""

from ._dipole import dipole_couplings as dipole_couplings
