"""Weyl symbols of the operator orderings people write, for Hamiltonians, jump operators and
observables.

A :class:`~twa_jax.Model` is written in classical (Weyl) symbols: the function whose symmetric
quantization is the operator. For a product of non-commuting operators that is *not* the naive
product of amplitudes. For one boson mode,

* ``a^dag a`` has the symbol ``|a|^2 - 1/2`` (:func:`number`);
* ``a^dag a^dag a a`` has ``|a|^4 - 2|a|^2 + 1/2`` (:func:`normal_ordered` with ``p = q = 2``);
* ``(a^dag a)^2`` has ``|a|^4 - |a|^2`` (:func:`number_squared`).

So a Kerr term ``(U/2) a^dag a^dag a a`` is ``U/2 * tw.weyl.normal_ordered(a, 2, 2)``; writing
``(U/2) |a|^4`` instead adds ``U (a^dag a) + const``, a detuning shift of ``U`` that a comparison
with the exact twin cannot reveal (both sides see the same symbol). For one spin-1/2 (Pauli
normalization), ``sigma^+ sigma^-`` is ``(1 + s^z)/2`` (:func:`sigma_plus_minus`), not
``|s^-|^2``.

All functions act elementwise on arrays (one value per mode or site) and are JAX functions, so
they can be used inside a model and differentiated.
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "anti_normal_ordered",
    "collective",
    "normal_ordered",
    "number",
    "number_squared",
    "sigma_minus",
    "sigma_minus_plus",
    "sigma_plus",
    "sigma_plus_minus",
]


def normal_ordered(a, p: int, q: int):
    """Weyl symbol of ``a^dag^p a^q`` (normal order) for the amplitude(s) ``a``:

    ``sum_{k=0}^{min(p,q)} k! C(p,k) C(q,k) (-1/2)^k conj(a)^(p-k) a^(q-k)``.
    """
    p, q = _check_powers(p, q)
    a = jnp.asarray(a)
    return sum(
        math.factorial(k) * math.comb(p, k) * math.comb(q, k) * (-0.5) ** k * jnp.conj(a) ** (p - k) * a ** (q - k)
        for k in range(min(p, q) + 1)
    )


def anti_normal_ordered(a, p: int, q: int):
    """Weyl symbol of ``a^q a^dag^p`` (anti-normal order): the sum of :func:`normal_ordered`
    with ``+1/2`` in place of ``-1/2``."""
    p, q = _check_powers(p, q)
    a = jnp.asarray(a)
    return sum(
        math.factorial(k) * math.comb(p, k) * math.comb(q, k) * 0.5**k * jnp.conj(a) ** (p - k) * a ** (q - k)
        for k in range(min(p, q) + 1)
    )


def number(a):
    """Weyl symbol of ``a^dag a``: ``|a|^2 - 1/2`` (real)."""
    return jnp.real(normal_ordered(a, 1, 1))


def number_squared(a):
    """Weyl symbol of ``(a^dag a)^2 = a^dag a^dag a a + a^dag a``: ``|a|^4 - |a|^2`` (real)."""
    return jnp.real(normal_ordered(a, 2, 2) + normal_ordered(a, 1, 1))


def sigma_minus(s):
    """Weyl symbol of ``sigma^-`` of every spin: ``(s^x - i s^y)/2``; ``s`` is ``(n, 3)``."""
    s = jnp.asarray(s)
    return (s[..., 0] - 1j * s[..., 1]) / 2


def sigma_plus(s):
    """Weyl symbol of ``sigma^+`` of every spin: ``(s^x + i s^y)/2``."""
    s = jnp.asarray(s)
    return (s[..., 0] + 1j * s[..., 1]) / 2


def sigma_plus_minus(s):
    """Weyl symbol of ``sigma^+ sigma^-`` on each site (the excited population): ``(1 + s^z)/2``.

    The naive ``|s^-|^2 = (s_x^2 + s_y^2)/4`` quantizes to the constant ``1/2``: on one site
    ``sigma^a sigma^b`` symmetrized is ``delta_ab``."""
    return (1 + jnp.asarray(s)[..., 2]) / 2


def sigma_minus_plus(s):
    """Weyl symbol of ``sigma^- sigma^+`` on each site (the ground population): ``(1 - s^z)/2``."""
    return (1 - jnp.asarray(s)[..., 2]) / 2


def _check_powers(p, q):
    for name, v in (("p", p), ("q", q)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
            raise ValueError(f"{name} must be an int >= 0, got {v!r}")
    return int(p), int(q)


def collective(s, direction):
    """Weyl symbol of the collective spin ``J_n = sum_i n . sigma_i / 2`` along ``direction``
    (``"x"``, ``"y"``, ``"z"`` or a 3-vector, normalized here as ``tw.states.spins`` does) for
    Pauli-normalized spins ``s (n, 3)``.

    As a pulse generator, ``tw.Pulse(t, lambda s, a, p: tw.weyl.collective(s, "x"), theta)``
    rotates every spin by ``theta`` about x (``exp(-i theta J_x)``). For ``spin_S`` models
    (``S``-normalized spins) the symbol of ``sum_i n . S_i`` is ``s.sum(0) @ n`` instead."""
    if isinstance(direction, str):
        if direction not in ("x", "y", "z"):
            raise ValueError(f"direction must be 'x', 'y', 'z' or a 3-vector, got {direction!r}")
        return 0.5 * jnp.sum(s[:, "xyz".index(direction)])
    n = jnp.asarray(direction)
    if n.shape != (3,):
        raise ValueError(f"direction must be 'x', 'y', 'z' or a 3-vector, got shape {n.shape}")
    norm = jnp.linalg.norm(n)
    if not isinstance(norm, jax.core.Tracer) and not float(norm) > 0:
        raise ValueError(f"direction must be a nonzero 3-vector, got {np.asarray(direction).tolist()}")
    return 0.5 * jnp.sum(s @ (n / norm))
