"""Initial-state samplers have the moments of docs/conventions.md, "Initial states" (tolerances
from the sem)."""

import jax
import numpy as np
import pytest

import twa_jax as tw

N_SAMPLES = 40_000


def _draw(state, n=N_SAMPLES, seed=0):
    keys = jax.random.split(jax.random.key(seed), n)
    s, a = jax.vmap(state.sample)(keys)
    return np.asarray(s), np.asarray(a)


def _close(samples, expected, k=5):
    samples = np.asarray(samples)
    sem = samples.std(axis=0) / np.sqrt(samples.shape[0])
    assert np.all(np.abs(samples.mean(0) - expected) <= k * sem + 1e-12), (samples.mean(0), expected, sem)


def test_discrete_spin_down_is_eq16():
    s, _ = _draw(tw.states.spins_down(3))
    # W0: s^z = -1 exactly, s^x, s^y = +-1 with probability 1/2 each, independent
    np.testing.assert_array_equal(s[..., 2], -1.0)
    assert set(np.unique(s[..., :2])) == {-1.0, 1.0}
    np.testing.assert_allclose(np.sum(s**2, -1), 3.0, atol=1e-12)
    _close(s[..., 0], 0.0)
    _close(s[..., 0] * s[..., 1], 0.0)
    _close(s[:, 0, 0] * s[:, 1, 0], 0.0)  # independent sites


@pytest.mark.parametrize("sampling", ["discrete", "gaussian"])
def test_spin_along_arbitrary_direction(sampling):
    n = np.array([1.0, -2.0, 0.5])
    n /= np.linalg.norm(n)
    s, _ = _draw(tw.states.spins(n, 2, sampling=sampling))
    s = s[:, 0]
    _close(s, n)  # <sigma> = n
    # symmetric second moments of a spin-1/2 coherent state: <s^a s^b> = delta_ab (quantum: (1/2){sigma^a, sigma^b})
    for a in range(3):
        for b in range(3):
            _close(s[:, a] * s[:, b], float(a == b))
    if sampling == "discrete":
        np.testing.assert_allclose(np.sum(s**2, -1), 3.0, atol=1e-12)
    else:
        _close(np.sum(s**2, -1), 3.0)


def test_per_spin_directions():
    d = np.array([[0, 0, 1.0], [1.0, 0, 0], [0, -1.0, 0]])
    s, _ = _draw(tw.states.spins(d))
    _close(s.reshape(len(s), -1), d.reshape(-1))


def test_spin_coherent_S():
    S = 2.5
    n = np.array([0.0, 1.0, 1.0]) / np.sqrt(2)
    s, _ = _draw(tw.states.spin_coherent(S, n))
    s = s[:, 0]
    _close(s, S * n)
    # transverse variance S/2 in each perpendicular direction, none along n
    e1 = np.array([1.0, 0, 0])
    e2 = np.cross(n, e1)
    _close((s @ e1) ** 2, S / 2)
    _close((s @ e2) ** 2, S / 2)
    np.testing.assert_allclose(s @ n, S, atol=1e-12)


@pytest.mark.parametrize(
    "state, alpha, nth",
    [
        (tw.states.vacuum(2), np.zeros(2), np.zeros(2)),
        (tw.states.coherent([1.0 - 0.5j, 0.3j]), np.array([1.0 - 0.5j, 0.3j]), np.zeros(2)),
        (tw.states.thermal([0.5, 2.0]), np.zeros(2), np.array([0.5, 2.0])),
    ],
)
def test_boson_wigner_moments(state, alpha, nth):
    _, a = _draw(state)
    _close(a.real, alpha.real)
    _close(a.imag, alpha.imag)
    d = a - alpha
    _close(d.real**2, (nth + 0.5) / 2)  # quadrature variance
    _close(d.imag**2, (nth + 0.5) / 2)
    _close(d.real * d.imag, 0.0)
    # Weyl-corrected occupation <a^dag a> = <|a|^2> - 1/2 = |alpha|^2 + n_th
    _close(np.abs(a) ** 2 - 0.5, np.abs(alpha) ** 2 + nth)


def test_product_concatenates_independent_parts():
    st = tw.states.product(
        spins=[tw.states.spins_up(2), tw.states.spins_down(1)],
        bosons=[tw.states.coherent(2.0), tw.states.vacuum(1)],
    )
    assert (st.n_spins, st.n_bosons) == (3, 2)
    s, a = _draw(st, 20_000)
    _close(s[..., 2], [1.0, 1.0, -1.0])
    _close(a.real, [2.0, 0.0])
    _close(s[:, 0, 0] * a[:, 0].real, 0.0)  # independence of spin and boson noise
    ms, ma = st.mean()
    np.testing.assert_allclose(ms[:, 2], [1, 1, -1])
    np.testing.assert_allclose(ma, [2.0, 0.0])


def test_bad_state_arguments():
    with pytest.raises(TypeError, match=r"direction must be a 3-vector of numbers or an \(n, 3\) array, got 'x'"):
        tw.states.spins("x", 1)
    with pytest.raises(TypeError, match=r"direction must be a 3-vector of numbers or an \(n, 3\) array, got 'x'"):
        tw.states.spin_coherent(1, "x", 2)
    with pytest.raises(ValueError, match="n must be >= 1"):
        tw.states.spins_down(0)
    with pytest.raises(TypeError, match="n must be an int"):
        tw.states.spins_down(1.5)
    with pytest.raises(ValueError, match="sampling"):
        tw.states.spins_up(2, sampling="uniform")
    with pytest.raises(ValueError, match="zero vector"):
        tw.states.spins([0, 0, 0], 2)
    with pytest.raises(ValueError, match="shape"):
        tw.states.spins(np.ones((3, 3)), 2)
    with pytest.raises(ValueError, match=">= 0"):
        tw.states.thermal(-1.0)
    with pytest.raises(ValueError, match="NaN"):
        tw.states.coherent(np.nan)
    with pytest.raises(ValueError, match="normalization"):
        tw.states.product(spins=[tw.states.spins_up(1), tw.states.spin_coherent(1.0, [0, 0, 1])])
    with pytest.raises(TypeError, match="boson states"):
        tw.states.product(bosons=tw.states.spins_up(1))
