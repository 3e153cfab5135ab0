"""``tw.quadratic_form``: value and derivatives against the plain expression it replaces."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import twa_jax as tw


def _plain(M, x):
    return jnp.real(jnp.conj(x) @ M @ x)


def _cases(n=7, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, n))
    C = rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n))
    xr = rng.normal(size=n)
    xc = rng.normal(size=n) + 1j * rng.normal(size=n)
    return {
        "symmetric, real x": (A + A.T, xr),
        "symmetric, complex x": (A + A.T, xc),
        "Hermitian, complex x": (C + C.conj().T, xc),
        "Hermitian, real x": (C + C.conj().T, xr),
    }


@pytest.mark.parametrize("case", list(_cases()))
def test_value_gradient_and_hessian_equal_the_plain_expression(case):
    with jax.enable_x64(True):
        M, x = (jnp.asarray(v) for v in _cases()[case])
        np.testing.assert_allclose(tw.quadratic_form(M, x), _plain(M, x), rtol=1e-13)
        if jnp.iscomplexobj(x):  # as a function of (Re x, Im x)
            def f(g):
                return lambda v: g(M, v[0] + 1j * v[1])

            v = jnp.stack([x.real, x.imag])
        else:
            def f(g):
                return lambda v: g(M, v)

            v = x
        np.testing.assert_allclose(jax.grad(f(tw.quadratic_form))(v), jax.grad(f(_plain))(v), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(jax.hessian(f(tw.quadratic_form))(v), jax.hessian(f(_plain))(v), rtol=1e-12, atol=1e-12)
        t = jnp.ones_like(v)
        np.testing.assert_allclose(jax.jvp(f(tw.quadratic_form), (v,), (t,))[1], jax.jvp(f(_plain), (v,), (t,))[1], rtol=1e-12)


def test_derivative_with_respect_to_a_traced_matrix():
    """A matrix that depends on parameters (e.g. a spacing) is differentiated too; the symmetric
    matrix is built from the parameter, so the symmetry holds by construction."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        A = jnp.asarray(rng.normal(size=(5, 5)))
        x = jnp.asarray(rng.normal(size=5) + 1j * rng.normal(size=5))

        def M(p):
            return jnp.sin(p * (A + A.T))

        g1 = jax.grad(lambda p: tw.quadratic_form(M(p), x))(0.7)
        g2 = jax.grad(lambda p: _plain(M(p), x))(0.7)
        np.testing.assert_allclose(g1, g2, rtol=1e-12)
        # second order through the matrix and the vector (what fitting through the drift needs)
        h1 = jax.grad(lambda p: jax.grad(lambda y: tw.quadratic_form(M(p), y))(x.real).sum())(0.7)
        h2 = jax.grad(lambda p: jax.grad(lambda y: _plain(M(p), y))(x.real).sum())(0.7)
        np.testing.assert_allclose(h1, h2, rtol=1e-12)


def test_under_vmap_and_jit():
    rng = np.random.default_rng(2)
    A = rng.normal(size=(6, 6)).astype(np.float32)
    M = jnp.asarray(A + A.T)
    X = jnp.asarray(rng.normal(size=(4, 6)).astype(np.float32))
    got = jax.jit(jax.vmap(jax.grad(lambda x: tw.quadratic_form(M, x))))(X)
    np.testing.assert_allclose(got, X @ (2 * M), rtol=1e-5)


def test_bad_input_is_named():
    rng = np.random.default_rng(3)
    A = jnp.asarray(rng.normal(size=(4, 4)))
    with pytest.raises(ValueError, match="symmetric"):
        tw.quadratic_form(A, jnp.ones(4))
    C = jnp.asarray(rng.normal(size=(4, 4)) + 1j * rng.normal(size=(4, 4)))
    with pytest.raises(ValueError, match="Hermitian"):
        tw.quadratic_form(C + C.T, jnp.ones(4))  # complex symmetric is not Hermitian
    with pytest.raises(ValueError, match="square"):
        tw.quadratic_form(jnp.ones((3, 4)), jnp.ones(4))
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        tw.quadratic_form(A + A.T, jnp.ones(3))


def test_uniform_constant_matrix_in_a_large_batch():
    """Regression: jaxlib 0.10.2's CPU compiler fused x . (M x) into one kernel that returned
    wrong numbers for a uniform constant M (all-to-all couplings, collective decay) once the batch
    reached about 1000-4000; value and forward derivative are checked at batch 8000."""
    n, B = 16, 8000
    rng = np.random.default_rng(4)
    X = rng.normal(size=(B, n)).astype(np.float32)
    M = jnp.ones((n, n), jnp.float32)
    ref = np.sum(X.astype(np.float64), -1) ** 2
    got = jax.jit(jax.vmap(lambda x: tw.quadratic_form(M, x)))(jnp.asarray(X))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-3)
    T = rng.normal(size=(B, n)).astype(np.float32)
    dq = jax.jit(jax.vmap(lambda x, t: jax.jvp(lambda v: tw.quadratic_form(M, v), (x,), (t,))[1]))(jnp.asarray(X), jnp.asarray(T))
    np.testing.assert_allclose(dq, 2 * np.sum(X, -1).astype(np.float64) * np.sum(T, -1), rtol=1e-4, atol=1e-2)


def test_collective_emission_rate_with_many_trajectories():
    """The Dicke model's emission rate (Gamma = ones) at t = 0 with 8000 trajectories in one
    chunk: all spins up gives R = 1 exactly in expectation (the case the fused kernel broke)."""
    model = tw.models.dicke(4, gamma=1.0)
    res = tw.simulate(model, tw.states.spins_up(4), np.array([0.0, 0.01]), n_traj=8000, key=0, chunk_size=8000)
    r0, sem0 = float(res.mean["emission_rate"][0]), float(res.sem["emission_rate"][0])
    assert abs(r0 - 1.0) <= 4 * sem0 + 1e-9, (r0, sem0)


def test_compiler_workaround_is_applied_on_import_or_warned():
    """twa_jax adds the flag that avoids the jaxlib 0.10 CPU kernel bug when it is imported before
    JAX starts (the usual case), and warns when it comes too late."""
    import subprocess
    import sys

    from twa_jax import _xla_workaround as wa

    if not wa._affected():
        pytest.skip("jaxlib version not affected")
    env = {k: v for k, v in __import__("os").environ.items() if k != "XLA_FLAGS"}
    first = "import twa_jax, os; print(os.environ['XLA_FLAGS'])"
    out = subprocess.run([sys.executable, "-c", first], capture_output=True, text=True, env=env, check=True)
    assert wa.FLAG in out.stdout
    late = "import jax.numpy as jnp; jnp.ones(2).sum(); import twa_jax"
    out = subprocess.run([sys.executable, "-c", late], capture_output=True, text=True, env=env, check=True)
    assert "workaround" in out.stderr and "RuntimeWarning" in out.stderr
