"""Exact two-time correlations and spectra of a model's quantum twin (QuTiP), for checking
:func:`twa_jax.correlation` and :func:`twa_jax.spectrum` at small sizes."""

from __future__ import annotations

import numpy as np
import qutip as qt

from ._correlation import _as_function, _frequencies, _times, fourier_weights, not_adjoint, start_time

#: the largest Hilbert-space dimension whose spectrum is computed (QuTiP's eigen-decomposition of
#: the dense Liouvillian, dimension^2 x dimension^2)
MAX_SPECTRUM_DIM = 64
#: how far (relative to the larger operator norm) B may be from A's adjoint for :func:`spectrum`
ADJOINT_RTOL = 1e-8


def _twin_ops(model, params, a, b, cutoff, adjoint=False):
    """``(twin, A, B)``: the quantized ``a`` and ``b``, each one operator (a scalar symbol); with
    ``adjoint``, ``B`` must be ``A``'s adjoint (:func:`spectrum`'s condition)."""
    from .exact import _check_twin_dim, _checked_params, twin  # exact imports this module at its end: a real circle

    if model.time_dependent:
        raise ValueError("exact correlations are for constant models (the twin of a time-dependent model is not supported here)")
    _check_twin_dim(model, cutoff, "full")  # a master equation in the full space
    p = _checked_params(model, params)
    fa, fb = _as_function(a, model, "a"), _as_function(b, model, "b")
    qm = twin(model, p, cutoff=cutoff, observables={"A": fa, "B": fb})
    A, B = qm.observables["A"], qm.observables["B"]
    for name, op in (("a", A), ("b", B)):  # the message of tw.correlation's check
        if not isinstance(op, qt.Qobj):
            raise ValueError(f"{name} must return a scalar (one operator), got shape {np.shape(op)}")
    if adjoint:
        scale = max(A.norm("max"), B.norm("max"), 1e-300)
        if (B - A.dag()).norm("max") > ADJOINT_RTOL * scale:
            raise not_adjoint("tw.exact.correlation")
    return qm, A, B


def _check_cutoff(qm, rho0, times, cutoff, opts=None):
    """The truncation check of :func:`twa_jax.exact.solve` for correlations: the population of
    each mode's top Fock level over every time the correlation reaches (``rho0`` evolved to the
    last start time plus the longest lag; ``times`` ``None``: ``rho0`` is the steady state)."""
    if not qm.boson_top:
        return
    with np.errstate(all="ignore"):
        if times is None:
            top = max(float(np.real(qt.expect(P, rho0))) for P in qm.boson_top)
        else:
            e = qt.mesolve(qm.H, rho0, times, list(qm.c_ops), e_ops=list(qm.boson_top), options=opts).expect
            top = max(float(np.max(np.real(x))) for x in e)
    if top > 1e-6:
        raise RuntimeError(f"the top Fock level (cutoff={cutoff}) reaches population {top:.2g}; raise cutoff")


def correlation(model, initial, ts, taus, a, b, *, params=None, t0=0.0, cutoff=20):
    """``<A(t + tau) B(t)>`` of the exact twin, ``(len(ts), len(taus))`` complex (QuTiP's
    ``correlation_2op_2t``; the same arguments as :func:`twa_jax.correlation`). As in
    :func:`twa_jax.exact.solve`, a top Fock level populated above 1e-6 by the last start time plus
    the longest lag raises a ``RuntimeError`` asking for a larger ``cutoff``."""
    return _correlation(model, initial, ts, taus, a, b, params=params, t0=t0, cutoff=cutoff)


def _correlation(model, initial, ts, taus, a, b, *, params=None, t0=0.0, cutoff=20, means=False):
    """:func:`correlation`; with ``means`` (for :func:`spectrum`: ``B`` must be ``A``'s adjoint),
    also ``(<A>, <B>)`` per start time ``t``: ``<A>`` averaged over the lags' times ``t + tau``
    (uniformly, as :func:`twa_jax.spectrum` averages it), ``<B>`` at ``t``."""
    t0 = start_time(t0)
    ts = _times(ts, "ts", t0)
    taus = _times(taus, "taus", 0.0)
    qm, A, B = _twin_ops(model, params, a, b, cutoff, adjoint=means)
    rho0 = qm.initial(initial)
    tlist = np.union1d([0.0], ts - t0)
    opts = {"atol": 1e-10, "rtol": 1e-8, "nsteps": 100_000}
    with np.errstate(all="ignore"):
        c = qt.correlation_2op_2t(qm.H, rho0, tlist, taus, list(qm.c_ops), A, B, options=opts)
    _check_cutoff(qm, rho0, np.union1d(tlist, tlist[-1] + taus), cutoff, opts)
    pick = np.searchsorted(tlist, ts - t0)
    c = np.asarray(c)[pick]
    if not means:
        return c
    lags = (ts - t0)[:, None] + taus[None, :]
    times = np.union1d(tlist, lags.ravel())
    with np.errstate(all="ignore"):
        e = qt.mesolve(qm.H, rho0, times, list(qm.c_ops), e_ops=[A, B], options=opts).expect
    at = lambda x: np.abs(times[None, :] - np.ravel(x)[:, None]).argmin(axis=1).reshape(np.shape(x))  # noqa: E731
    return c, (np.asarray(e[0])[at(lags)].mean(axis=1), np.asarray(e[1])[at(ts - t0)])


def spectrum(model, omegas, a, b, *, params=None, cutoff=20, taus=None, window=None, initial=None, t=None,
             coherent=False):
    """``S(omega) = int dtau e^{-i omega tau} (<A(tau) B(0)> - <A><B>)`` in the steady state of the
    exact twin (QuTiP's ``spectrum``, the convention of :func:`twa_jax.spectrum`), real. As there,
    ``b`` must be ``a``'s adjoint (``ValueError`` otherwise); a steady state without fluctuations of
    ``B`` (a coherent state, for ``B = a``) has the spectrum zero.

    Without ``taus``: the infinite-lag transform, from the Liouvillian's eigen-decomposition
    (QuTiP's ``spectrum``; Hilbert-space dimension at most :data:`MAX_SPECTRUM_DIM`). With
    ``taus`` (and ``window``, ``initial``, ``t``, ``coherent`` as in :func:`twa_jax.spectrum`):
    the exact correlation from the start time ``t`` (in the steady state) over the same lags, put
    through the same weights as :func:`twa_jax.spectrum`, so the two carry the same window's
    broadening, with the same ``<A><B>`` subtracted (``<A>`` averaged over the lags' times
    ``t + tau``, ``<B>`` at ``t``: the steady state's means once ``t`` is in it); any dimension the
    master equation can be integrated at. The top Fock level is
    checked as in :func:`correlation` (without ``taus``: in the steady state).
    """
    if taus is None:
        if window is not None or initial is not None or t is not None or coherent:
            raise ValueError("window, initial, t and coherent apply with taus= (the windowed transform) only")
        qm, A, B = _twin_ops(model, params, a, b, cutoff, adjoint=True)
        dim = qm.H.shape[0]
        if dim > MAX_SPECTRUM_DIM:
            raise ValueError(
                f"tw.exact.spectrum diagonalizes the dense Liouvillian ({dim}^2 x {dim}^2 for this twin), which is "
                f"out of reach above Hilbert-space dimension {MAX_SPECTRUM_DIM}. Give the lag grid of tw.spectrum "
                "(taus=, window=) with initial= and a start time t= in the steady state: the exact correlation "
                "is then transformed with the same weights.")
        omegas = _frequencies(omegas)
        with np.errstate(all="ignore"):
            ss = qt.steadystate(qm.H, list(qm.c_ops))
        _check_cutoff(qm, ss, None, cutoff)
        # QuTiP's exponential series drops each term of <A(tau) B> - <A><B> (and each eigen-component of
        # B rho_ss) whose amplitude is below its atol, and fails on the empty list when none is left (a
        # ValueError from unpacking it). The amplitudes sum to the variance v = <A A^dag> - |<A>|^2 >= 0
        # (B = A^dag), so above the bound below some term survives; at or below it, the spectrum (>= 0,
        # of integral 2 pi v) is zero to QuTiP's own accuracy, and exactly zero when (B - <B>) rho_ss = 0:
        # no fluctuations at all (a coherent steady state, for B = a)
        v = abs(qt.expect(A * B, ss) - qt.expect(A, ss) * qt.expect(B, ss))
        if v <= (dim**2 + 1) * (1 + A.norm("fro")) * qt.settings.core["atol"]:
            return np.zeros(omegas.shape)
        return np.asarray(qt.spectrum(qm.H, omegas, list(qm.c_ops), A, B))
    if initial is None or t is None:
        raise ValueError("taus= needs initial= and a start time t= in the steady state")
    taus, omegas, F = fourier_weights(taus, omegas, window)
    C, (mean_a, mean_b) = _correlation(model, initial, [t], taus, a, b, params=params, cutoff=cutoff, means=True)
    ab = 0.0 if coherent else complex(mean_a[0] * mean_b[0])
    return 2 * np.real(F @ (C[0] - ab))
