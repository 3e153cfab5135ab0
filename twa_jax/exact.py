"""Exact quantum references: the master equation of a model's quantum twin (QuTiP, optional).

Any model whose Hamiltonian, jump operators and observables are polynomials in the spin components
and boson amplitudes has an exact twin read off its own functions (:func:`twin`): the polynomial
comes from automatic differentiation and is quantized in the symmetric (Weyl) ordering that TWA
uses, so the exact side is the quantum model whose Weyl symbol you wrote. :func:`solve` integrates
it and returns the same :class:`~twa_jax.Result` type as :func:`~twa_jax.simulate`, with the same
observable names, so one line checks TWA at small size::

    res_twa = tw.simulate(model, init, ts, n_traj=10_000, key=0)
    res_ex = tw.exact.solve(model, init, ts)
    print(tw.compare(res_twa, res_ex))

Methods:

* ``"full"``: the Lindblad master equation in the full Hilbert space of the derived twin (or of a
  hand-written one, ``quantum=``). The Liouvillian is QuTiP's (``qutip.liouvillian``), restricted
  to the components of the density matrix that are reachable from the initial state (symmetries
  such as conservation of the excitation-number difference between ket and bra then cost
  nothing), and integrated with SciPy's DOP853 (rtol 1e-8, atol 1e-10; ``rtol=``, ``atol=``).
* ``"piqs"``: the same in the permutation-symmetric (Dicke) basis of QuTiP's PIQS, for the
  built-in ensembles of identical spins (Tavis-Cummings, central spin, collective decay), so that
  N = 15-50 are exact. PIQS builds its Liouvillian in 32-bit floats (``docs/conventions.md``,
  "Exact references"): about 1e-7 relative, far below TWA's own error.
* ``"mcsolve"``: QuTiP's quantum trajectories, with their own standard error (``Result.sem``);
  for large Hilbert spaces without permutation symmetry (the paper's Rydberg chain at N = 10).
  It takes ``n_traj=`` and ``seed=``, and only it does; ``rtol``/``atol`` do not apply to it
  (:data:`METHOD_OPTIONS`).

A hand-written twin is the escape hatch for a model that is not polynomial:
``quantum(params, basis, cutoff) -> QuantumModel`` (or ``None`` for a basis it does not build),
given to :class:`~twa_jax.Model` or to :func:`solve`. QuTiP is imported when this module is, so
``import twa_jax`` does not need it.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import qutip as qt
import scipy.sparse as sp
from scipy.integrate import solve_ivp
from scipy.sparse import SparseEfficiencyWarning
from scipy.sparse.csgraph import breadth_first_order

from ._checks import check_gamma_matrix, check_psd, default_float
from ._observables import default_observables
from ._protocol import check_pulses
from ._quantize import polynomials, quantize, space_dims, warn_same_site
from ._result import Result, mode_dims
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
#: the largest Hilbert-space dimension of a twin read off the model's functions, per method: the
#: master equation's density matrix has ``dim**2`` components (2**14: 2.7e8, 4.3 GB before its
#: Liouvillian), a quantum trajectory ``dim``; beyond them building the operators alone runs for
#: hours and out of memory, so the call is refused before anything is built
MAX_TWIN_DIM = {"full": 2**14, "mcsolve": 2**22}


@dataclass(frozen=True)
class QuantumModel:
    """A model's quantum twin: QuTiP operators on one Hilbert space.

    :func:`twin` builds it from a model's functions; a hand-written ``quantum(params, basis,
    cutoff)`` hook returns one too.

    Attributes:
        H: the Hamiltonian.
        c_ops: collapse operators with the rates absorbed; a dense Gamma is diagonalized,
            ``Gamma = V diag(g) V^dag`` gives ``C_k = sqrt(g_k) sum_i conj(V_ik) L_i``.
        observables: ``{name: operator}``, ``{name: [operators]}`` (a vector observable, such as
            ``"n"`` per boson mode) or ``{name: object array of operators}`` (any shape); names
            match the TWA observables. A non-Hermitian operator gives a complex mean.
        initial: maps a :mod:`twa_jax.states` state to a ket or density matrix of this space.
        basis: ``"full"`` or ``"piqs"``.
        dicke_liouvillian: ``basis="piqs"`` only: PIQS's Liouvillian of the spin ensemble (local
            dissipation in the Dicke basis), acting on the first tensor factor.
        cutoff: boson Fock-space cutoff (highest kept level), or ``None`` without bosons.
        boson_top: projectors on each mode's top Fock level (the cutoff check).
        dims: ``{name: tuple of names}`` of observables' axes (``Result.dims``): ``("mode",)``
            for the package's per-mode observables.
    """

    H: qt.Qobj
    c_ops: tuple
    observables: dict
    initial: Callable
    basis: str = "full"
    dicke_liouvillian: qt.Qobj | None = None
    cutoff: int | None = None
    boson_top: tuple = field(default=())
    dims: dict | None = None

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
        return qt.coherent(dim, complex(alpha), method="analytic").unit()
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
    raise TypeError(
        f"the initial state {type(state).__name__} has no quantum twin: the built-in states of tw.states "
        "(spin-1/2 product states, spin_coherent, vacuum/coherent/thermal bosons and their products) have "
        "one; for a state of your own, give its class a method quantum(cutoff) returning a qutip.Qobj "
        "(ket or density matrix, spins first, then boson modes)"
    )


def spin_directions(state) -> np.ndarray:
    """``(n, 3)`` unit vectors of the spin-1/2 part of a state (PIQS needs spin-1/2)."""
    parts, _ = split_state(state)
    for p in parts:
        if not isinstance(p, SpinHalfState):
            raise NotImplementedError("basis='piqs' supports spin-1/2 states only (not tw.states.spin_coherent)")
    if not parts:
        return np.zeros((0, 3))
    return np.concatenate([np.asarray(p.directions) for p in parts], 0)


def boson_params(state):
    """``(alpha, n_th)`` arrays of the boson part of a state."""
    _, parts = split_state(state)
    if not parts:
        return np.zeros(0, complex), np.zeros(0)
    return (np.concatenate([np.asarray(p.alpha) for p in parts]), np.concatenate([np.asarray(p.n_th) for p in parts]))


def spin_coherent_ket(S, direction) -> qt.Qobj:
    """The spin-S coherent state along ``direction`` (``qutip.basis(2S+1, 0)`` is ``m = S``)."""
    x, y, z = np.asarray(direction, float) / np.linalg.norm(direction)
    return qt.spin_coherent(S, np.arccos(np.clip(z, -1, 1)), np.arctan2(y, x))


def state_twin(state, cutoff: int | None) -> qt.Qobj:
    """The quantum state of a :mod:`twa_jax.states` state on ``spins x bosons``: spin-1/2 or
    spin-S coherent states per site, displaced thermal states per mode, their tensor product
    (a ket when everything is pure). A user state needs a ``quantum(cutoff)`` method."""
    own = getattr(state, "quantum", None)
    if callable(own):
        out = own(cutoff)
        if not isinstance(out, qt.Qobj):
            raise TypeError(f"{type(state).__name__}.quantum(cutoff) must return a qutip.Qobj, got {type(out).__name__}")
        return out
    spins, bosons = split_state(state)
    factors = []
    for p in spins:
        if isinstance(p, SpinHalfState):
            factors += [spin_ket(d) for d in np.asarray(p.directions)]
        else:
            factors += [spin_coherent_ket(p.S, d) for d in np.asarray(p.directions)]
    alpha, n_th = boson_params(state)
    if len(alpha) and cutoff is None:
        raise ValueError("a state with boson modes needs a cutoff")
    factors += [boson_dm(a, n, cutoff) for a, n in zip(alpha, n_th)]
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
    g = g.astype(np.result_type(g, np.float64))  # a float32 Gamma (JAX with x64 off) in double precision
    check_gamma_matrix(g, "gamma")
    if g.ndim == 1:
        return [np.sqrt(r) * op for r, op in zip(g, L) if r > 0]
    w, v = np.linalg.eigh(g)
    check_psd(w, g.dtype)  # a negative eigenvalue would otherwise be dropped silently
    keep = w > 1e-12 * max(np.max(np.abs(w)), 1e-300)
    out = []
    for k in np.flatnonzero(keep):
        c = sum(np.conj(v[i, k]) * L[i] for i in range(len(L)) if v[i, k] != 0)
        out.append(np.sqrt(w[k]) * c)
    return out


def as_numpy_params(params):
    """Concrete NumPy values of a parameter dict (exact solvers do not trace)."""
    return {k: np.asarray(v) for k, v in params.items()}


# ----------------------------------------------------------------------------- the derived twin
def twin(model, params=None, *, cutoff: int | None = 20, observables=None, t: float = 0.0) -> QuantumModel:
    """The exact quantum twin of ``model``, read off its own functions (full Hilbert space).

    The Hamiltonian, the jump operators and the observables are read as polynomials in the spin
    components and boson amplitudes by automatic differentiation, and quantized in the symmetric
    (Weyl) ordering TWA uses: spin components become Pauli matrices (``spin_S=None``) or spin-S
    operators, a product on one site becomes the symmetrized product of its operators (for
    spin-1/2, ``s^a s^b -> delta_ab``), a boson monomial becomes the symmetrized product of ``a``
    and ``a^dag``, built exactly in ``cutoff + 1`` Fock levels. Gamma is used as given.

    Args:
        model: any :class:`~twa_jax.Model`.
        params: parameter overrides, as for :func:`~twa_jax.simulate`.
        cutoff: highest Fock level per boson mode (ignored without bosons).
        observables: ``{name: f(spins, bosons)}`` as for :func:`~twa_jax.simulate` (default: the
            model's own, else ``sx, sy, sz`` and ``n``).
        t: the time at which a time-dependent model's operators are taken (:func:`solve`
            follows them in time).

    Returns:
        A :class:`QuantumModel` with ``basis="full"``; its ``H``, ``c_ops`` and ``observables``
        are ordinary QuTiP operators (spins first, then boson modes).

    Raises:
        ValueError: a function that is not a polynomial (or of too high a degree); the message
            names it and says to write ``quantum=`` by hand. A Hilbert space larger than
            :data:`MAX_TWIN_DIM` allows (nothing is built).
    """
    p = _checked_params(model, params)
    N, M, S = model.n_spins, model.n_bosons, model.spin_S
    cut = cutoff if M else None
    _check_twin_dim(model, cutoff if M else 1, "mcsolve")  # the largest space any method can use
    model.check({k: jnp.asarray(v) for k, v in p.items()})
    obs = observables if observables is not None else (model.observables or default_observables(N, M))
    fns = {"Hamiltonian": lambda s, a: model.H(s, a, p, t)}
    if model.jumps is not None:
        fns["jump operators"] = lambda s, a: model.L(s, a, p, t)
    fns.update({f"observable {name!r}": f for name, f in obs.items()})
    ops = {k: quantize(poly, S, cut) for k, poly in polynomials(fns, N, M).items()}
    H = ops["Hamiltonian"][()]
    H = (H + H.dag()) / 2  # rounding only: the symbol is real
    c_ops = ()
    if model.jumps is not None:
        L = list(np.ravel(ops["jump operators"]))
        with jax.enable_x64(True):  # the rates in double precision, as the rest of the twin
            gam = np.asarray(model.gamma_of(p, t))
        c_ops = tuple(collapse_operators(L, gam))
    qobs = {}
    for name, f in obs.items():
        o = ops[f"observable {name!r}"]
        out = jax.eval_shape(lambda s, a, f=f: jnp.asarray(f(s, a)), jnp.zeros((N, 3)), jnp.zeros(M, complex))
        if not jnp.issubdtype(out.dtype, jnp.complexfloating):
            o = np.vectorize(lambda x: (x + x.dag()) / 2, otypes=[object])(o)  # real symbol: Hermitian
        qobs[name] = o[()] if o.shape == () else o
    dims = space_dims(N, M, S, cut or 0)
    tops = []
    for m in range(M):
        factors = [qt.qeye(d) for d in dims]
        factors[N + m] = qt.fock_dm(cut + 1, cut)
        tops.append(qt.tensor(factors))
    return QuantumModel(H, c_ops, qobs, lambda state: state_twin(state, cut), "full", None, cut, tuple(tops),
                        mode_dims(obs))


def _checked_params(model, params):
    p = as_numpy_params(model.with_params(params))
    for k, v in p.items():
        if not np.all(np.isfinite(v)):
            raise ValueError(f"parameter {k!r} is not finite: {v}")
    return p


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
    """``(names, operators)``: ``names`` lists ``(name, shape, is_complex)`` in order (``shape``
    ``()`` for one operator, ``(k,)`` for a list, any shape for an object array); the operators
    end with the projectors on each boson mode's top Fock level (cutoff check)."""
    names, flat = [], []
    for name, op in qm.observables.items():
        arr = np.empty((), object)
        if isinstance(op, qt.Qobj):
            arr[()] = op
        else:
            arr = np.empty(len(op), object) if isinstance(op, (list, tuple)) else np.asarray(op, object)
            if isinstance(op, (list, tuple)):
                arr[:] = list(op)
        ops = list(arr.ravel())
        names.append((name, arr.shape, not all(o.isherm for o in ops)))
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
    vals = W @ sol.y  # (n_ops, n_times), complex
    return names, vals, {"dim": A.shape[0], "reachable": len(idx), "nfev": sol.nfev}


def _mcsolve(qm: QuantumModel, psi0: qt.Qobj, ts, n_traj, seed):
    if not qm.c_ops:
        raise ValueError("method='mcsolve' needs dissipation (this model has no jump with a nonzero rate); use method='full'")
    if not psi0.isket:
        raise ValueError("method='mcsolve' needs a pure initial state (no thermal bosons)")
    names, flat = _flatten_observables(qm)
    res = qt.mcsolve(
        qm.H, psi0, ts, list(qm.c_ops), e_ops=flat, ntraj=n_traj, seeds=seed,
        options={"progress_bar": False, "keep_runs_results": True, "store_states": False},
    )
    runs = np.asarray(res.runs_expect)  # (n_ops, n_traj, n_times)
    mean = runs.mean(1)
    sem = np.sqrt(np.var(runs.real, 1, ddof=1) + np.var(runs.imag, 1, ddof=1)) / np.sqrt(runs.shape[1])
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


def _twin_dim(model, cutoff):
    """The Hilbert-space dimension of the model's twin at this boson ``cutoff``."""
    d = 2 if model.spin_S is None else int(round(2 * model.spin_S + 1))
    return d**model.n_spins * (int(cutoff) + 1) ** model.n_bosons


def _check_twin_dim(model, cutoff, method):
    """Refuse a twin read off the functions whose Hilbert space is out of reach for ``method``."""
    dim = _twin_dim(model, cutoff)
    most = MAX_TWIN_DIM["mcsolve" if method == "mcsolve" else "full"]
    if dim > most:
        other = (" or method='mcsolve' (quantum trajectories, up to dimension "
                 f"{MAX_TWIN_DIM['mcsolve']})") if method != "mcsolve" and dim <= MAX_TWIN_DIM["mcsolve"] else ""
        raise ValueError(
            f"the exact twin of this model lives on a Hilbert space of dimension {dim} ({model.n_spins} spins"
            + (f", {model.n_bosons} modes at cutoff {cutoff}" if model.n_bosons else "")
            + f"), beyond the {most} that method={method!r} can handle; use fewer spins{other}"
            + (", a smaller cutoff" if model.n_bosons else "")
            + ", or a built-in permutation-symmetric model with method='piqs'")


def solve(
    model,
    initial,
    ts,
    *,
    params=None,
    observables=None,
    method: str = "auto",
    cutoff: int | None = None,
    quantum: Callable | None = None,
    n_traj: int | None = None,
    seed: int | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    pulses=None,
) -> Result:
    """Exact solution of a model's master equation, as a :class:`~twa_jax.Result`.

    The quantum model is, in this order: ``quantum`` (if given), the model's own ``quantum`` hook
    (the built-in ensembles offer ``basis="piqs"``), else the twin read off the model's functions
    (:func:`twin`, full Hilbert space).

    Args:
        model: any :class:`~twa_jax.Model` whose Hamiltonian, jump operators and observables are
            polynomials in the spin components and boson amplitudes, or one with a ``quantum``
            hook.
        initial: the same :mod:`twa_jax.states` state given to :func:`~twa_jax.simulate`
            (spin-1/2 product states in any directions, spin-S coherent states, vacuum, coherent
            and thermal bosons, and their products; a state of your own with a ``quantum(cutoff)``
            method).
        ts: ``(n_times,)`` increasing save times.
        params: parameter overrides, as for :func:`~twa_jax.simulate`.
        observables: ``{name: f(spins, bosons)}`` as for :func:`~twa_jax.simulate` (default: the
            model's own); quantized like the model (full basis only).
        method: ``"full"``, ``"piqs"``, ``"mcsolve"`` or ``"auto"`` (full space up to dimension
            2048, else PIQS when the model offers it).
        cutoff: highest Fock level kept per boson mode (default 20). The population of the top
            level is checked: above 1e-6 a ``RuntimeError`` asks for a larger cutoff.
        quantum: a hand-written twin ``quantum(params, basis, cutoff) -> QuantumModel`` (return
            ``None`` for a basis it does not build), for models that are not polynomial.
        n_traj: quantum trajectories for ``method="mcsolve"`` (default 500).
        seed: seed of ``mcsolve`` (default 0).
        rtol, atol: tolerances of the density-matrix integration (DOP853; default 1e-8 and 1e-10),
            for ``"full"``, ``"piqs"`` and ``"auto"``.
        pulses: a list of :class:`~twa_jax.Pulse`, as for :func:`~twa_jax.simulate`: each
            applied as ``rho -> U rho U^dag``, ``U = exp(-i angle G)`` with ``G`` the quantized
            generator; a save at a pulse's time records the state after it. A time-dependent
            model (``time_dependent=True``) is followed in time: the coefficients of its
            quantized Hamiltonian, jump operators and Gamma are functions of time. Both need the
            twin read off the model's functions (``method="full"``).

    Returns:
        A :class:`~twa_jax.Result` with ``method="exact-full"``, ``"exact-piqs"`` (``sem`` zero)
        or ``"mcsolve"`` (``sem`` the trajectory standard error, ``n_traj`` the trajectories).
        Observables whose operators are not Hermitian (complex symbols) have complex means.
        ``ts``, ``mean`` and ``sem`` are NumPy arrays in double precision (float64, complex128)
        whatever JAX's x64 setting.

    Raises:
        ValueError: an unknown ``method``, bad ``ts``/``cutoff``/``n_traj``/parameters, an
            option the method does not use (:data:`METHOD_OPTIONS`: ``n_traj`` and ``seed`` are
            for ``"mcsolve"`` only, ``rtol`` and ``atol`` for the density-matrix methods only),
            a function that is not a polynomial (pass ``quantum=``), ``method="piqs"`` for a
            model without a PIQS twin, or a Gamma that :func:`~twa_jax.simulate` refuses (a
            negative rate; for a time-dependent model, at any time of the run).
        TypeError: an initial state without a quantum twin.
    """
    t_start = time.perf_counter()
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    ts = np.asarray(ts, float)
    if ts.ndim != 1 or ts.size < 2 or np.any(np.diff(ts) <= 0) or not np.all(np.isfinite(ts)):
        raise ValueError("ts must be a 1-D strictly increasing array of at least two finite times")
    check_options(method, n_traj=n_traj, seed=seed, rtol=rtol, atol=atol)
    if quantum is not None and not callable(quantum):
        raise TypeError(f"quantum must be a function quantum(params, basis, cutoff), got {quantum!r}")
    seed = 0 if seed is None else seed
    rtol = 1e-8 if rtol is None else rtol
    atol = 1e-10 if atol is None else atol
    if cutoff is None:
        cutoff = 20
    if isinstance(cutoff, bool) or not isinstance(cutoff, (int, np.integer)) or cutoff < 1:
        raise ValueError(f"cutoff must be a positive int, got {cutoff!r}")
    p = _checked_params(model, params)
    hook = quantum if quantum is not None else getattr(model, "quantum", None)
    auto = method == "auto"
    if auto:
        method = "full" if _twin_dim(model, cutoff) <= AUTO_FULL_DIM or hook is None else "piqs"
    protocol = model.time_dependent or bool(pulses)
    if protocol:  # the twin is read off the functions, with coefficients in time
        if method not in ("auto", "full") or quantum is not None:
            raise ValueError(
                "a time-dependent model or pulses need the twin read off the model's functions: "
                f"method='full' (got method={method!r}{', and quantum=' if quantum is not None else ''})"
            )
        pulses = check_pulses(pulses, model, {k: jnp.asarray(v) for k, v in p.items()}, initial, ts, default_float())
        method, hook = "full", None
    basis = "piqs" if method == "piqs" else "full"
    qm = hook(p, basis=basis, cutoff=int(cutoff)) if hook is not None else None
    if qm is None and basis == "piqs" and auto:  # the hook has no Dicke-basis twin: the full space
        method = basis = "full"
        qm = hook(p, basis=basis, cutoff=int(cutoff))
    if qm is not None and observables is not None:
        raise ValueError(
            "observables= needs the twin read off the model's functions; this model's hand-written "
            f"quantum twin ({basis} basis) offers only its own observables {sorted(qm.observables)}"
        )
    if qm is None:
        if basis == "piqs":
            raise ValueError(
                "method='piqs' needs a permutation-symmetric twin in the Dicke basis, which only the "
                "built-in ensembles (tavis_cummings, central_spin, dicke) offer; use method='full' "
                "(small N) or method='mcsolve'"
            )
        _check_twin_dim(model, cutoff, method)
        if observables is not None:
            warn_same_site(model, p, observables)
        qm = twin(model, p, cutoff=int(cutoff), observables=observables, t=float(ts[0]))
    rho0 = qm.initial(initial)
    want = qm.H.dims[0]
    if rho0.dims[0] != want:
        raise ValueError(
            f"the initial state's twin lives on a space of dims {rho0.dims[0]}, the model's on {want}: "
            f"the state does not fit the model (n_spins={model.n_spins}, n_bosons={model.n_bosons}, "
            f"spin_S={model.spin_S})"
        )
    n_top = len(qm.boson_top)
    if method == "mcsolve":
        n_traj = 500 if n_traj is None else n_traj
        if isinstance(n_traj, bool) or not isinstance(n_traj, (int, np.integer)) or n_traj < 2:
            raise ValueError(f"n_traj must be an int >= 2, got {n_traj!r}")
        names, vals, sems = _mcsolve(qm, rho0, ts, int(n_traj), seed)
        info = {}
    elif protocol:
        from ._exact_protocol import solve_protocol  # it imports from this module: a real circle

        names, vals, info = solve_protocol(model, qm, p, rho0, ts, pulses, int(cutoff), rtol, atol)
        sems = np.zeros(vals.shape)
    else:
        names, vals, info = _solve_liouvillian(qm, rho0, ts, rtol, atol)
        sems = np.zeros(vals.shape)
    if n_top:
        top = vals[-n_top:].real.max()
        if top > 1e-6:
            raise RuntimeError(
                f"the top Fock level (cutoff={cutoff}) reaches population {top:.2g}; raise cutoff"
            )
    mean, sem, i = {}, {}, 0
    for name, shape, is_complex in names:
        k = int(np.prod(shape))
        m, s = vals[i : i + k].T, sems[i : i + k].T  # (n_times, k)
        mean[name] = (m if is_complex else m.real).reshape((len(ts),) + shape)
        sem[name] = s.reshape((len(ts),) + shape)
        i += k
    # NumPy float64/complex128 whatever JAX's x64 setting: the solver computed in double precision,
    # and jnp.asarray would round to float32 with x64 off
    return Result(
        ts=np.asarray(ts, float),
        mean={k: np.asarray(v) for k, v in mean.items()},
        sem={k: np.asarray(v, float) for k, v in sem.items()},
        n_traj=int(n_traj) if method == "mcsolve" else 0,
        method=f"exact-{method}" if method != "mcsolve" else "mcsolve",
        solver="qutip.mcsolve" if method == "mcsolve" else f"DOP853 on {info['reachable']} of {info['dim']} components",
        params={k: np.asarray(v) for k, v in p.items()},
        wall_time=time.perf_counter() - t_start,
        dims=qm.dims,
    )


from ._exact_correlation import correlation as correlation, spectrum as spectrum  # noqa: E402
