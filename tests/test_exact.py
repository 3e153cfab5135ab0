"""TWA against exact master-equation solutions (QuTiP mesolve).

TWA has a systematic error of its own (docs/conventions.md, "Accuracy of TWA"), so each tolerance is
(measured TWA bias, from an independent implementation with 1e5 trajectories and fine dt)
+ (4 standard errors of our run). The bias column is the max |<sigma^z>_TWA - <sigma^z>_exact|
over t in [0, 10/Omega] from that section's table.
"""

import jax.numpy as jnp
import numpy as np
import pytest

qt = pytest.importorskip("qutip")

import twa_jax as tw  # noqa: E402

TWA_BIAS = {0.1: 0.007, 0.5: 0.039, 1.0: 0.078, 4.0: 0.09}


def _driven_spin():
    return tw.Model(
        lambda s, a, p: p["Omega"] * jnp.sum(s[:, 0]),
        jumps=lambda s, a, p: (s[:, 0] - 1j * s[:, 1]) / 2,
        gamma=lambda p: jnp.array([p["gamma"]]),
        n_spins=1,
    )


def _exact_driven_spin(Omega, gamma, ts):
    r = qt.mesolve(Omega * qt.sigmax(), qt.basis(2, 1), ts, [np.sqrt(gamma) * qt.sigmam()],
                   e_ops=[qt.sigmax(), qt.sigmay(), qt.sigmaz()],
                   options={"atol": 1e-10, "rtol": 1e-8})
    return {"sx": np.asarray(r.expect[0]), "sy": np.asarray(r.expect[1]), "sz": np.asarray(r.expect[2])}


@pytest.mark.parametrize("ratio", [0.1, pytest.param(0.5, marks=pytest.mark.slow), pytest.param(1.0, marks=pytest.mark.slow), 4.0])
def test_driven_spin_against_qutip(ratio):
    Omega = 1.0
    gamma = ratio * Omega
    ts = np.linspace(0, 10, 21)
    res = tw.simulate(_driven_spin(), tw.states.spins_down(1), ts, n_traj=6000, key=11,
                      params={"Omega": Omega, "gamma": gamma})
    ex = _exact_driven_spin(Omega, gamma, ts)
    dev = np.abs(np.asarray(res.mean["sz"]) - ex["sz"])
    tol = TWA_BIAS[ratio] + 4 * np.asarray(res.sem["sz"])
    assert np.all(dev <= tol), f"gamma/Omega={ratio}: max dev {dev.max():.4f}, tol {tol[np.argmax(dev)]:.4f}"
    # <sigma^x> = 0 by symmetry (H and L are symmetric under x -> -x, y -> y mirror): statistics only
    assert np.all(np.abs(np.asarray(res.mean["sx"])) <= 4 * np.asarray(res.sem["sx"]) + 1e-12)
    assert res.n_failed == 0


def test_strong_decay_steady_state_and_norm():
    """gamma/Omega = 4: exact steady state <sigma^z> = -gamma^2/(gamma^2 + 8 Omega^2) = -2/3.
    The measured TWA steady-state bias here is 0.003 (-0.670 vs -0.667, docs/conventions.md,
    "Integrators"); the test allows 0.01 + 4 sem. Plain Heun at this ratio blows up; the rotation scheme keeps
    |s|^2 = 3 to rounding."""
    Omega, gamma = 1.0, 4.0
    ts = np.linspace(0, 12, 25)
    obs = {
        "sz": lambda s, a: s[:, 2].mean(),
        "norm_dev": lambda s, a: jnp.max(jnp.abs(jnp.sum(s**2, -1) - 3.0)),
    }
    res = tw.simulate(_driven_spin(), tw.states.spins_down(1), ts, n_traj=6000, key=12,
                      params={"Omega": Omega, "gamma": gamma}, observables=obs)
    exact_ss = -gamma**2 / (gamma**2 + 8 * Omega**2)
    late = ts >= 6
    ss = float(np.mean(np.asarray(res.mean["sz"])[late]))
    sem = float(np.max(np.asarray(res.sem["sz"])[late]))
    assert abs(ss - exact_ss) <= 0.01 + 4 * sem, (ss, exact_ss, sem)
    assert float(np.max(res.mean["norm_dev"])) < 1e-10


# ----------------------------------------------------------------------------- options a method ignores
@pytest.mark.parametrize(
    "method, option, value",
    [
        ("full", "seed", 3),
        ("piqs", "seed", 3),
        ("auto", "seed", 3),
        ("full", "n_traj", 100),
        ("piqs", "n_traj", 100),
        ("auto", "n_traj", 100),
        ("mcsolve", "rtol", 1e-6),
        ("mcsolve", "atol", 1e-8),
    ],
)
def test_exact_solve_rejects_options_the_method_ignores(method, option, value):
    """tw.exact.solve raises (naming the option and the method) instead of dropping an option that
    its method does not use: seed and n_traj are mcsolve's, rtol and atol the density-matrix
    methods'. The check comes before any Hilbert space is built."""
    model = tw.models.dicke(2, gamma=1.0, Omega=0.5)  # offers both bases
    with pytest.raises(ValueError, match=rf"{option}=.*method='{method}'"):
        tw.exact.solve(model, tw.states.spins_up(2), np.linspace(0, 1, 3), method=method, **{option: value})


def test_exact_solve_accepts_the_options_each_method_uses():
    """The same options pass where they apply (and explicit defaults change nothing)."""
    model = tw.models.dicke(2, gamma=1.0, Omega=0.5)
    init, ts = tw.states.spins_up(2), np.linspace(0, 1, 3)
    ref = tw.exact.solve(model, init, ts, method="full")
    for method in ("full", "piqs", "auto"):
        res = tw.exact.solve(model, init, ts, method=method, rtol=1e-8, atol=1e-10)
        assert np.max(np.abs(np.asarray(res.mean["sz"]) - np.asarray(ref.mean["sz"]))) < 1e-6
    mc = tw.exact.solve(model, init, ts, method="mcsolve", n_traj=20, seed=5)
    assert mc.n_traj == 20


# ----------------------------------------------------------------------------- index order of a complex Gamma
def _two_spin_lindbladian(H, sm, G):
    """``-i[H, .] + sum_ij G_ij (L_j . L_i^dag - 1/2 {L_i^dag L_j, .})`` written out in QuTiP."""
    D = sum(
        G[i, j] * (qt.spre(sm[j]) * qt.spost(sm[i].dag())
                   - 0.5 * qt.spre(sm[i].dag() * sm[j]) - 0.5 * qt.spost(sm[i].dag() * sm[j]))
        for i in range(2) for j in range(2)
    )
    return -1j * (qt.spre(H) - qt.spost(H)) + D


def test_complex_gamma_index_order_against_qutip():
    """The convention of docs/conventions.md, "Master equation": for a complex Hermitian Gamma
    (two spins, L_i = sigma_i^-, Gamma_01 = 0.8i) both TWA and tw.exact's eigen-channel collapse
    operators follow sum_ij Gamma_ij (L_j rho L_i^dag - 1/2 {L_i^dag L_j, rho}); the transposed
    order (Gamma_ji) gives visibly different dynamics.

    Measured here (4000 trajectories, keys 5-7, t in [0, 3], sem 0.016): <sigma_1^z> deviates
    from the stated order by at most 0.059-0.064 (TWA's own bias at Gamma ~ Omega; 0.074 with
    20000 trajectories over t in [0, 4]) and from the transposed one by 0.40-0.43. Tolerance:
    0.1 + 4 sem; the transposed order must miss it.
    """
    G = np.array([[1.0, 0.8j], [-0.8j, 1.0]])
    ts = np.linspace(0, 3, 16)
    eye = qt.qeye(2)
    sm = [qt.tensor(qt.sigmam(), eye), qt.tensor(eye, qt.sigmam())]
    sz1 = qt.tensor(eye, qt.sigmaz())
    H = qt.tensor(qt.sigmax(), eye) + qt.tensor(eye, qt.sigmax())
    rho0 = qt.ket2dm(qt.tensor((qt.basis(2, 0) + qt.basis(2, 1)).unit(), qt.basis(2, 1)))  # +x, down
    opts = {"atol": 1e-10, "rtol": 1e-9}
    stated = qt.mesolve(_two_spin_lindbladian(H, sm, G), rho0, ts, e_ops=[sz1], options=opts).expect[0]
    other = qt.mesolve(_two_spin_lindbladian(H, sm, G.T), rho0, ts, e_ops=[sz1], options=opts).expect[0]
    c_ops = tw.exact.collapse_operators(sm, G)
    channels = qt.mesolve(H, rho0, ts, c_ops, e_ops=[sz1], options=opts).expect[0]
    assert np.max(np.abs(channels - stated)) < 1e-7
    assert np.max(np.abs(other - stated)) > 0.3

    model = tw.Model(lambda s, a, p: jnp.sum(s[:, 0]), jumps=lambda s, a, p: (s[:, 0] - 1j * s[:, 1]) / 2,
                     gamma=jnp.asarray(G), n_spins=2)
    init = tw.states.spins([[1.0, 0, 0], [0, 0, -1.0]], 2)
    res = tw.simulate(model, init, ts, n_traj=4000, key=5, observables={"sz1": lambda s, a: s[1, 2]})
    m, sem = np.asarray(res.mean["sz1"]), np.asarray(res.sem["sz1"])
    tol = 0.1 + 4 * sem
    assert np.all(np.abs(m - stated) <= tol), np.max(np.abs(m - stated))
    assert np.any(np.abs(m - other) > tol)


def test_exact_result_is_double_precision_with_x64_off():
    """The exact solver computes in double precision; with JAX's x64 off its Result used to be
    rounded to float32 silently. It is float64 NumPy, equal to QuTiP's to the solver tolerance."""
    import jax

    ts = np.linspace(0, 2, 5)
    with jax.enable_x64(False):
        res = tw.exact.solve(_driven_spin(), tw.states.spins_down(1), ts, params={"Omega": 1.0, "gamma": 0.5})
    for x in (res.ts, res.mean["sz"], res.sem["sz"]):
        assert isinstance(x, np.ndarray) and x.dtype == np.float64
    # the same numbers as with x64 on (float32 rounding would change them in the 8th digit)
    on = tw.exact.solve(_driven_spin(), tw.states.spins_down(1), ts, params={"Omega": 1.0, "gamma": 0.5})
    np.testing.assert_array_equal(res.mean["sz"], np.asarray(on.mean["sz"]))
    np.testing.assert_allclose(res.mean["sz"], _exact_driven_spin(1.0, 0.5, ts)["sz"], rtol=0, atol=1e-6)


def test_exact_solve_refuses_a_time_dependent_negative_rate():
    """gamma(t) = cos(t) / 2 turns negative after t = pi/2: tw.simulate refuses it; tw.exact.solve
    integrated it (an unphysical master equation, <sigma^z>(2) = 0.805). Both say which time."""
    model = tw.Model(lambda s, a, p, t: jnp.sum(s[:, 0]), jumps=lambda s, a, p, t: (s[:, 0] - 1j * s[:, 1]) / 2,
                     gamma=lambda p, t: jnp.array([0.5 * jnp.cos(t)]), n_spins=1, time_dependent=True)
    ts = np.linspace(0, 2, 5)
    msg = r"gamma\(params, t=1\.[5-9]\d*\): rates must be non-negative"
    with pytest.raises(ValueError, match=msg):
        tw.exact.solve(model, tw.states.spins_down(1), ts)
    with pytest.raises(ValueError, match=msg):
        tw.simulate(model, tw.states.spins_down(1), ts, n_traj=8, key=0)
    ok = tw.exact.solve(model, tw.states.spins_down(1), ts[:3])  # up to t = 1, where the rate is positive
    assert ok.mean["sz"].shape == (3,)
