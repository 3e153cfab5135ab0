"""Every bad input gets a clear TypeError/ValueError naming the problem, before compilation."""

import jax.numpy as jnp
import numpy as np
import pytest

import twa_jax as tw

H = lambda s, a, p: p.get("Omega", 1.0) * jnp.sum(s[:, 0])  # noqa: E731
L = lambda s, a, p: (s[:, 0] - 1j * s[:, 1]) / 2  # noqa: E731
TS = np.linspace(0, 1, 3)


def _model(**kw):
    args = dict(jumps=L, gamma=jnp.array([0.5]), n_spins=1)
    args.update(kw)
    return tw.Model(H, **args)


def _sim(model=None, initial=None, ts=TS, **kw):
    kw.setdefault("n_traj", 4)
    kw.setdefault("key", 0)
    model = _model() if model is None else model
    initial = tw.states.spins_down(1) if initial is None else initial
    return tw.simulate(model, initial, ts, **kw)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(gamma=jnp.array([-0.5])), ValueError, "non-negative"),
        (dict(gamma=jnp.array([np.nan])), ValueError, "NaN"),
        (dict(gamma=jnp.ones((2, 3))), ValueError, "square"),
        (dict(gamma=jnp.ones((2, 2, 2))), ValueError, r"\(K,\) vector"),
        (dict(gamma=jnp.array([[1.0, 2.0], [0.0, 1.0]])), ValueError, "Hermitian"),
        (dict(gamma=jnp.array([[1.0, 2.0], [2.0, 1.0]])), ValueError, "positive semidefinite"),
        (dict(gamma=None), ValueError, "go together"),
        (dict(n_spins=-1), ValueError, "n_spins must be >= 0"),
        (dict(n_spins=1.5), TypeError, "n_spins must be an int"),
        (dict(n_spins=0), ValueError, "no degrees of freedom"),
        (dict(spin_S=-1.0), ValueError, "spin_S"),
        (dict(spin_S=0.7), ValueError, r"spin_S must be a multiple of 1/2"),
    ],
)
def test_bad_model(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        _model(**kwargs)


def test_hamiltonian_not_callable():
    with pytest.raises(TypeError, match="hamiltonian must be a function"):
        tw.Model(3.0, n_spins=1)


def test_hamiltonian_not_real_scalar():
    with pytest.raises(TypeError, match="real floating scalar"):
        _sim(tw.Model(lambda s, a, p: jnp.sum(s[:, 0] + 1j * s[:, 1]), n_spins=1))
    with pytest.raises(TypeError, match="real scalar"):
        _sim(tw.Model(lambda s, a, p: s[:, 0], n_spins=1))


def test_jumps_wrong_shape_or_dtype():
    with pytest.raises(ValueError, match="1-D"):
        _sim(_model(jumps=lambda s, a, p: jnp.ones((1, 1), complex)))
    with pytest.raises(TypeError, match="complex"):
        _sim(_model(jumps=lambda s, a, p: jnp.ones((1,), jnp.int32)))
    with pytest.raises(ValueError, match="2 jump operators"):
        _sim(_model(jumps=lambda s, a, p: jnp.ones((2,), complex)))


def test_user_function_that_fails_is_named():
    with pytest.raises(TypeError, match="calling hamiltonian"):
        _sim(tw.Model(lambda s, a, p: jnp.sum(s @ jnp.ones(5)), n_spins=1))


def test_gamma_function_is_validated_with_params():
    m = _model(gamma=lambda p: jnp.array([p["gamma"]]))
    with pytest.raises(ValueError, match="non-negative"):
        _sim(m, params={"gamma": -1.0})
    m2 = _model(gamma=lambda p: p["G"], jumps=lambda s, a, p: jnp.stack([L(s, a, p)[0]] * 2))
    with pytest.raises(ValueError, match="Hermitian"):
        _sim(m2, params={"G": jnp.array([[1.0, 1j], [1j, 1.0]])})


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_params(bad):
    with pytest.raises(ValueError, match=r"params\['Omega'\] contains NaN or infinite"):
        _sim(params={"Omega": bad})


@pytest.mark.parametrize("n_traj, exc", [(0, ValueError), (-3, ValueError), (2.5, TypeError), (None, TypeError)])
def test_bad_n_traj(n_traj, exc):
    with pytest.raises(exc, match="n_traj"):
        _sim(n_traj=n_traj)


@pytest.mark.parametrize(
    "ts, match",
    [
        (np.array([0.0, 1.0, 0.5]), "strictly increasing"),
        (np.array([0.0, 0.0, 1.0]), "strictly increasing"),
        (np.array([0.0]), "at least two"),
        (np.ones((2, 2)), "1-D"),
        (np.array([0.0, np.nan]), "NaN"),
    ],
)
def test_bad_ts(ts, match):
    with pytest.raises(ValueError, match=match):
        _sim(ts=ts)


def test_complex_ts_and_a_spin_length_that_is_not_one():
    with pytest.raises(TypeError, match="ts must be real save times"):
        _sim(ts=np.array([0.0, 0.5 + 1j, 1.0]))
    with pytest.raises(TypeError, match="ts must be real save times"):
        _sim(ts=[0.0, 1j])
    with pytest.raises(ValueError, match=r"S must be a multiple of 1/2"):
        tw.states.spin_coherent(0.7, [0, 0, 1])
    assert tw.states.spin_coherent(1.5, [0, 0, 1]) is not None
    with pytest.warns(RuntimeWarning, match="n_traj=1: the standard errors are NaN"):
        assert np.isnan(_sim(n_traj=1).sem["sz"][-1])


def test_initial_state_size_mismatch():
    with pytest.raises(ValueError, match="initial state has 2 spins"):
        _sim(initial=tw.states.spins_down(2))
    with pytest.raises(ValueError, match="0 bosons but the model"):
        _sim(tw.Model(lambda s, a, p: jnp.sum(jnp.abs(a) ** 2) + s[:, 0].sum(), n_spins=1, n_bosons=1))
    with pytest.raises(TypeError, match="initial must be a state"):
        _sim(initial=np.zeros((1, 3)))


def test_spin_normalization_mismatch():
    with pytest.raises(ValueError, match="spin normalization"):
        _sim(initial=tw.states.spin_coherent(1.0, [0, 0, 1]))


def test_bad_key_dt_method_solver_options():
    with pytest.raises(TypeError, match="key is required"):
        _sim(key=None)
    with pytest.raises(TypeError, match="key must be"):
        _sim(key="seed")
    with pytest.raises(ValueError, match="dt must be"):
        _sim(dt=-0.1)
    with pytest.raises(ValueError, match="method must be"):
        _sim(method="exact")
    with pytest.raises(ValueError, match="solver must be"):
        _sim(solver="euler")
    with pytest.raises(ValueError, match="mean_field"):
        _sim(method="mean_field")  # n_traj=4 makes no sense for one deterministic trajectory
    with pytest.raises(ValueError, match="chunk_size"):
        _sim(chunk_size=0)
    with pytest.raises(TypeError, match="observables"):
        _sim(observables=[lambda s, a: s])
    with pytest.raises(TypeError, match="observable 'x'"):
        _sim(observables={"x": lambda s, a: s @ jnp.ones(4)})
    with pytest.raises(TypeError, match="model must be"):
        tw.simulate("model", tw.states.spins_down(1), TS, n_traj=1, key=0)


def test_float32_rounding_of_a_psd_gamma_is_accepted_but_negative_eigenvalues_are_not():
    """Rounding a PSD matrix to float32 moves its null eigenvalues by ~eps * max eigenvalue; that
    is not an error, a genuinely negative eigenvalue is."""
    x = np.arange(30) * 0.2 * 2 * np.pi
    u = np.abs(x[:, None] - x[None, :]) + np.eye(30)
    G = 1.5 * (np.sin(u) / u + np.cos(u) / u**2 - np.sin(u) / u**3)  # dipoles perpendicular to a chain
    np.fill_diagonal(G, 1.0)
    assert np.linalg.eigvalsh(G).min() > -1e-12
    _model(gamma=G.astype(np.float32), jumps=lambda s, a, p: jnp.ones(30, complex))
    with pytest.raises(ValueError, match="positive semidefinite"):
        _model(gamma=(G - 1e-3 * np.eye(30)).astype(np.float32), jumps=lambda s, a, p: jnp.ones(30, complex))


def test_mean_field_boson_number_is_the_occupation_of_the_one_trajectory():
    """Mean field evaluates observables on one unsampled trajectory: the default boson number is
    |a|^2 there (coherent amplitude 0.5: 0.25, exact for this closed linear model), not the Weyl
    symbol |a|^2 - 1/2, whose -1/2 only the sampled spread makes up (it gave -0.25)."""
    model = tw.Model(lambda s, a, p: jnp.abs(a[0]) ** 2, n_bosons=1)
    init = tw.states.product(bosons=tw.states.coherent(jnp.array([0.5])))
    ts = np.linspace(0.0, 1.0, 3)
    mf = tw.simulate(model, init, ts, method="mean_field", dt=0.05)
    # Heun's amplification |1 - i h - h^2/2|^2 = 1 + h^4/4 per step (h = 0.05): 3e-5 over 20 steps
    np.testing.assert_allclose(np.asarray(mf.mean["n"]).ravel(), 0.25 * (1 + 0.05**4 / 4) ** np.array([0, 10, 20]),
                               rtol=1e-6)
    twa = tw.simulate(model, init, ts, n_traj=4000, key=1, dt=0.05)  # sampled: the Weyl symbol
    assert np.all(np.abs(np.asarray(twa.mean["n"]) - 0.25) < 5 * np.asarray(twa.sem["n"]) + 1e-6)


def test_runaway_time_dependent_rates_are_named_not_allocated():
    """A drive growing like exp(30 t) makes the default dt 1e-15: the run is refused with the
    number of steps it would take (it allocated a grid of 1e15 points before); a drive that turns
    NaN later in the run is reported as such, not as a NaN at the initial state."""
    down = tw.states.spins_down(1)
    grows = tw.Model(lambda s, a, p, t: jnp.exp(30 * t) * s[0, 0], n_spins=1, time_dependent=True)
    with pytest.raises(ValueError, match=r"the default dt .* would take [\d.]+e\+15 steps over \[0, 1\], more than MAX_STEPS"):
        tw.simulate(grows, down, [0.0, 1.0], n_traj=4, key=0)
    with pytest.raises(ValueError, match=r"the dt given, 1e-12, would take 1e\+12 steps"):
        tw.simulate(tw.models.driven_spin(), down, [0.0, 1.0], n_traj=4, key=0, dt=1e-12)
    late = tw.Model(lambda s, a, p, t: jnp.where(t > 1, jnp.nan, 1.0) * s[0, 0], n_spins=1, time_dependent=True)
    with pytest.raises(ValueError, match=r"not finite at the initial state at some time in \[0, 2\]"):
        tw.simulate(late, down, [0.0, 2.0], n_traj=4, key=0)
