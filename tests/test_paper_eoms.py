"""Autodiff equations of motion against right-hand sides transcribed from the paper.

Hosseinabadi, Chelpanova, Marino, PRX Quantum 6, 030344 (2025): Table I, Eqs. 18-20 (driven spin), 29-32
(Tavis-Cummings), 38-43 (central spin), 46-48 (Rydberg chain), 56-57 (correlated decay).

Every hand-written function below is copied from the paper's printed equations (not derived
from the package), with the single exception of Eq. 48, whose last two factors are swapped in
the extracted text (see ``test_rydberg_chain_eqs_46_48`` and ``docs/conventions.md``, "Notes on the paper's
printed equations").

Two kinds of check per model, at random states and parameters (fixed numpy seeds, float64):

* drift: ``tw.drift`` equals the printed right-hand side with all noises set to zero, and
  ``tw.drift + tw.noise_increment(xi)`` equals the printed right-hand side with the paper's real
  noises expressed through the same complex ``xi`` (the *direct* check).  For a jump
  ``L = sigma^-`` or ``sigma^+`` with its rate in Gamma the mapping is
  ``xi^x = Re xi``, ``xi^y = -Im xi`` (``docs/conventions.md``, "Notes on the paper's printed
  equations"); with the rate absorbed in ``L`` (Gamma = 1) both carry a factor ``sqrt(rate)``.  For dephasing ``L = sigma^z`` the hand
  derivation (H~ = 2 s^z Im Phi, so only Im xi survives) gives ``eta = -Im xi``; ``Re xi``
  drops out of the equations altogether.
* covariance (mapping-independent): both noise terms are real-linear in their noises.  With the
  Jacobians ``M`` (w.r.t. the stacked ``(Re xi, Im xi)`` for the package, w.r.t. the paper's
  real noises for the printed form) and covariances ``C`` (implied by
  ``<xi xi^dag> = 2 Gamma dt``, ``<xi xi^T> = 0`` for the package; the paper's stated real-noise
  covariance for the printed form), ``M C M^T`` must agree (dt = 1).
"""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import twa_jax as tw  # noqa: E402

RTOL = 1e-10
ATOL = 1e-10


# ----------------------------------------------------------------------------------- helpers
def _sm(s):
    """Weyl symbol of sigma^- (Pauli normalization), elementwise over spins."""
    return (s[..., 0] - 1j * s[..., 1]) / 2


def _sp(s):
    """Weyl symbol of sigma^+."""
    return (s[..., 0] + 1j * s[..., 1]) / 2


def _flat(ds, da):
    """Real vector (ds flattened, Re da, Im da)."""
    ds = jnp.ravel(jnp.asarray(ds))
    da = jnp.ravel(jnp.asarray(da))
    return jnp.concatenate([ds, jnp.real(da), jnp.imag(da)])


def _close(x, y):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=RTOL, atol=ATOL)


def _gamma_matrix(gamma):
    g = np.asarray(gamma)
    return np.diag(g) if g.ndim == 1 else g


def _xi_real_covariance(gamma):
    """Covariance of the stacked (Re xi, Im xi) for <xi xi^dag> = 2 Gamma, <xi xi^T> = 0."""
    G = _gamma_matrix(gamma).astype(complex)
    C = np.block([[G.real, -G.imag], [G.imag, G.real]])
    # self-check of the formula: reassemble the complex second moments
    K = G.shape[0]
    Cxx, Cxy, Cyx, Cyy = C[:K, :K], C[:K, K:], C[K:, :K], C[K:, K:]
    np.testing.assert_allclose(Cxx + Cyy + 1j * (Cyx - Cxy), 2 * G, atol=1e-14)
    np.testing.assert_allclose(Cxx - Cyy + 1j * (Cyx + Cxy), 0, atol=1e-14)
    return C


def _pkg_noise_cov(model, s, a, params, C):
    """M C M^T of the package's noise increment (M: Jacobian w.r.t. (Re xi, Im xi), dt = 1).

    C: the covariance of (Re xi, Im xi), from :func:`_xi_real_covariance` (computed outside jit).
    """
    K = C.shape[0] // 2

    def f(v):
        return _flat(*tw.noise_increment(model, s, a, v[:K] + 1j * v[K:], params))

    M = jax.jacfwd(f)(jnp.zeros(2 * K))
    return M @ jnp.asarray(C) @ M.T


def _random_xi(rng, K):
    return rng.normal(size=K) + 1j * rng.normal(size=K)


def _random_spins(rng, N):
    return jnp.asarray(rng.normal(size=(N, 3)))


def _random_bosons(rng, M):
    return jnp.asarray(rng.normal(size=M) + 1j * rng.normal(size=M))


def _check_model(model, params, paper_rhs, noise_map, noise_cov, n_spins, n_bosons, seed,
                 n_states=3):
    """Drift, direct noise and covariance checks of ``model`` against ``paper_rhs``.

    paper_rhs(s, a, noise) -> flat real vector (printed equations, noise = the paper's reals);
    noise_map(xi) -> the paper's real noises for the package's complex jump-space noise xi;
    noise_cov: covariance of the paper's real noises (dt = 1).

    Everything is evaluated in one jitted function per model (eager op-by-op dispatch made the
    file ~3x slower).  ``tw.drift`` runs under ``jax.ensure_compile_time_eval`` so that Gamma
    stays concrete, as when a user calls it eagerly: that is the path that factors Gamma, drops
    zero-rate channels and, for a low-rank Gamma, applies it as ``B (B^dag L)``.
    """
    rng = np.random.default_rng(seed)
    gamma = model.gamma_of(params)
    K = np.asarray(gamma).shape[0]
    n_noise = np.asarray(noise_cov).shape[0]
    C_pkg = _xi_real_covariance(gamma)
    C_paper = np.asarray(noise_cov)

    @jax.jit
    def evaluate(s, a, xi):
        with jax.ensure_compile_time_eval():
            drift = _flat(*tw.drift(model, s, a, params))
        noise = _flat(*tw.noise_increment(model, s, a, xi, params))

        def pkg_noise(v):
            return _flat(*tw.noise_increment(model, s, a, v[:K] + 1j * v[K:], params))

        M_pkg = jax.jacfwd(pkg_noise)(jnp.zeros(2 * K))
        M_paper = jax.jacfwd(lambda n: paper_rhs(s, a, n))(jnp.zeros(n_noise))
        return (drift, noise, paper_rhs(s, a, jnp.zeros(n_noise)), paper_rhs(s, a, noise_map(xi)),
                M_pkg, M_paper)

    for _ in range(n_states):
        s = _random_spins(rng, n_spins)
        a = _random_bosons(rng, n_bosons)
        xi = jnp.asarray(_random_xi(rng, K))
        if np.ndim(gamma) == 1:  # a zero-rate channel has no noise (built-in models keep them)
            xi = xi * (np.asarray(gamma) > 0)
        drift, noise, paper0, paper_xi, M_pkg, M_paper = (np.asarray(x) for x in evaluate(s, a, xi))
        _close(drift, paper0)
        # direct: the same xi in both
        _close(drift + noise, paper_xi)
        # mapping-independent: increment covariances
        _close(M_pkg @ C_pkg @ M_pkg.T, M_paper @ C_paper @ M_paper.T)


# ----------------------------------------------------------------------- 1. Table I
def _table1_down(s, n, g):
    """Table I, row L = sqrt(g) sigma^-; n = (xi^x, xi^y), <xi^a xi^b> = g delta_ab."""
    sx, sy, sz = s[0], s[1], s[2]
    xx, xy = n[0], n[1]
    return jnp.stack([
        g * sx * sz / 2 + xx * sz,
        g * sy * sz / 2 + xy * sz,
        -g * (sx * sx + sy * sy) / 2 - (xx * sx + xy * sy),
    ])


def _table1_up(s, n, g):
    """Table I, row L = sqrt(g) sigma^+; n = (xi^x, xi^y), <xi^a xi^b> = g delta_ab."""
    sx, sy, sz = s[0], s[1], s[2]
    xx, xy = n[0], n[1]
    return jnp.stack([
        -g * sx * sz / 2 - xx * sz,
        -g * sy * sz / 2 + xy * sz,
        g * (sx * sx + sy * sy) / 2 + (xx * sx - xy * sy),
    ])


def _table1_deph(s, n, k):
    """Table I, row L = sqrt(k) sigma^z; n = (eta,), <eta eta> = k."""
    eta = n[0]
    return jnp.stack([2 * eta * s[1], -2 * eta * s[0], 0.0 * eta])


_TABLE1 = {
    # row: (operator symbol, printed rhs, number of real noises)
    "down": (_sm, _table1_down, 2),
    "up": (_sp, _table1_up, 2),
    "deph": (lambda s: s[..., 2] + 0j, _table1_deph, 1),
}


def _table1_model(row, rate, absorbed):
    op = _TABLE1[row][0]
    if absorbed:  # the paper's convention: rate in L, Gamma = 1
        return tw.Model(lambda s, a, p: 0.0 * s[0, 0],
                        jumps=lambda s, a, p: jnp.sqrt(p["r"]) * op(s),
                        gamma=jnp.ones(1), n_spins=1)
    return tw.Model(lambda s, a, p: 0.0 * s[0, 0], jumps=lambda s, a, p: op(s),
                    gamma=lambda p: jnp.full(1, p["r"]), n_spins=1)


def _table1_noise_map(row, rate, absorbed):
    c = np.sqrt(rate) if absorbed else 1.0
    if row == "deph":
        # H~ = 2 sqrt(k) s^z Im(Phi): only Im xi enters; ds^x = -2 c Im(xi) s^y = +2 eta s^y
        return lambda xi: jnp.stack([-c * jnp.imag(xi[0])])
    return lambda xi: jnp.stack([c * jnp.real(xi[0]), -c * jnp.imag(xi[0])])


@pytest.mark.parametrize("absorbed", [True, False], ids=["absorbed", "rate_in_Gamma"])
@pytest.mark.parametrize("row", ["down", "up", "deph"])
def test_table1(row, absorbed):
    rng = np.random.default_rng(100 + 10 * list(_TABLE1).index(row) + absorbed)
    rate = float(rng.uniform(0.2, 3.0))
    params = {"r": rate}
    model = _table1_model(row, rate, absorbed)
    _, printed, n_noise = _TABLE1[row]
    paper = lambda s, a, n: _flat(printed(s[0], n, rate), a)  # noqa: E731
    _check_model(model, params, paper, _table1_noise_map(row, rate, absorbed),
                 rate * np.eye(n_noise), n_spins=1, n_bosons=0, seed=int(rng.integers(1 << 30)))


@pytest.mark.parametrize("row", ["down", "up", "deph"])
def test_table1_absorbed_equals_rate_in_gamma(row):
    """L = sqrt(g) op with Gamma = 1 and L = op with Gamma = g: the same process."""
    rng = np.random.default_rng(200 + list(_TABLE1).index(row))
    rate = float(rng.uniform(0.2, 3.0))
    params = {"r": rate}
    m1 = _table1_model(row, rate, True)
    m2 = _table1_model(row, rate, False)
    a = jnp.zeros(0, complex)
    C1 = _xi_real_covariance(m1.gamma_of(params))
    C2 = _xi_real_covariance(m2.gamma_of(params))

    @jax.jit
    def evaluate(s, xi):
        with jax.ensure_compile_time_eval():
            d1 = _flat(*tw.drift(m1, s, a, params))
            d2 = _flat(*tw.drift(m2, s, a, params))
        # the absorbed form driven by xi equals the other driven by sqrt(g) xi
        n1 = _flat(*tw.noise_increment(m1, s, a, xi, params))
        n2 = _flat(*tw.noise_increment(m2, s, a, np.sqrt(rate) * xi, params))
        return (d1, d2, n1, n2, _pkg_noise_cov(m1, s, a, params, C1),
                _pkg_noise_cov(m2, s, a, params, C2))

    for _ in range(3):
        d1, d2, n1, n2, c1, c2 = evaluate(_random_spins(rng, 1), jnp.asarray(_random_xi(rng, 1)))
        _close(d1, d2)
        _close(n1, n2)
        _close(c1, c2)


# ----------------------------------------------------------------- 2. driven spin Eqs. 18-20
def _eqs_18_20(s, n, Omega, g):
    sx, sy, sz = s[0], s[1], s[2]
    xx, xy = n[0], n[1]
    return jnp.stack([
        +g / 2 * sx * sz + xx * sz,                                     # (18)
        -2 * Omega * sz + g / 2 * sy * sz + xy * sz,                    # (19)
        +2 * Omega * sy - g / 2 * (sx**2 + sy**2) - xx * sx - xy * sy,  # (20)
    ])


@pytest.mark.parametrize("absorbed", [True, False, "builtin"], ids=["absorbed", "rate_in_Gamma", "builtin"])
def test_driven_spin_eqs_18_20(absorbed):
    rng = np.random.default_rng(300 + (absorbed is True))
    Omega, g = rng.uniform(0.2, 3.0, size=2)
    params = {"Omega": Omega, "g": g}
    H = lambda s, a, p: p["Omega"] * s[:, 0].sum()  # noqa: E731
    if absorbed == "builtin":  # tw.models.driven_spin: L = (sigma^-, sigma^+, sigma^z), rates (g, 0, 0)
        absorbed = False
        model = tw.models.driven_spin(Omega=Omega, gamma_down=g)
        params = model.with_params()
    elif absorbed:
        model = tw.Model(H, jumps=lambda s, a, p: jnp.sqrt(p["g"]) * _sm(s), gamma=jnp.ones(1),
                         n_spins=1)
    else:
        model = tw.Model(H, jumps=lambda s, a, p: _sm(s), gamma=lambda p: jnp.full(1, p["g"]),
                         n_spins=1)
    c = np.sqrt(g) if absorbed else 1.0
    noise_map = lambda xi: jnp.stack([c * jnp.real(xi[0]), -c * jnp.imag(xi[0])])  # noqa: E731
    paper = lambda s, a, n: _flat(_eqs_18_20(s[0], n, Omega, g), a)  # noqa: E731
    # Eq. 21: <xi^a xi^b> = g delta_ab
    _check_model(model, params, paper, noise_map, g * np.eye(2), 1, 0, seed=301)


# ------------------------------------------------------------ 3. Tavis-Cummings Eqs. 29-32
def _tc_hamiltonian(s, a, p):
    """Eq. 28: omega a^dag a + eps/2 sum sigma^z + g/sqrt(N) sum (a^dag sigma^- + a sigma^+)."""
    N = s.shape[0]
    a0 = a[0]
    return (p["omega"] * jnp.abs(a0) ** 2 + p["eps"] / 2 * s[:, 2].sum()
            + p["g"] / jnp.sqrt(N) * jnp.real(jnp.sum(jnp.conj(a0) * _sm(s) + a0 * _sp(s))))


def _tc_paper(s, a, n, p):
    """Eqs. 29-32. n = (Re xi_k, Im xi_k, xi_dn^x[N], xi_dn^y[N], xi_up^x[N], xi_up^y[N])."""
    N = s.shape[0]
    om, eps, g, kap, gd, gu = (p[k] for k in ("omega", "eps", "g", "kappa", "gd", "gu"))
    xk = n[0] + 1j * n[1]
    dx, dy = n[2:2 + N], n[2 + N:2 + 2 * N]
    ux, uy = n[2 + 2 * N:2 + 3 * N], n[2 + 3 * N:2 + 4 * N]
    sx, sy, sz = s[:, 0], s[:, 1], s[:, 2]
    a0 = a[0]
    sminus = (sx - 1j * sy) / 2
    splus = (sx + 1j * sy) / 2
    da = -1j * om * a0 - 1j * g / np.sqrt(N) * jnp.sum(sminus) - kap / 2 * a0 - xk / 2  # (29)
    dsx = (-eps * sy - 2 * g / np.sqrt(N) * sz * jnp.imag(a0)
           + (gd - gu) / 2 * sx * sz + (dx - ux) * sz)                                   # (30)
    dsy = (+eps * sx - 2 * g / np.sqrt(N) * sz * jnp.real(a0)
           + (gd - gu) / 2 * sy * sz + (dy + uy) * sz)                                   # (31)
    dsz = (+4 * g / np.sqrt(N) * jnp.imag(a0 * splus) - (gd - gu) / 2 * (sx**2 + sy**2)
           + (ux - dx) * sx - (uy + dy) * sy)                                            # (32)
    return _flat(jnp.stack([dsx, dsy, dsz], axis=-1), jnp.stack([da]))


@pytest.mark.parametrize("builtin", [False, True], ids=["by_hand", "builtin"])
def test_tavis_cummings_eqs_29_32(builtin):
    N = 3
    rng = np.random.default_rng(400)
    vals = rng.uniform(0.2, 2.0, size=6)
    params = dict(zip(("omega", "eps", "g", "kappa", "gd", "gu"), vals))
    model = tw.Model(
        _tc_hamiltonian,
        jumps=lambda s, a, p: jnp.concatenate([a[:1], _sm(s), _sp(s)]),
        gamma=lambda p: jnp.concatenate([jnp.full(1, p["kappa"]), jnp.full(N, p["gd"]),
                                         jnp.full(N, p["gu"])]),
        n_spins=N, n_bosons=1,
    )
    model_params = params
    if builtin:
        model = tw.models.tavis_cummings(N, *vals[:4], gamma_down=vals[4], gamma_up=vals[5])
        model_params = model.with_params()

    def noise_map(xi):
        # xi_kappa is the package's complex noise itself (Eq. 33: <xi_k conj xi_k> = 2 kappa)
        d, u = xi[1:1 + N], xi[1 + N:]
        return jnp.concatenate([jnp.stack([jnp.real(xi[0]), jnp.imag(xi[0])]),
                                jnp.real(d), -jnp.imag(d), jnp.real(u), -jnp.imag(u)])

    # Eqs. 33-35: (Re, Im) xi_kappa of variance kappa each (circular), Eqs. 34-35 for spins
    cov = np.diag(np.concatenate([np.full(2, params["kappa"]), np.full(2 * N, params["gd"]),
                                  np.full(2 * N, params["gu"])]))
    paper = lambda s, a, n: _tc_paper(s, a, n, params)  # noqa: E731
    _check_model(model, model_params, paper, noise_map, cov, n_spins=N, n_bosons=1, seed=401)


# -------------------------------------------------------------- 4. central spin Eqs. 38-43
def _cs_hamiltonian(s, a, p):
    """Eq. 37 with tau = spin 0, bath = spins 1..N."""
    tau, bath = s[0], s[1:]
    N = bath.shape[0]
    coup = jnp.sum(_sp(tau) * _sm(bath) + _sm(tau) * _sp(bath))
    return (p["omega"] / 2 * tau[2] + p["eps"] / 2 * bath[:, 2].sum()
            + p["g"] / jnp.sqrt(N) * jnp.real(coup))


def _cs_paper(s, n, p):
    """Eqs. 38-43. n = (xi_k^x, xi_k^y, xi_dn^x[N], xi_dn^y[N], xi_up^x[N], xi_up^y[N])."""
    om, eps, g, kap, gd, gu = (p[k] for k in ("omega", "eps", "g", "kappa", "gd", "gu"))
    tx, ty, tz = s[0, 0], s[0, 1], s[0, 2]
    sx, sy, sz = s[1:, 0], s[1:, 1], s[1:, 2]
    N = sx.shape[0]
    kx, ky = n[0], n[1]
    dx, dy = n[2:2 + N], n[2 + N:2 + 2 * N]
    ux, uy = n[2 + 2 * N:2 + 3 * N], n[2 + 3 * N:2 + 4 * N]
    G = g / np.sqrt(N)
    dtx = -om * ty + G * tz * jnp.sum(sy) + (kap / 2 * tx + kx) * tz                     # (38)
    dty = +om * tx - G * tz * jnp.sum(sx) + (kap / 2 * ty + ky) * tz                     # (39)
    dtz = (+G * (ty * jnp.sum(sx) - tx * jnp.sum(sy)) - kap / 2 * (tx**2 + ty**2)
           - (kx * tx + ky * ty))                                                        # (40)
    dsx = -eps * sy + G * ty * sz + (gd - gu) / 2 * sx * sz + (dx - ux) * sz             # (41)
    dsy = +eps * sx - G * tx * sz + (gd - gu) / 2 * sy * sz + (dy + uy) * sz             # (42)
    dsz = (+G * (tx * sy - ty * sx) - (gd - gu) / 2 * (sx**2 + sy**2)
           + (ux - dx) * sx - (uy + dy) * sy)                                            # (43)
    ds_tau = jnp.stack([dtx, dty, dtz])[None, :]
    ds_bath = jnp.stack([dsx, dsy, dsz], axis=-1)
    return jnp.concatenate([ds_tau, ds_bath], axis=0)


@pytest.mark.parametrize("builtin", [False, True], ids=["by_hand", "builtin"])
def test_central_spin_eqs_38_43(builtin):
    N = 3
    rng = np.random.default_rng(500)
    vals = rng.uniform(0.2, 2.0, size=6)
    params = dict(zip(("omega", "eps", "g", "kappa", "gd", "gu"), vals))
    model = tw.Model(
        _cs_hamiltonian,
        jumps=lambda s, a, p: jnp.concatenate([_sm(s[:1]), _sm(s[1:]), _sp(s[1:])]),
        gamma=lambda p: jnp.concatenate([jnp.full(1, p["kappa"]), jnp.full(N, p["gd"]),
                                         jnp.full(N, p["gu"])]),
        n_spins=N + 1,
    )
    model_params = params
    if builtin:
        model = tw.models.central_spin(N, *vals[:4], gamma_down=vals[4], gamma_up=vals[5])
        model_params = model.with_params()

    def noise_map(xi):
        return jnp.concatenate([jnp.real(xi[:1]), -jnp.imag(xi[:1]),
                                jnp.real(xi[1:1 + N]), -jnp.imag(xi[1:1 + N]),
                                jnp.real(xi[1 + N:]), -jnp.imag(xi[1 + N:])])

    # Eq. 44 and Eqs. 34-35
    cov = np.diag(np.concatenate([np.full(2, params["kappa"]), np.full(2 * N, params["gd"]),
                                  np.full(2 * N, params["gu"])]))
    paper = lambda s, a, n: _flat(_cs_paper(s, n, params), a)  # noqa: E731
    _check_model(model, model_params, paper, noise_map, cov, n_spins=N + 1, n_bosons=0, seed=501)


# -------------------------------------------------------------- 5. Rydberg chain Eqs. 46-48
def _rydberg_hamiltonian(s, a, p):
    """Eq. 45 with periodic boundary conditions."""
    z = s[:, 2]
    return p["Omega"] * s[:, 0].sum() + p["J"] / 4 * jnp.sum((1 + z) * (1 + jnp.roll(z, -1)))


def _rydberg_paper(s, n, p, printed_eq48=False):
    """Eqs. 46-48. n = (xi_dn^x[N], xi_dn^y[N], eta[N]).

    Eq. 48 as extracted reads  ... - (g/2 s^x + xi^x) s^y - (g/2 s^y + xi^y) s^x  (last two
    factors swapped).  Hand derivation: the sigma^- channel alone is Table I row 1, whose z-row is
    -g/2 ((s^x)^2 + (s^y)^2) - (xi^x s^x + xi^y s^y) = -(g/2 s^x + xi^x) s^x - (g/2 s^y + xi^y) s^y;
    the Ising term (a function of the s^z only) and the dephasing (rotation about z) do not
    contribute to ds^z; the drive gives +2 Omega s^y (Eq. 20).  Equivalently, |s|^2 is conserved
    (Eq. 13) only with the corrected form: with the printed one,
    s . ds/dt = s^z (s^x - s^y) (g (s^x - s^y) / 2 + xi^x - xi^y), nonzero in general.
    """
    Om, J, gd = p["Omega"], p["J"], p["gd"]
    N = s.shape[0]
    sx, sy, sz = s[:, 0], s[:, 1], s[:, 2]
    xx, xy, eta = n[:N], n[N:2 * N], n[2 * N:]
    nb = 2 + jnp.roll(sz, 1) + jnp.roll(sz, -1)  # 2 + s_{i-1}^z + s_{i+1}^z (periodic)
    dsx = -J / 2 * nb * sy + (gd / 2 * sx + xx) * sz + 2 * eta * sy                    # (46)
    dsy = -2 * Om * sz + J / 2 * nb * sx + (gd / 2 * sy + xy) * sz - 2 * eta * sx      # (47)
    if printed_eq48:
        dsz = 2 * Om * sy - (gd / 2 * sx + xx) * sy - (gd / 2 * sy + xy) * sx          # (48) as printed
    else:
        dsz = 2 * Om * sy - (gd / 2 * sx + xx) * sx - (gd / 2 * sy + xy) * sy          # (48) corrected
    return jnp.stack([dsx, dsy, dsz], axis=-1)


@pytest.mark.parametrize("builtin", [False, True], ids=["by_hand", "builtin"])
def test_rydberg_chain_eqs_46_48(builtin):
    N = 5
    rng = np.random.default_rng(600)
    vals = rng.uniform(0.2, 2.0, size=4)
    params = dict(zip(("Omega", "J", "gd", "kappa"), vals))
    model = tw.Model(
        _rydberg_hamiltonian,
        jumps=lambda s, a, p: jnp.concatenate([_sm(s), s[:, 2] + 0j]),
        gamma=lambda p: jnp.concatenate([jnp.full(N, p["gd"]), jnp.full(N, p["kappa"])]),
        n_spins=N,
    )
    model_params = params
    if builtin:
        model = tw.models.rydberg_chain(N, Omega=vals[0], J=vals[1], gamma_down=vals[2], kappa=vals[3])
        model_params = model.with_params()

    def noise_map(xi):
        d, z = xi[:N], xi[N:]
        return jnp.concatenate([jnp.real(d), -jnp.imag(d), -jnp.imag(z)])  # eta_i = -Im xi_z,i

    cov = np.diag(np.concatenate([np.full(2 * N, params["gd"]), np.full(N, params["kappa"])]))
    paper = lambda s, a, n: _flat(_rydberg_paper(s, n, params), a)  # noqa: E731
    _check_model(model, model_params, paper, noise_map, cov, n_spins=N, n_bosons=0, seed=601)

    # Document the misprint: the printed Eq. 48 disagrees with autodiff and breaks |s| conservation
    @jax.jit
    def misprint(s):
        zero = jnp.zeros(3 * N)
        with jax.ensure_compile_time_eval():
            ds_pkg = tw.drift(model, s, jnp.zeros(0, complex), model_params)[0]
        return (_rydberg_paper(s, zero, params, printed_eq48=True),
                _rydberg_paper(s, zero, params), ds_pkg)

    s = _random_spins(rng, N)
    printed, corrected, ds_pkg = (np.asarray(x) for x in misprint(s))
    assert np.max(np.abs(printed[:, 2] - ds_pkg[:, 2])) > 1e-3
    np.testing.assert_allclose(np.sum(np.asarray(s) * corrected, axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(np.sum(np.asarray(s) * ds_pkg, axis=1), 0, atol=1e-12)
    assert np.max(np.abs(np.sum(np.asarray(s) * printed, axis=1))) > 1e-3


# --------------------------------------------------------- 6. correlated decay Eqs. 56-57
def _corr_hamiltonian(s, a, p):
    """Eq. 51: omega_z sum s^z + Omega sum s^x + sum_ij J_ij s_i^+ s_j^-."""
    return (p["wz"] * s[:, 2].sum() + p["Omega"] * s[:, 0].sum()
            + jnp.real(_sp(s) @ p["J"] @ _sm(s)))


def _eq_56(s, n, p):
    """Eq. 56. n = (xi^x[N], xi^y[N]) with <xi_i^a xi_j^b> = Gamma_ij delta_ab (Eq. 57)."""
    wz, Om, J, G = p["wz"], p["Omega"], p["J"], p["Gamma"]
    N = s.shape[0]
    sx, sy, sz = s[:, 0], s[:, 1], s[:, 2]
    xx, xy = n[:N], n[N:]
    dsx = -2 * wz * sy + sz * (J @ sy) + 0.5 * sz * (G @ sx) + xx * sz
    dsy = 2 * wz * sx - 2 * Om * sz - sz * (J @ sx) + 0.5 * sz * (G @ sy) + xy * sz
    dsz = (2 * Om * sy + (sy * (J @ sx) - sx * (J @ sy))
           - 0.5 * (sx * (G @ sx) + sy * (G @ sy)) - (xx * sx + xy * sy))
    return jnp.stack([dsx, dsy, dsz], axis=-1)


@pytest.mark.parametrize("rank", [4, 2, 1])
def test_correlated_decay_eq_56(rank):
    """Dense real PSD Gamma (full rank, and low rank: exercises the factored apply_gamma)."""
    N = 4
    rng = np.random.default_rng(700 + rank)
    A = rng.normal(size=(N, rank))
    Gamma = A @ A.T
    B = rng.normal(size=(N, N))
    J = B + B.T
    np.fill_diagonal(J, 0.0)
    wz, Om = rng.uniform(0.2, 2.0, size=2)
    params = {"wz": wz, "Omega": Om, "J": jnp.asarray(J), "Gamma": jnp.asarray(Gamma)}
    model = tw.Model(_corr_hamiltonian, jumps=lambda s, a, p: _sm(s),
                     gamma=lambda p: p["Gamma"], n_spins=N)
    noise_map = lambda xi: jnp.concatenate([jnp.real(xi), -jnp.imag(xi)])  # noqa: E731
    cov = np.kron(np.eye(2), Gamma)  # Eq. 57
    paper = lambda s, a, n: _flat(_eq_56(s, n, params), a)  # noqa: E731
    _check_model(model, params, paper, noise_map, cov, n_spins=N, n_bosons=0, seed=710 + rank)


@pytest.mark.parametrize("builtin", ["dipole_array", "dicke"])
def test_builtin_correlated_decay_eq_56(builtin):
    """tw.models.dipole_array (a 2x2 sub-wavelength square, circular dipoles) and tw.models.dicke
    (Gamma_ij = gamma, rank one) against Eq. 56 with their Gamma and J."""
    rng = np.random.default_rng(720)
    wz, Om, g0 = rng.uniform(0.2, 2.0, size=3)
    if builtin == "dipole_array":
        pos = np.array([[0, 0, 0], [0.15, 0, 0], [0, 0.15, 0], [0.15, 0.15, 0.0]])
        dip = np.array([1, 1j, 0]) / np.sqrt(2)
        model = tw.models.dipole_array(pos, 1.0, dip, Gamma0=g0, Omega=Om, omega_z=wz)
        Gamma, J = tw.models.dipole_couplings(pos, 1.0, dip, g0)
    else:
        model = tw.models.dicke(4, gamma=g0, Omega=Om, omega_z=wz)
        Gamma, J = g0 * jnp.ones((4, 4)), jnp.zeros((4, 4))
    params = {"wz": wz, "Omega": Om, "J": jnp.asarray(J), "Gamma": jnp.asarray(Gamma)}
    noise_map = lambda xi: jnp.concatenate([jnp.real(xi), -jnp.imag(xi)])  # noqa: E731
    cov = np.kron(np.eye(2), np.asarray(Gamma))
    paper = lambda s, a, n: _flat(_eq_56(s, n, params), a)  # noqa: E731
    _check_model(model, model.with_params(), paper, noise_map, cov, n_spins=4, n_bosons=0, seed=721)


# ------------------------------------------------------------------------------ 7. bosons
def test_boson_free_rotation():
    """H = omega |a|^2 (closed system): da/dt = -i omega a."""
    rng = np.random.default_rng(800)
    om = rng.uniform(0.2, 2.0, size=2)
    model = tw.Model(lambda s, a, p: jnp.sum(p["om"] * jnp.abs(a) ** 2), n_bosons=2)
    params = {"om": jnp.asarray(om)}
    drift = jax.jit(lambda a: tw.drift(model, jnp.zeros((0, 3)), a, params))
    for _ in range(3):
        a = _random_bosons(rng, 2)
        ds, da = drift(a)
        assert ds.shape == (0, 3)
        _close(_flat(ds, da), _flat(ds, -1j * om * a))


@pytest.mark.parametrize("absorbed", [True, False], ids=["absorbed", "rate_in_Gamma"])
def test_boson_damped(absorbed):
    """H = omega |a|^2, L = sqrt(kappa) a: da = (-i omega a - kappa a / 2) dt - xi_kappa / 2."""
    M = 2
    rng = np.random.default_rng(810 + absorbed)
    om, kap = rng.uniform(0.2, 2.0, size=(2, M))
    params = {"om": jnp.asarray(om), "kap": jnp.asarray(kap)}
    H = lambda s, a, p: jnp.sum(p["om"] * jnp.abs(a) ** 2)  # noqa: E731
    if absorbed:
        model = tw.Model(H, jumps=lambda s, a, p: jnp.sqrt(p["kap"]) * a, gamma=jnp.ones(M),
                         n_bosons=M)
        c = np.sqrt(kap)
    else:
        model = tw.Model(H, jumps=lambda s, a, p: a, gamma=lambda p: p["kap"], n_bosons=M)
        c = np.ones(M)
    s = jnp.zeros((0, 3))

    def paper(s_, a, n):
        xk = n[:M] + 1j * n[M:]  # complex xi_kappa, <xi_k conj xi_k> = 2 kappa, circular
        return _flat(s_, -1j * om * a - kap / 2 * a - xk / 2)

    noise_map = lambda xi: jnp.concatenate([c * jnp.real(xi), c * jnp.imag(xi)])  # noqa: E731
    cov = np.diag(np.concatenate([kap, kap]))
    _check_model(model, params, paper, noise_map, cov, n_spins=0, n_bosons=M, seed=820 + absorbed)


@pytest.mark.parametrize("rank", [3, 1])
def test_boson_correlated_complex_gamma(rank):
    """Linear modes with a complex Hermitian Gamma (L_i = a_i): da/dt = -i omega a - Gamma a / 2.

    Not a printed equation of the paper, but its Eq. 5-7 for bosons, and hand-checked against the
    master equation (``docs/conventions.md``, "Master equation"): with
    D = sum_ij Gamma_ji (a_i rho a_j^dag - ...),
    d<a_k>/dt = sum_ij Gamma_ji (<a_j^dag a_k a_i> - <a_j^dag a_i a_k>/2 - <a_k a_j^dag a_i>/2)
    = -(1/2) sum_i Gamma_ki <a_i> (only the commutator [a_k, a_j^dag] = delta_kj survives).  So it
    is Gamma a, not Gamma^T a: this pins the index convention of the dense (rank 3) and low-rank
    (rank 1, ``B (B^dag L)``) complex paths.
    """
    M = 3
    rng = np.random.default_rng(900 + rank)
    A = rng.normal(size=(M, rank)) + 1j * rng.normal(size=(M, rank))
    Gamma = A @ A.conj().T
    om = rng.uniform(0.2, 2.0, size=M)
    params = {"om": jnp.asarray(om), "Gamma": jnp.asarray(Gamma)}
    model = tw.Model(lambda s, a, p: jnp.sum(p["om"] * jnp.abs(a) ** 2),
                     jumps=lambda s, a, p: a, gamma=lambda p: p["Gamma"], n_bosons=M)

    def paper(s, a, n):  # n = (Re xi, Im xi), <xi xi^dag> = 2 Gamma, <xi xi^T> = 0 (Eq. 6)
        return _flat(s, -1j * om * a - (Gamma @ a) / 2 - (n[:M] + 1j * n[M:]) / 2)

    noise_map = lambda xi: jnp.concatenate([jnp.real(xi), jnp.imag(xi)])  # noqa: E731
    _check_model(model, params, paper, noise_map, _xi_real_covariance(Gamma), n_spins=0,
                 n_bosons=M, seed=910 + rank)
