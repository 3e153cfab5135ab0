"""Differentiable TWA: chunked pathwise gradients (``value_and_grad``) and parameter fitting (``fit``).

A trajectory is a pure function of its key and the parameters, so with a fixed key (common random
numbers) the trajectory mean of an observable is a smooth function of the parameters and its
``jax.grad`` is the pathwise derivative: an unbiased estimate of ``d<O>/d theta`` that equals the
central finite difference taken with the same key.

Memory. Reverse mode through ``diffrax.diffeqsolve`` uses its default
``RecursiveCheckpointAdjoint``: it differentiates the discrete solver exactly (what matches finite
differences with the same key), keeps about ``sqrt(2 n_steps)`` copies of the state per trajectory
(online binomial checkpointing, since the number of steps is bounded by ``max_steps``) and
recomputes each step at most about once more. ``BacksolveAdjoint`` (continuous adjoint) would give
only an approximation of this discrete derivative and needs a reversible Brownian path;
``DirectAdjoint`` stores every step; ``ForwardMode`` costs one solve per parameter.

Chunks. The mean over ``n_traj`` trajectories is ``sum_chunks S_c / n`` with ``S_c`` the sum over
one chunk, linear in the chunks even when the loss is not linear in the mean. So
``dL/dtheta = sum_c (dL/dmean / n) . dS_c/dtheta``: a forward pass gives the mean and the cotangent
``dL/dmean``, then one vector-Jacobian product per chunk accumulates the gradient. Only one chunk's
checkpoints are alive at a time; the chunk is sized from the same float budget as ``simulate``.
When all trajectories fit in one chunk, value and gradient come from a single pass.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from . import _solve
from ._checks import all_concrete, check_finite_tree
from ._model import Model
from ._noise import decompose, decompose_like
from ._observables import all_finite_per_row
from ._solvers import SOLVERS, RotationHeun, StochasticHeun


# --------------------------------------------------------------------------- set-up shared by both
class _Plan(eqx.Module):
    """Everything a chunk needs except the (differentiated) parameters."""

    model: Model
    initial: Any
    observables: dict = eqx.field(static=True)
    grid: jax.Array
    save_ts: jax.Array
    solver: Any
    key: jax.Array
    n_traj: int = eqx.field(static=True)
    n_steps: int = eqx.field(static=True)
    dt: float = eqx.field(static=True)
    shapes: dict = eqx.field(static=True)


def _as_arrays(params):
    return jax.tree_util.tree_map(
        lambda x: jnp.asarray(x)
        if isinstance(x, (int, float, complex, np.number, np.ndarray)) and not isinstance(x, bool)
        else x,
        params,
    )


def _plan(model, initial, ts, params, *, n_traj, key, observables, dt, solver, who):
    """Validate like ``simulate`` and build the fixed time grid; ``params`` must be concrete."""
    if not isinstance(model, Model):
        raise TypeError(f"model must be a tw.Model, got {type(model).__name__}")
    _solve._check_initial(initial, model)
    ts_np = _solve._check_ts(ts)
    if isinstance(solver, str):
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {tuple(SOLVERS)} or a solver instance, got {solver!r}")
        solver = SOLVERS[solver]()
    elif not isinstance(solver, (RotationHeun, StochasticHeun)):
        raise TypeError(f"solver must be 'rotation_heun', 'heun' or a twa_jax solver, got {solver!r}")
    if n_traj is None:
        raise TypeError("n_traj is required (number of trajectories)")
    n_traj = _solve._check_int(n_traj, "n_traj")
    key_obj, _ = _solve._as_key(key)
    check_finite_tree(params, "params")
    if not all_concrete(params):
        raise ValueError(
            f"{who} differentiates internally; call it with concrete params, not under jax.grad/jax.jit"
        )
    if dt is not None and (
        isinstance(dt, bool) or not isinstance(dt, (int, float, np.floating, np.integer)) or not (np.isfinite(dt) and dt > 0)
    ):
        raise ValueError(f"dt must be a positive finite number, got {dt!r}")
    dtype = jnp.zeros(()).dtype
    model.check(params, dtype)
    observables = _solve._check_observables(observables, model, dtype)
    noise = decompose(model.gamma_of(params)) if model.is_dissipative else None
    if dt is None:
        dt = _solve._default_dt(model, noise, initial, params, dtype)
    grid_np, save_idx = _solve._time_grid(ts_np, float(dt))
    grid = jnp.asarray(grid_np, dtype)
    shapes = {k: tuple(v) for k, v in _solve._observable_shapes(observables, model, dtype).items()}
    return _Plan(
        model=model,
        initial=initial,
        observables=observables,
        grid=grid,
        save_ts=grid[jnp.asarray(save_idx)],
        solver=solver,
        key=key_obj,
        n_traj=n_traj,
        n_steps=len(grid_np) - 1,
        dt=float(np.max(np.diff(grid_np))),
        shapes=shapes,
    )


def _noise_ref(plan, params):
    """Concrete factorization of Gamma at ``params``: fixes the channels the traced factor uses."""
    model = plan.model
    return decompose(model.gamma_of(params)) if model.is_dissipative else None


def _grad_chunk_size(plan, chunk_size, extra_rows=0):
    """Trajectories per reverse-mode chunk: the checkpoints (~sqrt(2 n_steps) states per
    trajectory, diffrax's default) fit in ``simulate``'s float budget per chunk."""
    if chunk_size is not None:
        return min(_solve._check_int(chunk_size, "chunk_size"), plan.n_traj)
    m = plan.model
    state = 3 * m.n_spins + 2 * m.n_bosons
    checkpoints = math.floor(-1.5 + math.sqrt(2 * plan.n_steps + 0.25)) + 1
    obs = sum(int(np.prod(s)) for s in plan.shapes.values()) * len(plan.save_ts)
    per_traj = (checkpoints + 16) * state + 3 * obs + extra_rows * (4 * state + obs)
    return max(1, min(plan.n_traj, _solve.CHUNK_FLOATS // per_traj))


# --------------------------------------------------------------------------- one chunk
def _chunk_trajectories(diff, rest, noise_ref, plan, start, chunk_size):
    """Observables of trajectories ``start .. start + chunk_size - 1`` and their weights."""
    params = eqx.combine(diff, rest)
    noise = None if noise_ref is None else decompose_like(plan.model.gamma_of(params), noise_ref)
    idx = start + jnp.arange(chunk_size)
    keys = jax.vmap(lambda i: jax.random.fold_in(plan.key, i))(idx)
    ys = jax.vmap(
        lambda k: _solve._trajectory(
            plan.model, noise, params, plan.initial, plan.observables, plan.grid, plan.save_ts, plan.solver, "twa", k
        )
    )(keys)
    valid = idx < plan.n_traj
    finite = all_finite_per_row(ys)
    return ys, valid & finite, jnp.sum(valid & ~finite)


def _masked_sums(ys, w):
    return {k: jnp.sum(jnp.where(w.reshape((-1,) + (1,) * (y.ndim - 1)), y, 0), axis=0) for k, y in ys.items()}


def _chunk_sums(diff, rest, noise_ref, plan, start, chunk_size):
    ys, w, bad = _chunk_trajectories(diff, rest, noise_ref, plan, start, chunk_size)
    return _masked_sums(ys, w), jnp.sum(w), bad


@eqx.filter_jit
def _forward_chunk(diff, rest, noise_ref, plan, start, chunk_size):
    return _chunk_sums(diff, rest, noise_ref, plan, start, chunk_size)


@eqx.filter_jit
def _vjp_chunk(diff, rest, noise_ref, plan, start, chunk_size, ct):
    f = lambda d: _chunk_sums(d, rest, noise_ref, plan, start, chunk_size)[0]  # noqa: E731
    _, vjp = jax.vjp(f, diff)
    return vjp(ct)[0]


@eqx.filter_jit
def _value_and_grad_one_chunk(loss, diff, rest, noise_ref, plan, chunk_size):
    def L(d):
        sums, n, bad = _chunk_sums(d, rest, noise_ref, plan, jnp.asarray(0), chunk_size)
        mean = {k: v / jnp.maximum(n, 1) for k, v in sums.items()}
        return loss(mean), (mean, n, bad)

    return jax.value_and_grad(L, has_aux=True)(diff)


def _accumulate(a, b):
    return b if a is None else jax.tree_util.tree_map(jnp.add, a, b)


def _check_loss_value(v):
    if not hasattr(v, "shape") or v.shape != () or not jnp.issubdtype(v.dtype, jnp.floating):
        raise TypeError(f"loss must return a real scalar, got {getattr(v, 'shape', type(v))} {getattr(v, 'dtype', '')}")


def _value_and_grad(loss, plan, diff, rest, chunk_size):
    """``(loss, grad, mean, n_valid, n_failed)`` at ``combine(diff, rest)``, chunk by chunk."""
    params = eqx.combine(diff, rest)
    noise_ref = _noise_ref(plan, params)
    n_traj = plan.n_traj
    if chunk_size >= n_traj:
        (val, (mean, n, bad)), g = _value_and_grad_one_chunk(loss, diff, rest, noise_ref, plan, n_traj)
        return val, g, mean, n, bad
    sums, n, bad = None, 0, 0
    starts = range(0, n_traj, chunk_size)
    for start in starts:
        s, n_c, b_c = _forward_chunk(diff, rest, noise_ref, plan, jnp.asarray(start), chunk_size)
        sums, n, bad = _accumulate(sums, s), n + n_c, bad + b_c
    mean = {k: v / jnp.maximum(n, 1) for k, v in sums.items()}
    val, vjp_loss = jax.vjp(loss, mean)
    _check_loss_value(val)
    (ct,) = vjp_loss(jnp.ones((), val.dtype))
    ct = jax.tree_util.tree_map(lambda c: c / jnp.maximum(n, 1), ct)
    g = None
    for start in starts:
        g = _accumulate(g, _vjp_chunk(diff, rest, noise_ref, plan, jnp.asarray(start), chunk_size, ct))
    return val, g, mean, n, bad


# --------------------------------------------------------------------------- public: value_and_grad
def value_and_grad(
    loss: Callable,
    model: Model,
    initial,
    ts,
    *,
    params,
    n_traj: int,
    key,
    observables: dict | None = None,
    dt: float | None = None,
    solver="rotation_heun",
    chunk_size: int | None = None,
):
    r"""Value and pathwise gradient of a loss of trajectory means, accumulated chunk by chunk.

    Equivalent to ``jax.value_and_grad(lambda p: loss(tw.simulate(model, initial, ts,
    params=p, ...).mean))(params)`` with the same key (the same trajectories, so the same numbers
    up to rounding), but with memory bounded by one chunk of trajectories: the mean is computed
    first, then each chunk contributes the vector-Jacobian product of its sum with the cotangent
    :math:`\partial L/\partial \bar O / n` (exact, since the mean is linear in the chunk sums).
    Time steps are differentiated by diffrax's checkpointed adjoint (about
    :math:`\sqrt{2 n_\mathrm{steps}}` stored states per trajectory).

    Args:
        loss: ``loss(mean) -> real scalar`` with ``mean`` the dict ``{name: (n_times, ...)}`` of
            trajectory means (as ``Result.mean``). Pass the same function object again to reuse
            the compiled program.
        model, initial, ts: as in :func:`~twa_jax.simulate`.
        params: the model parameters; the gradient is taken with respect to every floating
            leaf (others are held fixed). Must be concrete.
        n_traj, key, observables, dt, solver: as in :func:`~twa_jax.simulate` (``key`` required).
        chunk_size: trajectories per reverse-mode chunk (default: sized so that one chunk's
            checkpoints hold about ``2**24`` floats).

    Returns:
        ``(value, grads)``: the loss (a scalar array) and a pytree like ``params`` (``None`` at
        non-differentiated leaves).

    Raises:
        TypeError, ValueError: on bad input (as ``simulate``), on a loss that does not return a
            real scalar, or when called with traced params.

    Example:
        >>> import jax.numpy as jnp, numpy as np, twa_jax as tw
        >>> model = tw.Model(lambda s, a, p: p["Omega"] * s[:, 0].sum(),
        ...                  jumps=lambda s, a, p: (s[:, 0] - 1j * s[:, 1]) / 2,
        ...                  gamma=lambda p: jnp.array([p["gamma"]]), n_spins=1)
        >>> loss = lambda mean: jnp.sum(mean["sz"] ** 2)
        >>> val, g = tw.value_and_grad(loss, model, tw.states.spins_down(1), np.linspace(0, 1, 5),
        ...                            params={"Omega": 1.0, "gamma": 0.5}, n_traj=32, key=0, dt=0.05)
        >>> sorted(g)
        ['Omega', 'gamma']
    """
    if not callable(loss):
        raise TypeError(f"loss must be a function loss(mean) -> scalar, got {loss!r}")
    params = _as_arrays({} if params is None else params)
    plan = _plan(model, initial, ts, params, n_traj=n_traj, key=key, observables=observables, dt=dt,
                 solver=solver, who="tw.value_and_grad")
    try:
        out = jax.eval_shape(loss, {k: jax.ShapeDtypeStruct((len(plan.save_ts),) + s, _mean_dtype(plan, k))
                                    for k, s in plan.shapes.items()})
    except Exception as e:
        raise TypeError(f"loss(mean) failed on the means of observables {sorted(plan.shapes)}: {e}") from e
    _check_loss_value(out)
    diff, rest = eqx.partition(params, eqx.is_inexact_array)
    val, g, _, _, bad = _value_and_grad(loss, plan, diff, rest, _grad_chunk_size(plan, chunk_size))
    _warn_failed(bad, plan.n_traj)
    return val, g


def _mean_dtype(plan, name):
    dtype = jnp.zeros(()).dtype
    s = jax.ShapeDtypeStruct((plan.model.n_spins, 3), dtype)
    a = jax.ShapeDtypeStruct((plan.model.n_bosons,), jnp.result_type(dtype, jnp.complex64))
    return jax.eval_shape(plan.observables[name], s, a).dtype


def _warn_failed(bad, n_traj):
    bad = int(bad)
    if bad == n_traj:
        raise RuntimeError(f"all {n_traj} trajectories became non-finite; reduce dt")
    if bad:
        warnings.warn(f"{bad} of {n_traj} trajectories became non-finite and were left out", RuntimeWarning, stacklevel=3)
