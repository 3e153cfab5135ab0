"""Protocols in time: time-dependent models and instantaneous pulses, against closed forms (Bloch
rotations, the Ramsey fringe, Landau-Zener) and the exact twin; gradients against finite
differences; bad input rejected by name."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

import twa_jax as tw

exact = pytest.importorskip("twa_jax.exact")

SIGMA, T0 = 0.3, 1.5


def gaussian_drive(s, a, p, t):
    """H = Omega(t) sigma^x / 2 with a Gaussian Omega(t) of area p["area"]."""
    om = p["area"] / (SIGMA * jnp.sqrt(2 * jnp.pi)) * jnp.exp(-0.5 * ((t - T0) / SIGMA) ** 2)
    return 0.5 * om * s[:, 0].sum()


def sigma_minus(s, a, p, t):
    return (s[:, 0] - 1j * s[:, 1]) / 2


def pulse_model(area, gamma=0.0):
    return tw.Model(gaussian_drive, jumps=sigma_minus, gamma=jnp.array([gamma]), n_spins=1, time_dependent=True,
                    params={"area": area})


def accumulated_area(ts, area):
    return area * 0.5 * (1 + erf((ts - T0) / (SIGMA * np.sqrt(2))))


@pytest.mark.parametrize("area", [np.pi, np.pi / 2])
def test_gaussian_pulse_without_decay_is_the_closed_form_rotation(area):
    """A spin in a field linear in s rotates by the accumulated area: the mean-field trajectory
    (the Bloch equation, exact for one spin) and the exact twin both follow the closed form."""
    ts = np.linspace(0, 3, 13)
    model = pulse_model(area)
    theta = accumulated_area(ts, area)
    mf = tw.simulate(model, tw.states.spins_down(1), ts, method="mean_field", dt=1e-3)
    np.testing.assert_allclose(mf.mean["sz"], -np.cos(theta), atol=2e-6)
    np.testing.assert_allclose(mf.mean["sy"], np.sin(theta), atol=2e-6)
    ex = exact.solve(model, tw.states.spins_down(1), ts)  # DOP853 at rtol 1e-8
    np.testing.assert_allclose(ex.mean["sz"], -np.cos(theta), atol=1e-6)
    np.testing.assert_allclose(ex.mean["sy"], np.sin(theta), atol=1e-6)


@pytest.mark.parametrize("area", [np.pi, np.pi / 2])
def test_gaussian_pulse_with_decay_against_the_exact_twin(area):
    """Weak decay (gamma / peak Rabi frequency ~ 0.01, where TWA's own bias is below 0.01): TWA
    within 4 standard errors of the exact twin at every time."""
    ts = np.linspace(0, 4, 9)
    model = pulse_model(area, gamma=0.05)
    res = tw.simulate(model, tw.states.spins_down(1), ts, n_traj=4000, key=3)
    ex = exact.solve(model, tw.states.spins_down(1), ts)
    for name in ("sx", "sy", "sz"):
        dev = np.abs(np.asarray(res.mean[name]) - np.asarray(ex.mean[name]))
        assert np.all(dev <= 4 * np.asarray(res.sem[name]) + 1e-9), (name, dev / np.asarray(res.sem[name]))
    # the decay is visible: the final population differs from the undamped rotation
    assert abs(float(ex.mean["sz"][-1]) - (-np.cos(area))) > 0.02


def test_ramsey_fringe_against_the_closed_form():
    """pi/2 about x, free precession at detuning delta with dephasing L = sigma^z at rate g,
    pi/2 about x: final <sigma^z> = cos(delta T) exp(-2 g T); a save at a pulse's time records
    the state after the pulse."""
    delta, g, T = 1.3, 0.1, 2.0
    model = tw.Model(lambda s, a, p: 0.5 * p["delta"] * s[:, 2].sum(), jumps=lambda s, a, p: s[:, 2],
                     gamma=lambda p: jnp.array([p["g"]]), n_spins=1, params={"delta": delta, "g": g, "theta": np.pi / 2})
    jx = lambda s, a, p: tw.weyl.collective(s, "x")  # noqa: E731
    pulses = [tw.Pulse(0.0, jx, "theta"), tw.Pulse(T, jx, np.pi / 2)]
    ts = np.linspace(0, T, 11)
    want = np.cos(delta * T) * np.exp(-2 * g * T)
    ex = exact.solve(model, tw.states.spins_down(1), ts, pulses=pulses)
    assert abs(float(ex.mean["sz"][-1]) - want) < 1e-7
    np.testing.assert_allclose(ex.mean["sy"], np.where(ts < T, np.cos(delta * ts) * np.exp(-2 * g * ts), 0.0), atol=1e-7)
    res = tw.simulate(model, tw.states.spins_down(1), ts, n_traj=4000, key=1, pulses=pulses)
    assert abs(float(res.mean["sy"][0]) - 1.0) < 1e-6  # after the first pulse, exactly (a rotation)
    assert abs(float(res.mean["sz"][-1]) - want) < 4 * float(res.sem["sz"][-1])
    # a pulse in the middle of a step's interval becomes a grid point; its effect is the same
    mid = tw.simulate(model, tw.states.spins_down(1), np.array([0.0, 0.7, T]), n_traj=4000, key=1,
                      pulses=[tw.Pulse(0.0, jx, "theta"), tw.Pulse(1.1, jx, np.pi)], dt=0.01)
    ex_mid = exact.solve(model, tw.states.spins_down(1), np.array([0.0, 0.7, T]),
                         pulses=[tw.Pulse(0.0, jx, "theta"), tw.Pulse(1.1, jx, np.pi)])
    assert abs(float(mid.mean["sy"][-1]) - float(ex_mid.mean["sy"][-1])) < 4 * float(mid.sem["sy"][-1])


def test_nonlinear_pulse_generator_against_the_exact_twin():
    """A one-axis-twisting pulse exp(-i chi J_z^2) on two spins (generator quadratic in s, so the
    flow is integrated in substeps): TWA against the exact twin. J_z^2 = 1/2 + sigma_1^z sigma_2^z / 2
    for two spins-1/2; its symbol without same-site products is s_1^z s_2^z / 2 (written as
    (sum s^z)^2 / 4 it would carry s_i^z s_i^z, which TWA would turn into a spurious self-twist:
    the package warns)."""
    model = tw.Model(lambda s, a, p: 0.0 * s[:, 2].sum(), n_spins=2)
    twist = lambda s, a, p: 0.5 * s[0, 2] * s[1, 2]  # noqa: E731
    with pytest.warns(tw.SameSiteWarning, match="pulse 0"):
        tw.simulate(model, tw.states.spins_down(2), np.array([0.0, 1.0]), n_traj=4, key=0,
                    pulses=[tw.Pulse(0.5, lambda s, a, p: 0.25 * s[:, 2].sum() ** 2, 0.8)])
    ts = np.array([0.0, 1.0])
    pulses = [tw.Pulse(0.5, twist, 0.8)]
    init = tw.states.spins(np.array([1.0, 0.0, 0.0]), 2)
    ex = exact.solve(model, init, ts, pulses=pulses)
    res = tw.simulate(model, init, ts, n_traj=8000, key=2, pulses=pulses)
    for name in ("sx", "sy"):
        assert abs(float(res.mean[name][-1]) - float(ex.mean[name][-1])) < 4 * float(res.sem[name][-1]) + 2e-4


def landau_zener(decay=0.0):
    def H(s, a, p, t):
        return 0.5 * (p["v"] * t * s[:, 2].sum() + p["delta"] * s[:, 0].sum())

    return tw.Model(H, jumps=lambda s, a, p, t: (s[:, 0] - 1j * s[:, 1]) / 2, gamma=jnp.array([decay]), n_spins=1,
                    time_dependent=True, params={"v": 4.0, "delta": 1.0})


@pytest.mark.slow  # 19 s; Landau-Zener with decay against the twin stays in the default run
def test_landau_zener_against_the_formula_and_the_exact_twin():
    """A sweep from t = -20 to 20 starting in the diabatic state |down> (the ground state at
    t -> -inf for v > 0): the probability to stay diabatic is exp(-pi delta^2 / (2 v)); the
    finite window leaves oscillations of order delta / (v T) = 0.0125."""
    ts = np.linspace(-20, 20, 41)
    model = landau_zener()
    ex = exact.solve(model, tw.states.spins_down(1), ts)
    p_stay = np.exp(-np.pi * 1.0**2 / (2 * 4.0))
    assert abs((1 - float(ex.mean["sz"][-1])) / 2 - p_stay) < 0.02
    mf = tw.simulate(model, tw.states.spins_down(1), ts, method="mean_field")
    np.testing.assert_allclose(mf.mean["sz"], ex.mean["sz"], atol=2e-3)  # one spin: the Bloch equation is exact


def test_landau_zener_with_decay_against_the_exact_twin():
    ts = np.linspace(-4, 4, 9)
    model = landau_zener(decay=0.02)
    ex = exact.solve(model, tw.states.spins_down(1), ts)
    res = tw.simulate(model, tw.states.spins_down(1), ts, n_traj=2000, key=5)
    dev = np.abs(np.asarray(res.mean["sz"]) - np.asarray(ex.mean["sz"]))
    assert np.all(dev <= 4 * np.asarray(res.sem["sz"]) + 1e-9)


@pytest.mark.slow  # 42 s; Landau-Zener with decay checks a time-dependent model against its twin by default
def test_tavis_cummings_with_a_pump_ramped_on_against_the_exact_twin():
    """N = 4 atoms in a lossy cavity, incoherent pump sigma^+ at rate w(t) = w min(t / t_on, 1)
    (a time-dependent diagonal Gamma, zero at t = 0). TWA's own bias for this laser is ~1e-2 of
    the photon number (Tavis-Cummings, N = 4-6), so the tolerance is 0.03 N + 4 sem."""
    N, cutoff = 4, 7

    def H(s, a, p, t):
        return p["g"] * jnp.real(a[0] * jnp.sum(s[:, 0] + 1j * s[:, 1]))

    def L(s, a, p, t):
        return jnp.concatenate([a, (s[:, 0] + 1j * s[:, 1]) / 2])

    def gamma(p, t):
        w = p["w"] * jnp.minimum(t / p["t_on"], 1.0)
        return jnp.concatenate([jnp.array([p["kappa"]]), jnp.full(N, w)])

    model = tw.Model(H, jumps=L, gamma=gamma, n_spins=N, n_bosons=1, time_dependent=True,
                     params={"g": 1.0, "kappa": 4.0, "w": 1.0, "t_on": 2.0})
    init = tw.states.product(spins=tw.states.spins_down(N), bosons=tw.states.vacuum(1))
    ts = np.linspace(0, 4, 9)
    ex = exact.solve(model, init, ts, cutoff=cutoff)
    res = tw.simulate(model, init, ts, n_traj=4000, key=7)
    for name in ("sz", "n"):
        dev = np.abs(np.ravel(res.mean[name]) - np.ravel(ex.mean[name]))
        assert np.all(dev <= 0.03 * N * (name == "n") + 0.03 * (name == "sz") + 4 * np.ravel(res.sem[name])), (name, dev)
    assert float(ex.mean["sz"][-1]) > -0.6  # the pump did act (it starts at -1)


def test_gradients_through_a_pulse_area_and_a_ramp_rate_equal_finite_differences():
    """d<sigma^z>(T)/d(pulse area) and d/d(sweep rate) with common random numbers against central
    differences of simulate with the same key (the same trajectories)."""
    model = tw.Model(lambda s, a, p, t: 0.5 * (p["v"] * t * s[:, 2].sum() + 0.7 * s[:, 0].sum()),
                     jumps=lambda s, a, p, t: s[:, 2], gamma=jnp.array([0.1]), n_spins=1, time_dependent=True,
                     params={"v": 1.0, "theta": 1.2})
    jx = lambda s, a, p: tw.weyl.collective(s, "x")  # noqa: E731
    pulses = [tw.Pulse(0.0, jx, "theta")]
    ts = np.linspace(0, 2, 5)
    kw = dict(n_traj=200, key=4, dt=0.01, pulses=pulses)
    loss = lambda mean: mean["sz"][-1]  # noqa: E731
    p0 = {"v": 1.0, "theta": 1.2}
    val, grad = tw.value_and_grad(loss, model, tw.states.spins_down(1), ts, params=p0, **kw)
    for name in p0:
        h = 1e-4
        up = tw.simulate(model, tw.states.spins_down(1), ts, params={**p0, name: p0[name] + h}, **kw).mean["sz"][-1]
        dn = tw.simulate(model, tw.states.spins_down(1), ts, params={**p0, name: p0[name] - h}, **kw).mean["sz"][-1]
        fd = float(up - dn) / (2 * h)
        assert abs(float(grad[name]) - fd) < 1e-5 * max(1.0, abs(fd)), (name, float(grad[name]), fd)
    assert abs(float(val) - float(tw.simulate(model, tw.states.spins_down(1), ts, params=p0, **kw).mean["sz"][-1])) < 1e-10


@pytest.mark.slow  # 32 s; fits are tested in test_fit.py, the pulse-area gradient here
def test_fit_recovers_a_pulse_area_from_exact_data():
    """Data: the exact twin's <sigma^y>, <sigma^z> after a pulse of area 1.1 about x and decay;
    the fit, started at 0.7, lands within 3 of its standard errors (plus TWA's own bias, ~0.01)."""
    model = tw.Model(lambda s, a, p: 0.4 * s[:, 2].sum(), jumps=lambda s, a, p: (s[:, 0] - 1j * s[:, 1]) / 2,
                     gamma=jnp.array([0.05]), n_spins=1, params={"theta": 1.1})
    jx = lambda s, a, p: tw.weyl.collective(s, "x")  # noqa: E731
    pulses = [tw.Pulse(0.0, jx, "theta")]
    ts = np.linspace(0, 2, 6)
    ex = exact.solve(model, tw.states.spins_down(1), ts, pulses=pulses)
    data = {"sy": np.asarray(ex.mean["sy"]), "sz": np.asarray(ex.mean["sz"])}
    fit = tw.fit(model, tw.states.spins_down(1), ts, data, {"theta": 0.7}, n_traj=1000, key=0, pulses=pulses,
                 observables={"sy": lambda s, a: s[:, 1].mean(), "sz": lambda s, a: s[:, 2].mean()})
    assert abs(float(fit.params["theta"]) - 1.1) < 3 * float(fit.stderr["theta"]) + 0.01


def test_time_dependent_sweep_point_equals_simulate():
    """A sweep over a ramp parameter of a time-dependent model: each point is the simulate run
    with the same key (common random numbers)."""
    model = landau_zener(decay=0.05)
    ts = np.linspace(-3, 3, 4)
    ds = tw.sweep((model, tw.states.spins_down(1)), {"v": [1.0, 2.0]}, ts, n_traj=100, key=0, dt=0.02)
    one = tw.simulate(model, tw.states.spins_down(1), ts, n_traj=100, key=0, dt=0.02, params={"v": 2.0})
    np.testing.assert_allclose(ds["sz"].sel(v=2.0).values, one.mean["sz"], atol=1e-12)


# ------------------------------------------------------------------------------ bad input
def test_time_dependent_functions_must_take_the_time():
    with pytest.raises(TypeError, match=r"time_dependent=True: hamiltonian must take the time"):
        tw.Model(lambda s, a, p: s[:, 0].sum(), n_spins=1, time_dependent=True)
    with pytest.raises(TypeError, match=r"time_dependent=True: gamma must take the time"):
        tw.Model(lambda s, a, p, t: s[:, 0].sum(), jumps=sigma_minus, gamma=lambda p: jnp.ones(1), n_spins=1,
                 time_dependent=True)
    with pytest.raises(TypeError, match=r"pass time_dependent=True"):
        tw.Model(lambda s, a, p, t: t * s[:, 0].sum(), n_spins=1)


def test_bad_pulses_are_rejected_by_name():
    model = tw.Model(lambda s, a, p: s[:, 2].sum(), n_spins=1, params={"theta": 1.0})
    jx = lambda s, a, p: tw.weyl.collective(s, "x")  # noqa: E731
    ts = np.linspace(0, 1, 3)
    run = lambda pulses: tw.simulate(model, tw.states.spins_down(1), ts, n_traj=4, key=0, pulses=pulses)  # noqa: E731
    with pytest.raises(ValueError, match=r"pulse 0 at time 2 is outside the save times' span \[0, 1\]"):
        run([tw.Pulse(2.0, jx, 1.0)])
    with pytest.raises(TypeError, match=r"pulse 0: the generator must return a real scalar"):
        run([tw.Pulse(0.5, lambda s, a, p: (s[:, 0] - 1j * s[:, 1]).sum(), 1.0)])
    with pytest.raises(TypeError, match=r"pulse 0: the generator must return a real scalar"):
        run([tw.Pulse(0.5, lambda s, a, p: s[:, 0], 1.0)])
    with pytest.raises(ValueError, match=r"angle 'phi' is not a parameter; parameters: \['theta'\]"):
        run([tw.Pulse(0.5, jx, "phi")])
    with pytest.raises(TypeError, match=r"pulses must be a list of tw.Pulse"):
        run([(0.5, jx, 1.0)])
    with pytest.raises(IndexError, match=r"the generator of pulse 1 indexes out of range with n_spins=1"):
        run([tw.Pulse(0.5, jx, 1.0), tw.Pulse(0.5, lambda s, a, p: s[3, 0], 1.0)])  # JAX would clamp s[3] to s[0]
    with pytest.raises(TypeError, match=r"Pulse generator must be a function"):
        tw.Pulse(0.5, 1.0, 1.0)
    assert tw.Pulse(np.array(0.5), jx, 1.0).time == 0.5  # a 0-d array is its number
    with pytest.raises(TypeError, match=r"Pulse time must be a finite number"):
        tw.Pulse(np.array([0.5]), jx, 1.0)
    for bad in (float("nan"), np.inf):
        with pytest.raises(ValueError, match=r"Pulse angle must be finite"):
            tw.Pulse(0.5, lambda s, a, p: s[0, 0], bad)
    with pytest.raises(ValueError, match=r"need the twin read off the model's functions: method='full'"):
        exact.solve(model, tw.states.spins_down(1), ts, pulses=[tw.Pulse(0.5, jx, 1.0)], method="mcsolve")


def oat_closed_form(N, tau, chi, gam):
    """One-axis twisting H = chi J_z^2 from the x-polarized state with dephasing sigma^z_i at rate
    gam: Kitagawa-Ueda's moments with each coherence damped by exp(-2 gam tau) per site that is
    off-diagonal in z (dephasing commutes with the Ising Hamiltonian)."""
    S, mu = N / 2, 2 * chi * tau
    A = 1 - np.cos(mu) ** (N - 2)
    B = 4 * np.sin(mu / 2) * np.cos(mu / 2) ** (N - 2)
    return {"jx": np.exp(-2 * gam * tau) * S * np.cos(chi * tau) ** (N - 1),
            "jyy": S / 2 + np.exp(-4 * gam * tau) * S / 2 * (S - 0.5) * A,
            "jzz": S / 2,
            "jyz": np.exp(-2 * gam * tau) * S / 2 * (S - 0.5) * B / 2}


def _sym2(u, v):  # symbol of (U V + V U)/2 for U = sum(u)/2, V = sum(v)/2, same-site products reduced
    return (u.sum() * v.sum() - (u * v).sum()) / 4


def _oat(N, chi, gam):
    model = tw.Model(lambda s, a, p: p["tau"] * chi * (_sym2(s[:, 2], s[:, 2]) + N / 4),
                     jumps=lambda s, a, p: s[:, 2] + 0j, gamma=lambda p: jnp.full(N, p["tau"] * gam), n_spins=N,
                     params={"tau": 0.1})
    obs = {"jx": lambda s, a: s[:, 0].sum() / 2, "jyy": lambda s, a: _sym2(s[:, 1], s[:, 1]) + N / 4,
           "jzz": lambda s, a: _sym2(s[:, 2], s[:, 2]) + N / 4, "jyz": lambda s, a: _sym2(s[:, 1], s[:, 2])}
    return model, obs


def test_one_axis_twisting_closed_form_against_the_exact_twin_and_twa():
    """The closed form the protocols notebook optimizes against: equal to the exact twin at N = 4
    (two twisting times), and TWA at N = 40 within 4 standard errors of it near the optimum."""
    chi, gam = 1.0, 0.5
    along_x = lambda n: tw.states.spins(np.array([1.0, 0.0, 0.0]), n)  # noqa: E731
    model, obs = _oat(4, chi, gam)
    for tau in (0.3, 0.8):
        ex = exact.solve(model, along_x(4), np.array([0.0, 1.0]), params={"tau": tau}, observables=obs)
        want = oat_closed_form(4, tau, chi, gam)
        for k in obs:
            assert abs(float(ex.mean[k][-1]) - want[k]) < 1e-7 * max(1.0, abs(want[k])), (k, tau)
    model, obs = _oat(40, chi, gam)
    res = tw.simulate(model, along_x(40), np.array([0.0, 1.0]), params={"tau": 0.08}, observables=obs,
                      n_traj=2000, key=0, dt=0.02)
    want = oat_closed_form(40, 0.08, chi, gam)
    for k in obs:
        assert abs(float(res.mean[k][-1]) - want[k]) < 4 * float(res.sem[k][-1]) + 1e-6, (k, float(res.mean[k][-1]), want[k])


def test_sweep_over_a_pulse_area_equals_simulate():
    """Pulses in a sweep: the areas of the points are solved together (the pulse acts per point)
    and each point equals simulate with the same key; the Rabi curve -cos(theta) e^{-...} shows."""
    model = tw.Model(lambda s, a, p: 0.0 * s[:, 2].sum(), jumps=lambda s, a, p: s[:, 2], gamma=jnp.array([0.05]),
                     n_spins=1, params={"theta": 0.0})
    jx = lambda s, a, p: tw.weyl.collective(s, "x")  # noqa: E731
    pulses = [tw.Pulse(0.5, jx, "theta")]
    ts = np.linspace(0, 1, 3)
    thetas = [0.0, np.pi / 2, np.pi]
    ds = tw.sweep((model, tw.states.spins_down(1)), {"theta": thetas}, ts, n_traj=64, key=0, dt=0.05, pulses=pulses)
    for th in thetas:
        one = tw.simulate(model, tw.states.spins_down(1), ts, n_traj=64, key=0, dt=0.05, params={"theta": th},
                          pulses=pulses)
        np.testing.assert_allclose(ds["sz"].sel(theta=th).values, one.mean["sz"], atol=1e-12)
    after = ds["sz"].isel(time=1).values  # right after the pulse: -cos(theta) + sin(theta) <s_y>(sampled)
    assert np.all(np.abs(after + np.cos(thetas)) <= 4 * ds["sz_sem"].isel(time=1).values + 1e-12)
    assert abs(after[0] + 1) < 1e-12 and abs(after[2] - 1) < 1e-12
