"""Small helpers for validating user input before anything is traced or compiled.

Shape, dtype and structure problems are raised eagerly as ``TypeError``/``ValueError`` that name
the argument. Value checks (NaN, Hermiticity, positivity) need concrete numbers; when a value is
a tracer (the user is differentiating or jitting through ``simulate``) they are skipped.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True when ``x`` holds numbers we can inspect (not a JAX tracer)."""
    return not isinstance(x, jax.core.Tracer)


def all_concrete(tree) -> bool:
    return all(is_concrete(leaf) for leaf in jax.tree_util.tree_leaves(tree))


def check_finite_tree(tree, name: str) -> None:
    """Raise ``ValueError`` if any concrete numeric leaf of ``tree`` is NaN or infinite."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    for path, leaf in leaves:
        if not is_concrete(leaf) or callable(leaf):
            continue
        try:
            arr = np.asarray(leaf)
        except Exception:  # non-numeric leaf (string, object): not ours to judge
            continue
        if arr.dtype.kind not in "biufc":
            continue
        if not np.all(np.isfinite(arr)):
            where = jax.tree_util.keystr(path) or "(root)"
            raise ValueError(f"{name}{where} contains NaN or infinite values: {arr!r}")


def check_gamma_matrix(gamma, name: str = "gamma", rtol: float = 1e-10) -> None:
    """Validate a dissipation matrix or rate vector (concrete values only).

    Args:
        gamma: ``(K,)`` non-negative rates or a ``(K, K)`` Hermitian positive-semidefinite matrix.
        rtol: eigenvalues below ``-rtol * max|eigenvalue|`` are an error (PHYSICS.md section 5).
            For single precision input the bound is at least ``100 eps`` of its dtype, since
            rounding the entries alone moves eigenvalues by about ``eps * max|eigenvalue|``.
    """
    g = jnp.asarray(gamma)
    if g.ndim not in (1, 2):
        raise ValueError(
            f"{name} must be a (K,) vector of rates or a (K, K) matrix, got shape {g.shape}"
        )
    if g.ndim == 2 and g.shape[0] != g.shape[1]:
        raise ValueError(f"{name} must be a square (K, K) matrix, got shape {g.shape}")
    if not (jnp.issubdtype(g.dtype, jnp.floating) or jnp.issubdtype(g.dtype, jnp.complexfloating)
            or jnp.issubdtype(g.dtype, jnp.integer)):
        raise TypeError(f"{name} must be numeric, got dtype {g.dtype}")
    if not is_concrete(gamma):
        return
    a = np.asarray(gamma)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if a.ndim == 1:
        if np.iscomplexobj(a) and np.any(a.imag != 0):
            raise ValueError(f"{name}: rates must be real, got complex values {a}")
        a = a.real
        if np.any(a < 0):
            raise ValueError(f"{name}: rates must be non-negative, got {a}")
        return
    scale = max(np.max(np.abs(a)), np.finfo(float).tiny)
    asym = np.max(np.abs(a - a.conj().T))
    if asym > 1e-8 * scale:
        raise ValueError(
            f"{name} must be Hermitian: max |Gamma - Gamma^dag| = {asym:.3g} "
            f"(max |Gamma| = {scale:.3g})"
        )
    if a.dtype in (np.float16, np.float32, np.complex64):
        rtol = max(rtol, 100 * float(np.finfo(a.dtype).eps))
    w = np.linalg.eigvalsh(0.5 * (a + a.conj().T))
    wmax = max(np.max(np.abs(w)), np.finfo(float).tiny)
    if w.min() < -rtol * wmax:
        raise ValueError(
            f"{name} must be positive semidefinite: smallest eigenvalue {w.min():.3g} "
            f"< -{rtol:g} * max|eigenvalue| ({wmax:.3g})"
        )
