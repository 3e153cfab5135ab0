"""Initial states: sample phase-space points of spin and boson product states
(``docs/conventions.md``, "Initial states").

Spins (Pauli normalization): :func:`spins`, :func:`spins_up`, :func:`spins_down` with discrete
(DTWA) or Gaussian sampling. Spin-S in the S-normalization: :func:`spin_coherent`. Bosons
(Wigner function): :func:`vacuum`, :func:`coherent`, :func:`thermal`. Combine with :func:`product`.
"""

from ._states import (
    AbstractState as AbstractState,
    GaussianBosonState as GaussianBosonState,
    ProductState as ProductState,
    SpinCoherentState as SpinCoherentState,
    SpinHalfState as SpinHalfState,
    coherent as coherent,
    product as product,
    spin_coherent as spin_coherent,
    spins as spins,
    spins_down as spins_down,
    spins_up as spins_up,
    thermal as thermal,
    vacuum as vacuum,
)
