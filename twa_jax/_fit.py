"""``fit``: model parameters from data, by least squares (or any loss) on TWA trajectory means.

Every evaluation simulates ``n_traj`` trajectories with the same ``key`` (common random numbers),
so the simulated means are a smooth deterministic function of the parameters and their
derivatives are pathwise (see :mod:`twa_jax._grad`). A fit has four phases, each a function here:

1. optimise: Levenberg-Marquardt (``optimistix``) for the default weighted least squares, with the
   Jacobian by forward mode (one tangent per parameter next to the trajectories); an ``optax``
   optimizer on the pathwise gradient for a custom ``loss`` (or when ``optimizer`` is given);
2. final pass: means, their exact Jacobian and the Monte-Carlo covariance at the fitted point;
3. polish: Gauss-Newton steps from there, kept when they lower the loss (after optax);
4. covariance: standard errors from the Gauss-Newton curvature plus the simulation's own noise.

All of it runs on the run plan and the engine that ``simulate`` uses (same validation, default
parameters, observables, devices and chunk sizes).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import optimistix as optx
from jax.flatten_util import ravel_pytree

from . import _engine
from ._checks import check_int, default_float
from ._grad import check_loss_value, check_zero_rates, mean_struct, value_and_grad_plan, warn_failed
from ._model import Model
from ._observables import default_observables
from ._plan import make_plan


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




# --------------------------------------------------------------------------- coordinates
class _Coordinates(eqx.Module):
    """Internal coordinates ``z`` -> parameters: without bounds ``theta = theta0 + |theta0| z``
    (relative steps; scale 1 where ``theta0 = 0``); with bounds the maps of :func:`_bounded`."""

    p0: dict
    scale: dict
    bounds: tuple = eqx.field(static=True)  # ((name, (lo, hi)), ...)

    def __call__(self, z):
        b = dict(self.bounds)
        return {k: (self.p0[k] + self.scale[k] * z[k]) if k not in b else _bounded(*b[k])[0](z[k]) for k in z}

    def inverse(self):
        b = dict(self.bounds)
        return {k: jnp.zeros_like(v) if k not in b else jnp.asarray(_bounded(*b[k])[1](np.asarray(v)), v.dtype)
                for k, v in self.p0.items()}


class _Residuals(eqx.Module):
    """Weighted residuals ``(mean(theta(z)) - data) / sigma``, flattened, for optimistix: the
    whole run traced (the engine's traced chunk loop), differentiable in forward mode by the rule
    of :func:`_traced_mean`."""

    plan: Any
    coords: _Coordinates
    rest: Any
    data: jax.Array
    weight: jax.Array
    names: tuple = eqx.field(static=True)
    chunk: int = eqx.field(static=True)
    refactor: bool = eqx.field(static=True)

    def __call__(self, z, args):
        # (residuals, aux) as optimistix's solvers take them
        return (_traced_mean(self, z) - self.data) * self.weight, None


@eqx.filter_custom_jvp
def _traced_mean(res, z):
    """The flattened means at ``theta(z)``, every chunk traced."""
    sums, n, _ = _engine.run_traced(res.plan, _engine.Sums(), _engine.add, chunk_size=res.chunk,
                                    params=res.coords(z), extra=res.rest, refactor=res.refactor)
    return _engine.flatten_obs({k: v / jnp.maximum(n, 1) for k, v in sums.items()}, res.names)


@_traced_mean.def_jvp
def _traced_mean_jvp(primals, tangents):
    """The means and their Jacobian from one run with a tangent per parameter next to the
    trajectories (:class:`~twa_jax._engine.SumsJVP`), contracted with ``dtheta``: what
    Levenberg-Marquardt's linearization needs, each tangent paying only for its own parameter's
    paths (a ``jax.jvp`` through the run would carry every parameter's in each)."""
    res, z = primals
    dz = jax.tree_util.tree_map(lambda t, x: jnp.zeros_like(x) if t is None else t, tangents[1], z,
                                is_leaf=lambda t: t is None)
    theta, dtheta = jax.jvp(res.coords, (z,), (dz,))
    sums, dsums, n, _ = _engine.run_traced(res.plan, _engine.SumsJVP(), _engine.add, chunk_size=res.chunk,
                                           params=theta, extra=res.rest, refactor=res.refactor)
    scale = 1 / jnp.maximum(n, 1)
    mean = _engine.flatten_obs({k: v * scale for k, v in sums.items()}, res.names)
    jac = jax.vmap(lambda d: _engine.flatten_obs(d, res.names), out_axes=1)({k: v * scale for k, v in dsums.items()})
    return mean, jac @ ravel_pytree(dtheta)[0].astype(jac.dtype)


@eqx.filter_jit
def _lm_init(solver, fn, z):
    f_struct, aux_struct = jax.eval_shape(fn, z, None)
    return solver.init(fn, z, None, {}, f_struct, aux_struct, frozenset())


@eqx.filter_jit
def _lm_step(solver, fn, z, state):
    z, state, _ = solver.step(fn, z, None, {}, state, frozenset())
    done, result = solver.terminate(fn, z, None, {}, state, frozenset())
    return z, state, done, result


def _progress(total, desc, enabled):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


# --------------------------------------------------------------------------- phase 1: optimise
def _optimise_lm(plan, coords, rest, names, d_flat, w_flat, steps, bar):
    """Levenberg-Marquardt on the weighted residuals, one compiled step at a time (so the
    progress bar moves); returns ``(z, loss history, parameter history)``."""
    p = sum(int(np.size(v)) for v in coords.p0.values())
    fn = _Residuals(plan, coords, rest, d_flat, jnp.sqrt(w_flat), names, plan.chunk(rows=1 + p),
                    callable(plan.model.gamma))
    solver = optx.LevenbergMarquardt(rtol=1e-6, atol=1e-8)
    z = coords.inverse()
    state = _lm_init(solver, fn, z)
    loss_hist, z_hist = [], []
    for _ in range(steps):
        z_hist.append(z)
        z, state, done, result = _lm_step(solver, fn, z, state)
        loss_hist.append(0.5 * float(jnp.sum(state.f_info.residual ** 2)))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_hist[-1]:.5g}")
        if bool(done) or _stalled(loss_hist, solver.rtol, solver.atol):
            break
    return z, loss_hist, z_hist


def _stalled(loss_hist, rtol, atol):
    """The loss moved by less than the solver's tolerance over the last two steps. The simulated
    loss is a deterministic function of the parameters (fixed key), so Levenberg-Marquardt can
    spend several steps shrinking its trust region around a minimum it has already reached (a
    fit of the dipole array: the loss equal to 9 digits over its last 5 of 12 steps); whether
    the result is converged is then checked independently (a Gauss-Newton step below 0.2
    standard errors, :func:`_covariance`)."""
    return len(loss_hist) >= 3 and abs(loss_hist[-3] - loss_hist[-1]) <= atol + rtol * abs(loss_hist[-1])


def _optimise_optax(plan, coords, rest, loss_of_mean, optimizer, steps, bar):
    """An optax optimizer on the pathwise gradient; returns ``(z, loss history, parameter history)``."""
    z = coords.inverse()
    opt_state = optimizer.init(z)
    loss_hist, z_hist, bad = [], [], 0
    for i in range(steps):
        theta, to_vjp = jax.vjp(coords, z)
        val, g_theta, _, _, bad = value_and_grad_plan(loss_of_mean, plan, theta, rest)
        val = float(val)
        if not np.isfinite(val):
            raise FloatingPointError(f"the loss became {val} at step {i} with parameters {_fmt(theta)}; lower learning_rate or dt")
        (g_z,) = to_vjp(g_theta)
        updates, opt_state = optimizer.update(g_z, opt_state, z)
        loss_hist.append(val)
        z_hist.append(z)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{val:.5g}")
        z = optax.apply_updates(z, updates)
    warn_failed(bad, plan.n_traj)
    return z, loss_hist, z_hist


# --------------------------------------------------------------------------- phase 2: final pass
def _final_pass(plan, theta, rest, names):
    """Means (flattened), their Jacobian with respect to the flattened ``theta``, and the
    Monte-Carlo covariance of the means, at ``theta``: one forward-mode pass."""
    p = int(ravel_pytree(theta)[0].shape[0])
    (sums, jac, (n, _, M2)), _ = _engine.run(
        plan, _engine.Jacobian(names), _engine.combine_jacobian, chunk_size=plan.chunk(rows=1 + p),
        params=theta, extra=rest, refactor=callable(plan.model.gamma), adjoint="forward", desc="Jacobian")
    n = float(n)
    Sig = np.asarray(M2) / max(n - 1, 1) / max(n, 1)
    return np.asarray(sums) / max(n, 1), np.asarray(jac) / max(n, 1), Sig


class _Objective:
    """The loss as a function of the flattened means: its gradient and Hessian (the block that
    Gauss-Newton steps and the covariance share)."""

    def __init__(self, loss_of_mean, names, shapes, is_complex, weights):
        self.loss_of_mean, self.names, self.shapes, self.is_complex, self.w = loss_of_mean, names, shapes, is_complex, weights

    def mean(self, flat):
        return _unflat(jnp.asarray(flat), self.names, self.shapes, self.is_complex)

    def value(self, flat):
        return float(self.loss_of_mean(self.mean(flat)))

    def grad_hess(self, flat, d_flat):
        if self.w is not None:  # weighted least squares: exact
            return self.w * (flat - d_flat), np.diag(self.w)
        f = lambda x: self.loss_of_mean(self.mean(x))  # noqa: E731
        x = jnp.asarray(flat)
        return np.asarray(jax.grad(f)(x)), np.asarray(jax.hessian(f)(x))


def _inverse_curvature(J, Hm):
    A = J.T @ Hm @ J
    try:
        Ainv = np.linalg.inv(A)
        if not np.all(np.isfinite(Ainv)) or np.linalg.cond(A) > 1e14:
            raise np.linalg.LinAlgError
        return Ainv
    except np.linalg.LinAlgError:
        return None


# --------------------------------------------------------------------------- phase 3: polish
def _polish(plan, rest, names, obj, d_flat, bounds, theta, point, max_steps, bar):
    """Gauss-Newton steps in the natural parameters, kept inside the bounds, each accepted only
    if it lowers the loss. ``point = (mean_flat, J, Sigma_sim, loss)``."""
    for _ in range(max_steps):
        mean_flat, J, _, loss = point
        g, Hm = obj.grad_hess(mean_flat, d_flat)
        Ainv = _inverse_curvature(J, Hm)
        if Ainv is None:
            break
        x, unravel = ravel_pytree(theta)
        step = -Ainv @ (J.T @ g)
        for _half in range(20):
            cand = unravel(jnp.asarray(np.asarray(x) + step, x.dtype))
            if all(_inside(cand[k], *bounds[k]) for k in bounds):
                break
            step = step / 2
        else:
            break
        m2, J2, S2 = _final_pass(plan, cand, rest, names)
        l2 = obj.value(m2)
        if bar is not None:
            bar.update(1)
        if not l2 < loss:
            break
        theta, point = cand, (m2, J2, S2, l2)
    return theta, point


# --------------------------------------------------------------------------- phase 4: covariance
def _covariance(obj, point, d_flat, custom_loss, sigma_given):
    """Parameter covariance, its method, and whether the fit is converged."""
    mean_flat, J, Sigma_sim, _ = point
    g, Hm = obj.grad_hess(mean_flat, d_flat)
    Ainv = _inverse_curvature(J, Hm)
    P, p = J.shape
    if Ainv is None:
        warnings.warn("the curvature J^T W J is singular: some parameters are not determined by the data; "
                      "standard errors are set to inf", RuntimeWarning, stacklevel=3)
        Ainv = np.full((p, p), np.inf)
    r = mean_flat - d_flat
    if not custom_loss and not sigma_given:
        s2 = max(float(r @ r) / (P - p) - np.trace(Sigma_sim) / P, 0.0) if P > p else np.nan
        cov = Ainv @ J.T @ (s2 * np.eye(P) + Sigma_sim) @ J @ Ainv
        method = ("Gauss-Newton sandwich: data variance estimated from the residuals, plus the "
                  "Monte-Carlo covariance of the simulated means")
    else:
        cov = Ainv + Ainv @ J.T @ Hm @ Sigma_sim @ Hm @ J @ Ainv
        method = ("Gauss-Newton curvature of the " + ("loss (as a negative log-likelihood)" if custom_loss else "weighted least squares")
                  + ", plus the Monte-Carlo covariance of the simulated means")
    se = np.sqrt(np.clip(np.diag(cov), 0, None))
    gn_step = Ainv @ (J.T @ g)
    converged = bool(np.all(np.isfinite(gn_step)) and np.all(np.abs(gn_step) <= 0.2 * se))
    if not converged:
        warnings.warn(
            f"fit not converged: a Gauss-Newton step from the result would still move the parameters by "
            f"{np.array2string(np.abs(gn_step), precision=3)} (standard errors {np.array2string(se, precision=3)}); "
            "try more steps", RuntimeWarning, stacklevel=3)
    return cov, se, method, converged


# --------------------------------------------------------------------------- public: fit
def fit(
    model: Model,
    initial,
    ts,
    data: dict,
    params0: dict,
    *,
    n_traj: int,
    key,
    steps: int = 50,
    fixed: dict | None = None,
    sigma=None,
    loss: Callable | None = None,
    bounds: dict | None = None,
    optimizer=None,
    learning_rate: float | None = None,
    observables: dict | None = None,
    dt: float | None = None,
    solver="rotation_heun",
    method: str = "twa",
    chunk_size: int | None = None,
    devices=None,
    checkpoints: int | None = None,
    polish: int = 2,
    progress: bool | None = None,
    pulses=None,
) -> FitResult:
    r"""Fit model parameters to data on TWA trajectory means.

    Every evaluation simulates ``n_traj`` trajectories with the same ``key`` (common random
    numbers: the loss is a smooth deterministic function of the parameters).

    Default loss: weighted least squares
    :math:`L = \tfrac12 \sum_{k,t} (\bar O_k(t) - d_k(t))^2 / \sigma_k(t)^2` (``sigma = 1`` when not
    given), minimized by Levenberg-Marquardt (``optimistix``) with the exact Jacobian of the
    simulated means (forward mode, one tangent per parameter): it converges in a few passes and
    stops by itself (``steps`` is the most it may take). With a custom ``loss`` or an
    ``optimizer``, ``steps`` optax steps on the pathwise gradient, then ``polish`` Gauss-Newton
    steps. Parameters are optimized in internal coordinates: without bounds
    :math:`\theta = \theta_0 + |\theta_0| z` (relative steps; scale 1 where :math:`\theta_0 = 0`);
    with ``(lo, None)`` :math:`\theta = lo + e^z` (positivity: ``(0, None)``), ``(None, hi)``
    :math:`\theta = hi - e^z`, ``(lo, hi)`` :math:`lo + (hi - lo)\,\mathrm{sigmoid}(z)`.

    Standard errors come from the Gauss-Newton curvature at the fitted point:
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
            Names are from ``observables`` (default: the model's own observables, as in
            ``simulate``); only the observables in ``data`` are simulated.
        params0: ``{name: initial value}`` of the fitted parameters (scalars or arrays).
        n_traj, key: trajectories per evaluation and their key (fixed during the fit).
        steps: the most Levenberg-Marquardt steps, or the number of optax steps.
        fixed: parameters held fixed (the model's defaults apply to the rest).
        sigma: per-point standard deviations of the data: a number, or ``{name: array}``
            broadcastable to each data entry. Weights the default loss.
        loss: ``loss(mean, data) -> real scalar`` replacing the least squares (no ``sigma``).
        bounds: ``{name: (lower, upper)}``, ``None`` for an open side, via the reparametrization.
        optimizer: an ``optax.GradientTransformation`` acting on the internal coordinates (used
            instead of Levenberg-Marquardt); with a custom ``loss`` the default is ``optax.adam``
            with a cosine-decay schedule from ``learning_rate`` (default 0.05) to 1 % of it.
        observables, dt, solver, method, chunk_size, devices, pulses: as in :func:`~twa_jax.simulate`;
            checkpoints: as in :func:`~twa_jax.value_and_grad`.
        polish: at most this many Gauss-Newton steps after an optax optimisation. ``0``: none.
        progress: progress bars over the optimiser's steps and the final passes (``tqdm``);
            default: shown.

    Returns:
        A :class:`FitResult`.

    Raises:
        TypeError, ValueError: on bad input, naming it (shapes of data and sigma, unknown names
            in data, params0 or bounds, initial values outside bounds, ``steps < 1``, ...);
        ValueError: the fit ended where the model is not valid (a negative rate, a Gamma that
            is not positive semidefinite): bound such parameters, e.g. ``(0, None)`` for a rate.
    """
    t_start = time.perf_counter()
    # === arguments
    steps, p0, fixed, bounds = _check_fit_inputs(data, params0, fixed, sigma, bounds, steps, loss, optimizer, learning_rate)
    polish = check_int(polish, "polish", minimum=0)
    observables = _fit_observables(model, observables, data, p0, method)
    plan = make_plan(model, initial, ts, n_traj=n_traj, key=key, params={**fixed, **p0}, observables=observables,
                     dt=dt, solver=solver, method=method, chunk_size=chunk_size, devices=devices,
                     checkpoints=checkpoints, progress=progress, differentiable=True, pulses=pulses)
    names, data_arr, sig = _check_data(data, sigma, plan)
    is_complex = {k: bool(jnp.iscomplexobj(jnp.zeros((), dict(plan.obs_dtypes)[k]))) for k in names}
    rest = ({k: v for k, v in plan.params.items() if k not in p0}, None)
    check_zero_rates(plan, {k: plan.params[k] for k in p0}, rest)
    shapes = {k: tuple(data_arr[k].shape) for k in names}
    d_flat = np.asarray(_engine.flatten_obs(data_arr, names))
    obj = _objective(plan, loss, names, data_arr, d_flat, sig, shapes, is_complex)
    loss_of_mean, w_flat = obj.loss_of_mean, obj.w
    scale = {k: jnp.where(p0[k] != 0, jnp.abs(p0[k]), 1.0) for k in p0}
    coords = _Coordinates(p0, scale, tuple(sorted(bounds.items())))
    show = True if plan.progress is None else plan.progress

    # === phase 1: optimise
    use_lm = loss is None and optimizer is None
    bar = _progress(steps, "fit (Levenberg-Marquardt)" if use_lm else "fit (optax)", show)
    try:
        if use_lm:
            z, loss_hist, z_hist = _optimise_lm(plan, coords, rest, names, jnp.asarray(d_flat), jnp.asarray(w_flat), steps, bar)
        else:
            if optimizer is None:
                lr = 0.05 if learning_rate is None else float(learning_rate)
                optimizer = optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.01))
            z, loss_hist, z_hist = _optimise_optax(plan, coords, rest, loss_of_mean, optimizer, steps, bar)
    finally:
        if bar is not None:
            bar.close()
    theta = coords(z)

    # === phase 2: final pass; phase 3: polish (after optax: Levenberg-Marquardt converged itself)
    mean_flat, J, Sigma_sim = _final_pass(plan, theta, rest, names)
    point = (mean_flat, J, Sigma_sim, obj.value(mean_flat))
    if polish and not use_lm:
        bar = _progress(polish, "fit (polish)", show)
        try:
            theta, point = _polish(plan, rest, names, obj, d_flat, bounds, theta, point, polish, bar)
        finally:
            if bar is not None:
                bar.close()

    _check_domain(plan, theta, rest)

    # === phase 4: covariance
    cov, se, stderr_method, converged = _covariance(obj, point, d_flat, loss is not None, sig is not None)
    _, unravel = ravel_pytree(theta)
    mean = obj.mean(point[0])
    sem = _unflat(jnp.sqrt(jnp.asarray(np.diag(point[2]))), names, shapes, is_complex)
    return FitResult(
        params=theta,
        stderr=unravel(jnp.asarray(se)),
        covariance=jnp.asarray(cov),
        loss=point[3],
        loss_history=np.asarray(loss_hist),
        params_history={k: np.stack([np.asarray(coords(zz)[k]) for zz in z_hist]) for k in p0},
        mean=mean,
        sem=sem,
        ts=plan.ts,
        fixed=fixed,
        converged=converged,
        stderr_method=stderr_method,
        n_traj=plan.n_traj,
        n_steps=plan.n_steps,
        dt=plan.dt,
        steps=len(loss_hist),
        wall_time=time.perf_counter() - t_start,
    )


# --------------------------------------------------------------------------- helpers
def _fit_observables(model, observables, data, p0, method="twa"):
    """The observables the data names, from ``observables`` or the model's own (as ``simulate``
    picks them); unknown names in ``data`` or ``params0`` are named."""
    if not isinstance(model, Model):
        return observables  # make_plan names the problem
    available = observables if observables is not None else (
        model.observables or default_observables(model.n_spins, model.n_bosons, method == "mean_field"))
    if not isinstance(available, dict):
        raise TypeError("observables must be a dict {name: f(spins, bosons)}")
    unknown = sorted(set(data) - set(available))
    if unknown:
        raise ValueError(f"data has entries {unknown} that are not observables; available: {sorted(available)}")
    if model.params is not None:
        unknown = sorted(set(p0) - set(model.params))
        if unknown:
            raise ValueError(f"params0 has unknown parameter(s) {unknown}; this model's parameters are {sorted(model.params)}")
    return {k: available[k] for k in data}


def _objective(plan, loss, names, data_arr, d_flat, sig, shapes, is_complex):
    """The weighted least squares (weights ``1/sigma^2``, both parts of a complex entry) or the
    caller's ``loss(mean, data)``, as an :class:`_Objective`."""
    if loss is None:
        w_flat = np.ones(d_flat.shape[0])
        if sig is not None:
            w_flat = 1.0 / np.asarray(_engine.flatten_obs({k: sig[k] * (1 + 1j if is_complex[k] else 1) for k in names}, names)) ** 2

        def loss_of_mean(mean):
            return 0.5 * jnp.sum(w_flat * (_engine.flatten_obs(mean, names) - d_flat) ** 2)

        return _Objective(loss_of_mean, names, shapes, is_complex, w_flat)

    def loss_of_mean(mean):
        return loss(mean, data_arr)

    check_loss_value(jax.eval_shape(loss_of_mean, mean_struct(plan, names)))
    return _Objective(loss_of_mean, names, shapes, is_complex, None)



def _bounded(lo, hi):
    """``(to, inverse)``: unconstrained ``z`` -> value in ``(lo, hi)`` and back."""
    if lo is None and hi is None:
        return None
    if hi is None:
        return (lambda z: lo + jnp.exp(z)), (lambda x: np.log(x - lo))
    if lo is None:
        return (lambda z: hi - jnp.exp(z)), (lambda x: np.log(hi - x))
    return (lambda z: lo + (hi - lo) * jax.nn.sigmoid(z)), (lambda x: np.log((x - lo) / (hi - x)))



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



def _check_fit_inputs(data, params0, fixed, sigma, bounds, steps, loss, optimizer, learning_rate):
    steps = check_int(steps, "steps")
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
    dtype = default_float()
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
        want = (n_times,) + tuple(plan.shapes[k])
        a = np.asarray(data[k])
        if a.shape != want:
            raise ValueError(f"data[{k!r}] has shape {a.shape}; the observable at {n_times} times has shape {want}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"data[{k!r}] contains NaN or infinite values")
        out[k] = jnp.asarray(a)
        if sigma is None:
            continue
        if isinstance(sigma, dict) and k not in sigma:
            raise ValueError(f"sigma has no entry for data[{k!r}]: a dict sigma needs one for every observable in "
                             f"data {list(data)} (or give one number for all)")
        s = sigma[k] if isinstance(sigma, dict) else sigma
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



def _inside(v, lo, hi):
    v = np.asarray(v)
    return bool((lo is None or np.all(v > lo)) and (hi is None or np.all(v < hi)))


def _check_domain(plan, theta, rest):
    """Refuse a fit that ended where the model is not a Lindblad model (a negative rate, a Gamma
    that is not positive semidefinite, a NaN): inside the traced fit the noise of such a point
    has its rates clipped at zero while the drift keeps them, so the optimizer may prefer it (an
    anti-damped, noise-free model) and would report it, converged, with error bars."""
    try:
        plan.values_at(_engine.combine_params(theta, rest))
    except ValueError as e:
        raise ValueError(
            f"the fit ended at {_fmt(theta)}, where the model is not valid: {e}. The optimizer left the physical "
            "domain (inside the fit the noise of a negative rate is clipped at zero, the drift is not), so this "
            "point is not a fit of the model; bound the parameters, e.g. bounds={name: (0, None)} for a rate"
        ) from e


def _fmt(theta):
    return {k: np.asarray(v).tolist() for k, v in theta.items()}
