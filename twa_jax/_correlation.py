"""Two-time correlations ``<A(t + tau) B(t)>`` from TWA trajectories.

For operators ``A``, ``B`` with Weyl symbols ``A_W``, ``B_W``,

    <A(t+tau) B(t)> = 1/2 <{A(t+tau), B(t)}> + 1/2 <[A(t+tau), B(t)]>,

(two-time averages in the quantum-regression sense: ``<A(t+tau) B(t)> = Tr[A V_tau(B rho_t)]``).

* The symmetrized part is the trajectory average of ``A_W(t+tau) B_W(t)``.
* The commutator is a linear response: kick every trajectory at ``t`` by the unitary
  ``exp(-i eps B)`` (a :class:`~twa_jax.Pulse` whose generator is ``B_W``), keep its initial point
  and noise, and differentiate: ``d/d eps <A(t+tau)> = -i <[A(t+tau), B(t)]>`` at ``eps = 0``, so
  ``1/2 <[A, B]> = (i/2) d<A>/d eps``. The derivative is forward-mode (``jax.linearize``), per
  trajectory, one tangent per kick. A complex ``B_W = B_1 + i B_2`` (a non-Hermitian ``B``) takes
  two real kicks, by linearity.

Both parts are averages of per-trajectory quantities, so the standard error comes from the spread
between trajectories like every other mean of the package. ``docs/conventions.md``,
"Two-time correlations", states the conventions.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from . import _engine, _grad
from ._checks import default_float
from ._observables import chunk_moments, finalize, merge_moments
from ._plan import check_model, make_plan, merge_times
from ._protocol import Pulse
from ._solve import _target_sem_sizes, warn_if_target_missed

_EPS = "__kick_{}_{}"


@dataclasses.dataclass(frozen=True)
class Correlation:
    """``<A(t + tau) B(t)>`` on a grid of start times and lags, with standard errors.

    Attributes:
        ts: ``(n_t,)`` start times; taus: ``(n_tau,)`` lags.
        value, sem: ``(n_t, n_tau)`` complex ``<A(t+tau) B(t)>`` and its standard error.
        symmetrized, symmetrized_sem: ``1/2 <{A(t+tau), B(t)}>`` (the trajectory average of
            ``A_W(t+tau) B_W(t)``).
        commutator, commutator_sem: ``1/2 <[A(t+tau), B(t)]>`` (the linear response to a kick).
        n_traj: trajectories used; n_failed: trajectories left out (non-finite).
        jacobian: with ``correlation(..., jacobian=True)``, the pathwise derivative of ``value``
            with respect to every floating leaf of the given ``params``: a tree like ``params``
            whose leaves have the leaf's shape followed by ``(n_t, n_tau)`` (complex); else ``None``.
    """

    ts: np.ndarray
    taus: np.ndarray
    value: np.ndarray
    sem: np.ndarray
    symmetrized: np.ndarray
    symmetrized_sem: np.ndarray
    commutator: np.ndarray
    commutator_sem: np.ndarray
    n_traj: int
    n_failed: int = 0
    jacobian: dict | None = None

    def __repr__(self):
        return (f"Correlation(<A(t+tau) B(t)> at {len(self.ts)} start times x {len(self.taus)} lags, "
                f"{self.n_traj} trajectories, largest sem {float(np.max(self.sem, initial=0.0)):.3g})")

    def to_xarray(self):
        """An ``xarray.Dataset`` with dims ``("t", "tau")``: ``value``, ``symmetrized``,
        ``commutator`` (complex) and their ``*_sem``; ``n_traj`` and ``n_failed`` as attributes."""
        import xarray as xr

        dims = ("t", "tau")
        data = {"value": self.value, "value_sem": self.sem, "symmetrized": self.symmetrized,
                "symmetrized_sem": self.symmetrized_sem, "commutator": self.commutator,
                "commutator_sem": self.commutator_sem}
        return xr.Dataset({k: (dims, np.asarray(v)) for k, v in data.items()},
                          coords={"t": np.asarray(self.ts, float), "tau": np.asarray(self.taus, float)},
                          attrs={"n_traj": int(self.n_traj), "n_failed": int(self.n_failed),
                                 "definition": "<A(t + tau) B(t)> (QuTiP correlation_2op_2t convention)"})

    def plot(self, t_index=0, ax=None, label=None):
        """Real and imaginary parts against ``tau`` at the start time ``ts[t_index]``, with bands of
        one standard error; returns the axes."""
        import matplotlib.pyplot as plt

        ax = plt.gca() if ax is None else ax
        v, e = np.asarray(self.value)[t_index], np.asarray(self.sem)[t_index]
        name = "" if label is None else f"{label}: "
        for part, f in (("Re", np.real), ("Im", np.imag)):
            line, = ax.plot(self.taus, f(v), label=f"{name}{part}")
            ax.fill_between(self.taus, f(v) - e, f(v) + e, color=line.get_color(), alpha=0.25, lw=0)
        ax.set_xlabel(r"$\tau$")
        ax.set_ylabel(rf"$\langle A(t+\tau) B(t)\rangle$, $t = {float(self.ts[t_index]):g}$")
        ax.legend()
        return ax


class CorrelationMoments(eqx.Module):
    """The reduction: per-trajectory ``A(t_i + tau_j) B(t_i)`` and ``(i/2) dA(t_i + tau_j)/d eps``
    (tangents of the kicks), reduced to moments inside the compiled chunk; with ``jacobian``, also
    the sums of their derivatives with respect to the differentiated parameters (forward mode over
    the kicks' forward mode: one more tangent per parameter)."""

    eps_names: tuple = eqx.field(static=True)  # (n_gen * n_t,) kick parameters, generator-major
    i_t: tuple = eqx.field(static=True)  # save index of each start time
    i_tt: tuple = eqx.field(static=True)  # (n_t, n_tau) save indices of t_i + tau_j
    n_gen: int = eqx.field(static=True)  # 1 (Hermitian B) or 2 (real and imaginary parts)
    spectrum: bool = eqx.field(static=True, default=False)  # also 2 Re(F C) averaged over start times
    jacobian: bool = eqx.field(static=True, default=False)  # params = differentiated part, extra = (rest, F)

    def _per_trajectory(self, batch_of, params):
        """``(c, (A, b, B_t, sym, com, ok))``: the per-trajectory estimate ``c = sym + com`` of
        ``<A(t_i + tau_j) B(t_i)>``, ``(n, n_t, n_tau)``."""
        n_t = len(self.i_t)
        eps0 = jnp.zeros(len(self.eps_names), jnp.result_type(float))

        def f(e):
            b = batch_of({**params, **{n: e[k] for k, n in enumerate(self.eps_names)}})
            return b.ys["A"], b

        # one tangent per kick, the primal computed once beside them (a vmap of jvp: nothing is
        # stored for a later linear pass, unlike jax.linearize)
        def tangent(v):
            (A, b), (dA, _) = jax.jvp(f, (eps0,), (v,))
            return A, b, dA

        A, b, dA = jax.vmap(tangent, out_axes=(None, None, 0))(jnp.eye(len(self.eps_names), dtype=eps0.dtype))
        itt = np.asarray(self.i_tt)
        B_t = b.ys["B"][:, np.asarray(self.i_t)]  # (n, n_t)
        sym = A[:, itt] * B_t[:, :, None]  # (n, n_t, n_tau)
        resp = [jnp.stack([dA[g * n_t + i][:, itt[i]] for i in range(n_t)], axis=1) for g in range(self.n_gen)]
        com = 0.5j * resp[0] if self.n_gen == 1 else 0.5 * (1j * resp[0] - resp[1])
        ok = b.weight & jnp.all(jnp.isfinite(jnp.moveaxis(dA, 0, 1).reshape(A.shape[0], -1)), axis=1)
        return sym + com, (A, b, B_t, sym, com, ok)

    def __call__(self, batch_of, params, extra):
        if self.jacobian:  # derivatives of the per-trajectory estimates, one tangent per parameter
            rest, extra = extra
            x0, unravel = ravel_pytree(params)

            def c_of(x):
                return self._per_trajectory(batch_of, _engine.combine_params(unravel(x), rest))

            def tangent(v):
                (c, aux), (dc, _) = jax.jvp(c_of, (x0,), (v,))
                return c, aux, dc

            c, (A, b, B_t, sym, com, ok), dc = jax.vmap(tangent, out_axes=(None, None, 0))(
                jnp.eye(x0.shape[0], dtype=x0.dtype))
            ok = ok & jnp.all(jnp.isfinite(jnp.moveaxis(dc, 0, 1).reshape(c.shape[0], -1)), axis=1)
        else:
            c, (A, b, B_t, sym, com, ok) = self._per_trajectory(batch_of, params)
        itt = np.asarray(self.i_tt)
        out = {"value": chunk_moments(c, ok), "sym": chunk_moments(sym.astype(com.dtype), ok),
               "com": chunk_moments(com, ok), "n_bad": jnp.sum(b.valid & ~ok)}
        if self.jacobian:
            out["jac"] = jnp.sum(jnp.where(ok[None, :, None, None], dc, 0), axis=1)  # (n_diff, n_t, n_tau)
        if self.spectrum:  # per trajectory: the start times' average, Fourier-transformed (extra = F),
            # with the trajectory's A (over all lags) and B, whose means' product is subtracted
            c_avg = jnp.mean(c, axis=1)  # (n, n_tau)
            X = 2 * jnp.real(c_avg @ extra.T)  # (n, n_omega)
            a_i, b_i = jnp.mean(A[:, itt], axis=(1, 2)), jnp.mean(B_t, axis=1)
            Z = jnp.concatenate([X, jnp.stack([jnp.real(a_i), jnp.imag(a_i), jnp.real(b_i), jnp.imag(b_i)], 1)], 1)
            n = jnp.sum(ok).astype(Z.dtype)
            mean = jnp.sum(jnp.where(ok[:, None], Z, 0), axis=0) / jnp.maximum(n, 1)
            dev = jnp.where(ok[:, None], Z - mean, 0)
            out["spectrum"] = (n, mean, dev.T @ dev)
        return out


class _KickPart(eqx.Module):
    """The real (or imaginary) part of ``B_W``, a kick's generator ``G(spins, bosons, params)``.
    A module, not a lambda: two calls with the same ``b`` give equal pulses, so a repeated
    correlation (a fit's iterations, a scan over parameters) reuses the compiled program."""

    f: Callable = eqx.field(static=True)
    imag: bool = eqx.field(static=True)

    @property
    def label(self):  # how messages name this pulse (_protocol.pulse_label)
        return "b (the kick of the correlation's B)"

    def __call__(self, s, a, p):
        v = self.f(s, a)
        return jnp.imag(v) if self.imag else jnp.real(v)


def _combine(a, b):
    merge = {"n_bad": jnp.add, "jac": jnp.add, "spectrum": _engine.merge_flat_moments}
    return {k: merge.get(k, merge_moments)(a[k], b[k]) for k in a}


def _run(model, initial, ts, taus, a, b, *, n_traj, key, params, t0, dt, solver, chunk_size, devices, progress,
         weights=None, target_sem=None, jacobian=False):
    """The kicked run behind :func:`correlation` and :func:`spectrum`: ``(moments, n_used, n_bad, ts,
    taus, unravel)``, ``unravel`` mapping a flat Jacobian row back to the differentiated parameters."""
    model = check_model(model)
    if jacobian and not params:
        raise ValueError("jacobian=True needs params: the parameters to differentiate with respect to")
    ts = _times(ts, "ts", start_time(t0))
    taus = _times(taus, "taus", 0.0)
    fa, fb = _as_function(a, model, "a"), _as_function(b, model, "b")
    if params is not None and not isinstance(params, dict):
        raise TypeError(f"params must be a dict, got {type(params).__name__}")
    save = merge_times(np.concatenate([[float(t0)], ts, (ts[:, None] + taus[None, :]).ravel()]))
    at = lambda t: int(np.argmin(np.abs(save - t)))  # noqa: E731
    i_t = tuple(at(t) for t in ts)
    i_tt = tuple(tuple(at(t + tau) for tau in taus) for t in ts)
    dtype = default_float()
    s0 = jax.ShapeDtypeStruct((model.n_spins, 3), dtype)
    a0 = jax.ShapeDtypeStruct((model.n_bosons,), jnp.result_type(dtype, jnp.complex64))
    outs = []
    for name, f in (("a", fa), ("b", fb)):
        try:
            outs.append(jax.eval_shape(f, s0, a0))
        except Exception as e:
            raise TypeError(f"{name} failed on spins[{model.n_spins}, 3], bosons[{model.n_bosons}]: {e}") from e
        if getattr(outs[-1], "shape", None) != ():
            raise ValueError(f"{name} must return a scalar (one operator), got shape {getattr(outs[-1], 'shape', None)}")
    gens = [_KickPart(fb, False)]
    if jnp.issubdtype(outs[1].dtype, jnp.complexfloating):
        gens.append(_KickPart(fb, True))
    names = tuple(_EPS.format(g, i) for g in range(len(gens)) for i in range(len(ts)))
    eps = {n: 0.0 for n in names}
    if model.params is not None:  # the kicks' strengths become (zero) parameters of the model
        model = eqx.tree_at(lambda m: m.params, model, {**model.params, **eps})
        full = params
    else:
        full = {**(params or {}), **eps}
    pulses = [Pulse(float(t), gens[g], _EPS.format(g, i), steps=1) for g in range(len(gens)) for i, t in enumerate(ts)]
    plan = make_plan(model, initial, save, n_traj=n_traj, key=key, params=full, observables={"A": fa, "B": fb},
                     dt=dt, solver=solver, chunk_size=chunk_size, devices=devices, progress=progress, pulses=pulses,
                     target_sem=target_sem)
    if jacobian:
        _grad.warn_integer_params(params)
        diff, rest = _grad._split(plan.params, params)
        if not jax.tree_util.tree_leaves(diff):
            raise ValueError("jacobian=True: params has no floating-point value to differentiate with respect to")
        _grad.check_zero_rates(plan, diff, rest)
        run_params, extra, n_diff = diff, (rest, weights), ravel_pytree(diff)[0].shape[0]
        unravel = ravel_pytree(diff)[1]
    else:
        run_params, extra, n_diff, unravel = None, weights, 0, None
    red = CorrelationMoments(names, i_t, i_tt, len(gens), weights is not None, jacobian)
    chunk = plan.chunk(rows=(1 + len(names)) * (1 + n_diff))
    sizes = None
    largest = lambda acc: float(np.max(np.asarray(finalize(acc["value"])[1])))  # noqa: E731
    if plan.target_sem is not None:  # as simulate's: a pilot, then chunks sized from its spread
        sizes = _target_sem_sizes(plan, chunk, largest)
    acc, used = _engine.run(plan, red, _combine, chunk_size=chunk, params=run_params, extra=extra,
                            refactor=jacobian and callable(plan.model.gamma), adjoint="forward",
                            desc="trajectories", next_size=sizes)
    n_bad = int(acc["n_bad"])
    _grad.warn_failed(n_bad, used)
    if plan.target_sem is not None:
        warn_if_target_missed(plan.target_sem, largest(acc), used, "correlation")
    _warn_if_response_grows(acc, taus)
    return acc, used - n_bad, n_bad, ts, taus, unravel


#: the commutator part's standard error, in units of the symmetrized part's largest, beyond which
#: the kicked trajectories are taken to separate exponentially (a warning, not an error)
RESPONSE_GROWTH = 10.0


def _warn_if_response_grows(acc, taus):
    """Warn when the commutator part's standard error outgrows the symmetrized part's: in chaotic
    classical dynamics each kicked trajectory separates exponentially from its unkicked twin, so
    the variance of the linear response grows like ``exp(2 lambda tau)`` (measured: a chain of 8
    dipoles at spacing lambda/10, sem from 0.08 at tau = 0 to 1e4 at tau = 10 / Gamma_0)."""
    sym_sem = np.asarray(finalize(acc["sym"])[1])
    com_sem = np.asarray(finalize(acc["com"])[1])
    scale = float(np.nanmax(sym_sem, initial=0.0))
    with np.errstate(invalid="ignore"):
        bad = com_sem > RESPONSE_GROWTH * scale
    if scale > 0 and np.any(bad):
        first = int(np.argmax(np.any(bad, axis=0)))
        warnings.warn(
            f"the standard error of the correlation's commutator part grows to {np.nanmax(com_sem):.3g}, more than "
            f"{RESPONSE_GROWTH:g} x the symmetrized part's largest ({scale:.3g}), from lag tau = {taus[first]:g}: the "
            "kicked trajectories separate exponentially from the unkicked ones (chaotic classical dynamics), so the "
            "linear response's variance grows like exp(2 lambda tau). The estimate stays unbiased and its sem is "
            "honest, but beyond that lag it is mostly noise: shorten the lags, or add trajectories.",
            RuntimeWarning, stacklevel=3)


def _unravel_jacobian(jac, unravel, shape):
    """``(n_diff, n_t, n_tau)`` complex -> the parameters' tree, each leaf's shape followed by
    ``shape``."""
    flat = np.asarray(jac).reshape(jac.shape[0], -1)

    def part(x):
        tree = jax.vmap(unravel, in_axes=1, out_axes=-1)(jnp.asarray(x))
        return jax.tree_util.tree_map(lambda v: np.asarray(v).reshape(v.shape[:-1] + shape), tree)

    return jax.tree_util.tree_map(lambda r, i: r + 1j * i, part(flat.real), part(flat.imag))


def _as_function(f, model, what):
    if isinstance(f, str):
        obs = model.observables or {}
        if f not in obs:
            raise ValueError(f"{what}={f!r} is not one of the model's observables {sorted(obs)}; pass a function f(spins, bosons)")
        return obs[f]
    if not callable(f):
        raise TypeError(f"{what} must be a function f(spins, bosons) or the name of a model observable, got {f!r}")
    return f


def start_time(t0) -> float:
    """``t0``, the initial state's time, as a float; a ValueError unless a finite real number."""
    if isinstance(t0, (str, bytes, bool)) or np.ndim(t0) != 0 or np.iscomplexobj(t0) \
            or not np.issubdtype(np.asarray(t0).dtype, np.number) or not np.isfinite(t0):
        raise ValueError(f"t0 (the initial state's time) must be a finite real number, got {t0!r}")
    return float(t0)


def _times(x, name, lower):
    x = np.asarray(x, float)
    if x.ndim == 0:
        x = x[None]
    if x.ndim != 1 or x.size == 0 or not np.all(np.isfinite(x)) or np.any(np.diff(x) <= 0):
        raise ValueError(f"{name} must be a 1-D strictly increasing array of finite times")
    if x[0] < lower:
        raise ValueError(f"{name} must be >= {lower:g}, got {x[0]:g}")
    return x


def correlation(model, initial, ts, taus, a, b, *, n_traj, key, params=None, t0=0.0, dt=None,
                solver="rotation_heun", chunk_size=None, devices=None, progress=None, target_sem=None,
                jacobian=False) -> Correlation:
    r"""Two-time correlation :math:`\langle A(t+\tau) B(t)\rangle` (QuTiP's ``correlation_2op_2t``
    convention) from TWA trajectories, with its standard error and its two parts.

    Args:
        model: the :class:`~twa_jax.Model` (constant or time-dependent).
        initial: the initial state, at time ``t0``.
        ts: start times ``t`` (increasing, ``>= t0``); a single time after the transient for a
            steady-state correlation.
        taus: lags ``tau`` (increasing, ``>= 0``).
        a, b: observable functions ``f(spins, bosons) -> scalar`` (real or complex), the Weyl
            symbols of ``A`` and ``B`` (:mod:`twa_jax.weyl`: ``sigma_plus``, ``sigma_minus``,
            boson amplitudes), or names of the model's observables.
        n_traj, key, params, dt, solver, chunk_size, devices, progress: as in
            :func:`~twa_jax.simulate`.
        target_sem: as in :func:`~twa_jax.simulate`, for the largest standard error of the
            correlation (over start times and lags; ``n_traj`` is the most it may use).
        t0: the time of the initial state (default 0).
        jacobian: also the derivative of the correlation with respect to every floating leaf of
            ``params`` (``Correlation.jacobian``): the pathwise derivative with the key held fixed,
            as :func:`~twa_jax.value_and_grad` takes it (it equals the central finite difference
            of two runs with the same key). It feeds a least-squares fit of a linewidth, a rate or
            a frequency to a measured correlation (README, "Correlations and spectra").

    Returns:
        A :class:`Correlation`: ``value``, ``sem`` of shape ``(len(ts), len(taus))``, the
        symmetrized and commutator parts with their standard errors, and ``jacobian``.

    The commutator part costs one forward-mode tangent per start time (two for a complex ``B``),
    each about half to two thirds of a plain run of the same trajectories (measured: 2.3x a plain
    run for one start time with a complex ``B``, 5.0x for four); ``jacobian`` multiplies that by
    about 13 per parameter (second-order tangents; ``benchmarks/README.md``).
    """
    acc, used, n_bad, ts, taus, unravel = _run(
        model, initial, ts, taus, a, b, n_traj=n_traj, key=key, params=params, t0=t0, dt=dt, solver=solver,
        chunk_size=chunk_size, devices=devices, progress=progress, target_sem=target_sem, jacobian=jacobian)
    out = {k: [np.asarray(x) for x in finalize(acc[k])] for k in ("value", "sym", "com")}
    jac = None
    if jacobian:
        jac = _unravel_jacobian(np.asarray(acc["jac"]) / max(used, 1), unravel, (len(ts), len(taus)))
    return Correlation(ts, taus, out["value"][0], out["value"][1], out["sym"][0], out["sym"][1],
                       out["com"][0], out["com"][1], used, n_bad, jac)


def _frequencies(omegas):
    """``omegas`` as a 1-D array of finite real angular frequencies (a number: one)."""
    if isinstance(omegas, (str, bytes)):
        raise TypeError(f"omegas must be angular frequencies (a 1-D array of numbers), got {omegas!r}")
    w = np.atleast_1d(np.asarray(omegas))
    if np.iscomplexobj(w) or not (np.issubdtype(w.dtype, np.number) or w.dtype == bool) or w.ndim != 1 or not w.size:
        raise ValueError(f"omegas must be a non-empty 1-D array of real angular frequencies, got {w.dtype} "
                         f"of shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"omegas must be finite, got {w[~np.isfinite(w)][:3]}")
    return w.astype(float)


def fourier_weights(taus, omegas=None, window=None):
    """``(taus, omegas, F)``: the checked uniform lag grid, the frequencies (default: the
    resolution the lag window allows) and the ``(n_omega, n_tau)`` matrix with
    ``S(omega) = 2 Re sum_j F[omega, j] (C(tau_j) - <A><B>)``: trapezoid weights times the window,
    times ``exp(-i omega tau_j)``. The one transform of :func:`spectrum` and of
    ``tw.exact.spectrum(..., taus=)``."""
    taus_np = _times(taus, "taus", 0.0)
    d = np.diff(taus_np)
    if taus_np[0] != 0 or len(taus_np) < 3 or not np.allclose(d, d[0], rtol=1e-9, atol=0):
        raise ValueError("spectrum needs a uniform lag grid taus starting at 0 (at least 3 lags)")
    if omegas is None:
        k = np.arange(-(len(taus_np) - 1), len(taus_np))
        omegas = 2 * np.pi * k / (2 * taus_np[-1])
    omegas = _frequencies(omegas)
    w = np.full(len(taus_np), d[0])
    w[[0, -1]] *= 0.5
    if window is not None:
        if isinstance(window, str):
            if window != "hann":
                raise ValueError(f"window must be None, 'hann' or an array of weights, got {window!r}")
            w = w * np.cos(np.pi * taus_np / (2 * taus_np[-1])) ** 2
        else:
            win = np.asarray(window, float)
            if win.shape != taus_np.shape or not np.all(np.isfinite(win)):
                raise ValueError(f"window must have one finite weight per lag ({len(taus_np)}), got shape {win.shape}")
            w = w * win
    return taus_np, omegas, w[None, :] * np.exp(-1j * omegas[:, None] * taus_np[None, :])


def not_adjoint(other):
    """The error of a spectrum whose ``b`` is not ``a``'s adjoint (TWA and exact sides alike)."""
    return ValueError("spectrum needs b = a's adjoint (b's symbol the complex conjugate of a's), "
                      f"e.g. a = a^dag, b = a; use {other} for other pairs")


def spectrum(model, initial, ts, taus, a, b, *, n_traj, key, omegas=None, window=None, coherent=False, params=None,
             t0=0.0, dt=None, solver="rotation_heun", chunk_size=None, devices=None, progress=None):
    r"""Steady-state spectrum :math:`S(\omega) = \int d\tau\, e^{-i\omega\tau}(\langle A(\tau) B(0)\rangle - \langle A\rangle\langle B\rangle)`
    (QuTiP's ``spectrum`` convention: the spectrum of the fluctuations, without the coherent
    delta peak at ``omega = 0``) from TWA trajectories, with its standard error.

    ``B`` must be ``A``'s adjoint (``b`` the complex conjugate symbol of ``a``, e.g. ``a^dag`` and
    ``a`` for the emission spectrum of a mode, ``sigma^+`` and ``sigma^-`` for fluorescence), so
    that ``<A(-tau) B(0)> = conj(<A(tau) B(0)>)`` and ``S(omega) = 2 Re int_0^inf e^{-i omega tau}
    C(tau) dtau`` is real; it is the transform over both signs of ``tau`` (a two-sided spectrum,
    angular frequency, in the model's units; with ``A = a^dag``, ``B = a`` a mode at frequency
    ``omega_0`` peaks at ``+omega_0``). The integral is the trapezoidal rule on the uniform lag
    grid ``taus`` (from 0; ``C`` should have decayed by ``taus[-1]``), per trajectory, averaged over
    the start times ``ts`` (all in the steady state), so the standard error comes from the spread
    between trajectories.

    Args:
        model, initial, ts, taus, a, b: as in :func:`correlation`; ``taus`` uniform, from 0.
        n_traj, key, params, t0, dt, solver, chunk_size, devices, progress: as in :func:`correlation`.
        omegas: angular frequencies (default: ``2 pi k / (2 taus[-1])`` for ``|k| <= len(taus) - 1``,
            the resolution the lag window allows).
        window: ``None`` (rectangular), ``"hann"`` (``cos^2(pi tau / (2 taus[-1]))``: no ringing
            from a correlation cut before it has decayed, at the price of a broader line), or an
            array of ``len(taus)`` weights multiplying ``C(tau)``.
        coherent: ``True`` keeps the coherent part ``<A><B>`` in the transform (then ``S`` holds
            the window's transform of a constant, a peak at 0 of width ``~1 / taus[-1]``, instead
            of a delta function); default ``False``, the fluctuation spectrum. ``<A>`` is the mean
            of ``A`` over the lags' times ``t + tau`` and ``<B>`` its mean at the start times (the
            steady state's means, when ``ts`` are in it; ``tw.exact.spectrum(..., taus=)``
            subtracts the same).

    Returns:
        ``(omegas, S, sem)``, real arrays.
    """
    fa, fb = _as_function(a, check_model(model), "a"), _as_function(b, model, "b")
    rng = np.random.default_rng(0)
    s_pts = rng.normal(size=(3, model.n_spins, 3))
    a_pts = rng.normal(size=(3, model.n_bosons)) + 1j * rng.normal(size=(3, model.n_bosons))
    for s_, a_ in zip(s_pts, a_pts):
        va, vb = complex(fa(jnp.asarray(s_), jnp.asarray(a_))), complex(fb(jnp.asarray(s_), jnp.asarray(a_)))
        if np.isfinite(va) and np.isfinite(vb) and not np.isclose(va, np.conj(vb), rtol=1e-5,
                                                                  atol=1e-6 * max(1.0, abs(va))):
            raise not_adjoint("tw.correlation")
    taus_np, omegas, F = fourier_weights(taus, omegas, window)
    F = jnp.asarray(F)
    acc, *_ = _run(model, initial, ts, taus_np, fa, fb, n_traj=n_traj, key=key, params=params, t0=t0, dt=dt,
                   solver=solver, chunk_size=chunk_size, devices=devices, progress=progress, weights=F)
    n, mean, M2 = (np.asarray(x, float) for x in acc["spectrum"])
    # S = X - 2 Re(g a b) with g = sum_j F_j (the transform of a constant): the mean part of C,
    # a delta peak at omega = 0 for the fluctuation spectrum, is subtracted as QuTiP does; the
    # standard error by the delta method from the trajectories' covariance of (X, a, b)
    g = np.asarray(F).sum(axis=1)
    a_, b_ = mean[-4] + 1j * mean[-3], mean[-2] + 1j * mean[-1]
    keep = 0.0 if coherent else 1.0
    S = mean[:-4] - keep * 2 * np.real(g * a_ * b_)
    J = np.zeros((len(omegas), len(mean)))
    J[:, : len(omegas)] = np.eye(len(omegas))
    for col, d in ((-4, b_), (-3, 1j * b_), (-2, a_), (-1, 1j * a_)):  # d(a b) / d(component)
        J[:, col] = -keep * 2 * np.real(g * d)
    cov = M2 / max(n - 1, 1) / max(n, 1)
    sem = np.sqrt(np.maximum(np.einsum("wi,ij,wj->w", J, cov, J), 0))
    return omegas, S, sem
