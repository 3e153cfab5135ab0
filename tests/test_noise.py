"""Noise factorization Gamma = B B^dag and the statistics of the increments (PHYSICS.md 5)."""

import jax
import jax.numpy as jnp
import numpy as np

import twa_jax as tw
from twa_jax._noise import decompose


def _random_psd(rng, K, rank, complex_=True):
    A = rng.normal(size=(K, rank)) + (1j * rng.normal(size=(K, rank)) if complex_ else 0)
    return A @ A.conj().T


def test_factor_reproduces_gamma_and_drops_null_channels():
    rng = np.random.default_rng(0)
    for rank in (1, 3, 6):
        G = _random_psd(rng, 6, rank)
        nb = decompose(jnp.asarray(G))
        assert nb.n_channels == rank
        B = np.asarray(nb.factor)
        np.testing.assert_allclose(B @ B.conj().T, G, atol=1e-12 * np.abs(G).max())
        L = rng.normal(size=6) + 1j * rng.normal(size=6)
        np.testing.assert_allclose(nb.apply_gamma(jnp.asarray(L)), G @ L, atol=1e-12 * np.abs(G).max())


def test_collective_decay_is_one_channel():
    # fully collective decay: Gamma_ij = gamma0 for all i, j (rank 1), N = 50
    G = np.full((50, 50), 0.7)
    nb = decompose(jnp.asarray(G))
    assert nb.n_channels == 1
    assert nb.low_rank


def test_diagonal_fast_path_has_no_eigendecomposition_and_drops_zero_rates():
    nb = decompose(jnp.array([0.5, 0.0, 2.0]))
    assert nb.diagonal and nb.n_channels == 2 and nb.channels == (0, 2)
    xi = nb.xi(jnp.array([1.0 + 1j, 2.0]))
    np.testing.assert_allclose(xi, [np.sqrt(0.5) * (1 + 1j), 0.0, np.sqrt(2.0) * 2.0])


def test_increment_covariance_is_two_gamma_dt_and_circular():
    """<xi xi^dag> = 2 Gamma dt and <xi xi^T> = 0, within the sampling error."""
    rng = np.random.default_rng(1)
    G = _random_psd(rng, 4, 2)
    nb = decompose(jnp.asarray(G))
    dt, n = 0.01, 200_000
    keys = jax.random.split(jax.random.key(0), n)
    xi = np.asarray(jax.vmap(lambda k: nb.xi(nb.sample_dW(k, dt, jnp.float64)))(keys))
    cov = xi.T @ xi.conj() / n  # <xi_i conj(xi_j)>
    pcov = xi.T @ xi / n  # <xi_i xi_j>
    # standard error of a product average ~ sqrt(<|x_i|^2><|x_j|^2>/n)
    d = np.sqrt(np.real(np.diag(2 * G * dt)))
    se = np.outer(d, d) / np.sqrt(n)
    assert np.all(np.abs(cov - 2 * G * dt) < 5 * se)
    assert np.all(np.abs(pcov) < 5 * se)


def test_rank_one_gamma_uses_one_channel_in_simulate():
    """Collective decay of 6 spins runs with a single noise channel end to end."""
    N = 6
    model = tw.Model(
        lambda s, a, p: jnp.zeros(()),
        jumps=lambda s, a, p: (s[:, 0] - 1j * s[:, 1]) / 2,
        gamma=np.ones((N, N)),
        n_spins=N,
    )
    assert decompose(model.gamma_of({})).n_channels == 1
    res = tw.simulate(model, tw.states.spins_up(N), np.linspace(0, 0.5, 3), n_traj=64, key=0)
    assert res.n_failed == 0
