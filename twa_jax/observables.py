"""Observables with the ordering corrections built in, and quantities derived from their means.

Trajectory averages estimate symmetrically (Weyl) ordered expectation values, so an observable
is written as the Weyl symbol of the operator (see :mod:`twa_jax.weyl`). The helpers here give
the symbols people most often get wrong, as ``{name: f(spins, bosons)}`` dicts to pass to
``simulate(observables=...)`` and ``tw.exact.solve(observables=...)`` alike:

* :func:`boson_moments`: ``n = <a^dag a>``, ``n2 = <(a^dag a)^2>`` and
  ``adag2_a2 = <a^dag a^dag a a>`` per mode; :func:`number_variance` and :func:`g2` derive
  ``Var(a^dag a)`` and ``g2(0)`` from a result;
* :func:`collective_spin`: ``J = <(J_x, J_y, J_z)>`` and the symmetrized second moments
  ``JJ = <(J_a J_b + J_b J_a)/2>`` of the collective spin, for Pauli (spin-1/2) and spin-S models;
  for spin-1/2 the same-site products, which are constants quantum mechanically
  (``s^a s^b -> delta_ab``), are replaced by those constants rather than estimated from
  trajectories; :func:`squeezing` derives the Wineland squeezing parameter.

The derived quantities are nonlinear in the means. Their standard errors are first-order bounds,
``sum_i |df/dx_i| sem_i``: correlations between the means are not recorded, so this is an upper
bound on the linearized error, not an estimate of it.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from . import weyl

__all__ = ["boson_moments", "collective_spin", "g2", "number_variance", "squeezing"]


def boson_moments() -> dict:
    """``{"n", "n2", "adag2_a2"}``: Weyl symbols of ``a^dag a``, ``(a^dag a)^2`` and
    ``a^dag a^dag a a`` of every mode (each observable has shape ``(n_bosons,)``)."""
    return {"n": _number, "n2": _number_squared, "adag2_a2": _adag2_a2}


def _number(s, a):
    return weyl.number(a)


def _number_squared(s, a):
    return weyl.number_squared(a)


def _adag2_a2(s, a):
    return jnp.real(weyl.normal_ordered(a, 2, 2))


for _f in (_number, _number_squared, _adag2_a2):
    _f.per_mode = True  # one value per boson mode: its axis is called "mode"


def number_variance(result, *, n="n", n2="n2"):
    """``(Var(a^dag a), sem)`` per time and mode from :func:`boson_moments`' means."""
    m, s = _get(result, n)
    m2, s2 = _get(result, n2)
    return m2 - m**2, s2 + np.abs(2 * m) * s


def g2(result, *, n="n", adag2_a2="adag2_a2"):
    """``(g2(0), sem)`` per time and mode, ``<a^dag a^dag a a> / <a^dag a>^2``, from
    :func:`boson_moments`' means (NaN where ``<a^dag a> = 0``)."""
    m, s = _get(result, n)
    num, snum = _get(result, adag2_a2)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(m != 0, num / m**2, np.nan)
        sem = np.where(m != 0, snum / m**2 + np.abs(2 * num / m**3) * s, np.nan)
    return value, sem


def collective_spin(spin_S=None) -> dict:
    """``{"J": (3,), "JJ": (3, 3)}``: the collective spin ``J_a = sum_i S_i^a`` and its symmetrized
    second moments ``(J_a J_b + J_b J_a)/2``.

    Args:
        spin_S: ``None`` for spin-1/2 models in the Pauli normalization (``J_a = sum_i s_i^a / 2``,
            same-site products replaced by their quantum values ``delta_ab / 4``), or the spin
            length ``S`` of a spin-S model (``J_a = sum_i S_i^a``; the same-site products
            ``S_i^a S_i^b`` are the symbols of the symmetrized ``(S^a S^b + S^b S^a)/2``).
    """
    if spin_S is None:
        def J(s, a):
            return jnp.sum(s, axis=0) / 2

        def JJ(s, a):
            t = jnp.sum(s, axis=0)
            same = jnp.einsum("ia,ib->ab", s, s)
            return (jnp.outer(t, t) - same + s.shape[0] * jnp.eye(3)) / 4
    else:
        def J(s, a):
            return jnp.sum(s, axis=0)

        def JJ(s, a):
            t = jnp.sum(s, axis=0)
            return jnp.outer(t, t)
    return {"J": J, "JJ": JJ}


def squeezing(result, n_spins: int, spin_S=None, *, J="J", JJ="JJ"):
    """``(xi^2, sem)`` per time: the Wineland squeezing parameter of the collective spin,

    ``xi^2 = 2 J_max min_{n perp <J>} Var(n . J) / |<J>|^2``, ``J_max = n_spins * S``

    (1 for a coherent spin state, below 1 for a spin-squeezed one), from :func:`collective_spin`'s
    means ``J`` and ``JJ`` of a :func:`~twa_jax.simulate` or ``tw.exact.solve`` result.
    """
    j, sj = _get(result, J)
    jj, sjj = _get(result, JJ)
    j_max = n_spins * (0.5 if spin_S is None else spin_S)
    out, err = [], []
    for jt, sjt, jjt, sjjt in zip(j, sj, jj, sjj):
        norm = np.linalg.norm(jt)
        if not (norm > 0 and np.all(np.isfinite(jjt))):
            out.append(np.nan)
            err.append(np.nan)
            continue
        n = jt / norm
        basis = np.linalg.svd(np.eye(3) - np.outer(n, n))[0][:, :2]  # the plane perpendicular to <J>
        cov = jjt - np.outer(jt, jt)
        w, v = np.linalg.eigh(basis.T @ cov @ basis)
        u = basis @ v[:, 0]  # the direction of least variance
        value = 2 * j_max * w[0] / norm**2
        # first-order bound: d(value)/d(JJ_ab) = 2 J_max u_a u_b / |J|^2; through <J>, the plane
        # perpendicular to it turns (d lambda = -2 (u.C n)(u.dJ)/|J|) and |J|^2 changes
        d_jj = 2 * j_max * np.abs(np.outer(u, u)) / norm**2
        d_j = 2 * j_max * (2 * np.abs(u) * abs(u @ cov @ n) / norm**3 + 2 * abs(w[0]) * np.abs(jt) / norm**4)
        out.append(value)
        err.append(float(np.sum(d_jj * sjjt) + np.sum(d_j * sjt)))
    return np.asarray(out), np.asarray(err)


def _get(result, name):
    if name not in result.mean:
        raise KeyError(
            f"the result has no observable {name!r} (it has {sorted(result.mean)}); record it with "
            "tw.observables' helpers"
        )
    return np.asarray(result.mean[name]), np.asarray(result.sem[name])
