"""Built-in models: free-space dipole couplings (PHYSICS.md section 8)."""

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
