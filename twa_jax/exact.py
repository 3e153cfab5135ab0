"""Exact quantum references for the built-in models (QuTiP, an optional dependency).

Every built-in model of :mod:`twa_jax.models` builds its quantum counterpart from the same
parameters (``model.quantum(params, basis)`` returns a :class:`QuantumModel`), so the classical and
the quantum problem cannot drift apart. :func:`solve` integrates it and returns the same
:class:`~twa_jax.Result` type as :func:`~twa_jax.simulate`, with the same observable names::

    res_twa = tw.simulate(model, init, ts, n_traj=10_000, key=0)
    res_ex = tw.exact.solve(model, init, ts)
    err = abs(res_twa.mean["sz"] - res_ex.mean["sz"])

Methods:

* ``"full"``: the Lindblad master equation in the full Hilbert space. The Liouvillian is QuTiP's
  (``qutip.liouvillian``), restricted to the components of the density matrix that are reachable
  from the initial state (symmetries such as conservation of the excitation-number difference
  between ket and bra then cost nothing), and integrated with SciPy's DOP853 (rtol 1e-8,
  atol 1e-10; ``rtol=``, ``atol=``).
* ``"piqs"``: the same in the permutation-symmetric (Dicke) basis of QuTiP's PIQS, for ensembles of
  identical spins with local dissipation (Tavis-Cummings, central spin, collective decay), so that
  N = 15-50 are exact. PIQS builds its Liouvillian in 32-bit floats (``docs/conventions.md``,
  "Exact references"): about 1e-7 relative, far below TWA's own error.
* ``"mcsolve"``: QuTiP's quantum trajectories, with their own standard error (``Result.sem``);
  for large Hilbert spaces without permutation symmetry (the paper's Rydberg chain at N = 10).
  It takes ``n_traj=`` and ``seed=``, and only it does; ``rtol``/``atol`` do not apply to it
  (:data:`METHOD_OPTIONS`).

QuTiP is imported when this module is, so ``import twa_jax`` does not need it.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np
import qutip as qt
import scipy.sparse as sp
from scipy.integrate import solve_ivp
from scipy.sparse import SparseEfficiencyWarning
from scipy.sparse.csgraph import breadth_first_order

from ._result import Result
from ._states import GaussianBosonState, ProductState, SpinCoherentState, SpinHalfState

METHODS = ("auto", "full", "piqs", "mcsolve")
#: The keyword options of :func:`solve` that only some methods use, and the methods that use each
#: (``params`` and ``cutoff`` apply to every method). An option given to a method that does not use
#: it is rejected, not silently dropped. ``"auto"`` becomes ``"full"`` or ``"piqs"``, never
#: ``"mcsolve"``, so it takes their options.
METHOD_OPTIONS = {
    "n_traj": ("mcsolve",),
    "seed": ("mcsolve",),
    "rtol": ("auto", "full", "piqs"),
    "atol": ("auto", "full", "piqs"),
}
#: ``method="auto"`` uses the full space up to this Hilbert-space dimension, then PIQS if offered
AUTO_FULL_DIM = 2**11


@dataclass(frozen=True)
class QuantumModel:
    """The quantum counterpart of a built-in model: QuTiP operators on one Hilbert space.

    Attributes:
        H: the Hamiltonian.
        c_ops: collapse operators with the rates absorbed; a dense Gamma is diagonalized,
            ``Gamma = V diag(g) V^dag`` gives ``C_k = sqrt(g_k) sum_i conj(V_ik) L_i``.
        observables: ``{name: operator}`` or ``{name: [operators]}`` (a vector observable, such as
            ``"n"`` per boson mode); names match the TWA observables of the model.
        initial: maps a :mod:`twa_jax.states` state to a ket or density matrix of this space.
        basis: ``"full"`` or ``"piqs"``.
        dicke_liouvillian: ``basis="piqs"`` only: PIQS's Liouvillian of the spin ensemble (local
            dissipation in the Dicke basis), acting on the first tensor factor.
        cutoff: boson Fock-space cutoff (highest kept level), or ``None`` without bosons.
    """

    H: qt.Qobj
    c_ops: tuple
    observables: dict
    initial: Callable
    basis: str = "full"
    dicke_liouvillian: qt.Qobj | None = None
    cutoff: int | None = None
    boson_top: tuple = field(default=())  # projectors on each mode's top Fock level

    def liouvillian(self) -> qt.Qobj:
        """The full Liouvillian superoperator (QuTiP column-stacking convention)."""
        with warnings.catch_warnings():  # QuTiP's sparse-format efficiency notes
            warnings.simplefilter("ignore", SparseEfficiencyWarning)
            L = qt.liouvillian(self.H, list(self.c_ops))
        if self.dicke_liouvillian is not None:
            rest = self.H.dims[0][1:]
            if rest:
                L = L + qt.super_tensor(self.dicke_liouvillian, qt.to_super(qt.qeye(rest)))
            else:
                L = L + self.dicke_liouvillian
        return L


# ----------------------------------------------------------------------------- building blocks
def spin_operators(n: int):
    """Pauli matrices of each of ``n`` spins-1/2 on the ``2**n`` space: three lists of ``n``.

    ``qutip.basis(2, 0)`` is spin up (``sigma^z = +1``)."""
    eye = [qt.qeye(2)] * n

    def site(op, i):
        ops = list(eye)
        ops[i] = op
        return qt.tensor(ops)

    return [[site(op, i) for i in range(n)] for op in (qt.sigmax(), qt.sigmay(), qt.sigmaz())]


def spin_ket(direction) -> qt.Qobj:
    """The spin-1/2 coherent state pointing along the unit vector ``direction``."""
    x, y, z = np.asarray(direction, float) / np.linalg.norm(direction)
    theta, phi = np.arccos(np.clip(z, -1, 1)), np.arctan2(y, x)
    return np.cos(theta / 2) * qt.basis(2, 0) + np.exp(1j * phi) * np.sin(theta / 2) * qt.basis(2, 1)


def boson_dm(alpha, n_th, cutoff: int) -> qt.Qobj:
    """Displaced thermal state ``D(alpha) rho_th(n_th) D(alpha)^dag`` in ``cutoff + 1`` levels
    (a ket for a coherent state)."""
    dim = cutoff + 1
    if n_th == 0:
        return qt.coherent(dim, complex(alpha), method="analytic")
    d = qt.displace(dim, complex(alpha))
    return d * qt.thermal_dm(dim, float(n_th)) * d.dag()


def split_state(state):
    """``(spin parts, boson parts)`` of a :mod:`twa_jax.states` state."""
    if isinstance(state, ProductState):
        return state.spin_parts, state.boson_parts
    if isinstance(state, (SpinHalfState, SpinCoherentState)):
        return (state,), ()
    if isinstance(state, GaussianBosonState):
        return (), (state,)
    raise TypeError(f"initial must be a twa_jax.states state, got {type(state).__name__}")


def spin_directions(state) -> np.ndarray:
    """``(n, 3)`` unit vectors of the spin-1/2 part of a state (exact references need spin-1/2)."""
    parts, _ = split_state(state)
    for p in parts:
        if not isinstance(p, SpinHalfState):
            raise NotImplementedError("exact references support spin-1/2 states only (not tw.states.spin_coherent)")
    if not parts:
        return np.zeros((0, 3))
    return np.concatenate([np.asarray(p.directions) for p in parts], 0)


def boson_params(state):
    """``(alpha, n_th)`` arrays of the boson part of a state."""
    _, parts = split_state(state)
    if not parts:
        return np.zeros(0, complex), np.zeros(0)
    return (np.concatenate([np.asarray(p.alpha) for p in parts]), np.concatenate([np.asarray(p.n_th) for p in parts]))


def product_initial(directions, alpha, n_th, cutoff):
    """Full-space product state of spin coherent states and Gaussian boson states (a ket when
    everything is pure)."""
    factors = [spin_ket(d) for d in directions] + [boson_dm(a, n, cutoff) for a, n in zip(alpha, n_th)]
    if all(f.isket for f in factors):
        return qt.tensor(factors)
    return qt.tensor([qt.ket2dm(f) if f.isket else f for f in factors])


def dicke_initial(directions):
    """PIQS (Dicke-basis) density matrix of ``n`` spins all up or all down."""
    from qutip import piqs

    n = len(directions)
    z = directions[:, 2]
    if np.allclose(z, 1):
        return piqs.excited(n)
    if np.allclose(z, -1):
        return piqs.ground(n)
    raise NotImplementedError(
        "basis='piqs' supports ensembles initialized all up or all down; use method='full' for other states"
    )


def collapse_operators(L: list, gamma) -> list:
    """Collapse operators for ``sum_ij Gamma_ji (L_i rho L_j^dag - ...)``: rates for a diagonal
    Gamma, eigen-channels ``sqrt(g_k) sum_i conj(V_ik) L_i`` for a dense one (null ones dropped)."""
    g = np.asarray(gamma)
    if g.ndim == 1:
        return [np.sqrt(r) * op for r, op in zip(g, L) if r > 0]
    w, v = np.linalg.eigh(g)
    keep = w > 1e-12 * max(np.max(np.abs(w)), 1e-300)
    out = []
    for k in np.flatnonzero(keep):
        c = sum(np.conj(v[i, k]) * L[i] for i in range(len(L)) if v[i, k] != 0)
        out.append(np.sqrt(w[k]) * c)
    return out


def as_numpy_params(params):
    """Concrete NumPy values of a parameter dict (exact solvers do not trace)."""
    return {k: np.asarray(v) for k, v in params.items()}


# ----------------------------------------------------------------------------- solvers
def _reachable(A: sp.csr_matrix, support: np.ndarray) -> np.ndarray:
    """Indices of the components reachable from ``support`` under ``dv/dt = A v``."""
    graph = (A != 0).T.tocsr()
    mask = np.zeros(A.shape[0], bool)
    for s in support:
        if not mask[s]:
            mask[breadth_first_order(graph, int(s), directed=True, return_predecessors=False)] = True
    return np.flatnonzero(mask)


def _flatten_observables(qm: QuantumModel):
    """``(names, operators)``: ``names`` lists ``(name, count, is_vector)`` in order; the
    operators end with the projectors on each boson mode's top Fock level (cutoff check)."""
    names, flat = [], []
    for name, op in qm.observables.items():
        ops = op if isinstance(op, (list, tuple)) else [op]
        names.append((name, len(ops), isinstance(op, (list, tuple))))
        flat.extend(ops)
    return names, flat + list(qm.boson_top)


def _observable_rows(ops, idx):
    """Rows ``w`` with ``Tr(O rho) = w . vec(rho)`` on the reachable components ``idx``."""
    return np.asarray([qt.operator_to_vector(op.trans()).full().ravel()[idx] for op in ops])


def _solve_liouvillian(qm: QuantumModel, rho0: qt.Qobj, ts, rtol, atol):
    if rho0.isket:
        rho0 = qt.ket2dm(rho0)
    A = sp.csr_matrix(qm.liouvillian().to("csr").data.as_scipy())
    v0 = qt.operator_to_vector(rho0).full().ravel()
    idx = _reachable(A, np.flatnonzero(np.abs(v0) > 0))
    Ar = A[idx][:, idx].tocsr()
    names, flat = _flatten_observables(qm)
    W = _observable_rows(flat, idx)
    sol = solve_ivp(
        lambda t, y: Ar @ y, (ts[0], ts[-1]), v0[idx].astype(complex), t_eval=ts,
        method="DOP853", rtol=rtol, atol=atol,
    )
    if not sol.success:
        raise RuntimeError(f"exact solver failed: {sol.message}")
    vals = (W @ sol.y).real  # (n_ops, n_times)
    return names, vals, {"dim": A.shape[0], "reachable": len(idx), "nfev": sol.nfev}


def _mcsolve(qm: QuantumModel, psi0: qt.Qobj, ts, n_traj, seed):
    if not psi0.isket:
        raise ValueError("method='mcsolve' needs a pure initial state (no thermal bosons)")
    names, flat = _flatten_observables(qm)
    res = qt.mcsolve(
        qm.H, psi0, ts, list(qm.c_ops), e_ops=flat, ntraj=n_traj, seeds=seed,
        options={"progress_bar": False, "keep_runs_results": True, "store_states": False},
    )
    runs = np.asarray(res.runs_expect).real  # (n_ops, n_traj, n_times)
    mean = runs.mean(1)
    sem = runs.std(1, ddof=1) / np.sqrt(runs.shape[1])
    return names, mean, sem


def check_options(method: str, **given) -> None:
    """Raise ``ValueError`` for each option of ``given`` (not ``None``) that ``method`` does not use,
    according to :data:`METHOD_OPTIONS`."""
    for name, value in given.items():
        if value is None:
            continue
        users = METHOD_OPTIONS[name]
        if method not in users:
            which = " or ".join(repr(m) for m in users if m != "auto")
            raise ValueError(
                f"option {name}={value!r} is not used by method={method!r}; it applies to method={which} "
                f"only. Remove it, or choose a method that uses it."
            )


def solve(
    model,
    initial,
    ts,
    *,
    params=None,
    method: str = "auto",
    cutoff: int | None = None,
    n_traj: int | None = None,
    seed: int | None = None,
    rtol: float | None = None,
    atol: float | None = None,
) -> Result:
    """Exact solution of a built-in model's master equation, as a :class:`~twa_jax.Result`.

    Args:
        model: a model from :mod:`twa_jax.models` (it carries its quantum counterpart).
        initial: the same :mod:`twa_jax.states` state given to :func:`~twa_jax.simulate`
            (spin-1/2 product states, Gaussian boson states).
        ts: ``(n_times,)`` increasing save times.
        params: parameter overrides, as for :func:`~twa_jax.simulate`.
        method: ``"full"``, ``"piqs"``, ``"mcsolve"`` or ``"auto"`` (full space up to dimension
            2048, else PIQS when the model offers it).
        cutoff: highest Fock level kept per boson mode (default 20). The population of the top
            level is checked: above 1e-6 a ``RuntimeError`` asks for a larger cutoff.
        n_traj: quantum trajectories for ``method="mcsolve"`` (default 500).
        seed: seed of ``mcsolve`` (default 0).
        rtol, atol: tolerances of the density-matrix integration (DOP853; default 1e-8 and 1e-10),
            for ``"full"``, ``"piqs"`` and ``"auto"``.

    Returns:
        A :class:`~twa_jax.Result` with ``method="exact-full"``, ``"exact-piqs"`` (``sem`` zero)
        or ``"mcsolve"`` (``sem`` the trajectory standard error, ``n_traj`` the trajectories).

    Raises:
        ValueError: an unknown ``method``, bad ``ts``/``cutoff``/``n_traj``/parameters, or an
            option the method does not use (:data:`METHOD_OPTIONS`: ``n_traj`` and ``seed`` are
            for ``"mcsolve"`` only, ``rtol`` and ``atol`` for the density-matrix methods only).
    """
    t_start = time.perf_counter()
    if getattr(model, "quantum", None) is None:
        raise TypeError("this model has no quantum counterpart; exact references exist for tw.models builders")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    ts = np.asarray(ts, float)
    if ts.ndim != 1 or ts.size < 2 or np.any(np.diff(ts) <= 0) or not np.all(np.isfinite(ts)):
        raise ValueError("ts must be a 1-D strictly increasing array of at least two finite times")
    check_options(method, n_traj=n_traj, seed=seed, rtol=rtol, atol=atol)
    seed = 0 if seed is None else seed
    rtol = 1e-8 if rtol is None else rtol
    atol = 1e-10 if atol is None else atol
    if cutoff is None:
        cutoff = 20
    if isinstance(cutoff, bool) or not isinstance(cutoff, (int, np.integer)) or cutoff < 1:
        raise ValueError(f"cutoff must be a positive int, got {cutoff!r}")
    p = as_numpy_params(model.with_params(params))
    for k, v in p.items():
        if not np.all(np.isfinite(v)):
            raise ValueError(f"parameter {k!r} is not finite: {v}")
    if method == "auto":
        dim = 2**model.n_spins * (cutoff + 1) ** model.n_bosons
        method = "full" if dim <= AUTO_FULL_DIM else "piqs"
    basis = "piqs" if method == "piqs" else "full"
    qm = model.quantum(p, basis=basis, cutoff=int(cutoff))
    rho0 = qm.initial(initial)
    n_obs = len(qm.boson_top)
    if method == "mcsolve":
        n_traj = 500 if n_traj is None else n_traj
        if isinstance(n_traj, bool) or not isinstance(n_traj, (int, np.integer)) or n_traj < 2:
            raise ValueError(f"n_traj must be an int >= 2, got {n_traj!r}")
        names, vals, sems = _mcsolve(qm, rho0, ts, int(n_traj), seed)
        info = {}
    else:
        names, vals, info = _solve_liouvillian(qm, rho0, ts, rtol, atol)
        sems = np.zeros_like(vals)
    if n_obs:
        top = vals[-n_obs:].max()
        if top > 1e-6:
            raise RuntimeError(
                f"the top Fock level (cutoff={cutoff}) reaches population {top:.2g}; raise cutoff"
            )
    mean, sem, i = {}, {}, 0
    for name, k, is_vector in names:
        m, s = vals[i : i + k].T, sems[i : i + k].T
        mean[name], sem[name] = (m, s) if is_vector else (m[:, 0], s[:, 0])
        i += k
    return Result(
        ts=jnp.asarray(ts),
        mean={k: jnp.asarray(v) for k, v in mean.items()},
        sem={k: jnp.asarray(v) for k, v in sem.items()},
        n_traj=int(n_traj) if method == "mcsolve" else 0,
        method=f"exact-{method}" if method != "mcsolve" else "mcsolve",
        solver="qutip.mcsolve" if method == "mcsolve" else f"DOP853 on {info['reachable']} of {info['dim']} components",
        params={k: jnp.asarray(v) for k, v in p.items()},
        wall_time=time.perf_counter() - t_start,
    )
