"""End-to-end dynamics against exactly solvable cases (TWA is exact for linear bosons)."""

import jax.numpy as jnp
import numpy as np
import pytest

import twa_jax as tw


def _cavity(omega=1.0, F=0.0):
    """H = omega a^dag a + F (a + a^dag), L = a with rate kappa (params['kappa'])."""
    return tw.Model(
        lambda s, a, p: omega * jnp.sum(jnp.abs(a) ** 2) + 2 * F * jnp.sum(a.real),
        jumps=lambda s, a, p: a,
        gamma=lambda p: jnp.array([p["kappa"]]),
        n_bosons=1,
    )


OBS = {
    "re": lambda s, a: a[0].real,
    "im": lambda s, a: a[0].imag,
    "n": lambda s, a: jnp.abs(a[0]) ** 2 - 0.5,
}


def _within(res, name, exact, k=4.0):
    dev = np.abs(np.asarray(res.mean[name]) - exact)
    sem = np.asarray(res.sem[name])
    assert np.all(dev <= k * sem + 1e-9), (name, dev.max(), sem.max(), (dev / (sem + 1e-300)).max())


def test_free_oscillator_rotates_amplitude():
    """H = omega |a|^2 => da/dt = -i omega a (mean-field, deterministic)."""
    omega, a0 = 1.3, 0.8 + 0.2j
    model = tw.Model(lambda s, a, p: omega * jnp.sum(jnp.abs(a) ** 2), n_bosons=1)
    ts = np.linspace(0, 5, 11)
    res = tw.simulate(model, tw.states.coherent(a0), ts, method="mean_field", observables=OBS, dt=1e-3)
    exact = a0 * np.exp(-1j * omega * ts)
    # Heun's global phase error for a harmonic oscillator is ~ omega^3 dt^2 t / 6
    tol = omega**3 * 1e-3**2 * ts[-1]
    np.testing.assert_allclose(res.mean["re"], exact.real, atol=tol)
    np.testing.assert_allclose(res.mean["im"], exact.imag, atol=tol)


def test_driven_damped_cavity_matches_analytic_solution():
    """<a>(t) = a_ss + (a0 - a_ss) exp(-(i omega + kappa/2) t), a_ss = -iF/(i omega + kappa/2);
    the state stays coherent, <a^dag a> = |<a>|^2. TWA is exact here: tolerance = 4 sem."""
    omega, F, kappa, a0 = 1.0, 0.7, 0.8, 1.0 - 0.5j
    ts = np.linspace(0, 6, 13)
    res = tw.simulate(_cavity(omega, F), tw.states.coherent(a0), ts, n_traj=20_000, key=1,
                      params={"kappa": kappa}, observables=OBS)
    z = 1j * omega + kappa / 2
    a_ss = -1j * F / z
    a_t = a_ss + (a0 - a_ss) * np.exp(-z * ts)
    _within(res, "re", a_t.real)
    _within(res, "im", a_t.imag)
    _within(res, "n", np.abs(a_t) ** 2)
    assert res.n_failed == 0


def test_vacuum_is_stationary_and_thermal_state_decays():
    """Vacuum stays vacuum (<n> = 0); a thermal state relaxes as n_th exp(-kappa t)."""
    kappa, nth = 1.0, 1.5
    ts = np.linspace(0, 3, 7)
    vac = tw.simulate(_cavity(), tw.states.vacuum(1), ts, n_traj=20_000, key=2, params={"kappa": kappa})
    _within(vac, "n", np.zeros((len(ts), 1)))
    th = tw.simulate(_cavity(), tw.states.thermal(nth), ts, n_traj=20_000, key=3, params={"kappa": kappa})
    _within(th, "n", nth * np.exp(-kappa * ts)[:, None])


def _driven_spin(Omega, gamma):
    return tw.Model(
        lambda s, a, p: p["Omega"] * jnp.sum(s[:, 0]),
        jumps=lambda s, a, p: (s[:, 0] - 1j * s[:, 1]) / 2,
        gamma=lambda p: jnp.array([p["gamma"]]),
        n_spins=1,
    )


NORM_DEV = {"norm_dev": lambda s, a: jnp.max(jnp.abs(jnp.sum(s**2, -1) - 3.0)), "sz": lambda s, a: s[:, 2].mean()}


@pytest.mark.filterwarnings("ignore::twa_jax.SameSiteWarning")  # |s_k|^2 is meant classically here
@pytest.mark.parametrize("gamma", [0.5, 4.0])
def test_spin_length_conserved_per_trajectory(gamma):
    """|s_k|^2 = 3 for every trajectory (Eq. 13) with the default rotation-Heun solver.
    The observable is max_k ||s_k|^2 - 3| >= 0, so a tiny mean bounds every trajectory."""
    res = tw.simulate(_driven_spin(1.0, gamma), tw.states.spins_down(1), np.linspace(0, 10, 6),
                      n_traj=500, key=4, params={"Omega": 1.0, "gamma": gamma}, observables=NORM_DEV, dt=0.005)
    assert float(np.max(res.mean["norm_dev"])) < 1e-10


def test_same_key_same_result_for_any_chunk_size():
    model = _driven_spin(1.0, 0.5)
    kw = dict(n_traj=300, key=7, params={"Omega": 1.0, "gamma": 0.5}, dt=0.01)
    ts = np.linspace(0, 2, 5)
    full = tw.simulate(model, tw.states.spins_down(1), ts, **kw)
    for cs in (64, 7):
        r = tw.simulate(model, tw.states.spins_down(1), ts, chunk_size=cs, **kw)
        for name in full.mean:
            np.testing.assert_allclose(r.mean[name], full.mean[name], rtol=0, atol=1e-12)
            np.testing.assert_allclose(r.sem[name], full.sem[name], rtol=0, atol=1e-12)
    other = tw.simulate(model, tw.states.spins_down(1), ts, **{**kw, "key": 8})
    assert not np.allclose(other.mean["sz"][1:], full.mean["sz"][1:])


def test_halving_dt_moves_results_less_than_statistics():
    """At the default dt the integration error is below the standard error: runs at dt and
    dt/2 (independent noise) agree within 3 combined standard errors at every save time."""
    model = _driven_spin(1.0, 1.0)
    ts = np.linspace(0, 8, 17)
    p = {"Omega": 1.0, "gamma": 1.0}
    r1 = tw.simulate(model, tw.states.spins_down(1), ts, n_traj=4000, key=5, params=p)
    r2 = tw.simulate(model, tw.states.spins_down(1), ts, n_traj=4000, key=6, params=p, dt=r1.dt / 2)
    assert r2.n_steps >= 2 * r1.n_steps - len(ts)
    for name in ("sx", "sy", "sz"):
        comb = np.sqrt(np.asarray(r1.sem[name]) ** 2 + np.asarray(r2.sem[name]) ** 2)
        assert np.all(np.abs(np.asarray(r1.mean[name]) - np.asarray(r2.mean[name])) <= 3.0 * comb + 1e-12)


def test_rotation_heun_matches_plain_heun_where_heun_is_stable():
    """Weak dissipation, small dt: both Stratonovich schemes give the same statistics with the
    same noise (same key), to within the integration error, far below the sem."""
    model = _driven_spin(1.0, 0.3)
    ts = np.linspace(0, 5, 6)
    kw = dict(n_traj=1000, key=9, params={"Omega": 1.0, "gamma": 0.3}, dt=0.002)
    a = tw.simulate(model, tw.states.spins_down(1), ts, solver="rotation_heun", **kw)
    b = tw.simulate(model, tw.states.spins_down(1), ts, solver="heun", **kw)
    np.testing.assert_allclose(a.mean["sz"], b.mean["sz"], atol=0.2 * float(np.max(a.sem["sz"])))


def test_no_noise_and_mean_field_methods():
    """no_noise keeps sampling but drops the noise; mean_field is one unsampled trajectory that
    follows the Bloch equations with factorized moments."""
    Omega, gamma = 1.0, 0.5
    model = _driven_spin(Omega, gamma)
    p = {"Omega": Omega, "gamma": gamma}
    ts = np.linspace(0, 4, 9)
    mf = tw.simulate(model, tw.states.spins_down(1), ts, method="mean_field", params=p, dt=1e-3)
    assert mf.n_traj == 1 and float(np.max(mf.sem["sz"])) == 0.0
    # mean-field Bloch equations for the unit vector n (|n| = 1 conserved by the flow)
    from scipy.integrate import solve_ivp

    def rhs(t, n):
        x, y, z = n
        return [gamma / 2 * x * z, -2 * Omega * z + gamma / 2 * y * z,
                2 * Omega * y - gamma / 2 * (x * x + y * y)]

    sol = solve_ivp(rhs, (0, 4), [0, 0, -1], t_eval=ts, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(mf.mean["sz"], sol.y[2], atol=1e-5)
    nn = tw.simulate(model, tw.states.spins_down(1), ts, method="no_noise", n_traj=2000, key=0, params=p)
    tw_ = tw.simulate(model, tw.states.spins_down(1), ts, method="twa", n_traj=2000, key=0, params=p)
    # without the noise, the spin length still is conserved but the dynamics differ from full TWA
    assert np.max(np.abs(np.asarray(nn.mean["sz"]) - np.asarray(tw_.mean["sz"]))) > 5 * float(np.max(tw_.sem["sz"]))


@pytest.mark.slow
def test_float32_run_is_finite_and_close_to_float64():
    import jax

    model = _driven_spin(1.0, 0.5)
    kw = dict(n_traj=500, key=3, params={"Omega": 1.0, "gamma": 0.5}, dt=0.01)
    ts = np.linspace(0, 3, 4)
    r64 = tw.simulate(model, tw.states.spins_down(1), ts, **kw)
    with jax.enable_x64(False):
        r32 = tw.simulate(model, tw.states.spins_down(1), ts, **kw)
    assert r32.mean["sz"].dtype == jnp.float32
    # float32 draws other random numbers: compare statistically (4 combined standard errors)
    comb = np.sqrt(np.asarray(r32.sem["sz"], float) ** 2 + np.asarray(r64.sem["sz"]) ** 2)
    assert np.all(np.abs(np.asarray(r32.mean["sz"], float) - np.asarray(r64.mean["sz"])) <= 4 * comb + 1e-6)


def test_nonfinite_trajectories_are_counted_not_averaged():
    """An observable that is NaN for some trajectories: they are excluded and reported."""
    model = _driven_spin(1.0, 0.5)
    obs = {"sz": lambda s, a: s[:, 2].mean(), "bad": lambda s, a: jnp.where(s[0, 0] > 0, jnp.nan, s[0, 2])}
    kw = dict(n_traj=400, key=1, params={"Omega": 1.0, "gamma": 0.5}, dt=0.02, observables=obs)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        r = tw.simulate(model, tw.states.spins_down(1), np.linspace(0, 1, 3), **kw)
    assert 0 < r.n_failed < 400
    assert np.all(np.isfinite(np.asarray(r.mean["bad"])))
    with pytest.raises(RuntimeError, match="non-finite"):
        tw.simulate(model, tw.states.spins_down(1), np.linspace(0, 1, 3), throw=True, **kw)


def test_solver_subclass_and_save_times_on_the_grid():
    """A subclass of a solver is accepted; saves land exactly on the grid (the solver keeps only
    the ends of each step), so uneven save times give the same values as a run saving them all."""
    from twa_jax import RotationHeun

    class MyHeun(RotationHeun):
        pass

    omega = 1.3
    model = tw.Model(lambda s, a, p: omega * jnp.sum(jnp.abs(a) ** 2), n_bosons=1)
    ts_all = np.round(np.arange(0, 2.0001, 0.05), 10)
    ts_some = ts_all[[0, 1, 7, 8, 20, 40]]
    kw = dict(method="mean_field", observables=OBS, dt=0.05)
    r_all = tw.simulate(model, tw.states.coherent(0.8), ts_all, **kw)
    r_some = tw.simulate(model, tw.states.coherent(0.8), ts_some, solver=MyHeun(), **kw)
    assert r_some.solver == "rotation_heun"
    idx = np.array([0, 1, 7, 8, 20, 40])
    np.testing.assert_allclose(r_some.mean["re"], r_all.mean["re"][idx], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(r_some.mean["im"], r_all.mean["im"][idx], rtol=1e-12, atol=1e-12)


def test_one_trajectory_has_no_error_bar():
    """One sampled trajectory says nothing about the spread: sem is NaN (ddof=1), the summary and
    tw.compare say why; two trajectories give the sample standard error of the two values."""
    model = _driven_spin(1.0, 0.5)
    kw = dict(key=2, params={"Omega": 1.0, "gamma": 0.5}, dt=0.02)
    ts = np.linspace(0, 1, 3)
    with pytest.warns(RuntimeWarning, match="n_traj=1: the standard errors are NaN"):
        one = tw.simulate(model, tw.states.spins_down(1), ts, n_traj=1, **kw)
    assert one.n_traj == 1 and np.all(np.isfinite(np.asarray(one.mean["sz"])))
    assert np.all(np.isnan(np.asarray(one.sem["sz"])))
    assert "1 trajectory: no error bar" in repr(one)
    text = str(tw.compare(one, one))
    assert "1 trajectory: no error bar" in text
    # the reference value: numpy's ddof=1 standard error of the two kept trajectories
    two = tw.simulate(model, tw.states.spins_down(1), ts, n_traj=2, keep_trajectories=2, **kw)
    x = np.asarray(two.trajectories["sz"], float)
    np.testing.assert_allclose(np.asarray(two.sem["sz"]), np.std(x, axis=0, ddof=1) / np.sqrt(2), rtol=1e-5)
    assert "no error bar" not in repr(two) and "no error bar" not in str(tw.compare(two, two))


@pytest.mark.filterwarnings("ignore::twa_jax.SameSiteWarning")  # log is not a polynomial: it warns too
def test_nan_observable_on_a_finite_state_is_named_not_blamed_on_dt():
    """log(s_x + 0.5) is NaN wherever a trajectory's s_x < -0.5, while the dynamics are fine:
    the warning names that observable and says the state stayed finite; the count is the number of
    kept trajectories with s_x < -0.5 at some save time."""
    model = _driven_spin(1.0, 0.5)
    ts = np.linspace(0, 1, 3)
    obs = {"x": lambda s, a: s[0, 0], "lg": lambda s, a: jnp.log(s[0, 0] + 0.5)}
    kw = dict(n_traj=64, key=1, params={"Omega": 1.0, "gamma": 0.5}, dt=0.02, observables=obs)
    with pytest.warns(RuntimeWarning) as rec:
        r = tw.simulate(model, tw.states.spins_down(1), ts, keep_trajectories=64, **kw)
    msg = next(str(w.message) for w in rec if "non-finite" in str(w.message))
    expected = int(np.sum(np.any(np.asarray(r.trajectories["x"]) < -0.5, axis=1)))
    assert 0 < r.n_failed == expected < 64
    assert f"the state stayed finite, but the observable 'lg' (in {expected} trajectories) is non-finite" in msg
    assert "reduce dt" not in msg and "'x'" not in msg
    # every trajectory NaN (log of a negative mean): an error that says the same
    with pytest.raises(RuntimeError, match=r"64 of 64 .*state stayed finite, but the observable 'neg' \(in 64 trajectories\).*not dt$"):
        tw.simulate(model, tw.states.spins_down(1), ts, n_traj=64, key=1, params={"Omega": 1.0, "gamma": 0.5},
                    dt=0.02, observables={"neg": lambda s, a: jnp.log(s[:, 2].mean() - 2.0)})
