"""Two-time correlations and spectra: the damped oscillator in closed form (TWA is exact for a
quadratic model, so both orderings, vacuum part included, must agree within the statistics), a
driven spin's correlation and Mollow spectrum against the exact twin (QuTiP), a thermal
oscillator's spectrum, invariance under the chunk size, bad input."""

import warnings

import jax.numpy as jnp
import numpy as np
import pytest

import twa_jax as tw
from twa_jax._correlation import fourier_weights

exact = pytest.importorskip("twa_jax.exact")

W, KAPPA, ALPHA = 1.0, 0.4, 1.0 + 0.5j
ad = lambda s, a: jnp.conj(a[0])  # noqa: E731  (a^dag)
an = lambda s, a: a[0]  # noqa: E731  (a)
sp = lambda s, a: tw.weyl.sigma_plus(s)[0]  # noqa: E731
sm = lambda s, a: tw.weyl.sigma_minus(s)[0]  # noqa: E731


def oscillator(n_th_rate=0.0, drive=0.0, kappa=KAPPA):
    jumps = (lambda s, a, p: jnp.array([a[0], jnp.conj(a[0])])) if n_th_rate else (lambda s, a, p: a)
    gamma = jnp.array([kappa, n_th_rate]) if n_th_rate else jnp.array([kappa])
    return tw.Model(lambda s, a, p: W * tw.weyl.number(a[0]) + drive * jnp.real(a[0]), jumps=jumps, gamma=gamma,
                    n_bosons=1)


def test_damped_oscillator_both_orderings_against_the_closed_form():
    """<a^dag(t+tau) a(t)> = n(t) e^{(i w - k/2) tau} and <a(t+tau) a^dag(t)> = (n(t) + 1)
    e^{(-i w - k/2) tau}, n(t) = |alpha|^2 e^{-k t}: the orderings differ by the vacuum part, which
    is the commutator part (the same for every trajectory of a linear model: no statistical error,
    only the integrator's, ~dt^2)."""
    init = tw.states.product(bosons=tw.states.coherent(jnp.array([ALPHA])))
    ts, taus = np.array([0.0, 1.0]), np.linspace(0, 3, 7)
    n = abs(ALPHA) ** 2 * np.exp(-KAPPA * ts)[:, None]
    phase = np.exp((1j * W - KAPPA / 2) * taus)[None, :]
    normal = tw.correlation(oscillator(), init, ts, taus, ad, an, n_traj=3000, key=0)
    anti = tw.correlation(oscillator(), init, ts, taus, an, ad, n_traj=3000, key=0)
    for c, want in ((normal, n * phase), (anti, (n + 1) * np.conj(phase))):
        assert c.value.shape == (2, 7)
        assert np.all(np.abs(c.value - want) <= 4 * c.sem + 1e-12), np.max(np.abs(c.value - want) / c.sem)
    # commutator parts: 1/2 <[a^dag(t+tau), a(t)]> = -e^{(i w - k/2) tau} / 2, and its conjugate's negative
    np.testing.assert_allclose(normal.commutator, -0.5 * np.broadcast_to(phase, (2, 7)), atol=5e-4)
    np.testing.assert_allclose(anti.commutator, 0.5 * np.broadcast_to(np.conj(phase), (2, 7)), atol=5e-4)
    assert np.max(normal.commutator_sem) < 1e-6
    np.testing.assert_allclose(normal.value, normal.symmetrized + normal.commutator, atol=1e-12)
    assert normal.n_traj == 3000 and "3000 trajectories" in repr(normal)


def test_exact_correlation_and_spectrum_check_the_fock_cutoff():
    """A coherent state with |alpha|^2 = 9 does not fit into 6 Fock levels: the exact correlation
    and spectrum say so (as tw.exact.solve does) instead of returning the truncated model's
    numbers; with enough levels the correlation is the closed form n(t) e^{(i w - k/2) tau}."""
    init = tw.states.product(bosons=tw.states.coherent(jnp.array([3.0])))
    ts, taus = np.array([0.0, 1.0]), np.linspace(0, 2, 5)
    with pytest.raises(RuntimeError, match=r"top Fock level \(cutoff=5\).*raise cutoff"):
        exact.correlation(oscillator(), init, ts, taus, ad, an, cutoff=5)
    want = 9.0 * np.exp(-KAPPA * ts)[:, None] * np.exp((1j * W - KAPPA / 2) * taus)[None, :]
    np.testing.assert_allclose(exact.correlation(oscillator(), init, ts, taus, ad, an, cutoff=30), want, rtol=1e-5)
    with pytest.raises(RuntimeError, match="raise cutoff"):  # a drive to |alpha|^2 ~ 9 in the steady state
        exact.spectrum(oscillator(drive=6.0), np.array([0.0, 1.0]), ad, an, cutoff=5)


@pytest.mark.parametrize("drive", [0.0, 1.0])
def test_exact_spectrum_of_a_coherent_steady_state_is_zero(drive):
    """A driven damped oscillator settles into a coherent state |beta> (the vacuum without drive):
    (a - beta) rho_ss = 0, so <a^dag(tau) a> - |beta|^2 = 0 at every lag and the fluctuation
    spectrum is zero. QuTiP's exponential series drops every (zero) term and then failed on the
    empty list (ValueError: not enough values to unpack)."""
    oms = np.array([-1.0, 0.0, 1.0, 2.5])
    np.testing.assert_array_equal(exact.spectrum(oscillator(drive=drive, kappa=0.6), oms, ad, an, cutoff=10),
                                  np.zeros(4))


def test_exact_spectrum_needs_b_the_adjoint_of_a():
    """As tw.spectrum, exact.spectrum needs b = a's adjoint (a, a gave numbers, a negative S among
    them), with or without a lag grid."""
    model, init = oscillator(drive=1.0), tw.states.product(bosons=tw.states.vacuum(1))
    for kw in ({}, dict(taus=np.linspace(0, 1, 5), initial=init, t=1.0)):
        with pytest.raises(ValueError, match="spectrum needs b = a's adjoint"):
            exact.spectrum(model, np.array([0.0, 1.0]), an, an, cutoff=10, **kw)


def test_exact_correlation_and_spectrum_need_scalar_observables():
    """As tw.correlation, an observable of shape (1,) is refused by name (QuTiP said "QobjEvo terms
    should be Qobjs" or "Arguments must be quantum objects")."""
    model, init = oscillator(drive=1.0), tw.states.product(bosons=tw.states.vacuum(1))
    taus = np.linspace(0, 1, 5)
    for kw in ({}, dict(taus=taus, initial=init, t=1.0)):
        with pytest.raises(ValueError, match=r"a must return a scalar \(one operator\), got shape \(1,\)"):
            exact.spectrum(model, np.array([0.0, 1.0]), lambda s, a: jnp.conj(a), an, cutoff=10, **kw)
    with pytest.raises(ValueError, match=r"b must return a scalar \(one operator\), got shape \(1,\)"):
        exact.correlation(model, init, np.array([0.0]), taus, ad, lambda s, a: a, cutoff=10)


def test_driven_spin_correlation_against_the_exact_twin():
    """<sigma^+(t+tau) sigma^-(t)> of the driven spin with weak decay (gamma/Omega = 0.1, where
    TWA's own bias is below 0.01): within 0.01 + 4 sem of QuTiP's correlation_2op_2t."""
    model, p = tw.models.driven_spin(), {"Omega": 1.0, "gamma_down": 0.1}
    ts, taus = np.array([0.5, 2.0]), np.linspace(0, 4, 9)
    c = tw.correlation(model, tw.states.spins_down(1), ts, taus, sp, sm, n_traj=3000, key=1, params=p)
    ex = exact.correlation(model, tw.states.spins_down(1), ts, taus, sp, sm, params=p)
    assert np.all(np.abs(c.value - ex) <= 0.01 + 4 * c.sem), np.max(np.abs(c.value - ex) / c.sem)
    assert np.max(np.abs(ex)) > 0.3
    cmp = tw.compare(c, ex)  # the one-line check: real and imaginary parts over the lags
    assert cmp["re"].max_abs == pytest.approx(np.max(np.abs(c.value.real - ex.real)))
    assert "at tau" in str(cmp)
    assert cmp["im"].max_abs == pytest.approx(np.max(np.abs(c.value.imag - ex.imag)))


def test_thermal_oscillator_spectrum_against_the_exact_twin():
    """A driven oscillator with loss and thermal gain: the fluctuation spectrum (the coherent part
    subtracted, as QuTiP does) is a Lorentzian at +w; TWA within 4 sem of qutip.spectrum. The
    correlation decays as exp(-(kappa - gain) tau / 2), to 4e-3 by the last lag (a window that
    cuts it earlier biases the peak)."""
    model = oscillator(n_th_rate=0.2, drive=0.6, kappa=0.9)
    init = tw.states.product(bosons=tw.states.vacuum(1))
    oms = np.linspace(-3, 3, 13)
    om, S, sem = tw.spectrum(model, init, np.array([12.0]), np.linspace(0, 16, 161), ad, an, n_traj=1500, key=0,
                             omegas=oms)
    Se = exact.spectrum(model, oms, ad, an, cutoff=15)
    np.testing.assert_array_equal(om, oms)
    assert np.all(np.abs(S - Se) <= 4 * sem), np.abs(S - Se) / sem
    assert oms[np.argmax(Se)] == W


@pytest.mark.slow  # 40 s; the driven spin's correlation (below the spectrum) is checked by default
def test_mollow_triplet_against_the_exact_twin():
    """The resonance fluorescence spectrum at Rabi frequency 2 Omega = 5 gamma (the Mollow triplet:
    peaks at 0 and +-4.89): TWA within 4 sem of qutip.spectrum at every frequency (the lags reach
    20 / gamma, where the correlation has decayed to e^-10, so the rectangular window is exact)."""
    model, p = tw.models.driven_spin(), {"Omega": 2.5, "gamma_down": 1.0}
    oms = np.array([-7.0, -4.9, -2.5, 0.0, 2.5, 4.9, 7.0])
    om, S, sem = tw.spectrum(model, tw.states.spins_down(1), np.array([15.0]), np.linspace(0, 20, 401), sp, sm,
                             n_traj=2000, key=0, omegas=oms, params=p)
    Se = exact.spectrum(model, oms, sp, sm, params=p)
    assert np.all(np.abs(S - Se) <= 4 * sem), np.abs(S - Se) / sem
    assert Se[3] > Se[2] < Se[1] > Se[0] and Se[5] > Se[4]  # the centre and the side peaks


def test_correlation_does_not_depend_on_the_chunk_size():
    init = tw.states.product(bosons=tw.states.coherent(jnp.array([ALPHA])))
    kw = dict(n_traj=64, key=3)
    c1 = tw.correlation(oscillator(), init, np.array([0.5]), np.linspace(0, 1, 3), ad, an, chunk_size=64, **kw)
    c2 = tw.correlation(oscillator(), init, np.array([0.5]), np.linspace(0, 1, 3), ad, an, chunk_size=16, **kw)
    np.testing.assert_allclose(c1.value, c2.value, rtol=1e-10)
    np.testing.assert_allclose(c1.sem, c2.sem, rtol=1e-8)


def test_bad_input_is_rejected_by_name():
    model, init = oscillator(), tw.states.product(bosons=tw.states.vacuum(1))
    kw = dict(n_traj=8, key=0)
    with pytest.raises(ValueError, match="spectrum needs b = a's adjoint"):
        tw.spectrum(model, init, np.array([1.0]), np.linspace(0, 1, 5), an, an, **kw)
    with pytest.raises(ValueError, match="uniform lag grid taus starting at 0"):
        tw.spectrum(model, init, np.array([1.0]), np.array([0.0, 0.1, 0.5]), ad, an, **kw)
    with pytest.raises(ValueError, match=r"ts must be >= 0"):
        tw.correlation(model, init, np.array([-1.0]), np.array([0.0]), ad, an, **kw)
    with pytest.raises(ValueError, match=r"a='nope' is not one of the model's observables"):
        tw.correlation(model, init, np.array([1.0]), np.array([0.0]), "nope", an, **kw)
    big = tw.Model(lambda s, a, p: s[:, 0].sum(), jumps=lambda s, a, p: tw.weyl.sigma_minus(s), gamma=jnp.ones(7),
                   n_spins=7)
    with pytest.raises(ValueError, match="out of reach above Hilbert-space dimension 64. Give the lag grid"):
        exact.spectrum(big, np.array([0.0]), lambda s, a: tw.weyl.sigma_plus(s).sum(),
                       lambda s, a: tw.weyl.sigma_minus(s).sum())
    with pytest.raises(ValueError, match="b must return a scalar"):
        tw.correlation(model, init, np.array([1.0]), np.array([0.0]), ad, lambda s, a: a, **kw)
    for t0 in (np.nan, -np.inf, "0", 1j):
        with pytest.raises(ValueError, match=r"t0 \(the initial state's time\) must be a finite real number"):
            tw.correlation(model, init, np.array([1.0]), np.array([0.0]), ad, an, t0=t0, **kw)
    taus = np.linspace(0, 1, 5)
    for omegas, match in ((np.array([0.0, np.nan]), "omegas must be finite"), ([], "non-empty 1-D"),
                          (np.ones((2, 2)), "non-empty 1-D"), (np.array([1 + 1j]), "real angular frequencies")):
        with pytest.raises(ValueError, match=match):
            tw.spectrum(model, init, np.array([1.0]), taus, ad, an, omegas=omegas, **kw)
    # the kicks' internal parameters stay out of the message
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['Omg'\]; this model's parameters are "
                                         r"\['Omega', 'gamma_down', 'gamma_up', 'kappa'\]$"):
        tw.correlation(tw.models.driven_spin(), tw.states.spins_down(1), np.array([1.0]), np.array([0.0]), sp, sm,
                       params={"Omg": 1.0}, **kw)


def test_failed_trajectories_are_reported_by_correlation_and_spectrum():
    """A trajectory whose observable turns NaN is left out of a correlation (or spectrum) with a
    warning that counts it, as in simulate; all of them failing is an error."""
    model, init = oscillator(), tw.states.product(bosons=tw.states.vacuum(1))
    bad = lambda s, a: jnp.where(jnp.real(a[0]) > 0.5, jnp.nan, a[0])  # noqa: E731
    bad_d = lambda s, a: jnp.conj(bad(s, a))  # noqa: E731
    with pytest.warns(RuntimeWarning, match=r"(\d+) of 64 trajectories became non-finite and were left out"):
        c = tw.correlation(model, init, np.array([1.0]), np.array([0.0, 0.5]), bad_d, bad, n_traj=64, key=0)
    assert 0 < c.n_failed < 64 and c.n_traj == 64 - c.n_failed
    with pytest.warns(RuntimeWarning, match=r"of 64 trajectories became non-finite and were left out"):
        tw.spectrum(model, init, np.array([1.0]), np.linspace(0, 1, 5), bad_d, bad, n_traj=64, key=0)
    with pytest.raises(RuntimeError, match="all 16 trajectories became non-finite"):
        tw.correlation(model, init, np.array([1.0]), np.array([0.0]), lambda s, a: jnp.nan * a[0], an, n_traj=16, key=0)


def _coupled_modes(w, g, rates):
    """Two modes coupled by g, mode 1 lossy, mode 2 lossy with a thermal input (jumps a1, a2,
    a2^dag at ``rates``); and its closed form: the drift D of (a1, a2) and the steady
    normal-ordered covariance N = <a_i^dag a_j> (D* N + N D^T + diag(0, gain) = 0), so that
    <a1^dag(tau) a1(0)> = (e^{D* tau} N)_11 (quantum regression for a linear model)."""
    model = tw.Model(lambda s, a, p: w * (tw.weyl.number(a[0]) + tw.weyl.number(a[1]))
                     + g * 2 * jnp.real(jnp.conj(a[0]) * a[1]),
                     jumps=lambda s, a, p: jnp.array([a[0], a[1], jnp.conj(a[1])]),
                     gamma=jnp.array(rates), n_bosons=2)
    k1, k2, up = rates
    D = -1j * np.array([[w, g], [g, w]]) - 0.5 * np.diag([k1, k2 - up])
    Dc = D.conj()
    # vec(D* N + N D^T) = (I x D* + D x I) vec(N) (column-major vec)
    L = np.kron(np.eye(2), Dc) + np.kron(D, np.eye(2))
    N = np.linalg.solve(L, -np.diag([0.0, up]).flatten(order="F")).reshape(2, 2, order="F")
    return model, Dc, N


@pytest.mark.slow  # 46 s; the damped oscillator's closed form (both orderings) stays in the default run
def test_two_coupled_modes_normal_mode_splitting_against_the_closed_form():
    """Two lossy modes coupled by g, one with a thermal input: a quadratic model, so TWA is exact;
    the spectrum of mode 1 shows the normal-mode splitting (peaks at w +- g) and agrees with the
    closed form S(omega) = 2 Re [(i omega - D*)^-1 N]_11 within 4 sem, with the rectangular and
    the Hann window (the transform of the closed-form correlation with the same weights). The
    exact twin (QuTiP) agrees with the closed form where 7 Fock levels hold the state (a weaker
    thermal input: the strong one needs more levels, which exact.spectrum refuses)."""
    from scipy.linalg import expm

    w, g = 1.0, 1.0
    model, Dc, N = _coupled_modes(w, g, [0.8, 0.8, 0.3])
    init = tw.states.product(bosons=tw.states.vacuum(2))
    a1d, a1 = (lambda s, a: jnp.conj(a[0])), (lambda s, a: a[0])
    oms = np.array([-0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    taus = np.linspace(0, 12, 121)

    def closed_spectrum(Dc, N):
        return np.array([2 * np.real(np.linalg.solve(1j * o * np.eye(2) - Dc, N)[0, 0]) for o in oms])

    def closed_correlation(Dc, N):
        return np.array([(expm(Dc * t) @ N)[0, 0] for t in taus])

    om, S, sem = tw.spectrum(model, init, np.array([10.0]), taus, a1d, a1, n_traj=1000, key=0, omegas=oms)
    Se = closed_spectrum(Dc, N)
    assert np.all(np.abs(S - Se) <= 4 * sem), np.abs(S - Se) / sem
    assert Se[1] > Se[3] and Se[5] > Se[3]  # two peaks at w - g = 0 and w + g = 2, a dip at w
    _, Sh, semh = tw.spectrum(model, init, np.array([10.0]), taus, a1d, a1, n_traj=1000, key=0, omegas=oms,
                              window="hann")
    weights = np.full(len(taus), taus[1]) * np.cos(np.pi * taus / (2 * taus[-1])) ** 2
    weights[[0, -1]] *= 0.5
    F = np.exp(-1j * oms[:, None] * taus[None, :]) * weights
    Sh_exact = 2 * np.real(F @ closed_correlation(Dc, N))
    assert np.all(np.abs(Sh - Sh_exact) <= 4 * semh + 1e-3), np.abs(Sh - Sh_exact) / semh
    # the exact twin, infinite-lag and windowed, against the closed form (no coherent part: <a> = 0)
    weak, Dw, Nw = _coupled_modes(w, g, [0.8, 0.8, 0.1])
    np.testing.assert_allclose(exact.spectrum(weak, oms, a1d, a1, cutoff=6), closed_spectrum(Dw, Nw), rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(exact.spectrum(weak, oms, a1d, a1, cutoff=6, taus=taus, window="hann", initial=init,
                                              t=30.0), 2 * np.real(F @ closed_correlation(Dw, Nw)), rtol=1e-4, atol=1e-6)


def test_correlation_to_xarray_and_plot():
    init = tw.states.product(bosons=tw.states.coherent(jnp.array([ALPHA])))
    c = tw.correlation(oscillator(), init, np.array([0.0, 0.5]), np.linspace(0, 1, 3), ad, an, n_traj=32, key=0)
    ds = c.to_xarray()
    assert ds["value"].dims == ("t", "tau") and ds["value"].shape == (2, 3)
    np.testing.assert_array_equal(ds["value"].values, c.value)
    np.testing.assert_array_equal(ds["tau"].values, c.taus)
    assert ds.attrs["n_traj"] == 32
    ax = c.plot(t_index=1)
    assert len(ax.lines) == 2 and len(ax.collections) == 2


def test_target_sem_stops_early_and_equals_a_fixed_run_of_the_count_used():
    init = tw.states.product(bosons=tw.states.coherent(jnp.array([ALPHA])))
    args = (oscillator(), init, np.array([0.5]), np.linspace(0, 1, 3), ad, an)
    c = tw.correlation(*args, n_traj=20_000, key=3, target_sem=0.03)
    assert 1000 <= c.n_traj < 20_000 and np.max(c.sem) <= 0.03
    fixed = tw.correlation(*args, n_traj=c.n_traj, key=3)
    np.testing.assert_allclose(c.value, fixed.value, rtol=1e-10)


@pytest.mark.slow  # 30 s; the correlation and its sem against exact twins stay in the default run
def test_jacobian_and_a_fit_of_frequency_and_linewidth():
    """The Jacobian of <a^dag(t+tau) a(t)> with respect to (w, kappa) equals the central difference
    of two runs with the same key (the pathwise derivative), and Gauss-Newton with it recovers the
    frequency and loss rate of a damped oscillator from its closed-form correlation, starting far
    off. TWA is exact here, so the fit differs from the truth only by the statistics: the
    Gauss-Newton estimate is theta + K dC with K = (J^T J)^-1 J^T, so the standard error of each
    component is at most sum_k |K_ik| sem_k (whatever the correlation between lags). A repeated
    call reuses the compiled program (the kicks' generators compare equal)."""
    init = tw.states.product(bosons=tw.states.coherent(jnp.array([ALPHA])))
    ts, taus, true = np.array([1.0]), np.linspace(0, 4, 9), {"w": W, "kappa": 0.4}
    data = abs(ALPHA) ** 2 * np.exp(-true["kappa"] * ts)[:, None] * np.exp((1j * W - true["kappa"] / 2) * taus)[None, :]
    model = tw.Model(lambda s, a, p: p["w"] * tw.weyl.number(a[0]), jumps=lambda s, a, p: a,
                     gamma=lambda p: jnp.array([p["kappa"]]), n_bosons=1)
    args, kw = (model, init, ts, taus, ad, an), dict(n_traj=2000, key=0, dt=0.01)
    p = {"w": 1.3, "kappa": 0.7}
    c = tw.correlation(*args, params=p, jacobian=True, **kw)
    assert sorted(c.jacobian) == ["kappa", "w"] and c.jacobian["w"].shape == (1, 9)
    for k, h in (("w", 1e-5), ("kappa", 1e-5)):
        fd = (tw.correlation(*args, params={**p, k: p[k] + h}, **kw).value
              - tw.correlation(*args, params={**p, k: p[k] - h}, **kw).value) / (2 * h)
        np.testing.assert_allclose(c.jacobian[k], fd, atol=1e-6 * np.max(np.abs(fd)))
        assert np.max(np.abs(fd)) > 0.1  # not trivially zero
    with pytest.raises(ValueError, match="jacobian=True needs params"):
        tw.correlation(*args, jacobian=True, **kw)

    theta = np.array([p["w"], p["kappa"]])
    for _ in range(6):
        c = tw.correlation(*args, params={"w": theta[0], "kappa": theta[1]}, jacobian=True, **kw)
        J = np.stack([c.jacobian["w"].ravel(), c.jacobian["kappa"].ravel()], axis=1)
        r = (c.value - data).ravel()
        J, r, sem = np.concatenate([J.real, J.imag]), np.concatenate([r.real, r.imag]), np.tile(c.sem.ravel(), 2)
        K = np.linalg.solve(J.T @ J, J.T)
        step = K @ r
        theta = theta - step
    bound = np.abs(K) @ sem
    assert np.all(np.abs(step) < 1e-3 * bound)  # converged
    assert np.all(np.abs(theta - [true["w"], true["kappa"]]) <= 4 * bound), (theta, bound)
    assert np.all(bound < [0.05, 0.05])  # resolves w and kappa to better than 0.05
    print(f"(w, kappa) = {theta} (true {true}), bounds on their standard errors {bound}")


@pytest.mark.slow  # 76 s; correlations against exact twins stay in the default run (driven spin, oscillators)
def test_cooperative_resonance_fluorescence_against_the_symmetric_subspace():
    """N = 20 atoms with one collective jump J^- driven at half the transition (Omega = N/8,
    H = 2 Omega J_x): the steady state is almost pure, so <J^+(tau) J^-> is its coherent part
    |<J^+>|^2 ~ 25 at every lag and the incoherent spectrum vanishes (exact, in the symmetric
    subspace j = N/2, written out in QuTiP here). TWA: the correlation within 4 sem + 2 % of the
    exact one (TWA's bias here, measured in benchmarks/bench_spectra.py), and an incoherent
    spectrum within 4 sem of zero, far below the N = 20 of independent emitters' fluctuations."""
    qt = pytest.importorskip("qutip")
    n, om = 20, 20 / 8
    model = tw.models.dicke(n, gamma=1.0, Omega=om)
    Jp, Jm = (lambda s, a: tw.weyl.sigma_plus(s).sum()), (lambda s, a: tw.weyl.sigma_minus(s).sum())
    j, taus = n / 2, np.linspace(0, 0.5, 6)  # steady within 2e-4 by t = 1 (collective rate N gamma)
    H, L = 2 * om * qt.jmat(j, "x"), qt.jmat(j, "-")
    C_ex = qt.correlation_2op_2t(H, qt.basis(n + 1, n), [0.0, 1.0], taus, [L], qt.jmat(j, "+"), L)[1]
    c = tw.correlation(model, tw.states.spins_down(n), [1.0], taus, Jp, Jm, n_traj=400, key=0)
    assert np.all(np.abs(c.value[0] - C_ex) <= 0.02 * np.abs(C_ex) + 4 * c.sem[0]), np.abs(c.value[0] - C_ex) / c.sem[0]
    oms = np.array([-8.0, 0.0, 8.0])
    om_, S, sem = tw.spectrum(model, tw.states.spins_down(n), [1.0], taus, Jp, Jm, n_traj=400, key=0, omegas=oms,
                              window="hann")
    assert np.all(np.abs(S) <= 4 * sem), S / sem
    assert np.max(sem) < 0.5  # resolves an incoherent part far below that of 20 independent atoms


@pytest.mark.parametrize("spacing, grows", [(0.1, True), pytest.param(0.5, False, marks=pytest.mark.slow)])
def test_exponentially_growing_response_is_reported(spacing, grows):
    """A chain of 8 dipoles at spacing lambda/10 is classically chaotic: each kicked trajectory
    separates exponentially from its unkicked twin, and the commutator part's standard error grows
    by orders of magnitude over a few lags. That is said in a warning (the sem itself stays
    honest); at spacing lambda/2 it does not grow, and nothing is said."""
    Jp, Jm = (lambda s, a: tw.weyl.sigma_plus(s).sum()), (lambda s, a: tw.weyl.sigma_minus(s).sum())
    taus = np.linspace(0, 8, 5)
    model = tw.models.dipole_array(tw.models.chain_positions(8, spacing), wavelength=1.0, dipole=(0, 0, 1), Omega=0.3)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        c = tw.correlation(model, tw.states.spins_down(8), [4.0], taus, Jp, Jm, n_traj=64, key=1, dt=0.01)
    said = [x for x in w if "separate exponentially" in str(x.message)]
    assert bool(said) == grows, [str(x.message) for x in w]
    ratio = c.commutator_sem[0, -1] / c.commutator_sem[0, 0]
    assert (ratio > 100) if grows else (ratio < 10), ratio


def test_spectrum_before_the_steady_state_subtracts_the_same_means_on_both_sides():
    """A driven damped oscillator from the vacuum stays coherent, so <a^dag(t+tau) a(t)> =
    conj(alpha(t+tau)) alpha(t) with alpha(t) = alpha_ss (1 - exp(-(i w + kappa/2) t)). Started at
    t = 10 (exp(-kappa t / 2) = 0.05: not yet steady), the spectrum's <A><B> is <A> averaged over
    the lags' times and <B> at t on both sides; tw.exact.spectrum equals the closed form and
    tw.spectrum (exact for a linear model) agrees within its standard error. Before, the exact
    side subtracted <A(t)><B(t)>: -0.41 against 0.02 +- 0.08 at omega = 0."""
    w, f, kappa, t = 1.0, 0.5, 0.6, 10.0
    model = tw.Model(lambda s, a, p: w * tw.weyl.number(a[0]) + 2 * f * jnp.real(a[0]), jumps=lambda s, a, p: a,
                     gamma=jnp.array([kappa]), n_bosons=1)
    taus, omegas = np.linspace(0, 20, 81), np.array([0.0, 0.5, 1.0, 1.5])
    z = 1j * w + kappa / 2
    alpha = lambda x: -1j * f / z * (1 - np.exp(-z * x))  # noqa: E731
    C = np.conj(alpha(t + taus)) * alpha(t)
    _, _, F = fourier_weights(taus, omegas)
    closed = 2 * np.real(F @ (C - np.mean(np.conj(alpha(t + taus))) * alpha(t)))
    vac = tw.states.product(bosons=tw.states.vacuum(1))
    ex = exact.spectrum(model, omegas, ad, an, taus=taus, initial=vac, t=t)
    np.testing.assert_allclose(ex, closed, atol=1e-6)
    _, S, sem = tw.spectrum(model, vac, [t], taus, ad, an, n_traj=1000, key=0, omegas=omegas)
    assert np.all(np.abs(S - closed) < 4 * sem), (S, closed, sem)
