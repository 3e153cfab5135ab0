"""Compilation behaviour and pure-function structure of the solver."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import twa_jax as tw
from twa_jax import _engine
from twa_jax._brackets import generator, generator_and_jumps, rotate, to_internal
from twa_jax._noise import decompose


def _model():
    return tw.Model(
        lambda s, a, p: p["Omega"] * jnp.sum(s[:, 0]) + p["g"] * jnp.sum(s[:, 2]) * jnp.abs(a[0]) ** 2,
        jumps=lambda s, a, p: jnp.concatenate([(s[:, 0] - 1j * s[:, 1]) / 2, a]),
        gamma=lambda p: jnp.array([p["gamma"], p["gamma"], p["kappa"]]),
        n_spins=2,
        n_bosons=1,
    )


def test_new_parameter_values_do_not_recompile():
    model = _model()
    init = tw.states.product(spins=tw.states.spins_down(2), bosons=tw.states.coherent(0.5))
    ts = np.linspace(0, 0.5, 3)
    p = {"Omega": 1.0, "g": 0.2, "gamma": 0.3, "kappa": 0.4}
    tw.simulate(model, init, ts, n_traj=8, key=0, params=p, dt=0.05)
    n0 = _engine._chunk._cached._cache_size()
    p2 = {"Omega": 1.7, "g": 0.1, "gamma": 0.5, "kappa": 0.1}
    r = tw.simulate(model, init, ts, n_traj=8, key=1, params=p2, dt=0.05)
    assert _engine._chunk._cached._cache_size() == n0
    assert r.n_failed == 0


def test_one_pass_generator_equals_explicit_phi():
    """The vjp form (Phi from L at the same point, one forward pass) equals grad of H~ with Phi
    passed as a constant argument (paper Eq. 10)."""
    model = _model()
    p = {"Omega": 1.0, "g": 0.2, "gamma": 0.3, "kappa": 0.4}
    rng = np.random.default_rng(0)
    s, a = rng.normal(size=(2, 3)), rng.normal(size=1) + 1j * rng.normal(size=1)
    y = to_internal(s, a)
    nb = decompose(model.gamma_of(p))
    dW = jnp.asarray(rng.normal(size=3) + 1j * rng.normal(size=3))
    dt = 0.01
    phi_fn = lambda L: 0.5 * (nb.apply_gamma(L) * dt + nb.xi(dW))  # noqa: E731
    Phi = phi_fn(model.jumps(jnp.asarray(s), jnp.asarray(a), p))
    ref = generator(model, y, Phi, p, dt)
    got = generator_and_jumps(model, y, phi_fn, p, dt)
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-14)


def test_rotation_is_exact_and_norm_preserving():
    from scipy.linalg import expm

    rng = np.random.default_rng(1)
    s = rng.normal(size=(5, 3))
    theta = rng.normal(size=(5, 3)) * np.array([[1.0], [1e-3], [1e-5], [0.0], [3.0]])
    out = np.asarray(rotate(jnp.asarray(s.T), jnp.asarray(theta.T))).T  # internal layout (3, N)
    for k in range(5):
        t = theta[k]
        K = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])  # K v = t x v
        np.testing.assert_allclose(out[k], expm(K) @ s[k], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), np.linalg.norm(s, axis=1), rtol=1e-14)
    # differentiable at theta = 0 (no NaN from |theta|)
    g = jax.grad(lambda th: jnp.sum(rotate(jnp.asarray(s[:1].T), th)))(jnp.zeros((3, 1)))
    assert np.all(np.isfinite(np.asarray(g)))


def test_trajectory_is_a_pure_function_of_its_key():
    """Trajectory i of a run with n_traj = 5 equals the only trajectory of ... the same index:
    the statistics of the first k trajectories do not depend on how many follow."""
    model = _model()
    init = tw.states.product(spins=tw.states.spins_down(2), bosons=tw.states.coherent(0.5))
    ts = np.linspace(0, 0.5, 3)
    p = {"Omega": 1.0, "g": 0.2, "gamma": 0.3, "kappa": 0.4}
    obs = {"s0z": lambda s, a: s[0, 2]}
    with pytest.warns(RuntimeWarning, match="n_traj=1: the standard errors are NaN"):
        ones = [tw.simulate(model, init, ts, n_traj=k, key=3, params=p, dt=0.05, observables=obs, chunk_size=1)
                for k in (1, 2)]
    # mean over 2 = (x0 + x1)/2 with x0 the single-trajectory result
    x0 = np.asarray(ones[0].mean["s0z"])
    both = tw.simulate(model, init, ts, n_traj=2, key=3, params=p, dt=0.05, observables=obs)
    np.testing.assert_allclose(np.asarray(ones[1].mean["s0z"]), np.asarray(both.mean["s0z"]), atol=1e-13)
    assert not np.allclose(x0[1:], np.asarray(both.mean["s0z"])[1:])


def test_pathwise_gradient_matches_central_finite_differences():
    """jax.grad through simulate with a fixed key (common random numbers) equals the central
    finite difference with the same key, for a Hamiltonian parameter and a rate inside Gamma."""
    import jax

    model = tw.Model(
        lambda s, a, p: p["Omega"] * jnp.sum(s[:, 0]),
        jumps=lambda s, a, p: (s[:, 0] - 1j * s[:, 1]) / 2,
        gamma=lambda p: jnp.array([p["gamma"]]),
        n_spins=1,
    )
    ts = np.linspace(0, 2, 3)

    def f(p):
        return tw.simulate(model, tw.states.spins_down(1), ts, n_traj=100, key=0, params=p, dt=0.02).mean["sz"][-1]

    p = {"Omega": jnp.asarray(1.0), "gamma": jnp.asarray(0.5)}
    g = jax.grad(f)(p)
    h = 1e-5
    for k in p:
        fd = (f({**p, k: p[k] + h}) - f({**p, k: p[k] - h})) / (2 * h)
        np.testing.assert_allclose(g[k], fd, rtol=1e-6, atol=1e-8)
