"""Effective Hamiltonian and Poisson brackets by automatic differentiation (paper Sec. II A).

    H~ = h H + 2 sum_i Im( conj(L_i) Phi_i )                     (Eq. 10; Phi held constant)
    spins (Pauli):   ds_k/dt = 2 (grad_{s_k} H~) x s_k          (Eq. 11; S-normalization: factor 1)
    bosons:          da/dt   = -i dH~/d(conj a)                  (Wirtinger derivative)

Because H~ is linear in ``(h, Phi)``, one function gives the drift (``h = dt``,
``Phi = Gamma L dt / 2``), the noise (``h = 0``, ``Phi = xi / 2``) or one whole SDE increment
(``h = dt``, ``Phi = (Gamma L dt + xi) / 2``) from a single gradient evaluation.

Internally a state is the pair ``(spins (N, 3), bosons (M, 2))`` with real boson quadratures
``a = x + i y``; users only ever see complex ``a``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._model import Model


def to_complex(b):
    """``(M, 2)`` real quadratures -> ``(M,)`` complex amplitudes."""
    return jax.lax.complex(b[..., 0], b[..., 1])


def to_real(a):
    """``(M,)`` complex amplitudes -> ``(M, 2)`` real quadratures."""
    a = jnp.asarray(a)
    return jnp.stack([jnp.real(a), jnp.imag(a)], axis=-1)


def _h_and_l(model: Model, y, params):
    s, b = y
    a = to_complex(b)
    H = model.hamiltonian(s, a, params)
    if model.jumps is None:
        return H, None
    L = model.jumps(s, a, params)
    return H, jnp.asarray(L)


def effective_hamiltonian(model: Model, y, Phi, params, h=1.0):
    """``H~ = h H + 2 sum_i Im(conj(L_i) Phi_i)`` at the internal state ``y``."""
    H, L = _h_and_l(model, y, params)
    out = h * H
    if L is not None and Phi is not None:
        out = out + 2.0 * jnp.sum(jnp.imag(jnp.conj(L) * Phi))
    return out


def _generator_from_grad(model: Model, grad_y):
    gs, gb = grad_y
    omega = model.spin_factor * gs
    # da = -i dH~/d(conj a) with d/d(conj a) = (d/dx + i d/dy)/2  =>  dx = g_y/2, dy = -g_x/2
    vb = jnp.stack([gb[..., 1], -gb[..., 0]], axis=-1) * 0.5
    return omega, vb


def generator(model: Model, y, Phi, params, h=1.0):
    """Rotation vectors of the spins and boson increments of ``H~(y; h, Phi)``.

    Returns:
        ``(omega, vb)``: ``omega`` is ``(N, 3)`` with ``ds = omega x s``; ``vb`` is ``(M, 2)``,
        the real and imaginary parts of ``da``.
    """
    g = jax.grad(effective_hamiltonian, argnums=1)(model, y, Phi, params, h)
    return _generator_from_grad(model, g)


def generator_and_jumps(model: Model, y, phi_fn, params, h):
    """Like :func:`generator` with ``Phi = phi_fn(L(y))``, from one forward and one backward pass.

    ``Phi`` depends on the jump operators at the same point (the drift ``Gamma L / 2``) but is
    held constant while differentiating (paper Eq. 10), so it enters as the cotangent of ``L``:
    for ``f(L) = 2 Im(conj(L) . Phi)`` JAX's cotangent is ``2 i conj(Phi)``.
    """
    if phi_fn is None or model.jumps is None:
        g = jax.grad(lambda y_: h * model.hamiltonian(y_[0], to_complex(y_[1]), params))(y)
        return _generator_from_grad(model, g)
    (H, L), vjp = jax.vjp(lambda y_: _h_and_l(model, y_, params), y)
    Phi = phi_fn(L)
    ct_L = (2j * jnp.conj(Phi)).astype(jnp.result_type(L.dtype, jnp.complex64))
    if not jnp.iscomplexobj(L):
        ct_L = jnp.real(ct_L).astype(L.dtype)
    (g,) = vjp((jnp.asarray(h, H.dtype), ct_L))
    return _generator_from_grad(model, g)


def apply_cartesian(y, gen):
    """Cartesian increment ``(omega x s, vb)`` of a generator."""
    s, _ = y
    omega, vb = gen
    return jnp.cross(omega, s), vb


def rotate(s, theta):
    """Rotate each row of ``s`` by the rotation vector ``theta`` (Rodrigues' formula).

    Exact rotation, so ``|s_k|`` is preserved to rounding; safe (and differentiable) at 0.
    """
    th2 = jnp.sum(theta * theta, axis=-1, keepdims=True)
    small = th2 < 1e-6
    th2_safe = jnp.where(small, 1.0, th2)
    th = jnp.sqrt(th2_safe)
    c1 = jnp.where(small, 1.0 - th2 / 6.0 + th2 * th2 / 120.0, jnp.sin(th) / th)
    c2 = jnp.where(small, 0.5 - th2 / 24.0 + th2 * th2 / 720.0, (1.0 - jnp.cos(th)) / th2_safe)
    txs = jnp.cross(theta, s)
    return s + c1 * txs + c2 * jnp.cross(theta, txs)


# ------------------------------------------------------------------ user-facing equations of motion
def velocity(model: Model, spins, bosons, Phi, params, h=1.0):
    """``{psi, H~(psi; h, Phi)}`` at a user-format point: ``(ds (N, 3), da (M,) complex)``.

    With ``h = 1`` and ``Phi = Gamma L / 2`` this is the drift; with ``h = 0`` and
    ``Phi = xi / 2`` the noise term (paper Eq. 7).
    """
    y = (jnp.asarray(spins), to_real(bosons).astype(jnp.asarray(spins).dtype))
    ds, vb = apply_cartesian(y, generator(model, y, Phi, params, h))
    return ds, to_complex(vb)


def drift(model: Model, spins, bosons, params=None):
    """Deterministic part of ``d(spins, bosons)/dt`` (``Phi = Gamma L / 2``), from autodiff.

    Args:
        spins: ``(N, 3)``; bosons: ``(M,)`` complex; params: the model parameters.

    Returns:
        ``(ds/dt (N, 3), da/dt (M,) complex)``.
    """
    params = {} if params is None else params
    Phi = None
    if model.jumps is not None:
        from ._noise import decompose

        L = jnp.asarray(model.jumps(jnp.asarray(spins), jnp.asarray(bosons), params))
        Phi = 0.5 * decompose(model.gamma_of(params)).apply_gamma(L)
    return velocity(model, spins, bosons, Phi, params, 1.0)


def noise_increment(model: Model, spins, bosons, xi, params=None):
    """Noise part of the increment for jump-space noise ``xi`` (``(K,)`` complex, ``Phi = xi/2``).

    Linear in ``xi``; with ``<xi xi^dag> = 2 Gamma dt`` it is the stochastic increment of Eq. 7.
    """
    params = {} if params is None else params
    return velocity(model, spins, bosons, 0.5 * jnp.asarray(xi), params, 0.0)
