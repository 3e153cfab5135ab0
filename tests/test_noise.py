"""Noise factorization Gamma = B B^dag and the statistics of the increments (docs/conventions.md, "Noise")."""

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


# ----------------------------------------------------------------- derivatives through the factor
from twa_jax._noise import psd_sqrt  # noqa: E402


def _rotation(t):
    c, s, c2, s2 = jnp.cos(t), jnp.sin(t), jnp.cos(2 * t), jnp.sin(2 * t)
    Rz = jnp.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    Rx = jnp.array([[1.0, 0.0, 0.0], [0.0, c2, -s2], [0.0, s2, c2]])
    return Rz @ Rx


def test_psd_sqrt_derivative_matches_finite_differences_full_rank():
    """Dense Gamma (real and complex), full rank: jvp of the principal square root equals the
    central finite difference, and B B^dag = Gamma."""
    rng = np.random.default_rng(3)
    for complex_ in (False, True):
        G = _random_psd(rng, 5, 5, complex_)
        D = _random_psd(rng, 5, 2, complex_) - _random_psd(rng, 5, 2, complex_)  # Hermitian direction
        f = lambda t: psd_sqrt(jnp.asarray(G) + t * jnp.asarray(D))  # noqa: E731
        B, dB = jax.jvp(f, (0.0,), (1.0,))
        np.testing.assert_allclose(B @ jnp.conj(B).T, G, atol=1e-12 * np.abs(G).max())
        h = 1e-6
        np.testing.assert_allclose(dB, (f(h) - f(-h)) / (2 * h), atol=1e-7 * np.abs(dB).max())


def test_psd_sqrt_derivative_rank_deficient_is_analytic():
    """Rank-deficient Gamma of constant rank, where the eigendecomposition's derivative is NaN:
    (1) a rotating rank-2 Gamma R diag(2, 1/2, 0) R^T, whose square root is R diag(sqrt) R^T;
    (2) collective decay gamma0 * ones(N, N) (rank 1): d sqrt/d gamma0 = sqrt(N / gamma0) / (2 N)
    in every entry. Forward and reverse mode."""
    lam = jnp.array([2.0, 0.5, 0.0])
    G = lambda t: _rotation(t) @ jnp.diag(lam) @ _rotation(t).T  # noqa: E731
    ref = lambda t: _rotation(t) @ jnp.diag(jnp.sqrt(lam)) @ _rotation(t).T  # noqa: E731
    _, d = jax.jvp(lambda t: psd_sqrt(G(t)), (0.3,), (1.0,))
    _, d_ref = jax.jvp(ref, (0.3,), (1.0,))
    np.testing.assert_allclose(d, d_ref, atol=1e-10)
    w = jnp.arange(9.0).reshape(3, 3)
    g = jax.grad(lambda t: jnp.sum(w * psd_sqrt(G(t))))(0.3)
    np.testing.assert_allclose(g, jax.grad(lambda t: jnp.sum(w * ref(t)))(0.3), rtol=1e-10)

    N, g0 = 4, 0.7
    d = jax.jacfwd(lambda g: psd_sqrt(g * jnp.ones((N, N))))(g0)
    np.testing.assert_allclose(d, np.full((N, N), np.sqrt(N / g0) / (2 * N)), rtol=1e-10)
    # the eigenvector factor V sqrt(w) (the previous traced path) has no derivative here
    def eig_factor(g):
        w_, V = jnp.linalg.eigh(g * jnp.ones((N, N)))
        return V * jnp.sqrt(jnp.clip(w_, 0.0))
    assert not np.isfinite(jax.grad(lambda g: jnp.sum(eig_factor(g)))(g0))
    # decompose under tracing uses it: finite gradient of the factor's Gram matrix
    gram = lambda g: jnp.sum(jnp.abs(tw.decompose_gamma(g * jnp.ones((N, N))).factor) ** 2)  # noqa: E731
    np.testing.assert_allclose(jax.grad(gram)(g0), N, rtol=1e-10)  # sum |B|^2 = tr(Gamma) = g0 N


def test_full_rank_factor_is_the_same_concrete_and_traced():
    """A full-rank dense Gamma gives the same factor whether concrete or traced (so a jitted or
    differentiated simulate reproduces the eager numbers of the same key)."""
    rng = np.random.default_rng(4)
    G = jnp.asarray(_random_psd(rng, 4, 4))
    eager = decompose(G)
    traced = jax.jit(lambda g: decompose(g).factor)(G)
    assert eager.n_channels == 4
    np.testing.assert_allclose(traced, eager.factor, atol=1e-13)
    np.testing.assert_allclose(eager.max_rate, np.linalg.eigvalsh(np.asarray(G)).max(), rtol=1e-12)
