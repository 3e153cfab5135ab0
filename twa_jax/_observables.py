"""Observables (Weyl-ordered trajectory averages, paper Eqs. 14 and 36) and streaming statistics.

An observable is a function ``f(spins (N, 3), bosons (M,) complex) -> array`` (scalar or any
fixed shape, real or complex) of one phase-space point. Trajectory averages of classical
functions are symmetrically ordered expectation values; e.g. ``<a^dag a> = mean |a|^2 - 1/2``.

Statistics are streamed: each chunk of trajectories is reduced to ``(count, mean, M2)`` and
merged with Chan et al.'s parallel update, so memory never grows with the number of trajectories.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def default_observables(n_spins: int, n_bosons: int, mean_field: bool = False) -> dict:
    """Site-averaged ``sx, sy, sz`` (if any spins) and per-mode ``n = <a^dag a>`` (if any bosons).
    ``mean_field``: ``n`` is the mean-field occupation ``|a|^2`` of the one unsampled trajectory,
    not the Weyl symbol ``|a|^2 - 1/2``, whose ``-1/2`` is made up by the Wigner distribution's
    spread in a sampled run (at the mean point of the vacuum it would give ``-1/2``)."""
    obs = {}
    if n_spins:
        obs.update(sx=spin_x, sy=spin_y, sz=spin_z)
    if n_bosons:
        obs["n"] = boson_number_mean_field if mean_field else boson_number
    return obs


# module-level functions (not lambdas made per call) so that repeated calls hit the jit cache
def spin_x(s, a):
    """Site-averaged ``<sigma^x>``."""
    return jnp.mean(s[:, 0])


def spin_y(s, a):
    """Site-averaged ``<sigma^y>``."""
    return jnp.mean(s[:, 1])


def spin_z(s, a):
    """Site-averaged ``<sigma^z>``."""
    return jnp.mean(s[:, 2])


def boson_number(s, a):
    """``<a_m^dag a_m>`` per mode, Weyl-corrected: ``|a_m|^2 - 1/2`` (Eq. 36)."""
    return jnp.abs(a) ** 2 - 0.5


def boson_number_mean_field(s, a):
    """``|a_m|^2`` per mode: the occupation of one mean-field trajectory."""
    return jnp.abs(a) ** 2


for _f in (spin_x, spin_y, spin_z, boson_number, boson_number_mean_field):
    _f.linear_per_site = True  # affine in each site's spin: the same-site check can skip it
for _f in (boson_number, boson_number_mean_field):
    _f.per_mode = True  # one value per boson mode: its axis is called "mode" (_result.mode_dims)


def chunk_moments(x, weight):
    """Count, mean and sum of squared deviations over axis 0 of ``x``, for rows with ``weight``.

    Rows with ``weight == False`` (padding or failed trajectories) are excluded, and they may hold
    NaN without poisoning values or gradients (double-``where``).
    """
    w = weight.reshape((-1,) + (1,) * (x.ndim - 1))
    xs = jnp.where(w, x, 0)
    n = jnp.sum(weight).astype(jnp.real(x).dtype)
    mean = jnp.sum(xs, axis=0) / jnp.maximum(n, 1)
    dev = jnp.where(w, xs - mean, 0)
    m2 = jnp.sum(jnp.abs(dev) ** 2, axis=0)
    return n, mean, m2


def _counts_like(n, x):
    """Counts ``n`` with trailing unit axes, so they broadcast over ``x``'s trailing axes: the
    counts' axes are the leading ones of ``x`` (none for one run; ``(P,)`` for the points of a
    sweep, whose means are ``(P, n_times, ...)``)."""
    return jnp.reshape(n, jnp.shape(n) + (1,) * (jnp.ndim(x) - jnp.ndim(n)))


def merge_moments(a, b):
    """Merge two ``(count, mean, M2)`` triples (Chan, Golub and LeVeque); counts may carry
    leading axes of the means (a sweep's points)."""
    na, ma, m2a = a
    nb, mb, m2b = b
    n = na + nb
    safe = jnp.maximum(_counts_like(n, ma), 1)
    delta = mb - ma
    mean = ma + delta * (_counts_like(nb, ma) / safe)
    m2 = m2a + m2b + jnp.abs(delta) ** 2 * (_counts_like(na * nb, ma) / safe)
    return n, mean, m2


def finalize(moments, deterministic=False):
    """``(mean, standard error)`` from merged moments; the standard error uses ``n - 1``, so it
    is NaN for fewer than two trajectories (one trajectory says nothing about the spread) unless
    the run is ``deterministic`` (mean field: one exact trajectory, standard error zero). Counts
    may carry leading axes of the means (a sweep's points)."""
    n, mean, m2 = moments
    n = _counts_like(n, mean)
    var = m2 / jnp.maximum(n - 1, 1)
    sem = jnp.sqrt(var / jnp.maximum(n, 1))
    if deterministic:
        return mean, jnp.zeros_like(sem)
    return mean, jnp.where(n > 1, sem, jnp.nan)


@functools.partial(jax.jit, static_argnums=1)
def finalize_all(moments: dict, deterministic=False) -> dict:
    """:func:`finalize` of every ``{name: moments}`` in one compiled call: eagerly, each of its
    few operations per observable is a dispatch of its own (0.2-0.3 ms each on a GPU host)."""
    return {name: finalize(m, deterministic) for name, m in moments.items()}


def all_finite_per_row(tree):
    """``(rows,)`` bool: every value of every leaf in that row is finite."""
    leaves = jax.tree_util.tree_leaves(tree)
    ok = None
    for leaf in leaves:
        f = jnp.all(jnp.isfinite(leaf.reshape(leaf.shape[0], -1)), axis=1)
        ok = f if ok is None else ok & f
    return ok
