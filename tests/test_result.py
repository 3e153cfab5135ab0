"""Result: summary, xarray conversion, plotting."""

import jax.numpy as jnp
import numpy as np
import pytest

import twa_jax as tw


@pytest.fixture(scope="module")
def result():
    model = tw.Model(
        lambda s, a, p: jnp.sum(s[:, 0]) + jnp.sum(jnp.abs(a) ** 2),
        jumps=lambda s, a, p: jnp.concatenate([(s[:, 0] - 1j * s[:, 1]) / 2, a]),
        gamma=jnp.array([0.3, 0.3, 0.5]),
        n_spins=2,
        n_bosons=1,
    )
    init = tw.states.product(spins=tw.states.spins_down(2), bosons=tw.states.vacuum(1))
    obs = {"sz": lambda s, a: s[:, 2].mean(), "sz_site": lambda s, a: s[:, 2], "a": lambda s, a: a[0]}
    return tw.simulate(model, init, np.linspace(0, 1, 5), n_traj=50, key=0, observables=obs, params={"x": 1.0})


def test_repr_names_everything(result):
    text = repr(result)
    for token in ("n_traj=50", "n_failed=0", "rotation_heun", "dt=", "sz_site: (5, 2)", "key=0"):
        assert token in text


def test_to_xarray(result):
    ds = result.to_xarray()
    assert ds["sz"].dims == ("time",)
    assert ds["sz_site"].shape == (5, 2)
    assert "sz_sem" in ds and ds.attrs["n_traj"] == 50 and ds.attrs["solver"] == "rotation_heun"
    np.testing.assert_allclose(ds["sz"].values, result.mean["sz"])
    np.testing.assert_allclose(ds.time.values, np.linspace(0, 1, 5))
    assert ds.attrs["param['x']"] == 1.0
    assert np.iscomplexobj(ds["a"].values)


def test_plot(result, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    ax = result.plot(["sz"])
    assert len(ax.lines) == 1 and len(ax.collections) == 1  # mean line and sem band
    ax.figure.savefig(tmp_path / "p.png")
    with pytest.raises(ValueError, match="scalars"):
        result.plot(["sz_site"])


def test_default_observables():
    model = tw.Model(lambda s, a, p: jnp.sum(s[:, 0]) + jnp.sum(jnp.abs(a) ** 2), n_spins=3, n_bosons=2)
    init = tw.states.product(spins=tw.states.spins_up(3), bosons=tw.states.thermal([0.0, 1.0]))
    r = tw.simulate(model, init, np.linspace(0, 0.1, 2), n_traj=4000, key=0)
    assert set(r.mean) == {"sx", "sy", "sz", "n"}
    assert r.mean["n"].shape == (2, 2)
    np.testing.assert_allclose(r.mean["sz"][0], 1.0)
    # Weyl-corrected occupation, <n> = n_th: within 4 sem
    assert np.all(np.abs(np.asarray(r.mean["n"][0]) - [0.0, 1.0]) < 4 * np.asarray(r.sem["n"][0]))
