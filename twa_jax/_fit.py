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
checkpoints are alive at a time; the chunk is sized from free memory by ``simulate``'s rule.
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
from ._observables import all_finite_per_row, default_observables
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
    checkpoints: int | None = eqx.field(static=True, default=None)


def _as_arrays(params):
    return jax.tree_util.tree_map(
        lambda x: jnp.asarray(x)
        if isinstance(x, (int, float, complex, np.number, np.ndarray)) and not isinstance(x, bool)
        else x,
        params,
    )


def _plan(model, initial, ts, params, *, n_traj, key, observables, dt, solver, who, checkpoints=None):
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
    if checkpoints is not None:
        checkpoints = min(_solve._check_int(checkpoints, "checkpoints"), len(grid_np) - 1)
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
        checkpoints=checkpoints,
    )


def _noise_ref(plan, params):
    """Concrete factorization of Gamma at ``params``: fixes the channels the traced factor uses."""
    model = plan.model
    return decompose(model.gamma_of(params)) if model.is_dissipative else None


def _grad_chunk_size(plan, chunk_size, extra_rows=0):
    """Trajectories per reverse-mode chunk, sized from the device's free memory by the same rule
    as ``simulate``'s chunks (:func:`~twa_jax._solve.auto_chunk_size`). A trajectory holds its
    checkpoints (~sqrt(2 n_steps) states, diffrax's default), the working states of a step in
    both passes, its observables and, for the Jacobian, ``extra_rows`` cotangent rows."""
    if chunk_size is not None:
        return min(_solve._check_int(chunk_size, "chunk_size"), plan.n_traj)
    m = plan.model
    state = 3 * m.n_spins + 2 * m.n_bosons
    checkpoints = plan.checkpoints or math.floor(-1.5 + math.sqrt(2 * plan.n_steps + 0.25)) + 1
    obs = sum(int(np.prod(s)) for s in plan.shapes.values()) * len(plan.save_ts)
    per_traj = (checkpoints + 16) * state + 3 * obs + extra_rows * (4 * state + obs)
    item = jnp.dtype(plan.grid.dtype).itemsize
    return _solve.auto_chunk_size(item * per_traj, jax.devices()[:1], plan.n_traj)


# --------------------------------------------------------------------------- one chunk
def _combine(diff, rest):
    """Parameters from the differentiated part and the rest: two dicts with disjoint keys (fit),
    or two trees of the same structure from ``eqx.partition`` (value_and_grad)."""
    if isinstance(diff, dict) and isinstance(rest, dict) and set(diff).isdisjoint(rest):
        return {**rest, **diff}
    return eqx.combine(diff, rest)


def _chunk_trajectories(diff, rest, noise_ref, plan, start, chunk_size):
    """Observables of trajectories ``start .. start + chunk_size - 1`` and their weights."""
    params = _combine(diff, rest)
    noise = None if noise_ref is None else decompose_like(plan.model.gamma_of(params), noise_ref)
    idx = start + jnp.arange(chunk_size)
    keys = jax.vmap(lambda i: jax.random.fold_in(plan.key, i))(idx)
    ys = _solve._solve_batch(
        plan.model, noise, params, plan.initial, plan.observables, plan.grid, plan.save_ts, plan.solver, "twa", keys,
        plan.checkpoints,
    )
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
    noise_ref = _noise_ref(plan, _combine(diff, rest))
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
    checkpoints: int | None = None,
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
        chunk_size: trajectories per reverse-mode chunk (default: from the device's free
            memory, like ``simulate``: one chunk's checkpoints and working states use at most
            a quarter of it).
        checkpoints: states stored per trajectory for the reverse pass (default: diffrax's,
            about ``sqrt(2 n_steps)``). Up to ``n_steps``: more memory per trajectory, fewer
            steps recomputed (``benchmarks/README.md`` measures the trade).

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
                 solver=solver, who="tw.value_and_grad", checkpoints=checkpoints)
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


# --------------------------------------------------------------------------- fit: pieces
def _flat(d, names):
    """Real vector of the entries ``names`` of a dict of arrays (complex: real parts, then imaginary)."""
    parts = []
    for k in names:
        v = d[k]
        parts.append(jnp.ravel(jnp.real(v)))
        if jnp.iscomplexobj(v):
            parts.append(jnp.ravel(jnp.imag(v)))
    return jnp.concatenate(parts)


def _unflat(x, names, shapes, is_complex):
    out, i = {}, 0
    for k in names:
        n = int(np.prod(shapes[k]))
        re = x[i:i + n].reshape(shapes[k])
        i += n
        if is_complex[k]:
            out[k] = jax.lax.complex(re, x[i:i + n].reshape(shapes[k]))
            i += n
        else:
            out[k] = re
    return out


@eqx.filter_jit
def _jacobian_chunk(diff, rest, noise_ref, plan, start, chunk_size, names):
    """Sums of the flattened fitted observables, their Jacobian with respect to the flattened
    ``diff`` (one VJP per output, batched), and the trajectory moments (n, mean, M2 matrix)."""
    x0, unravel = ravel_pytree(diff)

    def f(x):
        ys, w, bad = _chunk_trajectories(unravel(x), rest, noise_ref, plan, start, chunk_size)
        return _flat(_masked_sums(ys, w), names), (ys, w, bad)

    sums, vjp, (ys, w, bad) = jax.vjp(f, x0, has_aux=True)
    jac = jax.vmap(lambda c: vjp(c)[0])(jnp.eye(sums.shape[0], dtype=sums.dtype))
    Y = jax.vmap(lambda y: _flat(y, names))(ys)
    n = jnp.sum(w)
    mean = jnp.sum(jnp.where(w[:, None], Y, 0), axis=0) / jnp.maximum(n, 1)
    dev = jnp.where(w[:, None], Y - mean, 0)
    return sums, jac, (n, mean, dev.T @ dev), bad


def _merge(a, b):
    if a is None:
        return b
    na, ma, Ma = a
    nb, mb, Mb = b
    n = na + nb
    d = mb - ma
    return n, ma + d * (nb / jnp.maximum(n, 1)), Ma + Mb + jnp.outer(d, d) * (na * nb / jnp.maximum(n, 1))


def _bounded(lo, hi):
    """``(to, inverse)``: unconstrained ``z`` -> value in ``(lo, hi)`` and back."""
    if lo is None and hi is None:
        return None
    if hi is None:
        return (lambda z: lo + jnp.exp(z)), (lambda x: np.log(x - lo))
    if lo is None:
        return (lambda z: hi - jnp.exp(z)), (lambda x: np.log(hi - x))
    return (lambda z: lo + (hi - lo) * jax.nn.sigmoid(z)), (lambda x: np.log((x - lo) / (hi - x)))


class FitResult(eqx.Module):
    """Output of :func:`fit`.

    Attributes:
        params: fitted parameters (same structure as ``params0``).
        stderr: standard error of each fitted parameter (see :func:`fit` for how it is computed).
        covariance: ``(p, p)`` covariance of the flattened fitted parameters (order of
            ``jax.flatten_util.ravel_pytree(params)``).
        loss: loss at the fitted parameters.
        loss_history: ``(steps,)`` loss before each optimizer step.
        params_history: ``{name: (steps, ...)}`` parameters before each optimizer step.
        mean, sem: ``{name: (n_times, ...)}`` fitted model's trajectory means (and their standard
            errors) of the fitted observables at ``ts``.
        ts: save times; fixed: the parameters held fixed.
        converged: the Gauss-Newton step from the fitted point is below 0.2 standard errors in
            every parameter (else more steps or another learning rate would move the fit).
        stderr_method, n_traj, n_steps, dt, steps, wall_time: how it was computed.
    """

    params: dict
    stderr: dict
    covariance: Any
    loss: float
    loss_history: Any
    params_history: dict
    mean: dict
    sem: dict
    ts: Any
    fixed: dict
    converged: bool = eqx.field(static=True)
    stderr_method: str = eqx.field(static=True)
    n_traj: int = eqx.field(static=True)
    n_steps: int = eqx.field(static=True)
    dt: float = eqx.field(static=True)
    steps: int = eqx.field(static=True)
    wall_time: float = eqx.field(static=True)

    def __repr__(self):
        lines = [
            f"FitResult(loss={self.loss:.6g}, steps={self.steps}, converged={self.converged}, "
            f"n_traj={self.n_traj}, dt={self.dt:.3g}, n_steps={self.n_steps}, wall_time={self.wall_time:.3g} s)"
        ]
        for k, v in self.params.items():
            v, e = np.asarray(v), np.asarray(self.stderr[k])
            if v.ndim == 0:
                lines.append(f"  {k} = {float(v):.6g} +- {float(e):.2g}")
            else:
                lines.append(f"  {k}: shape {v.shape}, values {np.array2string(v, precision=4)} +- {np.array2string(e, precision=2)}")
        lines.append(f"  standard errors: {self.stderr_method}")
        return "\n".join(lines)

    __str__ = __repr__


def _check_fit_inputs(data, params0, fixed, sigma, bounds, steps, loss, optimizer, learning_rate):
    steps = _solve._check_int(steps, "steps")
    if not isinstance(data, dict) or not data:
        raise TypeError("data must be a non-empty dict {observable name: (n_times, ...) array}")
    if not isinstance(params0, dict) or not params0:
        raise TypeError("params0 must be a non-empty dict {name: initial value} of the fitted parameters")
    fixed = {} if fixed is None else fixed
    if not isinstance(fixed, dict):
        raise TypeError(f"fixed must be a dict of parameters held constant, got {type(fixed).__name__}")
    both = sorted(set(params0) & set(fixed))
    if both:
        raise ValueError(f"parameters {both} are both fitted (params0) and fixed; give each once")
    dtype = jnp.zeros(()).dtype
    p0 = {}
    for k, v in params0.items():
        a = np.asarray(v)
        if a.dtype.kind not in "biuf":
            raise TypeError(f"params0[{k!r}] must be real numbers, got {a.dtype}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"params0[{k!r}] contains NaN or infinite values")
        p0[k] = jnp.asarray(a, dtype)
    bounds = {} if bounds is None else bounds
    if not isinstance(bounds, dict):
        raise TypeError("bounds must be a dict {name: (lower, upper)} with None for an open side")
    for k, b in bounds.items():
        if k not in p0:
            raise ValueError(f"bounds given for {k!r}, which is not a fitted parameter; fitted: {sorted(p0)}")
        if not isinstance(b, (tuple, list)) or len(b) != 2:
            raise ValueError(f"bounds[{k!r}] must be a pair (lower, upper) with None for an open side, got {b!r}")
        lo, hi = b
        if lo is not None and hi is not None and not lo < hi:
            raise ValueError(f"bounds[{k!r}] = {b!r}: lower must be below upper")
        v = np.asarray(p0[k])
        if (lo is not None and np.any(v <= lo)) or (hi is not None and np.any(v >= hi)):
            raise ValueError(f"params0[{k!r}] = {v} must lie strictly inside bounds {tuple(b)}")
    if loss is not None and not callable(loss):
        raise TypeError(f"loss must be a function loss(mean, data) -> scalar, got {loss!r}")
    if optimizer is not None:
        if learning_rate is not None:
            raise ValueError("learning_rate sets the default optimizer; with optimizer= given, leave it out")
        if not isinstance(optimizer, optax.GradientTransformation):
            raise TypeError(f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}")
    elif learning_rate is not None and not (isinstance(learning_rate, (int, float)) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}")
    if sigma is not None and loss is not None:
        raise ValueError("sigma weights the default least-squares loss; with a custom loss, leave it out")
    return steps, p0, fixed, bounds


def _check_data(data, sigma, plan):
    n_times = len(plan.save_ts)
    names = tuple(sorted(data))
    out, sig = {}, {}
    for k in names:
        want = (n_times,) + plan.shapes[k]
        a = np.asarray(data[k])
        if a.shape != want:
            raise ValueError(f"data[{k!r}] has shape {a.shape}; the observable at {n_times} times has shape {want}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"data[{k!r}] contains NaN or infinite values")
        out[k] = jnp.asarray(a)
        if sigma is None:
            continue
        s = sigma[k] if isinstance(sigma, dict) else sigma
        if isinstance(sigma, dict) and k not in sigma:
            raise ValueError(f"sigma has no entry for data[{k!r}]")
        try:
            s = np.broadcast_to(np.asarray(s, dtype=float), want)
        except ValueError:
            raise ValueError(f"sigma[{k!r}] of shape {np.shape(s)} does not broadcast to the data shape {want}") from None
        if not np.all(np.isfinite(s) & (s > 0)):
            raise ValueError(f"sigma[{k!r}] must be positive and finite")
        sig[k] = jnp.asarray(s)
    if isinstance(sigma, dict):
        extra = sorted(set(sigma) - set(names))
        if extra:
            raise ValueError(f"sigma has entries {extra} that are not in data {list(names)}")
    return names, out, (sig if sigma is not None else None)


class _Progress:
    """A one-line text progress bar on stderr (no dependency)."""

    def __init__(self, steps, enabled):
        self.steps, self.enabled, self.t0 = steps, enabled, time.perf_counter()
        self.every = max(1, steps // 100)

    def update(self, i, loss, params):
        if not self.enabled or ((i + 1) % self.every and i + 1 != self.steps):
            return
        frac = (i + 1) / self.steps
        bar = "#" * int(20 * frac)
        vals = " ".join(f"{k}={float(np.ravel(v)[0]):.4g}" for k, v in list(params.items())[:4])
        sys.stderr.write(
            f"\rfit [{bar:<20}] {i + 1}/{self.steps} loss {float(loss):.5g} {vals} "
            f"({time.perf_counter() - self.t0:.0f} s)"
        )
        sys.stderr.flush()
        if i + 1 == self.steps:
            sys.stderr.write("\n")


def fit(
    model: Model,
    initial,
    ts,
    data: dict,
    params0: dict,
    *,
    steps: int,
    n_traj: int,
    key,
    fixed: dict | None = None,
    sigma=None,
    loss: Callable | None = None,
    bounds: dict | None = None,
    optimizer=None,
    learning_rate: float | None = None,
    observables: dict | None = None,
    dt: float | None = None,
    solver="rotation_heun",
    chunk_size: int | None = None,
    checkpoints: int | None = None,
    polish: int = 2,
    progress: bool = True,
) -> FitResult:
    r"""Fit model parameters to data by gradient descent on TWA trajectory means.

    Every step simulates ``n_traj`` trajectories with the same ``key`` (common random numbers: the
    loss is a smooth deterministic function of the parameters) and takes one optax step with the
    pathwise gradient of :func:`value_and_grad`.

    Default loss: weighted least squares
    :math:`L = \tfrac12 \sum_{k,t} (\bar O_k(t) - d_k(t))^2 / \sigma_k(t)^2` (``sigma = 1`` when not
    given). Parameters are optimized in internal coordinates: without bounds
    :math:`\theta = \theta_0 + |\theta_0| z` (relative steps; scale 1 where :math:`\theta_0 = 0`);
    with ``(lo, None)`` :math:`\theta = lo + e^z` (positivity: ``(0, None)``), ``(None, hi)``
    :math:`\theta = hi - e^z`, ``(lo, hi)`` :math:`lo + (hi - lo)\,\mathrm{sigmoid}(z)`.

    Standard errors come from the Gauss-Newton curvature at the fitted point, computed from the
    exact Jacobian :math:`J = \partial \bar O / \partial\theta` (one extra pass, reverse mode):
    :math:`C = A^{-1} J^T W (\Sigma_d + \Sigma_\mathrm{sim}) W J A^{-1}`, :math:`A = J^T W J`,
    :math:`W = \mathrm{diag}(\sigma^{-2})`, with :math:`\Sigma_d = \mathrm{diag}(\sigma^2)` the
    data errors and :math:`\Sigma_\mathrm{sim}` the Monte-Carlo covariance of the simulated means
    at this key (trajectory covariance / n, correlations between times included). Without
    ``sigma`` the data variance is estimated from the residuals,
    :math:`s^2 = \max(|r|^2/(P - p) - \mathrm{tr}\,\Sigma_\mathrm{sim}/P, 0)`. With a custom
    ``loss`` it is taken as a negative log-likelihood of the means: :math:`W` becomes its Hessian.
    These errors assume the model is right and the fit is converged (``converged`` tells).

    Args:
        model, initial, ts: as in :func:`~twa_jax.simulate`; ``ts`` are the data's times
            (``ts[0]`` is the initial state's time).
        data: ``{observable name: (n_times, ...) array}``, each the shape of ``Result.mean[name]``.
            Names are from ``observables`` (default: the model's default observables ``sx, sy,
            sz, n``); only the observables in ``data`` are simulated.
        params0: ``{name: initial value}`` of the fitted parameters (scalars or arrays).
        steps: number of optimizer steps.
        n_traj, key: trajectories per step and their key (fixed during the fit).
        fixed: parameters the model needs that are not fitted.
        sigma: per-point standard deviations of the data: a number, or ``{name: array}``
            broadcastable to each data entry. Weights the default loss.
        loss: ``loss(mean, data) -> real scalar`` replacing the least squares (no ``sigma``).
        bounds: ``{name: (lower, upper)}``, ``None`` for an open side, via the reparametrization.
        optimizer: an ``optax.GradientTransformation`` acting on the internal coordinates;
            default ``optax.adam`` with a cosine-decay schedule from ``learning_rate`` (default
            0.05, i.e. 5 % relative steps) to 1 % of it over ``steps``.
        observables, dt, solver, chunk_size: as in :func:`~twa_jax.simulate`; checkpoints: as in
            :func:`value_and_grad`.
        polish: at most this many Gauss-Newton steps after the optimizer (each one pass that
            also gives the exact Jacobian; a step is kept only if it lowers the loss). ``0``: none.
        progress: print a one-line progress bar to stderr.

    Returns:
        A :class:`FitResult`.

    Raises:
        TypeError, ValueError: on bad input, naming it (shapes of data and sigma, unknown names
            in data or bounds, initial values outside bounds, ``steps < 1``, ...).
    """
    t_start = time.perf_counter()
    steps, p0, fixed, bounds = _check_fit_inputs(data, params0, fixed, sigma, bounds, steps, loss, optimizer, learning_rate)
    polish = _solve._check_int(polish, "polish", minimum=0)
    if model is not None and isinstance(model, Model) and isinstance(data, dict):
        available = (
            default_observables(model.n_spins, model.n_bosons) if observables is None else observables
        )
        if not isinstance(available, dict):
            raise TypeError("observables must be a dict {name: f(spins, bosons)}")
        unknown = sorted(set(data) - set(available))
        if unknown:
            raise ValueError(f"data has entries {unknown} that are not observables; available: {sorted(available)}")
        observables = {k: available[k] for k in data}
    fixed = _as_arrays(fixed)
    plan = _plan(model, initial, ts, {**fixed, **p0}, n_traj=n_traj, key=key, observables=observables, dt=dt,
                 solver=solver, who="tw.fit", checkpoints=checkpoints)
    names, data_arr, sig = _check_data(data, sigma, plan)
    is_complex = {k: bool(jnp.iscomplexobj(jnp.zeros((), _mean_dtype(plan, k)))) for k in names}

    if loss is None:
        def loss_of_mean(mean):
            tot = 0.0
            for k in names:
                r = jnp.abs(mean[k] - data_arr[k]) ** 2
                tot = tot + 0.5 * jnp.sum(r if sig is None else r / sig[k] ** 2)
            return tot
    else:
        user_loss = loss

        def loss_of_mean(mean):
            return user_loss(mean, data_arr)

        _check_loss_value(jax.eval_shape(loss_of_mean, {k: jax.ShapeDtypeStruct(data_arr[k].shape, _mean_dtype(plan, k)) for k in names}))

    # internal coordinates z -> theta
    trans = {k: _bounded(*bounds[k]) if k in bounds else None for k in p0}
    scale = {k: jnp.where(p0[k] != 0, jnp.abs(p0[k]), 1.0) for k in p0}

    def to_params(z):
        return {k: (p0[k] + scale[k] * z[k]) if trans[k] is None else trans[k][0](z[k]) for k in z}

    z = {k: jnp.zeros_like(p0[k]) if trans[k] is None else jnp.asarray(trans[k][1](np.asarray(p0[k])), p0[k].dtype)
         for k in p0}
    if optimizer is None:
        lr = 0.05 if learning_rate is None else float(learning_rate)
        optimizer = optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.01))
    opt_state = optimizer.init(z)
    gchunk = _grad_chunk_size(plan, chunk_size)
    bar = _Progress(steps, progress)
    loss_hist, p_hist = [], {k: [] for k in p0}
    bad = 0
    for i in range(steps):
        theta, to_vjp = jax.vjp(to_params, z)
        val, g_theta, _, _, bad = _value_and_grad(loss_of_mean, plan, theta, fixed, gchunk)
        val = float(val)
        if not np.isfinite(val):
            raise FloatingPointError(f"the loss became {val} at step {i} with parameters {_fmt(theta)}; lower learning_rate or dt")
        (g_z,) = to_vjp(g_theta)
        updates, opt_state = optimizer.update(g_z, opt_state, z)
        loss_hist.append(val)
        for k in p0:
            p_hist[k].append(np.asarray(theta[k]))
        bar.update(i, val, theta)
        z = optax.apply_updates(z, updates)
    _warn_failed(bad, plan.n_traj)
    theta = to_params(z)

    # final pass: mean, exact Jacobian and trajectory covariance at the fitted point
    jchunk = _grad_chunk_size(plan, chunk_size, extra_rows=sum(int(np.prod(v.shape)) * (1 + is_complex[k]) for k, v in data_arr.items()))

    def final_pass(theta):
        noise_ref = _noise_ref(plan, {**fixed, **theta})
        sums = jac = mom = None
        for start in range(0, plan.n_traj, jchunk):
            s, jc, m, _ = _jacobian_chunk(theta, fixed, noise_ref, plan, jnp.asarray(start), jchunk, names)
            sums, jac, mom = _accumulate(sums, s), _accumulate(jac, jc), _merge(mom, m)
        n = mom[0]
        Sig = np.asarray(mom[2]) / max(float(n) - 1, 1) / max(float(n), 1)
        return np.asarray(sums / jnp.maximum(n, 1)), np.asarray(jac / jnp.maximum(n, 1)), Sig

    mean_flat, J, Sigma_sim = final_pass(theta)
    shapes = {k: tuple(data_arr[k].shape) for k in names}
    mean = _unflat(jnp.asarray(mean_flat), names, shapes, is_complex)
    final_loss = float(loss_of_mean(mean))
    d_flat = np.asarray(_flat(data_arr, names))
    r = mean_flat - d_flat
    P = J.shape[0]
    if loss is None:
        w = np.ones(P) if sig is None else 1.0 / np.asarray(_flat(sig, names)) ** 2
        if sig is not None and any(is_complex.values()):  # sigma applies to both parts of a complex entry
            w = 1.0 / np.asarray(_flat({k: sig[k] * (1 + 1j if is_complex[k] else 1) for k in names}, names)) ** 2
        Hm = np.diag(w)
        grad_m = w * r
    else:
        f_flat = lambda x: loss_of_mean(_unflat(x, names, shapes, is_complex))  # noqa: E731
        Hm = np.asarray(jax.hessian(f_flat)(jnp.asarray(mean_flat)))
        grad_m = np.asarray(jax.grad(f_flat)(jnp.asarray(mean_flat)))
    def curvature(J):
        A = J.T @ Hm @ J
        try:
            Ainv = np.linalg.inv(A)
            if not np.all(np.isfinite(Ainv)) or np.linalg.cond(A) > 1e14:
                raise np.linalg.LinAlgError
            return Ainv
        except np.linalg.LinAlgError:
            return None

    Ainv = curvature(J)
    for _ in range(polish if Ainv is not None else 0):
        # Gauss-Newton step in the natural parameters, kept inside the bounds, accepted if it lowers the loss
        x, unravel_t = ravel_pytree(theta)
        step = -Ainv @ (J.T @ grad_m)
        for _half in range(20):
            cand = unravel_t(jnp.asarray(np.asarray(x) + step, x.dtype))
            if all(_inside(cand[k], *bounds[k]) for k in bounds):
                break
            step = step / 2
        else:
            break
        m2, J2, S2 = final_pass(cand)
        mean2 = _unflat(jnp.asarray(m2), names, shapes, is_complex)
        l2 = float(loss_of_mean(mean2))
        if not l2 < final_loss:
            break
        theta, mean_flat, J, Sigma_sim, mean, final_loss = cand, m2, J2, S2, mean2, l2
        r = mean_flat - d_flat
        if loss is None:
            grad_m = w * r
            Hm = np.diag(w)
        else:
            Hm = np.asarray(jax.hessian(f_flat)(jnp.asarray(mean_flat)))
            grad_m = np.asarray(jax.grad(f_flat)(jnp.asarray(mean_flat)))
        Ainv = curvature(J)
        if Ainv is None:
            break
    sem = _unflat(jnp.sqrt(jnp.asarray(np.diag(Sigma_sim))), names, shapes, is_complex)
    P, p = J.shape
    if Ainv is None:
        warnings.warn("the curvature J^T W J is singular: some parameters are not determined by the data; "
                      "standard errors are set to inf", RuntimeWarning, stacklevel=2)
        Ainv = np.full((p, p), np.inf)
    if loss is None and sig is None:
        s2 = max(float(r @ r) / (P - p) - np.trace(Sigma_sim) / P, 0.0) if P > p else np.nan
        cov = Ainv @ J.T @ (s2 * np.eye(P) + Sigma_sim) @ J @ Ainv
        method = ("Gauss-Newton sandwich: data variance estimated from the residuals, plus the "
                  "Monte-Carlo covariance of the simulated means")
    else:
        cov = Ainv + Ainv @ J.T @ Hm @ Sigma_sim @ Hm @ J @ Ainv
        method = ("Gauss-Newton curvature of the " + ("weighted least squares" if loss is None else "loss (as a negative log-likelihood)")
                  + ", plus the Monte-Carlo covariance of the simulated means")
    _, unravel = ravel_pytree(theta)
    stderr = unravel(jnp.asarray(np.sqrt(np.clip(np.diag(cov), 0, None))))
    gn_step = Ainv @ (J.T @ grad_m)
    se = np.sqrt(np.clip(np.diag(cov), 0, None))
    converged = bool(np.all(np.isfinite(gn_step)) and np.all(np.abs(gn_step) <= 0.2 * se))
    if not converged:
        warnings.warn(
            f"fit not converged: a Gauss-Newton step from the result would still move the parameters by "
            f"{np.array2string(np.abs(gn_step), precision=3)} (standard errors {np.array2string(se, precision=3)}); "
            "try more steps or another learning_rate", RuntimeWarning, stacklevel=2)
    return FitResult(
        params=theta,
        stderr=stderr,
        covariance=jnp.asarray(cov),
        loss=final_loss,
        loss_history=np.asarray(loss_hist),
        params_history={k: np.stack(v) for k, v in p_hist.items()},
        mean=mean,
        sem=sem,
        ts=jnp.asarray(np.asarray(ts, dtype=float), plan.grid.dtype),
        fixed=fixed,
        converged=converged,
        stderr_method=method,
        n_traj=plan.n_traj,
        n_steps=plan.n_steps,
        dt=plan.dt,
        steps=steps,
        wall_time=time.perf_counter() - t_start,
    )


def _inside(v, lo, hi):
    v = np.asarray(v)
    return bool((lo is None or np.all(v > lo)) and (hi is None or np.all(v < hi)))


def _fmt(theta):
    return {k: np.asarray(v).tolist() for k, v in theta.items()}
