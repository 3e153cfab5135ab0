"""Exact two-time correlations and spectra of a model's quantum twin (QuTiP), for checking
:func:`twa_jax.correlation` and :func:`twa_jax.spectrum` at small sizes."""

from __future__ import annotations

import numpy as np
import qutip as qt

#: the largest Hilbert-space dimension whose spectrum is computed (QuTiP's eigen-decomposition of
#: the dense Liouvillian, dimension^2 x dimension^2)
MAX_SPECTRUM_DIM = 64


def _twin_ops(model, params, a, b, cutoff):
    from ._correlation import _as_function
    from .exact import _checked_params, twin

    if model.time_dependent:
        raise ValueError("exact correlations are for constant models (the twin of a time-dependent model is not supported here)")
    p = _checked_params(model, params)
    fa, fb = _as_function(a, model, "a"), _as_function(b, model, "b")
    qm = twin(model, p, cutoff=cutoff, observables={"A": fa, "B": fb})
    return qm, qm.observables["A"], qm.observables["B"]


def correlation(model, initial, ts, taus, a, b, *, params=None, t0=0.0, cutoff=20):
    """``<A(t + tau) B(t)>`` of the exact twin, ``(len(ts), len(taus))`` complex (QuTiP's
    ``correlation_2op_2t``; the same arguments as :func:`twa_jax.correlation`)."""
    from ._correlation import _times

    ts = _times(ts, "ts", float(t0))
    taus = _times(taus, "taus", 0.0)
    qm, A, B = _twin_ops(model, params, a, b, cutoff)
    rho0 = qm.initial(initial)
    tlist = np.union1d([0.0], ts - t0)
    with np.errstate(all="ignore"):
        c = qt.correlation_2op_2t(qm.H, rho0, tlist, taus, list(qm.c_ops), A, B,
                                  options={"atol": 1e-10, "rtol": 1e-8})
    return np.asarray(c)[np.searchsorted(tlist, ts - t0)]


def spectrum(model, omegas, a, b, *, params=None, cutoff=20):
    """``S(omega) = int dtau e^{-i omega tau} <A(tau) B(0)>`` in the steady state of the exact twin
    (QuTiP's ``spectrum``, the convention of :func:`twa_jax.spectrum`), real."""
    qm, A, B = _twin_ops(model, params, a, b, cutoff)
    dim = qm.H.shape[0]
    if dim > MAX_SPECTRUM_DIM:
        raise ValueError(
            f"tw.exact.spectrum diagonalizes the dense Liouvillian ({dim}^2 x {dim}^2 for this twin), which is "
            f"out of reach above Hilbert-space dimension {MAX_SPECTRUM_DIM}. Use tw.exact.correlation on the lag "
            "grid of tw.spectrum (a start time in the steady state) and transform it with the same weights "
            "(docs/conventions.md, 'Two-time correlations'); benchmarks/bench_spectra.py does this for N = 8 spins.")
    return np.asarray(qt.spectrum(qm.H, np.asarray(omegas, float), list(qm.c_ops), A, B))
