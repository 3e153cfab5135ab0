"""The counter-based generator of the noise (twa_jax._random): Threefry-2x32 against the
published known-answer vectors, the counter layout (an entry depends only on its trajectory's
global index), and the normals' statistics against the standard normal."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from twa_jax import _random

# Random123 kat_vectors, threefry2x32_20: (key, counter) -> output
KAT = [
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
]


@pytest.mark.parametrize("key, ctr, out", KAT)
def test_threefry_known_answers(key, ctr, out):
    got = _random.threefry2x32(np.uint32(key[0]), np.uint32(key[1]), np.uint32(ctr[0]), np.uint32(ctr[1]))
    assert (int(got[0]), int(got[1])) == out


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_entry_depends_only_on_global_index(dtype):
    words = _random.step_key(jax.random.key(7), 3)
    full = _random.complex_normals(words, jnp.arange(64), 3, dtype)
    part = _random.complex_normals(words, jnp.array([5, 40, 63]), 3, dtype)
    np.testing.assert_array_equal(np.asarray(part), np.asarray(full)[[5, 40, 63]])
    other = _random.complex_normals(_random.step_key(jax.random.key(7), 4), jnp.arange(64), 3, dtype)
    assert not np.any(np.asarray(other) == np.asarray(full))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_normals_have_standard_moments(dtype):
    n = 200_000
    z = np.asarray(_random.complex_normals(_random.step_key(jax.random.key(0), 0), jnp.arange(n), 2, dtype), np.complex128)
    x = np.concatenate([z.real.ravel(), z.imag.ravel()])
    m = x.size
    # mean 0, variance 1, kurtosis 3: each within 5 standard errors of the sample statistic
    assert abs(x.mean()) < 5 / np.sqrt(m)
    assert abs(np.mean(x**2) - 1) < 5 * np.sqrt(2 / m)
    assert abs(np.mean(x**4) - 3) < 5 * np.sqrt(96 / m)
    # the tails: P(|x| > 3) of the standard normal, binomial standard error
    p = 0.0026997960632601866
    assert abs(np.mean(np.abs(x) > 3) - p) < 5 * np.sqrt(p / m)
    # real and imaginary parts, and the two channels, uncorrelated
    for a, b in [(z[:, 0].real, z[:, 0].imag), (z[:, 0].real, z[:, 1].real), (z[:, 0].imag, z[:, 1].imag)]:
        assert abs(np.mean(a * b)) < 5 / np.sqrt(n)
    # neighbouring trajectories uncorrelated
    assert abs(np.mean(z[1:, 0].real * z[:-1, 0].real)) < 5 / np.sqrt(n)
