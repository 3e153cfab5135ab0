"""The paper's models (Sec. III), each a :class:`~twa_jax.Model` with default parameters named as
in the paper, its own observables, and its exact quantum counterpart built from the same
parameters. Their exact twins in the full Hilbert space are read off these functions by
:func:`twa_jax.exact.twin`, like any model's; the ensembles (Tavis-Cummings, central spin, Dicke)
add a hand-written twin in the permutation-symmetric basis (``model.quantum(params, "piqs",
cutoff)``) for large N.

Conventions (``docs/conventions.md``, "Master equation" and "Spin normalization"): Pauli
matrices, ``sigma^- = (sigma^x - i sigma^y)/2``, jump operators ``L_i`` with dissipation matrix
``Gamma``. Spins are ``(n_spins, 3)`` classical vectors ``s``; the Weyl symbol of
``sigma_i^+ sigma_j^-`` (``i != j``) is ``conj(s_i^-) s_j^-``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .._forms import quadratic_form
from .._model import Model
from .._observables import boson_number, spin_x, spin_y, spin_z
from ._dipole import dipole_couplings


# ----------------------------------------------------------------------------- classical pieces
def _sm(s):
    """``s^- = (s^x - i s^y)/2`` of every spin."""
    return (s[:, 0] - 1j * s[:, 1]) / 2


def _sp(s):
    return (s[:, 0] + 1j * s[:, 1]) / 2


def _per_site(x, n):
    """A scalar parameter or one value per site, as an ``(n,)`` array."""
    x = jnp.asarray(x)
    return jnp.broadcast_to(x, (n,))


def _check_params(params: dict, n: int, per_site=(), rates=()):
    """Validate default parameters: finite, scalars or ``(n,)`` for per-site ones, rates >= 0."""
    out = {}
    for k, v in params.items():
        a = np.asarray(v, dtype=float)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"parameter {k!r} must be finite, got {v!r}")
        if a.ndim and not (k in per_site and a.shape == (n,)):
            allowed = f"a scalar or shape ({n},)" if k in per_site else "a scalar"
            raise ValueError(f"parameter {k!r} must be {allowed}, got shape {a.shape}")
        if k in rates and np.any(a < 0):
            raise ValueError(f"rate {k!r} must be >= 0, got {v!r}")
        out[k] = jnp.asarray(a)
    return out


def _check_n(n, name="n", minimum=1):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {n!r}")
    return int(n)


def site_average(k):
    """Observable: the site average of spin component ``k`` over all but the first spin
    (the satellites of the central-spin model)."""
    def f(s, a):
        return jnp.mean(s[1:, k])
    f.linear_per_site = True
    return f


def central(k):
    """Observable: component ``k`` of the first (central) spin."""
    def f(s, a):
        return s[0, k]
    f.linear_per_site = True
    return f


def excitation(s, a):
    """Mean excited population ``(1 + <sigma^z>)/2`` per site (site-averaged)."""
    return (1 + jnp.mean(s[:, 2])) / 2


excitation.linear_per_site = True

def emission_rate(gamma_unit):
    r"""Observable: the normalized emission rate of Eq. (61),

    .. math:: R = \frac{1}{N\Gamma_0}\Big[\sum_{ij}\Gamma_{ij}\,\overline{s_i^+ s_j^-}
              + \frac{\Gamma_0}{2}\sum_i \overline{s_i^z}\Big],

    with ``gamma_unit = Gamma / Gamma_0`` (geometry only). The diagonal is kept as written
    (``docs/conventions.md``, "Emission rate (Eq. 61)")."""
    G = jnp.asarray(gamma_unit)

    def f(s, a):
        return (quadratic_form(G, _sm(s)) + 0.5 * jnp.sum(s[:, 2])) / s.shape[0]

    return f


SPIN_OBSERVABLES = {"sx": spin_x, "sy": spin_y, "sz": spin_z}


# ----------------------------------------------------------------------------- quantum pieces
def _exact():
    from .. import exact  # QuTiP is needed only here

    return exact


def _qt():
    import qutip

    return qutip


def _homogeneous(p, names, model):
    for k in names:
        if np.ndim(p[k]) and not np.allclose(p[k], np.ravel(p[k])[0]):
            raise ValueError(
                f"basis='piqs' needs identical spins, but {k!r} differs between sites; "
                f"use method='full' (small N) for the inhomogeneous {model}"
            )
    return {k: float(np.ravel(p[k])[0]) for k in names}


def _ensemble_piqs(n, other, init_other, emission, pumping, collective=0.0):
    """Spin ensemble in the Dicke basis (first tensor factor) times a space of dimension ``other``
    (or nothing): returns the collective operators ``(jx, jy, jz, j-)`` on the product space, a
    function embedding an operator of the other space, PIQS's Liouvillian of the ensemble, and the
    initial-state builder (``init_other(state, directions)`` gives the other factor)."""
    qt = _qt()
    from qutip import piqs

    Ld = piqs.Dicke(n, emission=emission, pumping=pumping, collective_emission=collective).liouvillian()
    jx, jy, jz = piqs.jspin(n)
    jm = piqs.jspin(n, "-")
    if other is None:
        J = (jx, jy, jz, jm)
        wrap = lambda x: x  # noqa: E731
    else:
        eo = qt.qeye(other)
        J = tuple(qt.tensor(j, eo) for j in (jx, jy, jz, jm))
        nd = jz.shape[0]
        wrap = lambda x: qt.tensor(qt.qeye(nd), x)  # noqa: E731
    ex = _exact()

    def initial(state):
        d = ex.spin_directions(state)
        rho_d = ex.dicke_initial(d[-n:])
        if other is None:
            return rho_d
        r = init_other(state, d)
        return qt.tensor(rho_d, r if not r.isket else qt.ket2dm(r))

    return J, wrap, Ld, initial


def _ensemble_params(n, omega, eps, g, kappa, gamma_down, gamma_up):
    """Parameters common to the Tavis-Cummings and central-spin models."""
    return _check_params(
        dict(omega=omega, eps=eps, g=g, kappa=kappa, gamma_down=gamma_down, gamma_up=gamma_up),
        n, per_site=("eps", "g", "gamma_down", "gamma_up"), rates=("kappa", "gamma_down", "gamma_up"),
    )


def _ensemble_rates(p, n):
    """Diagonal Gamma of ``L = (mode or central spin, sigma_i^-, sigma_i^+)``."""
    return jnp.concatenate(
        [jnp.atleast_1d(p["kappa"]), _per_site(p["gamma_down"], n), _per_site(p["gamma_up"], n)]
    ).astype(float)


# ----------------------------------------------------------------------------- the models
def driven_spin(Omega=1.0, gamma_down=0.0, gamma_up=0.0, kappa=0.0) -> Model:
    r"""One driven spin-1/2 with decay, pumping and dephasing (paper Sec. III B, Eqs. 17-21).

    :math:`H = \Omega\sigma^x`, :math:`L = (\sigma^-, \sigma^+, \sigma^z)` with
    :math:`\Gamma = \mathrm{diag}(\gamma_\downarrow, \gamma_\uparrow, \kappa)`.

    Args:
        Omega, gamma_down, gamma_up, kappa: default parameters (override them in ``params=``).

    Returns:
        A :class:`~twa_jax.Model` with observables ``sx, sy, sz``.
    """
    params = _check_params(
        dict(Omega=Omega, gamma_down=gamma_down, gamma_up=gamma_up, kappa=kappa),
        1, rates=("gamma_down", "gamma_up", "kappa"),
    )

    def H(s, a, p):
        return p["Omega"] * s[0, 0]

    def L(s, a, p):
        return jnp.stack([_sm(s)[0], _sp(s)[0], s[0, 2].astype(_sm(s).dtype)])

    def gamma(p):
        return jnp.stack([p["gamma_down"], p["gamma_up"], p["kappa"]]).astype(float)

    return Model(H, jumps=L, gamma=gamma, n_spins=1, params=params, observables=SPIN_OBSERVABLES)


def tavis_cummings(n: int, omega=1.0, eps=1.0, g=1.0, kappa=1.0, gamma_down=0.0, gamma_up=0.0) -> Model:
    r"""Tavis-Cummings model: ``n`` two-level atoms in a lossy cavity (paper Eq. 28).

    .. math:: H = \omega a^\dagger a + \sum_i \frac{\epsilon_i}{2}\sigma_i^z
              + \sum_i \frac{g_i}{\sqrt N}(a^\dagger\sigma_i^- + a\sigma_i^+)

    with :math:`L = (a, \sigma_i^-, \sigma_i^+)` at rates :math:`(\kappa, \gamma_\downarrow,
    \gamma_\uparrow)`. ``eps``, ``g``, ``gamma_down`` and ``gamma_up`` may be ``(n,)`` arrays
    (inhomogeneous ensemble; the exact reference then needs ``method="full"``).

    Returns:
        A :class:`~twa_jax.Model` (``n`` spins, one mode) with observables ``sx, sy, sz``
        (site-averaged) and ``n`` (``<a^dag a>``, shape ``(1,)``).
    """
    n = _check_n(n)
    params = _ensemble_params(n, omega, eps, g, kappa, gamma_down, gamma_up)

    def H(s, a, p):
        eps_, g_ = _per_site(p["eps"], n), _per_site(p["g"], n)
        return (
            p["omega"] * jnp.abs(a[0]) ** 2
            + jnp.sum(eps_ * s[:, 2]) / 2
            + 2 * jnp.real(jnp.conj(a[0]) * jnp.sum(g_ * _sm(s))) / np.sqrt(n)
        )

    def L(s, a, p):
        return jnp.concatenate([a[:1], _sm(s), _sp(s)])

    def gamma(p):
        return _ensemble_rates(p, n)

    def quantum(p, basis="full", cutoff=20):
        """The Dicke-basis twin (``basis="piqs"``); ``None`` for the full space."""
        ex, qt = _exact(), _qt()
        top = qt.fock_dm(cutoff + 1, cutoff)
        if basis == "piqs":
            h = _homogeneous(p, ("eps", "g", "gamma_down", "gamma_up"), "Tavis-Cummings model")
            a = qt.destroy(cutoff + 1)

            def init_cavity(state, d):
                alpha, n_th = ex.boson_params(state)
                return ex.boson_dm(alpha[0], n_th[0], cutoff)

            (jx, jy, jz, jm), wrap, Ld, initial = _ensemble_piqs(
                n, cutoff + 1, init_cavity, h["gamma_down"], h["gamma_up"]
            )
            A = wrap(a)
            Hq = float(p["omega"]) * A.dag() * A + h["eps"] * jz + h["g"] / np.sqrt(n) * (A.dag() * jm + A * jm.dag())
            obs = {"sx": 2 * jx / n, "sy": 2 * jy / n, "sz": 2 * jz / n, "n": [A.dag() * A]}
            return ex.QuantumModel(Hq, (np.sqrt(float(p["kappa"])) * A,), obs, initial, "piqs", Ld, cutoff, (wrap(top),),
                                   {"n": ("mode",)})
        return None  # the full space: the twin read off H, L and the observables

    return Model(
        H, jumps=L, gamma=gamma, n_spins=n, n_bosons=1, params=params,
        observables={**SPIN_OBSERVABLES, "n": boson_number}, quantum=quantum,
    )


def central_spin(n: int, omega=1.0, eps=1.0, g=1.0, kappa=1.0, gamma_down=0.0, gamma_up=0.0) -> Model:
    r"""Central-spin model: one spin :math:`\tau` coupled to ``n`` satellites (paper Eq. 37).

    .. math:: H = \frac{\omega}{2}\tau^z + \sum_i \frac{\epsilon_i}{2}\sigma_i^z
              + \sum_i \frac{g_i}{\sqrt N}(\tau^+\sigma_i^- + \tau^-\sigma_i^+)

    with :math:`L = (\tau^-, \sigma_i^-, \sigma_i^+)` at rates :math:`(\kappa, \gamma_\downarrow,
    \gamma_\uparrow)`. Spin 0 is the central spin, spins ``1..n`` the satellites; build the initial
    state as ``tw.states.product(spins=[central_state, satellites_state])``.

    Returns:
        A :class:`~twa_jax.Model` with ``n + 1`` spins and observables ``tau_x, tau_y, tau_z``
        (central spin) and ``sx, sy, sz`` (satellite averages).
    """
    n = _check_n(n)
    params = _ensemble_params(n, omega, eps, g, kappa, gamma_down, gamma_up)

    def H(s, a, p):
        eps_, g_ = _per_site(p["eps"], n), _per_site(p["g"], n)
        tau_p = _sp(s[:1])[0]
        return (
            p["omega"] / 2 * s[0, 2]
            + jnp.sum(eps_ * s[1:, 2]) / 2
            + 2 * jnp.real(tau_p * jnp.sum(g_ * _sm(s[1:]))) / np.sqrt(n)
        )

    def L(s, a, p):
        return jnp.concatenate([_sm(s[:1]), _sm(s[1:]), _sp(s[1:])])

    def gamma(p):
        return _ensemble_rates(p, n)

    obs = {"tau_x": central(0), "tau_y": central(1), "tau_z": central(2)}
    obs.update({"sx": site_average(0), "sy": site_average(1), "sz": site_average(2)})

    def quantum(p, basis="full", cutoff=None):
        """The Dicke-basis twin (``basis="piqs"``); ``None`` for the full space."""
        ex, qt = _exact(), _qt()
        if basis == "piqs":
            h = _homogeneous(p, ("eps", "g", "gamma_down", "gamma_up"), "central-spin model")

            def init_central(state, d):
                return ex.spin_ket(d[0])

            (jx, jy, jz, jm), wrap, Ld, initial = _ensemble_piqs(
                n, 2, init_central, h["gamma_down"], h["gamma_up"]
            )
            tx, ty, tz = wrap(qt.sigmax()), wrap(qt.sigmay()), wrap(qt.sigmaz())
            tm = wrap(qt.sigmam())
            Hq = float(p["omega"]) / 2 * tz + h["eps"] * jz + h["g"] / np.sqrt(n) * (tm.dag() * jm + tm * jm.dag())
            obsq = {"tau_x": tx, "tau_y": ty, "tau_z": tz, "sx": 2 * jx / n, "sy": 2 * jy / n, "sz": 2 * jz / n}
            return ex.QuantumModel(Hq, (np.sqrt(float(p["kappa"])) * tm,), obsq, initial, "piqs", Ld)
        return None  # the full space: the twin read off H, L and the observables

    return Model(H, jumps=L, gamma=gamma, n_spins=n + 1, params=params, observables=obs, quantum=quantum)


def rydberg_chain(n: int, Omega=1.0, J=1.0, kappa=0.0, gamma_down=0.0, boundary: str = "periodic") -> Model:
    r"""Driven Rydberg chain with dephasing and decay (paper Eq. 45).

    .. math:: H = \Omega\sum_i\sigma_i^x + \frac J4\sum_{\langle ij\rangle}(1+\sigma_i^z)(1+\sigma_j^z)

    over nearest-neighbour bonds (a ring for ``boundary="periodic"``, ``n >= 3``), with
    :math:`L = (\sigma_i^-, \sigma_i^z)` at rates :math:`(\gamma_\downarrow, \kappa)`.

    Returns:
        A :class:`~twa_jax.Model` with observables ``sx, sy, sz``.
    """
    if boundary not in ("periodic", "open"):
        raise ValueError(f"boundary must be 'periodic' or 'open', got {boundary!r}")
    n = _check_n(n, minimum=3 if boundary == "periodic" else 2)
    params = _check_params(dict(Omega=Omega, J=J, kappa=kappa, gamma_down=gamma_down), n, rates=("kappa", "gamma_down"))
    periodic = boundary == "periodic"

    def H(s, a, p):
        nz = 1 + s[:, 2]
        # bonds (i, i + 1) as slices (a roll for the ring): index arrays would make the gradient a
        # scatter-add, which XLA:CPU runs as a scalar loop
        bonds = nz * jnp.roll(nz, -1) if periodic else nz[:-1] * nz[1:]
        return p["Omega"] * jnp.sum(s[:, 0]) + p["J"] / 4 * jnp.sum(bonds)

    def L(s, a, p):
        sm = _sm(s)
        return jnp.concatenate([sm, s[:, 2].astype(sm.dtype)])

    def gamma(p):
        return jnp.concatenate([_per_site(p["gamma_down"], n), _per_site(p["kappa"], n)]).astype(float)

    return Model(H, jumps=L, gamma=gamma, n_spins=n, params=params, observables=SPIN_OBSERVABLES)


def chain_positions(n: int, spacing: float, axis=(1.0, 0.0, 0.0)) -> np.ndarray:
    """``(n, 3)`` positions of a straight chain with lattice constant ``spacing`` along ``axis``."""
    n = _check_n(n)
    try:
        ok = not isinstance(spacing, bool) and np.ndim(spacing) == 0 and np.isfinite(float(spacing)) and float(spacing) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"spacing must be a positive finite number, got {spacing!r}")
    ax = np.asarray(axis, float)
    if ax.shape != (3,) or not np.all(np.isfinite(ax)) or not np.any(ax):
        raise ValueError(f"axis must be a non-zero finite 3-vector, got {axis!r}")
    return np.arange(n)[:, None] * spacing * ax / np.linalg.norm(ax)


def dipole_array(positions, wavelength=1.0, dipole=(0.0, 0.0, 1.0), Gamma0=1.0, Omega=0.0, omega_z=0.0) -> Model:
    r"""Driven atoms in free space with correlated decay (paper Eqs. 50-56; ``docs/conventions.md``,
    "Atoms in free space").

    .. math:: H = \omega_z\sum_i\sigma_i^z + \Omega\sum_i\sigma_i^x + \sum_{i\ne j}J_{ij}\sigma_i^+\sigma_j^-,
              \quad L_i = \sigma_i^-,\ \Gamma_{ij}\ \text{dense}

    with ``(Gamma, J) = Gamma0 * dipole_couplings(positions, wavelength, dipole, 1)``. The geometry
    is fixed when the model is built; ``Gamma0``, ``Omega`` and ``omega_z`` are parameters.

    Args:
        positions: ``(..., 3)`` atom positions (any arrangement), in units of ``wavelength``'s
            length unit; :func:`chain_positions` builds a chain.
        wavelength: the transition wavelength.
        dipole: dipole vector (normalized; complex for circular polarization). The default ``z``
            is perpendicular to a chain along ``x``.
        Gamma0, Omega, omega_z: default parameters.

    Returns:
        A :class:`~twa_jax.Model` with observables ``sx, sy, sz``, ``excitation``
        (``(1 + <sigma^z>)/2``, site-averaged) and ``emission_rate`` (Eq. 61).
    """
    G_unit, J_unit = (np.asarray(x) for x in dipole_couplings(np.asarray(positions, float), wavelength, np.asarray(dipole), 1.0))
    n = G_unit.shape[0]
    params = _check_params(dict(Gamma0=Gamma0, Omega=Omega, omega_z=omega_z), n, rates=("Gamma0",))
    return _correlated_decay(n, G_unit, J_unit, params, "Gamma0")


def dicke(n: int, gamma=1.0, Omega=0.0, omega_z=0.0) -> Model:
    r"""Fully collective (Dicke) decay of ``n`` spins: :math:`\Gamma_{ij} = \gamma` for all
    ``i, j`` (rank one, so one noise channel), :math:`L_i = \sigma_i^-`,
    :math:`H = \omega_z\sum_i\sigma_i^z + \Omega\sum_i\sigma_i^x`. Quantum mechanically this is the
    single jump operator :math:`\sqrt\gamma\sum_i\sigma_i^-` (PIQS ``collective_emission``).

    Returns:
        A :class:`~twa_jax.Model` with observables ``sx, sy, sz``, ``excitation`` and
        ``emission_rate`` (Eq. 61 with ``Gamma_0 = gamma``).
    """
    n = _check_n(n)
    params = _check_params(dict(gamma=gamma, Omega=Omega, omega_z=omega_z), n, rates=("gamma",))
    return _correlated_decay(n, np.ones((n, n)), np.zeros((n, n)), params, "gamma", piqs_collective=True)


def _correlated_decay(n, G_unit, J_unit, params, rate, piqs_collective=False) -> Model:
    """Shared body of :func:`dipole_array` and :func:`dicke`: ``Gamma = rate * G_unit``."""
    Gu, Ju = jnp.asarray(G_unit), jnp.asarray(J_unit)

    def H(s, a, p):
        hop = p[rate] * quadratic_form(Ju, _sm(s))  # sum_ij J_ij s_i^+ s_j^-, one product in its gradient
        return p["omega_z"] * jnp.sum(s[:, 2]) + p["Omega"] * jnp.sum(s[:, 0]) + hop

    def L(s, a, p):
        return _sm(s)

    def gamma(p):
        return p[rate] * Gu

    obs = {**SPIN_OBSERVABLES, "excitation": excitation, "emission_rate": emission_rate(G_unit)}

    def quantum(p, basis="full", cutoff=None):
        """Fully collective decay in the Dicke basis (``basis="piqs"``); ``None`` for the full space."""
        if basis != "piqs":
            return None  # the full space: the twin read off H, L and the observables
        ex, r = _exact(), float(p[rate])
        (jx, jy, jz, jm), _, Ld, initial = _ensemble_piqs(n, None, None, 0.0, 0.0, collective=r)
        Hq = float(p["omega_z"]) * 2 * jz + float(p["Omega"]) * 2 * jx
        obsq = {"sx": 2 * jx / n, "sy": 2 * jy / n, "sz": 2 * jz / n, "excitation": (1 + 2 * jz / n) / 2}
        obsq["emission_rate"] = jm.dag() * jm / n
        return ex.QuantumModel(Hq, (), obsq, initial, "piqs", Ld)

    # Eq. 61 keeps its same-site (diagonal) terms on purpose (docs/conventions.md, "Emission rate")
    return Model(H, jumps=L, gamma=gamma, n_spins=n, params=params, observables=obs,
                 quantum=quantum if piqs_collective else None, allow_same_site=("emission_rate",))
