"""The run plan and the engine under every entry point: the same defaults, observables and
options everywhere, and what falls out of the engine (target_sem, time averages, kept
trajectories, user-defined initial states). References: hand-derived dynamics, finite
differences with the same key, and statistics recomputed from kept trajectories."""

import functools
import re
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import twa_jax as tw
from twa_jax import _engine, _plan

TS = np.linspace(0.0, 0.4, 3)


def _builtin_models():
    return {
        "driven_spin": (tw.models.driven_spin(gamma_down=0.3), tw.states.spins_down(1), "Omega", "sz"),
        "tavis_cummings": (tw.models.tavis_cummings(2), tw.states.product(spins=tw.states.spins_down(2), bosons=tw.states.vacuum(1)), "g", "n"),
        "central_spin": (tw.models.central_spin(2), tw.states.spins_down(3), "g", "sz"),
        "rydberg_chain": (tw.models.rydberg_chain(3, kappa=0.2), tw.states.spins_down(3), "Omega", "sz"),
        "dipole_array": (tw.models.dipole_array(tw.models.chain_positions(2, 0.2), Omega=0.5), tw.states.spins_up(2), "Omega", "emission_rate"),
        "dicke": (tw.models.dicke(2, Omega=0.5), tw.states.spins_up(2), "Omega", "emission_rate"),
    }


@pytest.mark.parametrize("name", [
    n if n == "driven_spin" else pytest.param(n, marks=pytest.mark.slow) for n in _builtin_models()
])
def test_value_and_grad_merges_defaults_and_uses_model_observables(name):
    """One parameter of a built-in model: the other defaults merge in as in simulate (this raised
    KeyError before), and the model's own observables are the ones differentiated."""
    model, init, pname, obs = _builtin_models()[name]
    kw = dict(n_traj=6, key=3, dt=0.02)
    p = {pname: float(model.params[pname]) * 1.1}
    loss = lambda mean: jnp.sum(jnp.real(mean[obs]))  # noqa: E731
    val, g = tw.value_and_grad(loss, model, init, TS, params=p, **kw)
    ref = tw.simulate(model, init, TS, params=p, **kw)
    np.testing.assert_allclose(float(val), float(jnp.sum(jnp.real(ref.mean[obs]))), rtol=1e-10)
    assert set(g) == {pname} and np.isfinite(float(g[pname]))


def test_gradient_of_one_default_parameter_matches_finite_differences():
    model, init = tw.models.driven_spin(gamma_down=0.3), tw.states.spins_down(1)
    kw = dict(n_traj=16, key=1, dt=0.02)
    loss = lambda mean: mean["sz"][-1]  # noqa: E731
    _, g = tw.value_and_grad(loss, model, init, TS, params={"Omega": 1.0}, **kw)
    h = 1e-5
    f = lambda x: float(tw.simulate(model, init, TS, params={"Omega": x}, **kw).mean["sz"][-1])  # noqa: E731
    np.testing.assert_allclose(float(g["Omega"]), (f(1 + h) - f(1 - h)) / (2 * h), rtol=1e-5)


def test_derivative_at_a_zero_rate_is_refused_with_its_name():
    """d/dkappa at kappa = 0 has no pathwise derivative (noise amplitude sqrt(kappa)); it used to
    come out 0.0 against a finite difference of -8.5."""
    model, init = tw.models.driven_spin(gamma_down=0.3), tw.states.spins_down(1)
    loss = lambda mean: mean["sz"][-1]  # noqa: E731
    for pname in ("kappa", "gamma_up"):
        with pytest.raises(ValueError, match=rf"params\['{pname}'\] does not exist here.*currently 0"):
            tw.value_and_grad(loss, model, init, TS, params={pname: 0.0}, n_traj=4, key=0, dt=0.02)
    # a positive rate is fine
    _, g = tw.value_and_grad(loss, model, init, TS, params={"kappa": 0.1}, n_traj=4, key=0, dt=0.02)
    assert np.isfinite(float(g["kappa"]))


def test_zero_rate_check_in_float32_tells_rounding_from_a_new_channel():
    """float32: a rank-deficient dense Gamma scaled by a parameter (the lambda/5 dipole chain,
    18 of 20 channels kept) has a derivative and is accepted (its null block is 7e-8 of dGamma,
    rounding; the float64 bound 1e-8 refused it), while a rate switched on from 0 is still refused."""
    n = 20
    loss = lambda mean: jnp.sum(mean["sz"])  # noqa: E731
    with jax.enable_x64(False):  # the couplings made in float32 too (a float64 G1 would be truncated, with a warning)
        G1, _ = tw.models.dipole_couplings(tw.models.chain_positions(n, 0.2), 1.0, jnp.array([0.0, 0.0, 1.0]), 1.0)
        model = tw.Model(lambda s, a, p: p["Omega"] * jnp.sum(s[:, 0]), jumps=lambda s, a, p: (s[:, 0] - 1j * s[:, 1]) / 2,
                         gamma=lambda p: p["Gamma0"] * G1, n_spins=n, params={"Omega": 1.0, "Gamma0": 1.0})
        kw = dict(n_traj=4, key=0, dt=0.05)
        _, g = tw.value_and_grad(loss, model, tw.states.spins_down(n), TS, params={"Omega": 1.0, "Gamma0": 1.0}, **kw)
        assert g["Gamma0"].dtype == jnp.float32 and np.isfinite(float(g["Gamma0"]))
        spin, init = tw.models.driven_spin(gamma_down=0.3), tw.states.spins_down(1)
        with pytest.raises(ValueError, match=r"params\['kappa'\] does not exist here"):
            tw.value_and_grad(lambda m: m["sz"][-1], spin, init, TS, params={"kappa": 0.0}, **kw)


def test_unknown_parameters_are_named_everywhere():
    model, init = tw.models.driven_spin(), tw.states.spins_down(1)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['Omgea'\]"):
        tw.value_and_grad(lambda m: m["sz"].sum(), model, init, TS, params={"Omgea": 1.0}, n_traj=4, key=0)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['Omgea'\]"):
        tw.fit(model, init, TS, {"sz": np.zeros(3)}, {"Omgea": 1.0}, n_traj=4, key=0, progress=False)


def test_fit_sees_the_model_observables():
    """The old fit looked only at sx, sy, sz, n: emission_rate was 'not an observable'."""
    model = tw.models.dipole_array(tw.models.chain_positions(2, 0.2), Omega=0.5)
    with pytest.raises(ValueError, match=r"data\['emission_rate'\] has shape \(2,\); the observable at 3 times"):
        tw.fit(model, tw.states.spins_up(2), TS, {"emission_rate": np.zeros(2)}, {"Omega": 0.7}, n_traj=4, key=0,
               dt=0.02, progress=False)


@pytest.mark.slow
def test_fit_one_parameter_of_a_builtin_model_with_its_own_observable():
    """Levenberg-Marquardt fit of Omega of the dipole array from its emission rate (a model
    observable the old fit could not see): synthetic data at Omega = 0.5 from another key and
    2000 trajectories; the fit starts 40 % off and lands within 3 standard errors."""
    model = tw.models.dipole_array(tw.models.chain_positions(2, 0.2), Omega=0.5)
    init, ts = tw.states.spins_up(2), np.linspace(0, 2, 6)
    syn = tw.simulate(model, init, ts, n_traj=2000, key=11, dt=0.05)
    sigma = np.sqrt(0.01**2 + np.asarray(syn.sem["emission_rate"]) ** 2)
    data = {"emission_rate": np.asarray(syn.mean["emission_rate"])}
    res = tw.fit(model, init, ts, data, {"Omega": 0.7}, n_traj=200, key=2, sigma={"emission_rate": sigma},
                 dt=0.05, progress=False)
    se = float(res.stderr["Omega"])
    assert 0 < se < 0.2
    assert abs(float(res.params["Omega"]) - 0.5) < 3 * se, (float(res.params["Omega"]), se)
    assert res.converged and len(res.loss_history) <= 10


# --------------------------------------------------------------------------- new capabilities
def _spin_model():
    return tw.Model(lambda s, a, p: p["Omega"] * jnp.sum(s[:, 0]), jumps=lambda s, a, p: (s[:, 0] - 1j * s[:, 1]) / 2,
                    gamma=lambda p: jnp.full(1, p["gamma"]), n_spins=1, params={"Omega": 1.0, "gamma": 0.4})


def test_target_sem_stops_at_the_first_chunk_below_target_and_equals_a_fixed_run():
    model, init, ts = _spin_model(), tw.states.spins_down(1), np.linspace(0, 1, 5)
    kw = dict(key=7, dt=0.05, chunk_size=16, progress=False)
    res = tw.simulate(model, init, ts, n_traj=4096, target_sem=0.06, **kw)
    n = res.n_traj
    assert n < 4096 and n % 16 == 0
    assert max(float(jnp.max(v)) for v in res.sem.values()) <= 0.06
    fixed = tw.simulate(model, init, ts, n_traj=n, **kw)
    for k in res.mean:
        np.testing.assert_allclose(res.mean[k], fixed.mean[k], rtol=0, atol=1e-13)
        np.testing.assert_allclose(res.sem[k], fixed.sem[k], rtol=0, atol=1e-13)
    fewer = tw.simulate(model, init, ts, n_traj=n - 16, **kw)
    assert max(float(jnp.max(v)) for v in fewer.sem.values()) > 0.06


def test_target_sem_pilot_stops_within_1p3x_of_the_count_needed():
    # default chunk (the whole budget fits in memory): a pilot, then chunks sized from its spread
    model, init, ts = _spin_model(), tw.states.spins_down(1), np.linspace(0, 1, 3)
    kw = dict(key=3, dt=0.1, progress=False)
    target = 0.01
    res = tw.simulate(model, init, ts, n_traj=200_000, target_sem=target, **kw)
    n = res.n_traj
    assert max(float(jnp.max(v)) for v in res.sem.values()) <= target
    # the count needed is more than n / 1.3: a fixed run of that many misses the target
    fewer = tw.simulate(model, init, ts, n_traj=int(n / 1.3), **kw)
    assert max(float(jnp.max(v)) for v in fewer.sem.values()) > target, n
    fixed = tw.simulate(model, init, ts, n_traj=n, **kw)
    for k in res.mean:
        np.testing.assert_allclose(res.mean[k], fixed.mean[k], rtol=0, atol=1e-12)
        np.testing.assert_allclose(res.sem[k], fixed.sem[k], rtol=0, atol=1e-12)


def test_target_sem_out_of_reach_warns_with_the_count_needed():
    """A target that n_traj cannot reach is not a silent answer: the run warns, with how many
    trajectories the spread says are needed, and equals the fixed run it was."""
    model, init, ts = _spin_model(), tw.states.spins_down(1), np.linspace(0, 1, 3)
    kw = dict(key=3, dt=0.1, progress=False)
    with pytest.warns(RuntimeWarning, match=r"target_sem=0.01 not reached: the largest standard error is 0\.\d+ "
                                            r"after all n_traj=300 trajectories; about [\d,]+ are needed"):
        res = tw.simulate(model, init, ts, n_traj=300, target_sem=0.01, **kw)
    largest = max(float(jnp.max(v)) for v in res.sem.values())
    assert res.n_traj == 300 and largest > 0.01
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tw.simulate(model, init, ts, n_traj=300, target_sem=largest * 1.01, **kw)  # reached: no warning


def test_time_average_and_kept_trajectories_agree_with_a_hand_computation():
    model, init, ts = _spin_model(), tw.states.spins_down(1), np.linspace(0, 2, 9)
    res = tw.simulate(model, init, ts, n_traj=40, key=5, dt=0.05, chunk_size=16, progress=False,
                      time_average={"sz": (0.5, 1.5), "sx": (0.0, 2.0)}, keep_trajectories=40)
    traj = np.asarray(res.trajectories["sz"])
    assert traj.shape == (40, 9)
    np.testing.assert_allclose(traj.mean(0), res.mean["sz"], atol=1e-12)  # the kept are the simulated
    sel = (ts >= 0.5) & (ts <= 1.5)
    per = traj[:, sel].mean(axis=1)
    np.testing.assert_allclose(res.average["sz"], per.mean(), atol=1e-12)
    np.testing.assert_allclose(res.average_sem["sz"], per.std(ddof=1) / np.sqrt(40), atol=1e-12)
    few = tw.simulate(model, init, ts, n_traj=40, key=5, dt=0.05, chunk_size=16, progress=False, keep_trajectories=3)
    np.testing.assert_allclose(few.trajectories["sx"], res.trajectories["sx"][:3], atol=1e-13)
    np.testing.assert_allclose(few.mean["sx"], res.mean["sx"], atol=1e-13)  # statistics unchanged


class GaussianDown(tw.states.AbstractState):
    """Spins along -z with Gaussian transverse components of variance ``var``: a distribution of
    the user's own (not a built-in sampler)."""

    var: float
    n_spins: int = eqx.field(static=True)
    n_bosons: int = eqx.field(static=True, default=0)
    spin_S: None = eqx.field(static=True, default=None)

    def sample(self, key):
        u = jax.random.normal(key, (self.n_spins, 2)) * jnp.sqrt(self.var)
        return jnp.stack([u[:, 0], u[:, 1], -jnp.ones(self.n_spins)], -1), jnp.zeros((0,), complex)

    def mean(self):
        return jnp.tile(jnp.array([0.0, 0.0, -1.0]), (self.n_spins, 1)), jnp.zeros((0,), complex)


@pytest.mark.filterwarnings("ignore::twa_jax.SameSiteWarning")  # sx2: the classical second moment, on purpose
def test_user_defined_initial_state():
    """Closed precession about x is linear, so <s^z>(t) = -cos(2 Omega t) and <s^y>(t) =
    sin(2 Omega t) for the mean exactly, whatever the transverse noise; <(s^x)^2> stays the
    sampled variance. All within a few standard errors."""
    model = tw.Model(lambda s, a, p: 0.7 * jnp.sum(s[:, 0]), n_spins=2)
    ts = np.linspace(0, 1.5, 7)
    obs = {"sz": lambda s, a: s[:, 2].mean(), "sy": lambda s, a: s[:, 1].mean(), "sx2": lambda s, a: jnp.mean(s[:, 0] ** 2)}
    res = tw.simulate(model, GaussianDown(0.5, 2), ts, n_traj=2000, key=0, dt=0.01, observables=obs)
    for name, exact in (("sz", -np.cos(1.4 * ts)), ("sy", np.sin(1.4 * ts)), ("sx2", 0.5 + 0 * ts)):
        err = np.abs(np.asarray(res.mean[name]) - exact)
        assert np.all(err < 4.5 * np.asarray(res.sem[name]) + 1e-9), (name, err, res.sem[name])
    mf = tw.simulate(model, GaussianDown(0.5, 2), ts, method="mean_field", dt=0.01)
    np.testing.assert_allclose(mf.mean["sz"], -np.cos(1.4 * ts), atol=1e-5)
    both = tw.states.product(spins=[GaussianDown(0.5, 1), tw.states.spins_down(1)])
    assert both.n_spins == 2


def test_new_values_keys_sizes_and_steps_reuse_the_compiled_chunk():
    """New parameter values (Python floats or arrays), keys, a new n_traj on the same size of the
    chunk ladder, a new dt or a longer ts of the same length whose grid pads to the same length:
    no new program."""
    model, init = _spin_model(), tw.states.spins_down(1)
    ref = tw.simulate(model, init, TS, n_traj=34, key=0, dt=0.05)  # 8 steps, padded to 16
    n0 = _engine._chunk._cached._cache_size()
    tw.simulate(model, init, TS, n_traj=34, key=1, params={"Omega": 1.3, "gamma": 0.1}, dt=0.05)
    tw.simulate(model, init, TS, n_traj=34, key=1, params={"Omega": jnp.float32(1.2), "gamma": 0.2}, dt=0.05)
    tw.simulate(model, init, TS, n_traj=36, key=2, dt=0.051)  # 34 and 36 (17, 18 per device): chunk 36 (18)
    other = tw.simulate(model, init, TS, n_traj=34, key=0, dt=0.03)  # 14 steps
    longer = tw.simulate(model, init, 2 * TS, n_traj=34, key=0, dt=0.05)  # 16 steps
    assert (ref.n_steps, other.n_steps, longer.n_steps) == (8, 14, 16)
    assert _engine._chunk._cached._cache_size() == n0
    # the steps past the end of the grid are not taken: the first 8 steps of the longer run
    # are the shorter run's, trajectory by trajectory (same grid points, same noise)
    np.testing.assert_array_equal(np.asarray(longer.mean["sz"][1]), np.asarray(ref.mean["sz"][2]))


def test_exact_grid_and_padded_grid_give_the_same_trajectories(monkeypatch):
    """The exact grid (diffrax's StepTo, a trip count XLA knows, ``PAD_GRID = False``) and the
    padded one that stops at the last save time (the default): the same steps, the same numbers."""
    model, init = _spin_model(), tw.states.spins_down(1)
    ts = np.linspace(0.0, 1.1, 4)  # 3 intervals of 8 steps: 24, padded to 32
    padded = tw.simulate(model, init, ts, n_traj=24, key=4, dt=0.05, keep_trajectories=3)
    monkeypatch.setattr(_plan, "PAD_GRID", False)
    plan = _plan.make_plan(model, init, ts, n_traj=24, key=4, dt=0.05)
    assert plan.grid.shape == (25,) and float(plan.t_end) == float(plan.grid[-1])
    exact = tw.simulate(model, init, ts, n_traj=24, key=4, dt=0.05, keep_trajectories=3)
    assert padded.n_steps == exact.n_steps == 24
    for k in padded.mean:
        np.testing.assert_allclose(np.asarray(exact.mean[k]), np.asarray(padded.mean[k]), rtol=0, atol=1e-12)
        np.testing.assert_allclose(np.asarray(exact.trajectories[k]), np.asarray(padded.trajectories[k]), rtol=0, atol=1e-12)
    # default dt: the estimate is rounded down onto a ladder 2**(k/4), so nearby values share it
    a = tw.simulate(model, init, TS, n_traj=8, key=0, params={"Omega": 1.0, "gamma": 0.4})
    n1 = _engine._chunk._cached._cache_size()
    b = tw.simulate(model, init, TS, n_traj=8, key=0, params={"Omega": 1.05, "gamma": 0.4})
    assert a.dt == b.dt
    assert _engine._chunk._cached._cache_size() == n1


@pytest.mark.parametrize("dt", [0.1, 0.0173, 1.0, 2.0**-5, 3.7])
def test_dt_ladder_rounds_down_by_at_most_a_quarter_octave(dt):
    from twa_jax._plan import on_dt_ladder

    d = on_dt_ladder(dt)
    assert dt * 2 ** -0.25 < d <= dt * (1 + 1e-12)
    assert 4 * np.log2(d) == pytest.approx(round(4 * np.log2(d)), abs=1e-9)


def test_complex_gamma_gives_no_diffrax_complex_warning():
    G = jnp.array([[1.0, 0.8j], [-0.8j, 1.0]])
    model = tw.Model(lambda s, a, p: jnp.sum(s[:, 0]), jumps=lambda s, a, p: (s[:, 0] - 1j * s[:, 1]) / 2, gamma=G, n_spins=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = tw.simulate(model, tw.states.spins_down(2), TS, n_traj=8, key=0, dt=0.05)
    assert res.n_failed == 0


def test_failure_message_says_what_is_true():
    """A Kerr oscillator at an absurd dt blows up with either solver; the message names the
    count, the first trajectory and time, and only advises rotation_heun when it is not in use."""
    model = tw.Model(lambda s, a, p: 50.0 * jnp.abs(a[0]) ** 4, n_bosons=1)
    init, ts = tw.states.coherent(3.0), np.linspace(0, 4, 5)
    with pytest.warns(RuntimeWarning, match="times the estimated stable step"):
        with pytest.raises(RuntimeError, match=r"4 of 4 trajectories.*first is trajectory 0.*t = .*reduce dt$"):
            tw.simulate(model, init, ts, n_traj=4, key=0, dt=1.0)
        with pytest.raises(RuntimeError, match="reduce dt or use the norm-preserving"):
            tw.simulate(model, init, ts, n_traj=4, key=0, dt=1.0, solver="heun")


# --------------------------------------------------------------------------- rejected options
@pytest.mark.parametrize(
    "kw, exc, match",
    [
        (dict(method="mean_field", chunk_size=4), ValueError, "does not use chunk_size"),
        (dict(method="mean_field", key=0), ValueError, "does not use key"),
        (dict(method="mean_field", target_sem=0.1), ValueError, "does not use target_sem"),
        (dict(method="mean_field", devices=jax.devices()), ValueError, "does not use devices"),
        (dict(n_traj=4, key=0, keep_trajectories=5), ValueError, "exceeds n_traj"),
        (dict(n_traj=4, key=0, keep_trajectories=1.5), TypeError, "keep_trajectories must be an int"),
        (dict(n_traj=4, key=0, time_average={"pop": (0, 1)}), ValueError, "not an observable"),
        (dict(n_traj=4, key=0, time_average={"sz": (0.1, 0.15)}), ValueError, "contains no save time"),
        (dict(n_traj=4, key=0, time_average={"sz": (1.0, 0.0)}), ValueError, "t0 must not exceed t1"),
        (dict(n_traj=4, key=0, time_average={"sz": 1.0}), TypeError, "pair"),
        (dict(n_traj=4, key=0, target_sem=-1.0), ValueError, "target_sem must be a positive"),
        (dict(n_traj=4, key=0, target_sem="small"), TypeError, "target_sem must be a positive number"),
        (dict(n_traj=4, key=0, progress="yes"), TypeError, "progress must be"),
        (dict(n_traj=0, key=0), ValueError, "n_traj must be >= 1"),
        (dict(n_traj=2.0, key=0), TypeError, "n_traj must be an int"),
    ],
)
def test_rejected_options(kw, exc, match):
    with pytest.raises(exc, match=match):
        tw.simulate(_spin_model(), tw.states.spins_down(1), TS, dt=0.05, **kw)


def test_out_of_range_index_in_a_model_function_is_named():
    model = tw.Model(lambda s, a, p: s[5, 0], n_spins=3)
    with pytest.raises(IndexError, match=r"hamiltonian indexes out of range.*index 5 is out of bounds"):
        tw.simulate(model, tw.states.spins_down(3), TS, n_traj=2, key=0, dt=0.05)
    with pytest.raises(IndexError, match=r"observable 'bad' indexes out of range"):
        tw.simulate(tw.Model(lambda s, a, p: s[2, 0], n_spins=3), tw.states.spins_down(3), TS, n_traj=2, key=0,
                    dt=0.05, observables={"bad": lambda s, a: s[3, 2]})


def test_value_checks_are_kept_only_for_the_same_values():
    """The index check and the step estimate are kept for the last parameter values and state of
    a model (a repeated run skips their device calls): an index that depends on a parameter's
    value is still caught at a new value, a warning repeats on every run, and the estimate
    follows new values of the parameters and of the initial state."""
    model = tw.Model(lambda s, a, p: p["w"] * s[p["i"], 0], n_spins=3, params={"w": 1.0, "i": np.int32(0)})
    run = functools.partial(tw.simulate, model, tw.states.spins_down(3), n_traj=2, key=0)
    run(TS, dt=0.05, params={"i": np.int32(2)})
    with pytest.raises(IndexError, match=r"hamiltonian indexes out of range.*index 3 is out of bounds"):
        run(TS, dt=0.05, params={"i": np.int32(3)})
    run(TS, dt=0.05, params={"i": np.int32(2)})

    def estimate_warned(w):
        with pytest.warns(RuntimeWarning, match="times the estimated stable step") as record:
            run(np.array([0.0, 20.0]), dt=10.0, params={"w": w})
        return float(re.search(r"estimated stable step ([0-9.e-]+) ", str(record[0].message)).group(1))

    first, again, faster = estimate_warned(1.0), estimate_warned(1.0), estimate_warned(10.0)  # a kept estimate warns
    assert again == first and faster == pytest.approx(first / 10, rel=0.2)  # ... and follows the rate (dt ladder)
    boson = tw.Model(lambda s, a, p: jnp.abs(a[0]) ** 4, n_bosons=1)
    small, large = (_plan.estimate_dt(boson, None, tw.states.coherent(c), {}, np.float32, n_samples=0)
                    for c in (0.5, 5.0))
    assert large < small / 10  # the rate grows with |alpha|^2: the state's values are part of the key


def test_dt_far_above_the_estimate_warns_naming_both():
    with pytest.warns(RuntimeWarning, match=r"dt=10 is .* times the estimated stable step 0.0"):
        tw.simulate(_spin_model(), tw.states.spins_down(1), np.array([0.0, 20.0]), n_traj=2, key=0, dt=10.0)


def test_dt_warning_names_the_step_used():
    """The grid splits each save interval evenly, so the step used (Result.dt) can be smaller than
    the requested dt: the warning judges and names the step used, and the requested one."""
    with pytest.warns(RuntimeWarning, match=r"dt=10 was requested.*step used \(Result.dt\) 2, which is 2.. times"):
        res = tw.simulate(_spin_model(), tw.states.spins_down(1), np.linspace(0, 20, 11), n_traj=2, key=0, dt=10.0)
    assert res.dt == pytest.approx(2.0)
    # save times 0.2 apart: the step used is 0.2, within 25 estimated stable steps (0.0093): no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = tw.simulate(_spin_model(), tw.states.spins_down(1), np.linspace(0, 2, 11), n_traj=2, key=0, dt=10.0)
    assert res.dt == pytest.approx(0.2)


def test_bad_user_states_are_named():
    class NoSizes(tw.states.AbstractState):
        def sample(self, key):
            return jnp.zeros((1, 3)), jnp.zeros((0,), complex)

        def mean(self):
            return self.sample(None)

    with pytest.raises(TypeError, match="NoSizes must define n_spins"):
        tw.simulate(_spin_model(), NoSizes(), TS, n_traj=2, key=0, dt=0.05)
    with pytest.raises(TypeError, match="initial must be a state"):
        tw.simulate(_spin_model(), "down", TS, n_traj=2, key=0, dt=0.05)

    class WrongShape(GaussianDown):
        def sample(self, key):
            return jnp.zeros((self.n_spins, 2)), jnp.zeros((0,), complex)

    with pytest.raises(ValueError, match=r"WrongShape.sample\(key\) must return spins of shape \(1, 3\)"):
        tw.simulate(_spin_model(), WrongShape(0.1, 1), TS, n_traj=2, key=0, dt=0.05)


def test_abstract_checks_run_once_per_model_state_kind_and_shapes():
    """The checks that trace the user's functions (the model, a state's ``sample``, the
    observables) run once per object and signature, not on every call; a different size, a
    different value of a state's Python field or new parameter shapes is checked again, and a bad
    one still raises."""
    calls = {"H": 0, "sample": 0, "obs": 0}

    def H(s, a, p):
        calls["H"] += 1
        return p["Omega"] * jnp.sum(s[:, 0])

    class Counted(GaussianDown):
        def sample(self, key):
            calls["sample"] += 1
            return super().sample(key)

    def sz(s, a):
        calls["obs"] += 1
        return s[:, 2].mean()

    model = tw.Model(H, n_spins=1, params={"Omega": 0.5})
    run = dict(n_traj=4, key=0, dt=0.05, progress=False, observables={"sz": sz})
    tw.simulate(model, Counted(0.1, 1), TS, **run)
    after_first = dict(calls)
    for k in range(3):  # new values, a new state object of the same kind, new keys
        tw.simulate(model, Counted(0.1, 1), TS, **{**run, "key": k}, params={"Omega": 0.5 + k})
    # the solve is compiled once; the abstract checks add no trace of their own
    assert calls["sample"] == after_first["sample"]
    assert calls["obs"] == after_first["obs"]
    assert calls["H"] == after_first["H"]
    tw.simulate(model, Counted(0.3, 1), TS, **run)  # a new value of a Python field: checked again
    assert calls["sample"] > after_first["sample"]

    class WrongShape(Counted):
        def sample(self, key):
            return jnp.zeros((self.n_spins, 2)), jnp.zeros((0,), complex)

    with pytest.raises(ValueError, match=r"WrongShape.sample\(key\) must return spins"):
        tw.simulate(model, WrongShape(0.1, 1), TS, **run)
    with pytest.raises(ValueError, match=r"WrongShape.sample\(key\) must return spins"):  # errors are not remembered
        tw.simulate(model, WrongShape(0.1, 1), TS, **run)
    with pytest.raises(TypeError, match="hamiltonian must return a real scalar"):  # new parameter shapes
        tw.simulate(model, Counted(0.1, 1), TS, **run, params={"Omega": jnp.ones(2)})


def test_moved_by_finds_the_leaves_each_input_reaches():
    """Forward mode gives each parameter's tangent only the leaves that depend on it: a leaf read
    through a slice of a stacked vector or a constant counts for no input it does not use."""
    def f(xs):
        a, b = xs
        return {"a": 2 * a, "ab": jnp.sin(a) * b, "b": b[1:] + 1, "c": jnp.ones(3), "n": None}

    assert _engine.moved_by(f, [jnp.ones(()), jnp.ones(3)]) == ((0, 1), (1, 2))


def test_apply_linear_with_symbolic_zeros_equals_jvp_and_skips_the_zero_paths():
    """The linear map of a step applied with some inputs symbolically zero equals ``jax.jvp`` with
    those tangents zero, and its program has none of the work that only the zero inputs feed."""
    from twa_jax._solvers import apply_linear

    def f(y, p, q):
        c = jax.lax.cond(jnp.max(y) < 10.0, jnp.sin, jnp.cos, y)
        return c * p + jnp.exp(q * y) @ jnp.ones((3, 3)), jnp.sum(y * q)

    y, p, q = jnp.array([0.1, 0.2, 0.3]), jnp.array(1.5), jnp.array(0.7)
    _, lin = jax.linearize(f, y, p, q)
    closed = jax.make_jaxpr(lin)(y, p, q)
    dy = jnp.array([1.0, -2.0, 0.5])
    for ins, tangents in [([dy, None, None], (dy, 0.0, 0.0)), ([None, None, jnp.array(1.0)], (0 * y, 0.0, 1.0)),
                          ([dy, jnp.array(1.0), jnp.array(2.0)], (dy, 1.0, 2.0))]:
        want = jax.jvp(f, (y, p, q), tuple(jnp.asarray(t, y.dtype) for t in tangents))[1]
        got = apply_linear(closed, ins)
        for g, w in zip(got, jax.tree_util.tree_leaves(want)):
            np.testing.assert_allclose(g, w, rtol=1e-6)
    n_eqns = lambda ins: len(jax.make_jaxpr(lambda *x: apply_linear(closed, list(x)))(*ins).eqns)  # noqa: E731
    only_p = n_eqns([None, jnp.array(1.0), None])
    assert only_p < n_eqns([dy, jnp.array(1.0), jnp.array(2.0)])
    assert not any(e.primitive.name == "dot_general"
                   for e in jax.make_jaxpr(lambda x: apply_linear(closed, [None, x, None]))(jnp.array(1.0)).eqns)


def _both_ways_of_saving(monkeypatch, runs):
    """``runs()`` with diffrax's save loop and with the save intervals, which it must take."""
    monkeypatch.setattr(_plan, "SAVE_BY", "loop")
    loop = runs()
    monkeypatch.setattr(_plan, "SAVE_BY", "intervals")
    calls = []
    solve = _engine._solve_by_intervals
    monkeypatch.setattr(_engine, "_solve_by_intervals", lambda *a: (calls.append(1), solve(*a))[1])
    intervals = runs()
    assert calls
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=1e-12),
                           loop, intervals)
    return len(calls)


def test_saving_by_intervals_equals_the_save_loop(monkeypatch):
    """The accelerators' way of saving (``SAVE_BY = "intervals"``: a scan over the save intervals,
    one diffrax solve of each) and diffrax's save loop (the CPU default) take the same steps with
    the same noise: the same numbers with pulses at the start, between and at save times, and
    save times merged on the grid."""
    model, init = _spin_model(), tw.states.spins_down(1)
    jx = lambda s, a, p: s[:, 0].sum() / 2  # noqa: E731
    pulses = [tw.Pulse(0.0, jx, 0.3), tw.Pulse(0.35, jx, np.pi / 2), tw.Pulse(0.6, jx, 0.4)]
    ts = np.array([0.0, 0.6, 0.6 + 1e-9, 1.1])  # two save times merged on the grid

    def runs():
        sim = tw.simulate(model, init, ts, n_traj=24, key=4, dt=0.05, pulses=pulses, keep_trajectories=3)
        return sim.mean, sim.trajectories

    _both_ways_of_saving(monkeypatch, runs)
    with pytest.raises(ValueError, match="SAVE_BY must be"):
        monkeypatch.setattr(_plan, "SAVE_BY", "steps")
        _plan.make_plan(model, init, TS, n_traj=4, key=0, dt=0.05)


@pytest.mark.slow
def test_saving_by_intervals_equals_the_save_loop_for_sweeps_derivatives_correlations(monkeypatch):
    """As above for a sweep's points, forward-mode derivatives (tangents solved beside the
    trajectories) and a correlation (kicked trajectories)."""
    model, init = _spin_model(), tw.states.spins_down(1)
    p = {"Omega": 1.0, "gamma": 0.4}
    sx = lambda s, a: s[0, 0]  # noqa: E731

    def runs():
        sw = tw.sweep((model, init), {"Omega": [0.5, 1.5]}, TS, n_traj=16, key=2, dt=0.05, random_numbers="common")
        _, g = tw.value_and_grad(lambda m: m["sz"][-1], model, init, TS, params=p, n_traj=16, key=0, dt=0.05)
        cor = tw.correlation(model, init, [0.5], np.linspace(0, 0.5, 3), sx, sx, n_traj=16, key=1, dt=0.05)
        return {k: sw[k].values for k in ("sz", "sx")}, g, cor.value

    assert _both_ways_of_saving(monkeypatch, runs) >= 3
