"""Effective Hamiltonian and Poisson brackets by automatic differentiation (paper Sec. II A).

    H~ = h H + 2 sum_i Im( conj(L_i) Phi_i )                     (Eq. 10; Phi held constant)
    spins (Pauli):   ds_k/dt = 2 (grad_{s_k} H~) x s_k          (Eq. 11; S-normalization: factor 1)
    bosons:          da/dt   = -i dH~/d(conj a)                  (Wirtinger derivative)

Because H~ is linear in ``(h, Phi)``, one function gives the drift (``h = dt``,
``Phi = Gamma L dt / 2``), the noise (``h = 0``, ``Phi = xi / 2``) or one whole SDE increment
(``h = dt``, ``Phi = (Gamma L dt + xi) / 2``) from a single gradient evaluation.

Internally a state is the pair ``(spins (3, N), bosons (2, M))``, components on the
second-to-last axis, with real boson quadratures ``a = x + i y``; a batch of trajectories is
``(n_batch, 3, N)`` and ``(n_batch, 2, M)``. Components stored as rows of length ``N`` let the
cross products and rotations vectorize along the spins (with ``(..., N, 3)`` every elementwise
pass works on triples), and the user's ``s[:, k]`` is a contiguous row, so ``s[:, k] @ J`` is
one batched matrix product (``benchmarks/README.md``: 25 % faster for the same computation).
Users only ever see ``spins (N, 3)`` and complex ``a``; :func:`to_internal` and :func:`to_user`
convert. The engine may also keep a batch with the trajectories last, ``(3, N, n_batch)``
(:class:`~twa_jax._solvers.TWATerm`); :func:`rotate` and :func:`cross` take the component axis.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._model import Model
from ._noise import decompose


def to_internal(spins, bosons, dtype=None):
    """User format ``(spins (..., N, 3), bosons (..., M) complex)`` -> internal
    ``(spins (..., 3, N), bosons (..., 2, M))`` (real, of ``dtype`` if given)."""
    s = jnp.swapaxes(jnp.asarray(spins, dtype), -1, -2)
    a = jnp.asarray(bosons)
    b = jnp.stack([jnp.real(a), jnp.imag(a)], axis=-2)
    return s, b.astype(s.dtype)


def to_user(y):
    """Internal ``(spins (..., 3, N), bosons (..., 2, M))`` -> user ``(spins (..., N, 3),
    bosons (..., M) complex)``."""
    s, b = y
    # a stack of the rows rather than a transpose: its gradient is three row slices, which XLA
    # folds into the user's slices ``s[:, k]``, so no (N, 3) array is formed in the bracket
    return jnp.stack(_xyz(s), axis=-1), jax.lax.complex(b[..., 0, :], b[..., 1, :])


def _h_and_l(model: Model, y, params, t=0.0):
    s, a = to_user(y)
    H = model.H(s, a, params, t)
    if model.jumps is None:
        return H, None
    L = model.L(s, a, params, t)
    return H, jnp.asarray(L)


def effective_hamiltonian(model: Model, y, Phi, params, h=1.0, t=0.0):
    """``H~ = h H + 2 sum_i Im(conj(L_i) Phi_i)`` at the internal state ``y`` (and time ``t``)."""
    H, L = _h_and_l(model, y, params, t)
    out = h * H
    if L is not None and Phi is not None:
        out = out + 2.0 * jnp.sum(jnp.imag(jnp.conj(L) * Phi))
    return out


def _generator_from_grad(model, grad_y):
    gs, gb = grad_y
    omega = model.spin_factor * gs
    # da = -i dH~/d(conj a) with d/d(conj a) = (d/dx + i d/dy)/2  =>  dx = g_y/2, dy = -g_x/2
    vb = jnp.stack([gb[..., 1, :], -gb[..., 0, :]], axis=-2) * 0.5
    return omega, vb


def generator(model: Model, y, Phi, params, h=1.0, t=0.0):
    """Rotation vectors of the spins and boson increments of ``H~(y; h, Phi)`` at the internal
    state ``y``.

    Returns:
        ``(omega, vb)``: ``omega`` is ``(3, N)`` with ``ds = omega x s``; ``vb`` is ``(2, M)``,
        the real and imaginary parts of ``da``.
    """
    g = jax.grad(effective_hamiltonian, argnums=1)(model, y, Phi, params, h, t)
    return _generator_from_grad(model, g)


def symbol_generator(model: Model, G, y, params):
    """Rotation vectors and boson increments ``(omega, vb)`` of the flow of an arbitrary real
    symbol ``G(spins, bosons, params)`` (a pulse's generator) at the internal state ``y``, with the
    model's spin normalization."""
    g = jax.grad(lambda y_: G(*to_user(y_), params))(y)
    return _generator_from_grad(model, g)


def generator_and_jumps(model: Model, y, phi_fn, params, h, t=0.0):
    """Like :func:`generator` with ``Phi = phi_fn(L(y))``, from one forward and one backward pass.

    ``Phi`` depends on the jump operators at the same point (the drift ``Gamma L / 2``) but is
    held constant while differentiating (paper Eq. 10), so it enters as the cotangent of ``L``:
    for ``f(L) = 2 Im(conj(L) . Phi)`` JAX's cotangent is ``2 i conj(Phi)``.
    """
    if phi_fn is None or model.jumps is None:
        g = jax.grad(lambda y_: h * model.H(*to_user(y_), params, t))(y)
        return _generator_from_grad(model, g)
    (H, L), vjp = jax.vjp(lambda y_: _h_and_l(model, y_, params, t), y)
    Phi = phi_fn(L)
    ct_L = (2j * jnp.conj(Phi)).astype(jnp.result_type(L.dtype, jnp.complex64))
    if not jnp.iscomplexobj(L):
        ct_L = jnp.real(ct_L).astype(L.dtype)
    (g,) = vjp((jnp.asarray(h, H.dtype), ct_L))
    return _generator_from_grad(model, g)


def _xyz(u, axis=-2):
    """The three components of ``u`` along ``axis``, by one ``split``: reverse mode transposes it
    into one concatenation, where three slices would each become a pad of the whole array written
    to memory (36 such pads per backward step of the rotation-Heun solver, 1.6x its time)."""
    ax = axis % u.ndim
    return tuple(jax.lax.squeeze(p, (ax,)) for p in jax.lax.split(u, (1, 1, 1), axis=ax))


def _cross_rows(u, v):
    (ux, uy, uz), (vx, vy, vz) = u, v
    return uy * vz - uz * vy, uz * vx - ux * vz, ux * vy - uy * vx


def cross(u, v, axis=-2):
    """Cross product over the component axis (``axis``: second to last; ``-3`` in the batch-last
    layout ``(..., 3, N, n_batch)``)."""
    return jnp.stack(_cross_rows(_xyz(u, axis), _xyz(v, axis)), axis=axis)


def apply_cartesian(y, gen, axis=-2):
    """Cartesian increment ``(omega x s, vb)`` of a generator (internal layout; ``axis``: the
    component axis)."""
    s, _ = y
    omega, vb = gen
    return cross(omega, s, axis), vb


#: the rotation's coefficients come from their Taylor series when every ``|theta|^2`` of the batch
#: is at most ``limit`` (the series' truncation error is then below the precision: float32 to
#: ``theta^10``, error < 2e-10 at ``|theta|^2 = 1``; float64 to ``theta^14``, < 2e-17 at 0.5);
#: keyed by the item size, ``(limit, number of terms)``
SERIES_MAX_TH2 = {4: (1.0, 5), 8: (0.5, 7)}


def _series(th2, n_terms, first):
    """``sum_{k=0..n_terms} (-th2)^k first! / (2k + first)!`` by Horner's rule."""
    out = jnp.ones_like(th2)
    for k in range(n_terms, 0, -1):
        out = 1.0 - th2 * out / ((2 * k + first - 1) * (2 * k + first))
    return out


def _exact_coefficients(th2):
    small = th2 < 1e-6
    th2_safe = jnp.where(small, 1.0, th2)
    th = jnp.sqrt(th2_safe)
    c1 = jnp.where(small, 1.0 - th2 / 6.0 + th2 * th2 / 120.0, jnp.sin(th) / th)
    c2 = jnp.where(small, 0.5 - th2 / 24.0 + th2 * th2 / 720.0, (1.0 - jnp.cos(th)) / th2_safe)
    return c1, c2


def _coefficient_branches(th2):
    """The series and the exact coefficients as functions of ``th2``, and whether the series
    holds for the whole batch (``None``: the precision has no series)."""
    limit, n_terms = SERIES_MAX_TH2.get(jnp.dtype(th2.dtype).itemsize, (0.0, 0))
    if not n_terms:
        return None, _exact_coefficients, None
    return (lambda x: (_series(x, n_terms, 1), 0.5 * _series(x, n_terms, 2))), _exact_coefficients, \
        jnp.max(th2, initial=0.0) <= limit


@jax.custom_jvp
def _rotation_coefficients(th2):
    """``(sin|t| / |t|, (1 - cos|t|) / |t|^2)`` of ``th2 = |t|^2``: the series when every angle of
    the batch is small enough, else ``sin`` and ``cos`` (:data:`SERIES_MAX_TH2`)."""
    series, exact, small = _coefficient_branches(th2)
    return exact(th2) if small is None else jax.lax.cond(small, series, exact, th2)


@_rotation_coefficients.defjvp
def _rotation_coefficients_jvp(primals, tangents):
    # The branch computes the coefficients and their slopes from th2 alone; the tangent is applied
    # outside it, so the step's linear map has a product per coefficient instead of a conditional
    # over the tangents (forward mode, _solvers.TangentSolver: two parameters 3.52x the forward run
    # against 3.99x without this rule, benchmarks/exp_tangent_solver.py, one process each).
    (th2,), (dth2,) = primals, tangents
    series, exact, small = _coefficient_branches(th2)

    def with_slope(f):
        return lambda x: jax.jvp(f, (x,), (jnp.ones_like(x),))

    (c1, c2), (d1, d2) = with_slope(exact)(th2) if small is None else \
        jax.lax.cond(small, with_slope(series), with_slope(exact), th2)
    return (c1, c2), (d1 * dth2, d2 * dth2)


def rotate(s, theta, axis=-2):
    """Rotate the spins ``s (..., 3, N)`` by the rotation vectors ``theta (..., 3, N)``
    (Rodrigues' formula); ``axis`` is the component axis (``-3`` for the batch-last layout
    ``(..., 3, N, n_batch)``).

    Exact rotation, so ``|s_k|`` is preserved to rounding; safe (and differentiable) at 0. The
    coefficients ``sin|t| / |t|`` and ``(1 - cos|t|) / |t|^2`` come from their Taylor series when
    every angle of the batch is small enough for the series to be exact to the precision
    (:data:`SERIES_MAX_TH2`; no ``sin``/``cos``), else from ``sin`` and ``cos``.
    """
    t, r = _xyz(theta, axis), _xyz(s, axis)  # component rows, stacked once at the end
    th2 = t[0] * t[0] + t[1] * t[1] + t[2] * t[2]
    c1, c2 = _rotation_coefficients(th2)
    txs = _cross_rows(t, r)
    ttxs = _cross_rows(t, txs)
    return jnp.stack([r[k] + c1 * txs[k] + c2 * ttxs[k] for k in range(3)], axis=axis)


# ------------------------------------------------------------------ user-facing equations of motion
def velocity(model: Model, spins, bosons, Phi, params, h=1.0, t=0.0):
    """``{psi, H~(psi; h, Phi)}`` at a user-format point: ``(ds (N, 3), da (M,) complex)``.

    With ``h = 1`` and ``Phi = Gamma L / 2`` this is the drift; with ``h = 0`` and
    ``Phi = xi / 2`` the noise term (paper Eq. 7).
    """
    y = to_internal(spins, bosons)
    return to_user(apply_cartesian(y, generator(model, y, Phi, params, h, t)))


def drift(model: Model, spins, bosons, params=None, t=0.0):
    """Deterministic part of ``d(spins, bosons)/dt`` (``Phi = Gamma L / 2``), from autodiff.

    Args:
        spins: ``(N, 3)``; bosons: ``(M,)`` complex; params: the model parameters; t: the time
            (time-dependent models only).

    Returns:
        ``(ds/dt (N, 3), da/dt (M,) complex)``.
    """
    params = {} if params is None else params
    Phi = None
    if model.jumps is not None:
        L = jnp.asarray(model.L(jnp.asarray(spins), jnp.asarray(bosons), params, t))
        Phi = 0.5 * decompose(model.gamma_of(params, t)).apply_gamma(L)
    return velocity(model, spins, bosons, Phi, params, 1.0, t)


def noise_increment(model: Model, spins, bosons, xi, params=None, t=0.0):
    """Noise part of the increment for jump-space noise ``xi`` (``(K,)`` complex, ``Phi = xi/2``).

    Linear in ``xi``; with ``<xi xi^dag> = 2 Gamma dt`` it is the stochastic increment of Eq. 7.
    """
    params = {} if params is None else params
    return velocity(model, spins, bosons, 0.5 * jnp.asarray(xi), params, 0.0, t)
