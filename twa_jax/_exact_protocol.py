"""The exact twin of a protocol in time: a time-dependent model and instantaneous pulses.

The twin of a time-dependent polynomial model is the same quantization as for a constant one
(:mod:`twa_jax._quantize`), with coefficients that are functions of time:

    H(t) = sum_e h_e(t) O_e,    L_i(t) = sum_e l_ie(t) O_e,

where ``O_e`` is the Weyl-ordered operator of the monomial ``e`` in the spin components and boson
amplitudes. The monomials are read off the model's functions at several times over the run (their
union); the coefficients at any time come from the functions' values at fixed random points by
least squares (exact for a polynomial with those monomials, and checked on a grid of times). The
Liouvillian is then

    Lv(t) = sum_e h_e(t) A_e + sum_{e,e'} w_ee'(t) D_ee',   w_ee' = sum_ij Gamma_ji l_ie conj(l_je'),

with ``A_e = -i [O_e, .]`` and ``D_ee' rho = O_e rho O_e'^dag - {O_e'^dag O_e, rho} / 2`` built
once, restricted to the components reachable from the initial state, and integrated with SciPy's
DOP853 between pulses. A pulse ``exp(-i angle G)`` is applied as ``rho -> U rho U^dag`` with
``U`` the matrix exponential of the quantized generator.
"""

from __future__ import annotations

import numpy as np

import jax
import jax.numpy as jnp
import qutip as qt
import scipy.sparse as sp
from scipy.integrate import solve_ivp
from scipy.sparse.linalg import expm

from ._checks import check_gamma_matrix, check_psd
from ._quantize import Polynomial, polynomials, quantize
from .exact import _flatten_observables, _observable_rows, _reachable

#: times at which the monomials are read off (evenly spaced over the run, plus the save times)
N_READ_TIMES = 9
#: times at which the least-squares coefficients are checked against the functions
N_CHECK_TIMES = 257
#: relative accuracy of that check
COEFF_RTOL = 1e-8
#: the integrator's step is at most the run's span over this (so it cannot stride over a short pulse)
MAX_STEP_DIVISIONS = 128


def _monomial_values(X, exps, n_spins, n_bosons):
    """``(n_points, n_monomials)``: each monomial at each real point ``x = (spins, Re a, Im a)``."""
    ns = 3 * n_spins
    a = X[:, ns : ns + n_bosons] + 1j * X[:, ns + n_bosons :]
    z = np.concatenate([X[:, :ns].astype(complex), a, np.conj(a)], axis=1)
    E = np.asarray(exps, int).reshape(len(exps), -1)
    return np.prod(z[:, None, :] ** E[None, :, :], axis=2)


class _Coefficients:
    """``coeffs(t)``: the monomial coefficients of the Hamiltonian and of every jump operator at
    time ``t``, from one compiled evaluation of the model's functions at fixed points."""

    def __init__(self, model, p, ts):
        N, M = model.n_spins, model.n_bosons
        self.N, self.M = N, M
        self.K = 0
        read = np.union1d(np.linspace(ts[0], ts[-1], N_READ_TIMES), ts[[0, -1]])
        h_exps, l_exps = set(), set()
        for t in read:
            fns = {"Hamiltonian": lambda s, a, t=t: model.H(s, a, p, t)}
            if model.jumps is not None:
                fns["jump operators"] = lambda s, a, t=t: model.L(s, a, p, t)
            polys = polynomials(fns, N, M)
            h_exps |= {e for e, c in polys["Hamiltonian"].terms.items() if np.any(c)}
            if model.jumps is not None:
                self.K = int(np.prod(polys["jump operators"].shape))
                l_exps |= {e for e, c in polys["jump operators"].terms.items() if np.any(c)}
        self.h_exps, self.l_exps = sorted(h_exps), sorted(l_exps)
        D = 3 * N + 2 * M
        rng = np.random.default_rng(20261203)
        n_pts = 2 * max(len(self.h_exps), len(self.l_exps), 1) + 8
        self.X = rng.normal(size=(n_pts, D))
        self.pinv_h = np.linalg.pinv(_monomial_values(self.X, self.h_exps, N, M)) if self.h_exps else None
        self.pinv_l = np.linalg.pinv(_monomial_values(self.X, self.l_exps, N, M)) if self.l_exps else None

        def g(x, t):
            s = x[: 3 * N].reshape(N, 3)
            a = x[3 * N : 3 * N + M] + 1j * x[3 * N + M :]
            out = [jnp.ravel(jnp.asarray(model.H(s, a, p, t))).astype(jnp.complex128)]
            if model.jumps is not None:
                out.append(jnp.ravel(jnp.asarray(model.L(s, a, p, t))).astype(jnp.complex128))
            return jnp.concatenate(out)

        with jax.enable_x64(True):
            self._values = jax.jit(jax.vmap(jax.vmap(g, in_axes=(0, None)), in_axes=(None, 0)))
            self._X = jnp.asarray(self.X)
        self.model, self.p = model, p
        self._check(np.union1d(np.linspace(ts[0], ts[-1], N_CHECK_TIMES), ts))

    def values(self, times):
        """``(n_times, n_points, 1 + K)`` function values."""
        with jax.enable_x64(True):
            return np.asarray(self._values(self._X, jnp.asarray(np.atleast_1d(times), jnp.float64)))

    def __call__(self, t):
        """``(h (n_h,), l (K, n_l))`` at time ``t``."""
        v = self.values(t)[0]
        h = self.pinv_h @ v[:, 0] if self.pinv_h is not None else np.zeros(0)
        l_ = (self.pinv_l @ v[:, 1:]).T if self.pinv_l is not None else np.zeros((self.K, 0))
        return h, l_

    def _check(self, times):
        v = self.values(times)  # (n_t, n_pts, 1 + K)
        for name, exps, pinv, cols in (("Hamiltonian", self.h_exps, self.pinv_h, slice(0, 1)),
                                       ("jump operators", self.l_exps, self.pinv_l, slice(1, None))):
            want = v[:, :, cols]
            if not want.size:
                continue
            Phi = _monomial_values(self.X, exps, self.N, self.M) if exps else np.zeros((len(self.X), 0))
            got = np.einsum("pm,mq,tqk->tpk", Phi, pinv, want) if exps else np.zeros_like(want)
            err = np.max(np.abs(got - want), initial=0.0)
            scale = np.max(np.abs(want), initial=0.0)
            if not err <= COEFF_RTOL * max(scale, 1e-300):
                raise ValueError(
                    f"the {name} of this time-dependent model has terms at some times that are absent at the "
                    f"{N_READ_TIMES} times where its polynomial was read off (or it is not a polynomial); "
                    f"the reconstruction misses by {err:.2g} of {scale:.2g}. Pass quantum= by hand"
                )


def _check_gamma_in_time(model, p, ts):
    """Gamma(t) checked as :func:`twa_jax.simulate` checks it (rates non-negative, a matrix Hermitian
    and positive semidefinite), on the grid of times where the coefficients are checked."""
    if not model.gamma_depends_on_time:  # a constant Gamma: checked with the twin
        return
    times = np.union1d(np.linspace(ts[0], ts[-1], N_CHECK_TIMES), ts)
    with jax.enable_x64(True):
        gs = np.asarray(jax.vmap(lambda t: model.gamma_of(p, t))(jnp.asarray(times)))
    for t, g in zip(times, gs):
        name = f"gamma(params, t={t:.4g})"
        check_gamma_matrix(g, name)
        if g.ndim == 2:
            check_psd(np.linalg.eigvalsh(g), g.dtype, name)


def _operators(exps, N, M, spin_S, cutoff):
    out = []
    for e in exps:
        poly = Polynomial({e: np.ones(())}, (), sum(e), N, M)
        out.append(quantize(poly, spin_S, cutoff)[()])
    return out


def _csr(q: qt.Qobj):
    return sp.csr_matrix(q.to("csr").data.as_scipy())


def pulse_unitary(model, pulse, p, cutoff):
    """``exp(-i angle G)`` of a pulse, with ``G`` the quantized generator."""
    poly = polynomials({"pulse generator": lambda s, a: pulse.generator(s, a, p)}, model.n_spins, model.n_bosons)
    G = quantize(poly["pulse generator"], model.spin_S, cutoff)[()]
    G = (G + G.dag()) / 2
    angle = float(p[pulse.angle_name]) if pulse.angle_name is not None else float(pulse.angle_value)
    return sp.csc_matrix(expm(sp.csc_matrix(-1j * angle * _csr(G))))


def solve_protocol(model, qm, p, rho0, ts, pulses, cutoff, rtol, atol):
    """``(names, values (n_ops, n_times), info)`` of a time-dependent model and/or pulses; ``qm``
    is the twin at one time (its observables, initial state and dimensions are used)."""
    N, M = model.n_spins, model.n_bosons
    cut = cutoff if M else None
    dims = qm.H.dims[0]
    if model.time_dependent:
        _check_gamma_in_time(model, p, ts)
        coeffs = _Coefficients(model, p, ts)
        Oh = _operators(coeffs.h_exps, N, M, model.spin_S, cut)
        Ol = _operators(coeffs.l_exps, N, M, model.spin_S, cut)
    else:  # constant model, pulses only
        coeffs, Oh, Ol = None, [qm.H], []
    A_h = [_csr(-1j * (qt.spre(O) - qt.spost(O))) for O in Oh]
    A_l = [[_csr(qt.sprepost(Oe, Of.dag()) - 0.5 * qt.spre(Of.dag() * Oe) - 0.5 * qt.spost(Of.dag() * Oe))
            for Of in Ol] for Oe in Ol]
    fixed = None
    if coeffs is None and qm.c_ops:  # constant dissipation
        fixed = _csr(qt.liouvillian(None, list(qm.c_ops)))
    # pulses as superoperators rho -> U rho U^dag (column stacking: vec(U rho U^dag) = (conj(U) (x) U) vec(rho))
    kicks = []
    for pulse in pulses:
        U = pulse_unitary(model, pulse, p, cut)
        kicks.append((pulse.time, sp.kron(U.conj(), U, format="csr")))
    v0 = qt.operator_to_vector(rho0 if not rho0.isket else qt.ket2dm(rho0)).full().ravel()
    pattern = sum((abs(A) for A in A_h), sp.csr_matrix((len(v0), len(v0))))
    for row in A_l:
        for A in row:
            pattern = pattern + abs(A)
    if fixed is not None:
        pattern = pattern + abs(fixed)
    for _, S in kicks:
        pattern = pattern + abs(S)
    idx = _reachable(sp.csr_matrix(pattern), np.flatnonzero(np.abs(v0) > 0))
    r = lambda A: A[idx][:, idx].tocsr()  # noqa: E731
    A_h = [r(A) for A in A_h]
    A_l = [[r(A) for A in row] for row in A_l]
    fixed = None if fixed is None else r(fixed)
    kicks = [(t, r(S)) for t, S in kicks]
    names, flat = _flatten_observables(qm)
    W = _observable_rows(flat, idx)
    n = len(idx)

    if coeffs is not None:
        def weights(t):
            """The weights of the stacked superoperators at ``t``: ``h_e``, then ``w_ef``."""
            h, l_ = coeffs(t)
            if not A_l:
                return h
            G = np.asarray(model.gamma_of(p, t))
            G = np.diag(G) if G.ndim == 1 else G
            w = l_.T @ G.T @ np.conj(l_)  # w[e, f] = sum_ij Gamma_ji l_ie conj(l_jf)
            return np.concatenate([h, w.ravel()])

        # one stacked sparse product per evaluation, without the pairs whose weight is always 0
        blocks = A_h + [A for row in A_l for A in row]
        probe = np.abs(np.stack([weights(t) for t in np.linspace(ts[0], ts[-1], 33)])).max(0)
        live = np.flatnonzero(probe > 0)
        stack = sp.vstack([blocks[k] for k in live]).tocsr()

    def rhs(t, v):
        out = fixed @ v if fixed is not None else np.zeros_like(v)
        if coeffs is None:
            return out + A_h[0] @ v
        return out + weights(t)[live] @ (stack @ v).reshape(len(live), n)

    # segments between pulse times; a save at a pulse's time records the state after it
    times = sorted({t for t, _ in kicks})
    v = v0[idx].astype(complex)
    for t, S in kicks:
        if t == ts[0]:
            v = S @ v
    out = np.zeros((len(idx), len(ts)), complex)
    out[:, 0] = v
    knots = [ts[0]] + [t for t in times if ts[0] < t] + ([ts[-1]] if not times or times[-1] < ts[-1] else [])
    nfev = 0
    # the adaptive step must not stride over a short pulse it has not seen yet
    max_step = (ts[-1] - ts[0]) / MAX_STEP_DIVISIONS if coeffs is not None else np.inf
    for a, b in zip(knots[:-1], knots[1:]):
        inside = np.flatnonzero((ts > a) & (ts < b))
        sol = solve_ivp(rhs, (a, b), v, t_eval=np.concatenate([ts[inside], [b]]), method="DOP853", rtol=rtol, atol=atol,
                        max_step=max_step)
        if not sol.success:
            raise RuntimeError(f"exact solver failed: {sol.message}")
        nfev += sol.nfev
        out[:, inside] = sol.y[:, :-1]
        v = sol.y[:, -1]
        for t, S in kicks:
            if t == b:
                v = S @ v
        at = np.flatnonzero(ts == b)
        if at.size:
            out[:, at[0]] = v
    return names, W @ out, {"dim": len(v0), "reachable": len(idx), "nfev": nfev}
