"""Built-in models: free-space dipole couplings (docs/conventions.md, "Atoms in free space")."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import twa_jax as tw


def _chain(n, a):
    return np.stack([np.arange(n) * a, np.zeros(n), np.zeros(n)], -1)


def test_perpendicular_dipoles_reduce_to_textbook_formula():
    G, J = tw.models.dipole_couplings(_chain(6, 0.2), 1.0, [0, 0, 1.0], gamma0=1.3)
    x = np.arange(6) * 0.2 * 2 * np.pi
    u = np.abs(x[:, None] - x[None, :]) + np.eye(6)  # diagonal excluded below
    off = ~np.eye(6, dtype=bool)
    ref_G = 1.5 * 1.3 * (np.sin(u) / u + np.cos(u) / u**2 - np.sin(u) / u**3)
    ref_J = -0.75 * 1.3 * (np.cos(u) / u - np.sin(u) / u**2 - np.cos(u) / u**3)  # -(G0/2) Re f
    np.testing.assert_allclose(np.asarray(G)[off], ref_G[off], rtol=1e-12)
    np.testing.assert_allclose(np.asarray(J)[off], ref_J[off], rtol=1e-12)
    np.testing.assert_allclose(np.diag(G), 1.3)
    np.testing.assert_allclose(np.diag(J), 0.0)


@pytest.mark.parametrize("dipole", [[0, 0, 1.0], [1.0, 0, 0], [1 / np.sqrt(2), 1j / np.sqrt(2), 0]])
def test_coincidence_limit_is_gamma0_and_gamma_is_psd(dipole):
    # i -> j limit of Gamma_ij equals Gamma0 for any polarization
    G, _ = tw.models.dipole_couplings(np.array([[0, 0, 0], [1e-4, 2e-4, -1e-4]]), 1.0, dipole)
    np.testing.assert_allclose(G[0, 1], 1.0, atol=1e-6)
    # sub-wavelength chain and a 3x3 square lattice: PSD (up to rounding) and symmetric
    for pos in (_chain(10, 0.1), np.stack(np.meshgrid(np.arange(3) * 0.3, np.arange(3) * 0.3, [0.0]), -1)):
        G, J = tw.models.dipole_couplings(pos, 1.0, dipole)
        G, J = np.asarray(G), np.asarray(J)
        assert np.allclose(G, G.T) and np.allclose(J, J.T)
        assert np.linalg.eigvalsh(G).min() > -1e-10 * np.abs(G).max()


def test_differentiable_in_the_lattice_spacing():
    f = lambda a: jnp.sum(tw.models.dipole_couplings(_chain(4, 1.0) * a, 1.0, [0, 0, 1.0])[0])  # noqa: E731
    g = jax.grad(f)(0.2)
    fd = (f(0.2 + 1e-6) - f(0.2 - 1e-6)) / 2e-6
    np.testing.assert_allclose(g, fd, rtol=1e-6)


def test_bad_input():
    with pytest.raises(ValueError, match="same position"):
        tw.models.dipole_couplings(np.zeros((2, 3)), 1.0, [0, 0, 1.0])
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        tw.models.dipole_couplings(np.zeros((2, 2)), 1.0, [0, 0, 1.0])
    with pytest.raises(ValueError, match="non-zero"):
        tw.models.dipole_couplings(_chain(2, 0.1), 1.0, [0, 0, 0.0])
    with pytest.raises(ValueError, match="wavelength"):
        tw.models.dipole_couplings(_chain(2, 0.1), -1.0, [0, 0, 1.0])


# ----------------------------------------------------------------------------- built-in models
def test_dicke_collective_decay_runs_with_one_noise_channel():
    model = tw.models.dicke(6, gamma=0.7)
    noise = tw.decompose_gamma(model.gamma_of(model.params))
    assert noise.n_channels == 1
    # and the low-rank factor reproduces Gamma
    G = np.asarray(model.gamma_of(model.params))
    np.testing.assert_allclose(G, 0.7 * np.ones((6, 6)))


def test_model_defaults_and_overrides():
    model = tw.models.driven_spin(Omega=2.0, gamma_down=0.5)
    assert set(model.params) == {"Omega", "gamma_down", "gamma_up", "kappa"}
    p = model.with_params({"Omega": 3.0})
    assert float(p["Omega"]) == 3.0 and float(p["gamma_down"]) == 0.5
    with pytest.raises(ValueError, match="unknown parameter"):
        model.with_params({"omega": 1.0})
    ts = np.linspace(0, 0.5, 3)
    # a model's own observables are the default; explicit observables replace them
    res = tw.simulate(tw.models.central_spin(2), tw.states.product(spins=[tw.states.spins_down(1), tw.states.spins_up(2)]),
                      ts, n_traj=8, key=0)
    assert set(res.mean) == {"tau_x", "tau_y", "tau_z", "sx", "sy", "sz"}
    np.testing.assert_allclose(res.mean["tau_z"][0], -1.0)
    np.testing.assert_allclose(res.mean["sz"][0], 1.0)
    res = tw.simulate(model, tw.states.spins_down(1), ts, n_traj=8, key=0, observables={"z": lambda s, a: s[0, 2]})
    assert set(res.mean) == {"z"}
    with pytest.raises(ValueError, match="unknown parameter"):
        tw.simulate(model, tw.states.spins_down(1), ts, n_traj=8, key=0, params={"Omgea": 1.0})


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: tw.models.driven_spin(gamma_down=-0.1), "rate 'gamma_down' must be >= 0"),
        (lambda: tw.models.driven_spin(Omega=float("nan")), "finite"),
        (lambda: tw.models.tavis_cummings(3, eps=[1.0, 2.0]), r"shape \(3,\)"),
        (lambda: tw.models.tavis_cummings(3, omega=[1.0, 2.0, 3.0]), "must be a scalar"),
        (lambda: tw.models.tavis_cummings(0), "n must be an int >= 1"),
        (lambda: tw.models.rydberg_chain(2), "n must be an int >= 3"),
        (lambda: tw.models.rydberg_chain(4, boundary="twisted"), "boundary"),
        (lambda: tw.models.dicke(3, gamma=-1.0), "rate 'gamma'"),
        (lambda: tw.models.dipole_array(np.zeros((2, 3))), "same position"),
        # a NaN position made NaN couplings, refused later as "quadratic_form needs a symmetric M"
        (lambda: tw.models.dipole_array(np.array([[0.0, 0, 0], [np.nan, 0, 0]])), "finite; atom 1"),
        (lambda: tw.models.dipole_couplings(np.eye(3), 1.0, (np.nan, 0, 1)), "dipole must be finite"),
        (lambda: tw.models.chain_positions(3, 0.0), "spacing must be a positive"),
        (lambda: tw.models.chain_positions(3, float("nan")), "spacing must be a positive"),
        (lambda: tw.models.chain_positions(3, 0.2, axis=(0, 0, 0)), "axis must be a non-zero"),
    ],
)
def test_model_builders_reject_bad_input(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_negative_rate_override_is_rejected_by_simulate():
    model = tw.models.driven_spin(gamma_down=0.5)
    with pytest.raises(ValueError, match="negative"):
        tw.simulate(model, tw.states.spins_down(1), np.linspace(0, 1, 3), n_traj=4, key=0, params={"gamma_down": -1.0})


def test_rydberg_open_chain_has_one_bond_fewer():
    s = jnp.asarray(np.tile([0.0, 0.0, 1.0], (4, 1)))  # all up: each bond contributes J/4 * 4 = J
    a = jnp.zeros(0, complex)
    for boundary, bonds in (("periodic", 4), ("open", 3)):
        m = tw.models.rydberg_chain(4, Omega=0.0, J=1.0, boundary=boundary)
        assert float(m.hamiltonian(s, a, m.params)) == pytest.approx(bonds)
