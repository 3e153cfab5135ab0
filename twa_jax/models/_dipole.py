"""Atoms in free space: collective decay Gamma_ij and exchange J_ij (paper Eqs. 52-55;
``docs/conventions.md``, "Atoms in free space")."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .._checks import is_concrete


def dipole_couplings(positions, wavelength, dipole, gamma0=1.0):
    r"""Dissipative and coherent dipole-dipole couplings of atoms in free space.

    With :math:`u = k |r_i - r_j|`, :math:`\hat r = (r_i - r_j)/|r_i - r_j|`, :math:`k = 2\pi/\lambda`
    and the unit dipole :math:`p` (complex for circular polarization),

    .. math::
        f(u) = \tfrac32 \frac{e^{iu}}{u^3}\left[(u^2 + iu - 1)\, p\cdot p^* + (3 - 3iu - u^2)\,|p\cdot\hat r|^2\right],
        \quad \Gamma_{ij} = \Gamma_0 \,\mathrm{Im} f, \quad J_{ij} = -\tfrac{\Gamma_0}{2}\mathrm{Re} f

    for :math:`i \ne j`; :math:`\Gamma_{ii} = \Gamma_0` (the :math:`u \to 0` limit) and
    :math:`J_{ii} = 0` (the Lamb shift is absorbed in :math:`\omega_z`).

    Args:
        positions: ``(..., 3)`` atom positions (any leading shape; flattened to ``N`` atoms),
            in the same length unit as ``wavelength``.
        wavelength: transition wavelength ``lambda``.
        dipole: ``(3,)`` dipole direction, real or complex; normalized here.
        gamma0: single-atom decay rate.

    Returns:
        ``(Gamma, J)``, both ``(N, N)`` real symmetric; Gamma is positive semidefinite.

    Raises:
        ValueError: on bad shapes, positions or a dipole that are not finite, coincident atoms, a zero
            dipole or a non-positive wavelength.
    """
    r = jnp.asarray(positions)
    if r.shape[-1:] != (3,):
        raise ValueError(f"positions must have shape (..., 3), got {r.shape}")
    r = r.reshape(-1, 3)
    if is_concrete(r) and not np.all(np.isfinite(np.asarray(r))):
        bad = int(np.argmax(~np.all(np.isfinite(np.asarray(r)), axis=1)))
        raise ValueError(f"positions must be finite; atom {bad} is at {np.asarray(r)[bad]}")
    p = jnp.asarray(dipole)
    if p.shape != (3,):
        raise ValueError(f"dipole must be a 3-vector, got shape {p.shape}")
    pn = jnp.sqrt(jnp.sum(jnp.abs(p) ** 2))
    if is_concrete(pn):
        if not np.isfinite(float(pn)):
            raise ValueError(f"dipole must be finite, got {np.asarray(p)}")
        if float(pn) == 0:
            raise ValueError("dipole must be non-zero")
    if is_concrete(wavelength) and not float(wavelength) > 0:
        raise ValueError(f"wavelength must be positive, got {wavelength}")
    p = p / pn
    n = r.shape[0]
    k = 2 * jnp.pi / wavelength
    d = r[:, None, :] - r[None, :, :]
    dist = jnp.sqrt(jnp.sum(d**2, -1) + jnp.eye(n))  # 1 on the diagonal: no 0/0 (and safe gradients)
    if n > 1 and is_concrete(dist):
        off = np.asarray(dist)[~np.eye(n, dtype=bool)]
        if np.min(off) == 0:
            raise ValueError("two atoms are at the same position")
    u = k * dist
    rhat = d / dist[..., None]
    pr2 = jnp.abs(jnp.einsum("ija,a->ij", rhat, p)) ** 2
    f = 1.5 * jnp.exp(1j * u) / u**3 * ((u**2 + 1j * u - 1) + (3 - 3j * u - u**2) * pr2)
    eye = jnp.eye(n, dtype=bool)
    Gamma = jnp.where(eye, gamma0, gamma0 * jnp.imag(f))
    J = jnp.where(eye, 0.0, -0.5 * gamma0 * jnp.real(f))
    return Gamma, J
