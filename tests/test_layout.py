"""The state's two layouts (``_plan.choose_layout``): trajectories first (the generator ``vmap``-ed)
and trajectories last (the generator's jaxpr evaluated batch last, ``twa_jax/_lanes.py``) give the
same trajectories for every model family, solver, entry point and gradient; a model the
interpreter has no rule for runs the ``vmap`` path."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import twa_jax as tw
from twa_jax import _lanes, _plan

TS = np.linspace(0.0, 1.0, 5)
KW = dict(n_traj=64, key=5, dt=0.02, keep_trajectories=3, progress=False)


def both(monkeypatch, fn):
    """``{layout: fn()}`` with the plan's layout forced to each."""
    out = {}
    for layout in _plan.LAYOUTS:
        monkeypatch.setattr(_plan, "LAYOUT", layout)
        out[layout] = fn()
    monkeypatch.setattr(_plan, "LAYOUT", None)
    return out


def assert_same(a, b, rtol=1e-10, atol=1e-12):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def assert_same_results(r1, r2, **tol):
    assert_same((r1.mean, r1.sem, r1.trajectories), (r2.mean, r2.sem, r2.trajectories), **tol)
    assert r1.n_traj == r2.n_traj and r1.n_failed == r2.n_failed


def _tc_time_dependent():
    """Tavis-Cummings with a pump switched on in time (a time-dependent Gamma) and a drive."""
    n = 3

    def H(s, a, p, t):
        sm = (s[:, 0] - 1j * s[:, 1]) / 2
        return (p["g"] * 2 * jnp.real(jnp.conj(a[0]) * jnp.sum(sm)) + 0.5 * jnp.sin(t) * s[:, 0].sum()
                + jnp.abs(a[0]) ** 2)

    def L(s, a, p, t):
        return jnp.concatenate([a, (s[:, 0] + 1j * s[:, 1]) / 2])

    def gamma(p, t):
        return jnp.concatenate([jnp.array([p["kappa"]]), jnp.full(n, p["w"] * jnp.minimum(t / 0.5, 1.0))])

    model = tw.Model(H, jumps=L, gamma=gamma, n_spins=n, n_bosons=1, time_dependent=True,
                     params={"g": 1.0, "kappa": 2.0, "w": 1.0})
    return model, tw.states.product(spins=tw.states.spins_down(n), bosons=tw.states.vacuum(1))


CASES = {
    "driven_spin": lambda: (tw.models.driven_spin(Omega=1.0, gamma_down=0.3, gamma_up=0.1), tw.states.spins_down(1)),
    "rydberg_chain": lambda: (tw.models.rydberg_chain(6, Omega=1.0, J=1.0, gamma_down=0.2), tw.states.spins_down(6)),
    "rydberg_open": lambda: (tw.models.rydberg_chain(5, gamma_down=0.2, boundary="open"), tw.states.spins_down(5)),
    "dicke": lambda: (tw.models.dicke(4, gamma=1.0, Omega=0.5), tw.states.spins_up(4)),
    "tavis_cummings": lambda: (tw.models.tavis_cummings(3, kappa=1.0, gamma_down=0.2),
                               tw.states.product(spins=tw.states.spins_up(3), bosons=tw.states.vacuum(1))),
    "central_spin": lambda: (tw.models.central_spin(3, kappa=1.0, gamma_down=0.2), None),
    "dipole_array": lambda: (tw.models.dipole_array(tw.models.chain_positions(4, 0.2), Omega=0.5), tw.states.spins_up(4)),
    "time_dependent": _tc_time_dependent,
}


def _case(name):
    model, init = CASES[name]()
    if init is None:  # the model's own sizes
        init = tw.states.spins_up(model.n_spins)
        if model.n_bosons:
            init = tw.states.product(spins=init, bosons=tw.states.vacuum(model.n_bosons))
    return model, init


@pytest.mark.parametrize("name", sorted(CASES))
def test_both_layouts_give_the_same_trajectories(monkeypatch, name):
    model, init = _case(name)
    plan = _plan.make_plan(model, init, TS, n_traj=_plan.LANES_MIN_WORK, key=5, dt=0.02)
    assert plan.layout == "batch_last"  # chosen for enough trajectories: the interpreter has every rule
    res = both(monkeypatch, lambda: tw.simulate(model, init, TS, **KW))
    assert_same_results(res["batch_first"], res["batch_last"])


def test_plain_heun_solver_and_no_noise(monkeypatch):
    model, init = _case("tavis_cummings")
    for kw in (dict(solver="heun"), dict(method="no_noise")):
        res = both(monkeypatch, lambda kw=kw: tw.simulate(model, init, TS, **KW, **kw))
        assert_same_results(res["batch_first"], res["batch_last"])


# complex bosons; a dense coupling (slow: 12 s; the default run keeps the float32 layout check
# on Tavis-Cummings, and the dense coupling's layouts in float64 in
# test_both_layouts_give_the_same_trajectories[dipole_array])
@pytest.mark.parametrize("name", ["tavis_cummings", pytest.param("dipole_array", marks=pytest.mark.slow)])
def test_float32(monkeypatch, name):
    with jax.enable_x64(False):
        model, init = _case(name)
        res = both(monkeypatch, lambda: tw.simulate(model, init, TS, **KW))
        assert res["batch_last"].mean["sz"].dtype == jnp.float32
        assert_same_results(res["batch_first"], res["batch_last"], rtol=1e-5, atol=2e-6)


def test_pulses(monkeypatch):
    model, init = _case("rydberg_chain")
    jx = lambda s, a, p: tw.weyl.collective(s, "x")  # noqa: E731
    pulses = [tw.Pulse(0.0, jx, 0.7), tw.Pulse(0.5, jx, "Omega")]
    res = both(monkeypatch, lambda: tw.simulate(model, init, TS, params={"Omega": 1.1}, pulses=pulses, **KW))
    assert_same_results(res["batch_first"], res["batch_last"])
    # a boson displacement and a generator nonlinear in the state (substeps), in a sweep of
    # points solved together: the pulse runs in the state's layout (no transpose in the step)
    model, init = _case("tavis_cummings")
    pulses = [tw.Pulse(0.2, lambda s, a, p: 2 * jnp.real(a[0]), 0.3),
              tw.Pulse(0.5, lambda s, a, p: jnp.sum(s[:-1, 2] * s[1:, 2]) / 4, "g", steps=3)]
    kw = {k: v for k, v in KW.items() if k != "keep_trajectories"}
    res = both(monkeypatch, lambda: tw.sweep((model, init), {"g": [0.6, 0.9]}, TS, pulses=pulses, **kw))
    for k in ("sz", "sz_sem", "n"):
        np.testing.assert_allclose(res["batch_first"][k], res["batch_last"][k], rtol=1e-10, atol=1e-12)


def test_sweep_points(monkeypatch):
    model, init = _case("driven_spin")
    grid = {"Omega": [0.5, 1.0, 1.5], "kappa": [0.1, 0.2]}
    kw = dict(n_traj=48, key=3, dt=0.05, progress=False)
    for rn in ("common", "independent"):
        res = both(monkeypatch, lambda rn=rn: tw.sweep((model, init), grid, TS, random_numbers=rn, **kw))
        for k in ("sz", "sz_sem", "sx"):
            np.testing.assert_allclose(res["batch_first"][k], res["batch_last"][k], rtol=1e-10, atol=1e-12)


def test_gradients_agree(monkeypatch):
    model, init = _case("tavis_cummings")
    p0 = {"g": 0.8, "kappa": 1.2, "gamma_down": 0.3}

    def loss(mean):
        return jnp.sum(mean["sz"][-1]) + (0.5 * jnp.sum(mean["n"][-1]) if "n" in mean else 0.0)

    res = both(monkeypatch, lambda: tw.value_and_grad(loss, model, init, TS, params=p0, n_traj=64, key=2, dt=0.02))
    (v1, g1), (v2, g2) = res["batch_first"], res["batch_last"]
    assert_same(v1, v2)
    assert_same(g1, g2, rtol=1e-9)


def test_unsupported_primitive_falls_back(monkeypatch, caplog):
    """A Hamiltonian with a sort (its gradient gathers at trajectory-dependent indices): the plan
    keeps the vmap layout, even when the batch-last one is asked for, and says so at debug level."""

    def H(s, a, p):
        return jnp.sum(jnp.sort(s[:, 2]) * jnp.arange(1.0, 4.0)) + p["Omega"] * s[:, 0].sum()

    model = tw.Model(H, jumps=lambda s, a, p: (s[:, 0] - 1j * s[:, 1]) / 2, gamma=jnp.full(3, 0.2), n_spins=3,
                     params={"Omega": 1.0})
    init = tw.states.spins_down(3)
    with caplog.at_level(logging.DEBUG, logger="twa_jax._lanes"):
        assert _plan.make_plan(model, init, TS, n_traj=_plan.LANES_MIN_WORK, key=1, dt=0.02).layout == "batch_first"
    assert any("no rule" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)
    monkeypatch.setattr(_plan, "LAYOUT", "batch_last")
    assert _plan.make_plan(model, init, TS, n_traj=64, key=1, dt=0.02).layout == "batch_first"
    res = both(monkeypatch, lambda: tw.simulate(model, init, TS, **KW))
    assert_same_results(res["batch_first"], res["batch_last"])


def test_the_layout_check_is_traced_once_per_model_and_structure(monkeypatch):
    """choose_layout's check of the model's primitives (a trace of its generator) runs once per
    model object and parameter structure, not at every make_plan (it was 41 of 60 ms), and a new
    model or a run without noise is checked again."""
    from twa_jax import _solvers

    calls = []
    orig = _solvers._batch_last_supported
    monkeypatch.setattr(_solvers, "_batch_last_supported", lambda *a: calls.append(a[0]) or orig(*a))
    model, init = _case("rydberg_chain")
    for om in (1.0, 1.5, 2.0):
        _plan.make_plan(model, init, TS, n_traj=512, key=0, params={"Omega": om})
    assert calls == [model]
    other = _case("rydberg_chain")[0]
    _plan.make_plan(other, init, TS, n_traj=512, key=0)
    _plan.make_plan(other, init, TS, n_traj=512, key=0, method="no_noise")  # no noise argument: checked again
    assert calls == [model, other, other]


def test_small_batches_keep_the_vmap_layout():
    model, init = _case("rydberg_chain")  # 6 spins
    assert _plan.make_plan(model, init, TS, n_traj=_plan.LANES_MIN_BATCH - 1, key=1, dt=0.02).layout == "batch_first"
    few = _plan.LANES_MIN_WORK // 6 - 1
    assert _plan.make_plan(model, init, TS, n_traj=few, key=1, dt=0.02).layout == "batch_first"
    assert _plan.make_plan(model, init, TS, n_traj=few + 2, key=1, dt=0.02).layout == "batch_last"
    # a sweep's batch of points is work on the lanes too: the same few trajectories of 2 points
    p = _plan.make_plan(model, init, TS, n_traj=few, key=1, dt=0.02)
    assert _plan.choose_layout(model, p.noise, p.params, p.dtype, "twa", few, n_points=2) == "batch_last"
    assert _plan.make_plan(model, init, TS, n_traj=1000, key=1, dt=0.02, chunk_size=16).layout == "batch_first"
    # on an accelerator, models with matrix products above 32 sites keep batch first (measured on
    # a GPU); local models and CPUs keep batch last
    big = _plan.LANES_MAX_SITES_ACCELERATOR + 1
    for m, dense in [(tw.models.rydberg_chain(big, boundary="open", gamma_down=0.2), False),
                     (tw.models.dipole_array(tw.models.chain_positions(big, 0.2), wavelength=1.0), True)]:
        pb = _plan.make_plan(m, tw.states.spins_down(big), TS, n_traj=1000, key=1, dt=0.02)
        assert pb.layout == "batch_last"
        on_gpu = _plan.choose_layout(pb.model, pb.noise, pb.params, pb.dtype, "twa", 1000, platform="gpu")
        assert on_gpu == ("batch_first" if dense else "batch_last")
    assert _plan.choose_layout(model, p.noise, p.params, p.dtype, "twa", 1000, platform="gpu") == "batch_last"
    assert _plan.make_plan(model, init, TS, method="mean_field", dt=0.02).layout == "batch_first"


# ------------------------------------------------------------------ the interpreter alone
def _check_rules(f, shapes, n=5, dtype=jnp.float64, argnums=None):
    """``f`` (one trajectory) batch last against ``vmap``, values and gradients."""
    keys = jax.random.split(jax.random.key(0), len(shapes))
    xs = [jax.random.normal(k, s + (n,), dtype) for k, s in zip(keys, shapes)]
    got = _lanes.batch_last_call(f, tuple(xs), (True,) * len(xs), n)
    want = jax.vmap(f, in_axes=-1, out_axes=-1)(*xs)
    assert_same(got, want, rtol=1e-12, atol=1e-12)

    def total(g):
        return lambda *a: sum(jnp.sum(jnp.sin(o)) for o in jax.tree_util.tree_leaves(g(*a)))

    gl = jax.grad(total(lambda *a: _lanes.batch_last_call(f, a, (True,) * len(a), n)), argnums=tuple(range(len(xs))))(*xs)
    gv = jax.grad(total(jax.vmap(f, in_axes=-1, out_axes=-1)), argnums=tuple(range(len(xs))))(*xs)
    assert_same(gl, gv, rtol=1e-12, atol=1e-12)


def test_interpreter_rules():
    J = jnp.asarray(np.random.default_rng(0).normal(size=(4, 4)))
    T = jnp.asarray(np.random.default_rng(1).normal(size=(2, 4, 3)))
    idx = jnp.array([2, 0, 3, 3])

    def f(s, v):
        out = {
            "matvec": J @ s[:, 0], "vecmat": s[:, 1] @ J, "inner": jnp.dot(s[:, 0], s[:, 2]),
            "outer": jnp.outer(s[:, 0], v), "mat": s.T @ J @ s, "batched_dot": jnp.einsum("bij,jk->bik", T, s[:, :3].T),
            "tensor": jnp.einsum("bij,ik->bjk", T, s), "gather": s[idx, 1] + s[-1, 0], "scatter": jnp.zeros(5).at[idx].add(v[:4]),
            "dyn": jax.lax.dynamic_slice(s, (1, 0), (2, 3)), "roll": jnp.roll(s[:, 2], 1), "cumsum": jnp.cumsum(v),
            "relu": jax.nn.relu(v), "jit": jax.jit(lambda x: jnp.tanh(x) * 2)(v), "where": jnp.where(v > 0, v, s[0, 0]),
            "pad": jnp.pad(v, (1, 2)), "concat": jnp.concatenate([v, s.ravel()]), "reductions": (jnp.max(s, 0), jnp.prod(v)),
            "remat": jax.checkpoint(lambda x: jnp.sin(x) ** 2)(v), "transpose": jnp.transpose(s)[::-1],
            "clip": jnp.clip(v, -0.5, 0.5), "complex": jnp.abs(jnp.sum((s[:, 0] - 1j * s[:, 1]) * jnp.exp(1j * v[:4]))),
        }
        return out

    _check_rules(f, [(4, 3), (5,)])


@pytest.mark.filterwarnings("ignore:Casting complex values to real")
def test_complex_values_kept_as_real_parts(monkeypatch):
    """Batched complex values are kept as their real and imaginary parts (``_lanes._Complex``):
    complex bosons, ``s^x - i s^y``, products and quotients with complex and real constants,
    conjugates, sums, slices, concatenation, selection, ``abs`` (its gradient finite at 0),
    comparisons and a conversion back to real agree with ``vmap`` (values and gradients) and with
    complex arithmetic left to XLA; a use without a rule (``exp`` of a complex array) writes the
    complex array out."""
    c = jnp.asarray(np.random.default_rng(2).normal(size=4) + 1j * np.random.default_rng(3).normal(size=4))

    def f(s, v):
        a = v[0] + 1j * v[1]
        sm = (s[:, 0] - 1j * s[:, 1]) / 2
        z = jnp.conj(a) * sm * c + 2.0 * sm - sm / (1.5 + 0.5j) + jnp.concatenate([sm[:2], a[None] * (1 - 2j), sm[3:]])
        w = jnp.where(s[:, 2] > 0, z, jnp.conj(z)[::-1])
        return {"re": jnp.real(w), "im": jnp.imag(jnp.sum(w * a)), "abs": jnp.abs(a) ** 2 + jnp.abs(jnp.exp(1j * z)),
                "real_cast": jax.lax.convert_element_type(w, jnp.float64), "H": 2 * jnp.real(jnp.conj(a) * jnp.sum(sm))}

    _check_rules(f, [(4, 3), (2,)])
    zero = jnp.zeros((2, 3)).at[:, 1].set(jnp.array([0.3, -0.2]))  # a = 0 in two of the three trajectories
    g = lambda v: jnp.sum(jnp.abs(v[0] + 1j * v[1]) ** 2 + jnp.abs(v[0] + 1j * v[1]))  # noqa: E731
    got = jax.grad(lambda v: jnp.sum(_lanes.batch_last_call(g, (v,), (True,), 3)))(zero)
    assert np.all(np.isfinite(got))
    assert_same(got, jax.grad(lambda v: jnp.sum(jax.vmap(g, in_axes=-1)(v)))(zero))
    xs = tuple(jax.random.normal(k, sh + (6,)) for k, sh in zip(jax.random.split(jax.random.key(4)), [(4, 3), (2,)]))
    kept = _lanes.batch_last_call(f, xs, (True, True), 6)
    monkeypatch.setattr(_lanes, "KEEP_COMPLEX_PARTS", False)
    assert_same(kept, _lanes.batch_last_call(f, xs, (True, True), 6), rtol=1e-13, atol=1e-13)


def test_interpreter_raises_unsupported():
    with pytest.raises(_lanes.Unsupported):
        _lanes.batch_last_call(lambda x: jnp.sort(x), (jnp.ones((3, 4)),), (True,), 4)
    with pytest.raises(_lanes.Unsupported):
        _lanes.batch_last_call(lambda x: jax.lax.fori_loop(0, 3, lambda i, y: y * 2, x), (jnp.ones((3, 4)),), (True,), 4)
    assert not _lanes.supported(lambda x: x[jnp.argmax(x)], (jnp.ones((3, 4)),), (True,), 4)


def test_gradients_of_slices_kept_as_blocks_equal_the_written_out_pads(monkeypatch):
    """The transpose of slices (pads, summed, cut into rows again) is kept as blocks
    (``_lanes._Padded``): the generator's gradient equals ``vmap``'s and the pads written out one by
    one, for overlapping columns (``s[:, 0]`` used twice), neighbour slices, a row of zeros, a
    scaled sum and a use that must write the sum out (a reduction over the padded array)."""

    def f(s):
        def H(s):
            x, y, z = s[:, 0], s[:, 1], s[:, 2]
            return jnp.sum(x * y ** 2) + jnp.sum(z[1:] * z[:-1]) + 0.3 * jnp.sum(s[:, 0]) + jnp.sum(s[1:3, 1:])

        g = jax.grad(H)(s)
        rows = jnp.stack([g[:, 0], g[:, 1], g[:, 2]])  # the unstack into rows, as to_internal's transpose does
        return {"rows": 2.0 * rows, "total": jnp.sum(g, axis=0), "middle": g[1:3]}

    _check_rules(f, [(4, 3)])
    xs = (jax.random.normal(jax.random.key(1), (4, 3, 6)),)
    kept = _lanes.batch_last_call(f, xs, (True,), 6)
    monkeypatch.setattr(_lanes, "KEEP_PADDED", False)
    written = _lanes.batch_last_call(f, xs, (True,), 6)
    assert_same(kept, written, rtol=1e-13, atol=1e-13)


def test_padded_blocks_tile_by_concatenation():
    from twa_jax._lanes import _Padded, _tiling

    rows = [jnp.full((1, 4, 2), float(i)) for i in range(3)]
    p = _Padded((3, 4), jnp.float64, [(r, (i, 0)) for i, r in enumerate(rows)])
    assert _tiling((3, 4), [((i, 0), (1, 4, 2)) for i in range(3)]) is not None
    np.testing.assert_array_equal(p.write(2)[:, 0, 0], [0.0, 1.0, 2.0])
    gap = _Padded((3, 4), jnp.float64, [(rows[0], (0, 0)), (rows[2], (2, 0))])  # no block for row 1: pads
    assert _tiling((3, 4), [((0, 0), (1, 4, 2)), ((2, 0), (1, 4, 2))]) is None
    np.testing.assert_array_equal(gap.write(2)[:, 0, 0], [0.0, 0.0, 2.0])
    # a block shared by every trajectory (a constant cotangent) added to batched ones, then cut
    shared = _Padded((3, 4), jnp.float64, [(jnp.ones((1, 4)), (1, 0))], batched=False)
    both = _Padded.added(shared, p)
    assert both.batched
    np.testing.assert_array_equal(both.write(2)[:, 0, :], [[0.0, 0.0], [2.0, 2.0], [2.0, 2.0]])
    np.testing.assert_array_equal(both.cut((1, 0), (2, 4)).write(2)[0, :, 1], [2.0] * 4)
