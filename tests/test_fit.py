"""Pathwise gradients (tw.value_and_grad) and parameter fitting (tw.fit).

References: central finite differences with the same key (the pathwise derivative is the exact
derivative of the same-key mean), the analytic driven damped cavity (TWA is exact for linear
bosons), and synthetic data made with another key (fit recovery within the stated errors).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import twa_jax as tw

N_ARRAY = 3
CHAIN = np.stack([np.arange(N_ARRAY) * 1.0, np.zeros(N_ARRAY), np.zeros(N_ARRAY)], -1)  # unit spacing, scaled by p["a"]


def _couplings(p):
    return tw.models.dipole_couplings(CHAIN * p["a"], 1.0, jnp.array([0.0, 0.0, 1.0]), p["Gamma0"])


def _array_hamiltonian(s, a, p):
    """H = Omega sum s^x + sum_{i != j} J_ij s^+_i s^-_j (J from the free-space couplings)."""
    _, J = _couplings(p)
    sm = (s[:, 0] - 1j * s[:, 1]) / 2
    return p["Omega"] * jnp.sum(s[:, 0]) + jnp.real(jnp.conj(sm) @ J @ sm)


ARRAY = tw.Model(
    _array_hamiltonian,
    jumps=lambda s, a, p: (s[:, 0] - 1j * s[:, 1]) / 2,  # sigma^-_i
    gamma=lambda p: _couplings(p)[0],  # dense, correlated
    n_spins=N_ARRAY,
)
ARRAY_P = {"Omega": 1.0, "Gamma0": 0.5, "a": 0.3}


def _sz_mean_loss(mean):
    return jnp.sum(mean["sz"])


def test_gradient_matches_finite_differences_dense_gamma_and_geometry(monkeypatch):
    """Driven dipole array with dense Gamma(Gamma0, a): d/dOmega (Hamiltonian), d/dGamma0 (rate in
    Gamma and J), d/da (lattice spacing, geometry) of sum_t <sigma^z>(t) against central finite
    differences of eager simulate with the same key, accumulated over 3 chunks (the one-chunk path
    is exercised by the cavity test), in forward mode (value_and_grad's choice for 3 parameters)
    and in reverse mode."""
    from twa_jax import _grad

    init = tw.states.spins_down(N_ARRAY)
    ts = np.linspace(0, 2, 5)
    kw = dict(n_traj=60, key=3, dt=0.05)
    assert len(ARRAY_P) <= _grad.FORWARD_MODE_MAX_PARAMS
    val, g = tw.value_and_grad(_sz_mean_loss, ARRAY, init, ts, params=ARRAY_P, chunk_size=20, **kw)
    monkeypatch.setattr(_grad, "FORWARD_MODE_MAX_PARAMS", 0)
    val_r, g_r = tw.value_and_grad(_sz_mean_loss, ARRAY, init, ts, params=ARRAY_P, chunk_size=20, **kw)
    f = lambda p: float(_sz_mean_loss(tw.simulate(ARRAY, init, ts, params=p, **kw).mean))  # noqa: E731
    np.testing.assert_allclose(val, f(ARRAY_P), rtol=1e-12)
    np.testing.assert_allclose(val_r, f(ARRAY_P), rtol=1e-12)
    h = 1e-5
    for k in ARRAY_P:
        fd = (f({**ARRAY_P, k: ARRAY_P[k] + h}) - f({**ARRAY_P, k: ARRAY_P[k] - h})) / (2 * h)
        np.testing.assert_allclose(g[k], fd, rtol=1e-6, atol=1e-8, err_msg=k)
        np.testing.assert_allclose(g_r[k], fd, rtol=1e-6, atol=1e-8, err_msg=k)
        assert abs(fd) > 1e-3  # each parameter matters


def test_forward_and_reverse_mode_give_the_same_gradient(monkeypatch):
    """value_and_grad differentiates up to FORWARD_MODE_MAX_PARAMS real parameters in forward mode
    and more in reverse mode: both are the exact derivative of the same discrete paths, so they
    agree to rounding; with a complex observable and loss (JAX's convention dL = Re ct . dz), a
    spin-boson model and a parameter inside Gamma."""
    from twa_jax import _grad

    model = tw.Model(
        lambda s, a, p: p["Omega"] * s[:, 0].sum() + p["g"] * jnp.real(a[0] * jnp.conj(a[0])) * s[:, 2].sum(),
        jumps=lambda s, a, p: jnp.concatenate([(s[:, 0] - 1j * s[:, 1]) / 2, a]),
        gamma=lambda p: jnp.diag(jnp.array([p["gamma"], p["gamma"], 0.3])),
        n_spins=2, n_bosons=1, params={"Omega": 1.0, "gamma": 0.5, "g": 0.7},
    )
    init = tw.states.product(tw.states.spins_down(2), tw.states.coherent([0.5 + 0.2j]))
    obs = {"sz": lambda s, a: s[:, 2].mean(), "a": lambda s, a: a[0]}
    loss = lambda m: jnp.sum(m["sz"] ** 2) + jnp.sum(jnp.abs(m["a"] - 0.1j) ** 2)  # noqa: E731
    kw = dict(n_traj=24, key=0, dt=0.05, observables=obs)
    p = {"g": 0.7, "gamma": 0.5}
    plan = _grad.make_plan(model, init, np.linspace(0, 1, 5), params=p, differentiable=True, **kw)
    assert _grad.uses_forward_mode(plan, _grad._split(plan.params, p)[0])
    val_f, g_f = tw.value_and_grad(loss, model, init, np.linspace(0, 1, 5), params=p, **kw)
    monkeypatch.setattr(_grad, "FORWARD_MODE_MAX_PARAMS", 0)
    val_r, g_r = tw.value_and_grad(loss, model, init, np.linspace(0, 1, 5), params=p, **kw)
    np.testing.assert_allclose(val_f, val_r, rtol=1e-13)
    for k in p:
        assert abs(g_r[k]) > 1e-3, k  # each parameter matters
        np.testing.assert_allclose(g_f[k], g_r[k], rtol=1e-10, err_msg=k)


@pytest.mark.slow
def test_gradient_through_rank_one_collective_gamma():
    """Collective decay Gamma = g * ones (rank 1; the eigendecomposition's derivative is NaN there):
    the pathwise derivative equals the same-key finite difference."""
    N = 3
    model = tw.Model(
        lambda s, a, p: p["Omega"] * jnp.sum(s[:, 0]),
        jumps=lambda s, a, p: (s[:, 0] - 1j * s[:, 1]) / 2,
        gamma=lambda p: p["g"] * jnp.ones((N, N)),
        n_spins=N,
    )
    init, ts, p = tw.states.spins_up(N), np.linspace(0, 1, 3), {"Omega": 0.3, "g": 0.4}
    kw = dict(n_traj=40, key=5, dt=0.05)
    _, grad = tw.value_and_grad(_sz_mean_loss, model, init, ts, params=p, **kw)
    f = lambda q: float(_sz_mean_loss(tw.simulate(model, init, ts, params=q, **kw).mean))  # noqa: E731
    h = 1e-5
    fd = (f({**p, "g": p["g"] + h}) - f({**p, "g": p["g"] - h})) / (2 * h)
    assert np.isfinite(grad["g"]) and abs(fd) > 1e-2
    np.testing.assert_allclose(grad["g"], fd, rtol=1e-6)


def test_damped_driven_cavity_derivatives_are_analytic():
    """H = Delta |a|^2 + F (a + a^*), L = a at rate kappa, vacuum start: <a>(t) = a_ss (1 - e^{-(i
    Delta + kappa/2) t}), a_ss = -i F / (i Delta + kappa/2), <n> = |<a>|^2 (TWA is exact). The
    pathwise d<n>(t)/dkappa and d<n>(t)/dF agree with the analytic derivative within 4 standard
    errors (spread over 4 keys)."""
    model = tw.Model(
        lambda s, a, p: p["Delta"] * jnp.abs(a[0]) ** 2 + p["F"] * 2 * jnp.real(a[0]),
        jumps=lambda s, a, p: a,
        gamma=lambda p: jnp.array([p["kappa"]]),
        n_bosons=1,
    )
    p, t1 = {"Delta": 0.7, "F": 0.5, "kappa": 0.8}, 2.0
    ts = np.linspace(0, t1, 3)

    def n_exact(q):
        z = 1j * q["Delta"] + q["kappa"] / 2
        return jnp.abs(-1j * q["F"] / z * (1 - jnp.exp(-z * t1))) ** 2

    ref = jax.grad(n_exact)(p)
    loss = lambda mean: mean["n"][-1, 0]  # noqa: E731
    out = [tw.value_and_grad(loss, model, tw.states.vacuum(1), ts, params=p, n_traj=2000, key=k, dt=0.02) for k in range(4)]
    vals = np.array([float(v) for v, _ in out])
    assert abs(vals.mean() - float(n_exact(p))) < 4 * vals.std(ddof=1) / 2 + 1e-3
    for k in ("kappa", "F"):
        g = np.array([float(gr[k]) for _, gr in out])
        se = g.std(ddof=1) / np.sqrt(len(g))
        assert se < 0.05 * abs(float(ref[k]))
        assert abs(g.mean() - float(ref[k])) < 4 * se + 1e-6, (k, g, float(ref[k]))


@pytest.fixture(scope="module")
def array_fit():
    """Synthetic data from a driven 2-atom array (key 1, 3000 trajectories) plus Gaussian noise of
    0.02; fit of (Omega, Gamma0) with key 2 and 300 trajectories from a 20 % off start."""
    N = 2
    chain = np.stack([np.arange(N) * 0.25, np.zeros(N), np.zeros(N)], -1)

    def couplings(p):
        return tw.models.dipole_couplings(chain, 1.0, jnp.array([0.0, 0.0, 1.0]), p["Gamma0"])

    def H(s, a, p):
        sm = (s[:, 0] - 1j * s[:, 1]) / 2
        return p["Omega"] * jnp.sum(s[:, 0]) + jnp.real(jnp.conj(sm) @ couplings(p)[1] @ sm)

    model = tw.Model(H, jumps=lambda s, a, p: (s[:, 0] - 1j * s[:, 1]) / 2, gamma=lambda p: couplings(p)[0], n_spins=N)
    init, ts, true = tw.states.spins_down(N), np.linspace(0, 3, 13), {"Omega": 1.0, "Gamma0": 0.5}
    syn = tw.simulate(model, init, ts, n_traj=3000, key=1, params=true, dt=0.05)
    noise = 0.02
    data = {"sz": np.asarray(syn.mean["sz"]) + noise * np.random.default_rng(0).normal(size=len(ts))}
    sigma = {"sz": np.sqrt(noise**2 + np.asarray(syn.sem["sz"]) ** 2)}
    res = tw.fit(model, init, ts, data, {"Omega": 0.8, "Gamma0": 0.6}, steps=25, n_traj=300, key=2, sigma=sigma,
                 dt=0.05, bounds={"Gamma0": (0.0, None)}, progress=False)
    return res, true


def test_fit_recovers_rabi_frequency_and_decay_rate(array_fit):
    res, true = array_fit
    for k, v in true.items():
        se = float(res.stderr[k])
        assert 0 < se < 0.1 * v, (k, se)
        assert abs(float(res.params[k]) - v) < 3 * se, (k, float(res.params[k]), se)
    assert res.converged
    # Levenberg-Marquardt stops when converged: at most `steps` steps, one history entry each
    n = len(res.loss_history)
    assert 1 <= n <= 25 and res.steps == n and res.loss < res.loss_history[0]
    assert res.params_history["Omega"].shape == (n,)
    assert res.mean["sz"].shape == (13,)
    text = repr(res)
    assert "Omega = " in text and "+-" in text and "Gauss-Newton" in text


# --------------------------------------------------------------------------- bad input
def _small():
    model = tw.Model(lambda s, a, p: p["Omega"] * jnp.sum(s[:, 0]), jumps=lambda s, a, p: (s[:, 0] - 1j * s[:, 1]) / 2,
                     gamma=lambda p: jnp.array([p["gamma"]]), n_spins=1)
    return model, tw.states.spins_down(1), np.linspace(0, 1, 5)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(data={"sz": np.zeros(4)}), ValueError, r"data\['sz'\] has shape \(4,\).*\(5,\)"),
        (dict(data={"pop": np.zeros(5)}), ValueError, "not observables; available"),
        (dict(bounds={"kappa": (0, None)}), ValueError, "'kappa', which is not a fitted parameter"),
        (dict(bounds={"Omega": (2.0, None)}), ValueError, "strictly inside bounds"),
        (dict(bounds={"Omega": (1.0, 0.0)}), ValueError, "lower must be below upper"),
        (dict(steps=0), ValueError, "steps must be >= 1"),
        (dict(steps=2.5), TypeError, "steps must be an int"),
        (dict(sigma={"sz": -1.0}), ValueError, "positive and finite"),
        (dict(sigma={"sz": np.ones(3)}), ValueError, "does not broadcast"),
        (dict(data={"sz": np.zeros(5), "sx": np.zeros(5)}, sigma={"sz": 0.1}), ValueError,
         r"sigma has no entry for data\['sx'\]"),
        (dict(fixed={"Omega": 1.0, "gamma": 0.1}), ValueError, "both fitted"),
        (dict(optimizer=optax.sgd(0.1), learning_rate=0.1), ValueError, "leave it out"),
        (dict(params0={"Omega": np.nan}), ValueError, "NaN"),
        (dict(loss=lambda m, d: m["sz"]), TypeError, "real scalar"),
    ],
)
def test_fit_bad_input(kwargs, exc, match):
    model, init, ts = _small()
    args = dict(data={"sz": np.zeros(5)}, params0={"Omega": 1.0}, steps=3, n_traj=4, key=0, fixed={"gamma": 0.1},
                dt=0.1, progress=False)
    args.update(kwargs)
    data, params0 = args.pop("data"), args.pop("params0")
    with pytest.raises(exc, match=match):
        tw.fit(model, init, ts, data, params0, **args)


@pytest.mark.filterwarnings("ignore:fit not converged")  # the bounded fit runs into its bound at 0
def test_a_fit_that_ends_at_a_negative_rate_is_refused():
    """Data that only anti-damping fits (Rabi oscillations of growing amplitude): without bounds
    the fitted rate goes negative, where the model is not a Lindblad model (inside the fit the
    noise of a negative rate is clipped at zero, the drift keeps it). That point is refused by
    name instead of being returned as a converged fit; bounded at zero, the fit stays valid."""
    model, init, ts = _small()
    ts = np.linspace(0, 4, 9)
    data = {"sz": -np.cos(2 * ts) * np.exp(0.3 * ts)}  # H = Omega sx: sz = -cos(2 Omega t) without decay
    kw = dict(n_traj=16, key=0, fixed={"Omega": 1.0}, dt=0.05, steps=10, progress=False)
    with pytest.raises(ValueError, match=r"the fit ended at \{'gamma': -[0-9.]+\}, where the model is not valid: "
                                         r".*rates must be non-negative.*bounds=\{name: \(0, None\)\}"):
        tw.fit(model, init, ts, data, {"gamma": 0.2}, **kw)
    res = tw.fit(model, init, ts, data, {"gamma": 0.2}, bounds={"gamma": (0, None)}, **kw)
    assert 0 < float(res.params["gamma"]) < 0.2


def test_value_and_grad_bad_input():
    model, init, ts = _small()
    p = {"Omega": 1.0, "gamma": 0.1}
    with pytest.raises(TypeError, match="real scalar"):
        tw.value_and_grad(lambda m: m["sz"], model, init, ts, params=p, n_traj=4, key=0, dt=0.1)
    with pytest.raises(TypeError, match="loss.*failed"):
        tw.value_and_grad(lambda m: m["nope"].sum(), model, init, ts, params=p, n_traj=4, key=0, dt=0.1)
    with pytest.raises(ValueError, match="concrete params"):
        jax.grad(lambda o: tw.value_and_grad(_sz_mean_loss, model, init, ts, params={"Omega": o, "gamma": 0.1},
                                             n_traj=4, key=0, dt=0.1)[0])(1.0)
    with pytest.raises(TypeError, match="key is required"):
        tw.value_and_grad(_sz_mean_loss, model, init, ts, params=p, n_traj=4, key=None, dt=0.1)
    with pytest.warns(UserWarning, match=r"params\['Omega'\] is an integer: held fixed, no derivative"):
        _, g = tw.value_and_grad(_sz_mean_loss, model, init, ts, params={"Omega": 1, "gamma": 0.1}, n_traj=4, key=0,
                                 dt=0.1)
    assert g["Omega"] is None and g["gamma"] is not None


@pytest.mark.slow
def test_default_gradient_chunks_follow_free_memory(monkeypatch):
    """Reverse-mode chunks are sized from free memory like simulate's: with almost no memory the
    gradient is accumulated one trajectory at a time and equals the one-chunk result."""
    from twa_jax import _plan

    init, ts = tw.states.spins_down(N_ARRAY), np.linspace(0, 1, 3)
    kw = dict(n_traj=12, key=4, dt=0.05)
    val1, g1 = tw.value_and_grad(_sz_mean_loss, ARRAY, init, ts, params=ARRAY_P, chunk_size=12, **kw)
    monkeypatch.setattr(_plan, "free_memory", lambda device: 1)
    val, g = tw.value_and_grad(_sz_mean_loss, ARRAY, init, ts, params=ARRAY_P, **kw)
    np.testing.assert_allclose(val, val1, rtol=1e-12)
    for k in ARRAY_P:
        np.testing.assert_allclose(g[k], g1[k], rtol=1e-10, err_msg=k)


@pytest.mark.slow
def test_checkpoints_change_cost_not_result():
    """Storing every step (no recomputation in the reverse pass) gives the same gradient as
    diffrax's default checkpointing; a bad value is named."""
    init, ts = tw.states.spins_down(N_ARRAY), np.linspace(0, 1, 3)
    kw = dict(params=ARRAY_P, n_traj=8, key=2, dt=0.05)
    v0, g0 = tw.value_and_grad(_sz_mean_loss, ARRAY, init, ts, **kw)
    v1, g1 = tw.value_and_grad(_sz_mean_loss, ARRAY, init, ts, checkpoints=10_000, **kw)  # capped at n_steps
    np.testing.assert_allclose(v1, v0, rtol=1e-12)
    for k in ARRAY_P:
        np.testing.assert_allclose(g1[k], g0[k], rtol=1e-10, err_msg=k)
    with pytest.raises(ValueError, match="checkpoints"):
        tw.value_and_grad(_sz_mean_loss, ARRAY, init, ts, checkpoints=0, **kw)


def test_forward_mode_along_an_array_parameter_equals_reverse_mode(monkeypatch):
    """An array parameter's entries are one group of tangents (vmap-ed through the step's linear
    map) next to a scalar one: forward and reverse mode agree to rounding entry by entry."""
    from twa_jax import _grad

    model = tw.Model(lambda s, a, p: jnp.sum(p["h"] * s[:, 0]) + p["J"] * jnp.sum(s[:-1, 2] * s[1:, 2]),
                     jumps=lambda s, a, p: (s[:, 0] - 1j * s[:, 1]) / 2, gamma=jnp.full(3, 0.3), n_spins=3)
    init, ts = tw.states.spins_down(3), np.linspace(0, 1, 5)
    p = {"h": jnp.array([0.6, 1.0, 1.4]), "J": jnp.array(0.5)}
    kw = dict(params=p, n_traj=32, key=5, dt=0.05, observables={"sz": lambda s, a: s[:, 2]})
    loss = lambda m: jnp.sum(m["sz"] * jnp.arange(1.0, 4.0)) ** 2  # noqa: E731
    monkeypatch.setattr(_grad, "FORWARD_MODE_MAX_PARAMS", 4)
    val_f, g_f = tw.value_and_grad(loss, model, init, ts, **kw)
    monkeypatch.setattr(_grad, "FORWARD_MODE_MAX_PARAMS", 0)
    val_r, g_r = tw.value_and_grad(loss, model, init, ts, **kw)
    np.testing.assert_allclose(val_f, val_r, rtol=1e-13)
    assert np.all(np.abs(np.asarray(g_r["h"])) > 1e-3)  # every entry matters
    for k in p:
        np.testing.assert_allclose(g_f[k], g_r[k], rtol=1e-10, err_msg=k)
