"""``quadratic_form``: the building block of pair interactions, with a cheap exact derivative.

Pair Hamiltonians ``sum_ij J_ij s_i^+ s_j^-`` or ``sum_ij J_ij s_i^x s_j^x`` are quadratic forms of
a symmetric (Hermitian) matrix. Written as ``x @ J @ x`` they are differentiated correctly by
``jax.grad``, but reverse mode cannot know that ``J`` is symmetric: it forms ``J x`` for the value
and ``J^T x`` for the gradient, two matrix products, and for a complex ``x`` with a real ``J`` it
multiplies complex by real matrices (four real products each). ``quadratic_form`` states the
symmetry: its derivative ``2 Re((J x)^* . dx)`` reuses ``J x`` from the value, so the whole
gradient costs one product, done in real arithmetic when ``J`` is real. It is still automatic
differentiation (a derivative rule, like those of ``jnp`` functions); nothing is derived by hand
in the model. ``benchmarks/bench_chain.py`` measures both forms.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from ._checks import is_concrete

#: relative tolerance of the symmetry check, ``max|M - M^H| <= HERMITIAN_RTOL * max|M|``
HERMITIAN_RTOL = 1e-6


def matvec(M, x):
    """``M @ x``, without promoting a real ``M`` to complex (two real products instead).

    Written as ``x @ M.T``: under ``vmap`` over ``x`` this is ``X @ M.T`` with the batch as the
    rows of the result, the layout the rest of a step uses (``M @ x`` would give the transpose
    and a copy)."""
    if jnp.iscomplexobj(x) and not jnp.iscomplexobj(M):
        return jax.lax.complex(jnp.real(x) @ M.T, jnp.imag(x) @ M.T)
    return x @ M.T


def _re_dot(x, u):
    """``Re(conj(x) . u)``."""
    if jnp.iscomplexobj(x) or jnp.iscomplexobj(u):
        return jnp.real(x) @ jnp.real(u) + jnp.imag(x) @ jnp.imag(u)
    return x @ u


@jax.custom_jvp
def _form(M, x):
    return _re_dot(x, matvec(M, x))


def _form_jvp(primals, tangents):
    M, x = primals
    dM, dx = tangents
    u = matvec(M, x)
    q = _re_dot(x, u)
    dq = jnp.zeros_like(q)
    if not isinstance(dx, SymbolicZero):
        dq = dq + 2 * _re_dot(u, dx)  # M Hermitian: d(x^H M x) = 2 Re((M x)^H dx)
    if not isinstance(dM, SymbolicZero):
        dq = dq + _re_dot(x, matvec(dM, x))
    return q, dq


_form.defjvp(_form_jvp, symbolic_zeros=True)


def quadratic_form(M, x):
    r"""``Re(x^H M x) = sum_ij conj(x_i) M_ij x_j`` for a real symmetric or complex Hermitian ``M``.

    The value equals ``jnp.real(jnp.conj(x) @ M @ x)``; its derivatives (any order, forward or
    reverse) use the symmetry, so ``jax.grad`` of a Hamiltonian built from it costs one product
    ``M x`` instead of two (see the module docstring). Use it for pair interactions, e.g.
    ``quadratic_form(J, (s[:, 0] - 1j * s[:, 1]) / 2)`` for ``sum_ij J_ij s_i^+ s_j^-``.

    Args:
        M: ``(n, n)`` real symmetric or complex Hermitian matrix. Checked when it is a concrete
            array (a constant of the model); a traced ``M`` (a parameter under ``jit``) is the
            caller's responsibility: a non-Hermitian ``M`` would give a wrong gradient.
        x: ``(n,)`` real or complex vector.

    Returns:
        A real scalar.
    """
    M, x = jnp.asarray(M), jnp.asarray(x)
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"quadratic_form: M must be a square (n, n) matrix, got shape {M.shape}")
    if x.shape != (M.shape[0],):
        raise ValueError(f"quadratic_form: x must have shape ({M.shape[0]},) to match M, got {x.shape}")
    if is_concrete(M):
        Mn = np.asarray(M)
        asym = float(np.max(np.abs(Mn - Mn.conj().T), initial=0.0))
        scale = float(np.max(np.abs(Mn), initial=0.0))
        if not asym <= HERMITIAN_RTOL * scale:
            kind = "Hermitian" if np.iscomplexobj(Mn) else "symmetric"
            raise ValueError(
                f"quadratic_form needs a {kind} M (derivatives use M = M^H); max|M - M^H| = {asym:.3g} "
                f"against max|M| = {scale:.3g}. For a general M write jnp.conj(x) @ M @ x."
            )
    real = jnp.finfo(jnp.result_type(M.dtype, x.dtype, float)).dtype  # the common precision
    cplx = jnp.result_type(real, jnp.complex64)
    return _form(M.astype(cplx if jnp.iscomplexobj(M) else real), x.astype(cplx if jnp.iscomplexobj(x) else real))
