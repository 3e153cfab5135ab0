"""Result: summary, xarray conversion (netCDF and zarr round trips), plotting."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import twa_jax as tw
from twa_jax import Result

xr = pytest.importorskip("xarray")

# zarr 3 warns that consolidated metadata is not in its format-3 spec; not our concern here
zarr_ok = pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")


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


def _hand_result(**overrides):
    """A Result built by hand: scalar real, per-mode, complex (complex64) and integer observables,
    nested/array/complex parameters, time averages and trajectories."""
    rng = np.random.default_rng(0)
    T, k = 6, 3
    ts = np.linspace(0.0, 2.0, T)
    mean = {
        "sz": rng.normal(size=T),
        "n": rng.normal(size=(T, 2)),
        "a": (rng.normal(size=T) + 1j * rng.normal(size=T)).astype(np.complex64),
        "count": np.arange(T, dtype=np.int64),
    }
    sem = {
        "sz": rng.uniform(size=T),
        "n": rng.uniform(size=(T, 2)),
        "a": rng.uniform(size=T).astype(np.float32),
        "count": np.zeros(T),
    }
    fields = dict(
        ts=ts,
        mean=mean,
        sem=sem,
        n_traj=16,
        n_failed=2,
        method="twa",
        solver="rotation_heun",
        dt=0.01,
        n_steps=200,
        chunk_size=8,
        key=7,
        params={
            "eps": 0.5,
            "drive": {"omega": np.array([1.0, 2.0, 3.0]), "g": 1.0 - 2.0j, "M": np.arange(4.0).reshape(2, 2)},
            "phases": np.array([1j, 2.0 + 0.5j]),
            "steps": [1, (2, 3.5)],
            "n0": np.float32(0.25),
            "flag": True,
            "label": "run A",
        },
        wall_time=1.25,
        average={"sz": np.array(0.3), "n": np.array([0.1, 0.2]), "a": np.array(0.5 + 0.25j, dtype=np.complex64)},
        average_sem={"sz": np.array(0.01), "n": np.array([0.02, 0.03]), "a": np.array(0.05, dtype=np.float32)},
        trajectories={
            "sz": rng.normal(size=(k, T)),
            "n": rng.normal(size=(k, T, 2)),
            "a": (rng.normal(size=(k, T)) + 1j * rng.normal(size=(k, T))).astype(np.complex64),
        },
        xla_workaround="applied",
    )
    fields.update(overrides)
    return Result(**fields)


def _assert_tree_equal(a, b, where="params"):
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for k in a:
            _assert_tree_equal(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_tree_equal(x, y, f"{where}[{i}]")
    elif isinstance(a, (np.ndarray, np.generic)):
        b_arr = np.asarray(b)
        assert b_arr.dtype == np.asarray(a).dtype and b_arr.shape == np.shape(a), where
        np.testing.assert_array_equal(b_arr, a, err_msg=where)
    else:
        assert type(a) is type(b) and a == b, (where, a, b)


def _assert_results_equal(r, r2):
    np.testing.assert_array_equal(np.asarray(r2.ts), np.asarray(r.ts))
    for field in ("mean", "sem", "average", "average_sem", "trajectories"):
        x, y = getattr(r, field), getattr(r2, field)
        if x is None:
            assert y is None, field
            continue
        assert list(x) == list(y), field
        for name in x:
            xa, ya = np.asarray(x[name]), np.asarray(y[name])
            assert ya.dtype == xa.dtype and ya.shape == xa.shape, (field, name, ya.dtype, xa.dtype)
            np.testing.assert_array_equal(ya, xa, err_msg=f"{field}[{name!r}]")
    meta = ("n_traj", "method", "solver", "dt", "n_steps", "chunk_size", "key", "wall_time", "dims")
    meta += ("xla_workaround",)
    for field in meta:
        assert getattr(r2, field) == getattr(r, field), field
        assert type(getattr(r2, field)) is type(getattr(r, field)), field
    assert int(r2.n_failed) == int(np.asarray(r.n_failed))
    _assert_tree_equal(r.params, r2.params)


# -------------------------------------------------------------------- repr


def test_repr_names_everything(result):
    text = repr(result)
    for token in ("n_traj=50", "n_failed=0", "rotation_heun", "dt=", "sz_site: (5, 2)", "key=0"):
        assert token in text
    # every component of a non-scalar observable, and complex values as complex
    assert "sz_site[0] final" in text and "sz_site[1] final" in text
    a_line = next(line for line in text.splitlines() if line.strip().startswith("a:"))
    assert "j)" in a_line


def test_repr_components_averages_and_cap():
    r = _hand_result(dims={"n": ("site",)})
    text = repr(r)
    assert "n[site=0] final" in text and "n[site=1] final" in text
    assert "average" in text and "xla_workaround='applied'" in text and "trajectories: first 3" in text
    final_a = complex(np.asarray(r.mean["a"])[-1])
    assert f"({final_a.real:.5g}{final_a.imag:+.5g}j)" in text
    # more than 8 components: the first 8, then how many more
    T = len(r.ts)
    big = Result(ts=r.ts, mean={"m": np.ones((T, 3, 4))}, sem={"m": np.zeros((T, 3, 4))}, n_traj=1)
    text = repr(big)
    assert "m[0, 0] final 1 +- 0" in text and "m[1, 3]" in text and "m[2, 0]" not in text
    assert "... (4 more)" in text


def test_repr_of_traced_values():
    seen = []

    @jax.jit
    def f(x):
        r = Result(ts=jnp.arange(3.0), mean={"n": x}, sem={"n": x}, n_traj=1, average={"n": x[0]})
        seen.append(repr(r))
        return x

    f(jnp.ones((3, 2)))
    assert "n: (3, 2)" in seen[0]


# -------------------------------------------------------------------- xarray, netCDF, zarr


def test_to_xarray(result):
    ds = result.to_xarray()
    assert ds["sz"].dims == ("time",)
    assert ds["sz_site"].shape == (5, 2) and ds["sz_site"].dims == ("time", "sz_site_dim1")
    assert "sz_sem" in ds and ds.attrs["n_traj"] == 50 and ds.attrs["solver"] == "rotation_heun"
    np.testing.assert_allclose(ds["sz"].values, result.mean["sz"])
    np.testing.assert_allclose(ds.time.values, np.linspace(0, 1, 5))
    assert ds.attrs["param_x"] == 1.0
    assert json.loads(ds.attrs["params_json"])["x"]["__ndarray__"] == 1.0
    # complex: two real variables, reassembled by from_xarray
    assert "a" not in ds and not np.iscomplexobj(ds["a_real"].values)
    np.testing.assert_array_equal(ds["a_real"].values + 1j * ds["a_imag"].values, result.mean["a"])
    assert ds.attrs["key"] == "0" and ds.attrs["twa_jax_version"] == tw.__version__
    assert ds.attrs["jax_version"] == jax.__version__


def test_to_xarray_layout_and_attrs():
    r = _hand_result(dims={"n": ("mode",)})
    ds = r.to_xarray()
    assert ds["n"].dims == ("time", "mode") and ds["n_sem"].dims == ("time", "mode")
    assert ds["n_average"].dims == ("mode",) and ds["sz_average"].dims == ()
    assert ds["n_trajectories"].dims == ("trajectory", "time", "mode") and ds.sizes["trajectory"] == 3
    complex_parts = {"a_real", "a_imag", "a_average_real", "a_average_imag", "a_trajectories_real",
                     "a_trajectories_imag"}
    assert complex_parts <= set(ds) and "a_sem" in ds
    a = ds.attrs
    for k in ("n_traj", "n_failed", "method", "solver", "dt", "n_steps", "chunk_size", "key", "wall_time",
              "xla_workaround", "twa_jax_version", "jax_version", "params_json"):
        assert k in a, k
    assert a["param_eps"] == 0.5 and a["param_drive.omega"] == [1.0, 2.0, 3.0]
    assert a["param_drive.g_real"] == 1.0 and a["param_drive.g_imag"] == -2.0
    assert json.loads(a["param_drive.M"]) == [[0.0, 1.0], [2.0, 3.0]]
    assert a["param_flag"] == 1 and a["param_label"] == "run A"
    # what netCDF3 accepts: plain names, str / numbers / 1-D lists, no bool, None or complex
    from xarray.backends.netcdf3 import is_valid_nc3_name

    for k, v in a.items():
        assert is_valid_nc3_name(k), k
        assert isinstance(v, (str, int, float, list)) and not isinstance(v, bool), (k, v)
    for name, var in ds.variables.items():
        assert is_valid_nc3_name(name) and not np.iscomplexobj(var.values), name


@zarr_ok
@pytest.mark.parametrize("fmt", ["netcdf", "zarr"])
def test_round_trip(fmt, tmp_path):
    r = _hand_result()
    ds = r.to_xarray()
    _assert_results_equal(r, Result.from_xarray(ds))  # in memory
    if fmt == "netcdf":
        path = tmp_path / "r.nc"
        ds.to_netcdf(path)
        with xr.open_dataset(path) as back:
            r2 = Result.from_xarray(back)
    else:
        path = tmp_path / "r.zarr"
        ds.to_zarr(path)
        with xr.open_zarr(path) as back:
            r2 = Result.from_xarray(back)
    _assert_results_equal(r, r2)
    _assert_results_equal(r, Result.from_xarray(path))  # a path works too
    assert r2.params["drive"]["g"] == 1.0 - 2.0j and r2.params["steps"] == [1, (2, 3.5)]
    assert repr(r2) == repr(r)


@zarr_ok
def test_named_dims_round_trip(tmp_path):
    T = 4
    r = _hand_result(
        mean={"n": np.ones((T, 2)), "corr": np.zeros((T, 2, 3))},
        sem={"n": np.zeros((T, 2)), "corr": np.zeros((T, 2, 3))},
        ts=np.arange(T, dtype=np.float32),
        average=None,
        average_sem=None,
        trajectories=None,
        params=None,
        key=None,
        dt=None,
        xla_workaround=None,
        dims={"n": ["site"], "corr": ("i", "j")},
    )
    assert r.dims == {"n": ("site",), "corr": ("i", "j")}
    ds = r.to_xarray()
    assert ds["n"].dims == ("time", "site") and ds["corr"].dims == ("time", "i", "j")
    assert "corr[i=1, j=2] final" in repr(r)
    ds.to_netcdf(tmp_path / "d.nc")
    ds.to_zarr(tmp_path / "d.zarr")
    for path in (tmp_path / "d.nc", tmp_path / "d.zarr"):
        r2 = Result.from_xarray(path)
        _assert_results_equal(r, r2)
        assert r2.params is None and r2.average is None and r2.trajectories is None
    with pytest.raises(ValueError, match="names 2 axes"):
        _hand_result(dims={"n": ("a", "b")}).to_xarray()


def test_from_xarray_without_twa_attributes():
    ds = xr.Dataset(
        {
            "x": ("time", [1.0, 2.0]),
            "x_sem": ("time", [0.1, 0.2]),
            "z_real": ("time", [1.0, 0.0]),
            "z_imag": ("time", [0.0, 1.0]),
        },
        coords={"time": [0.0, 1.0]},
        attrs={"n_traj": 5, "method": "twa"},
    )
    r = Result.from_xarray(ds)
    assert r.n_traj == 5 and set(r.mean) == {"x", "z"}
    np.testing.assert_array_equal(r.mean["z"], [1.0, 1j])
    np.testing.assert_array_equal(r.sem["x"], [0.1, 0.2])


# -------------------------------------------------------------------- plot


def test_plot(result, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = result.plot(["sz"])
    assert len(ax.lines) == 1 and len(ax.collections) == 1  # mean line and sem band
    ax.figure.savefig(tmp_path / "p.png")
    plt.close(ax.figure)
    ax = result.plot()  # all: sz (1), sz_site (2 components), a (complex: Re and Im)
    labels = [line.get_label() for line in ax.lines]
    expected = {"sz": ["sz"], "sz_site": ["sz_site[0]", "sz_site[1]"], "a": ["Re a", "Im a"]}
    assert labels == [lab for name in result.mean for lab in expected[name]]
    assert len(ax.collections) == 5
    plt.close(ax.figure)


def test_plot_components_labels(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = _hand_result(dims={"n": ("site",)})
    _, ax = plt.subplots()
    out = r.plot(ax=ax, label="run", imag=False, lw=1)
    assert out is ax
    labels = [line.get_label() for line in ax.lines]
    assert labels == ["run sz", "run n[site=0]", "run n[site=1]", "run Re a", "run count"]
    assert len(ax.collections) == len(ax.lines)
    ax.cla()
    r.plot(["a", "n"], ax=ax)
    labels = [line.get_label() for line in ax.lines]
    assert labels == ["Re a", "Im a", "n[site=0]", "n[site=1]"]
    assert ax.lines[0].get_color() == ax.lines[1].get_color() and ax.lines[1].get_linestyle() == "--"
    ax.figure.savefig(tmp_path / "c.png")
    plt.close(ax.figure)
    with pytest.raises(KeyError, match="no observable"):
        r.plot(["nope"])


# -------------------------------------------------------------------- a real run


@pytest.fixture(scope="module")
def two_mode():
    """A real run: two modes, no spins (compiles faster), default observable ``n`` per mode."""
    model = tw.Model(lambda s, a, p: p["w"] * jnp.sum(jnp.abs(a) ** 2), n_bosons=2, params={"w": 1.0})
    init = tw.states.product(bosons=tw.states.thermal([0.0, 1.0]))
    return tw.simulate(model, init, np.linspace(0, 0.1, 2), n_traj=16, key=0)


@zarr_ok
def test_simulated_two_modes_default_dims(two_mode, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = two_mode
    assert r.mean["n"].shape == (2, 2) and r.n_traj == 16 and r.dims == {"n": ("mode",)}
    text = repr(r)
    assert "n[mode=0] final" in text and "n[mode=1] final" in text
    ds = r.to_xarray()
    assert ds["n"].dims == ("time", "mode") and ds.sizes["mode"] == 2 and ds["n_sem"].dims == ("time", "mode")
    assert ds.attrs["n_traj"] == 16 and ds.attrs["param_w"] == 1.0
    ds.to_netcdf(tmp_path / "sim.nc")
    ds.to_zarr(tmp_path / "sim.zarr")
    for path in (tmp_path / "sim.nc", tmp_path / "sim.zarr"):
        r2 = Result.from_xarray(path)
        assert list(r2.mean) == list(r.mean)
        for name in r.mean:
            np.testing.assert_array_equal(r2.mean[name], np.asarray(r.mean[name]))
            np.testing.assert_array_equal(r2.sem[name], np.asarray(r.sem[name]))
        assert (r2.n_traj, r2.solver, r2.dt, r2.n_steps, r2.key) == (r.n_traj, r.solver, r.dt, r.n_steps, r.key)
        assert r2.params["w"] == 1.0 and r2.dims == r.dims and repr(r2).splitlines()[1:] == text.splitlines()[1:]
    ax = r.plot()
    expected = {"n": ["n[mode=0]", "n[mode=1]"]}
    assert [line.get_label() for line in ax.lines] == [lab for n in r.mean for lab in expected.get(n, [n])]
    plt.close(ax.figure)


def test_default_observables():
    model = tw.Model(lambda s, a, p: jnp.sum(s[:, 0]) + jnp.sum(jnp.abs(a) ** 2), n_spins=3, n_bosons=2)
    init = tw.states.product(spins=tw.states.spins_up(3), bosons=tw.states.thermal([0.0, 1.0]))
    r = tw.simulate(model, init, np.linspace(0, 0.1, 2), n_traj=4000, key=0)
    assert set(r.mean) == {"sx", "sy", "sz", "n"}
    assert r.mean["n"].shape == (2, 2)
    np.testing.assert_allclose(r.mean["sz"][0], 1.0)
    # Weyl-corrected occupation, <n> = n_th: within 4 sem
    assert np.all(np.abs(np.asarray(r.mean["n"][0]) - [0.0, 1.0]) < 4 * np.asarray(r.sem["n"][0]))


# -------------------------------------------------------------------- lookup of a missing name


def test_missing_observable_names_the_available_ones(result):
    with pytest.raises(KeyError, match=r"no observable 'sZ'.*'sz'.*'sz_site'.*did you mean 'sz'"):
        result.mean["sZ"]
    with pytest.raises(KeyError, match=r"no observable 'qq'.*'a'") as e:
        result.sem["qq"]
    assert "did you mean" not in str(e.value)
    # still a dict and a pytree like one: a tree map keeps the lookup, the leaves and their paths
    assert isinstance(result.mean, dict) and set(result.mean) == {"sz", "sz_site", "a"}
    doubled = jax.tree_util.tree_map(lambda x: 2 * x, result)
    np.testing.assert_allclose(doubled.mean["sz"], 2 * np.asarray(result.mean["sz"]))
    with pytest.raises(KeyError, match="did you mean 'sz'"):
        doubled.mean["SZ"]
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(result.mean)[0]]
    assert paths == ["['a']", "['sz']", "['sz_site']"]


# -------------------------------------------------------------------- xarray naming scheme


@zarr_ok
def test_xarray_names_per_mode_trajectories_and_float64_time(tmp_path):
    """boson_moments' outputs are per mode like n; kept trajectories do not make a variable
    ``n_traj`` (the name of the trajectory-count attribute); time is float64 even from a
    float32 run; the whole Result comes back from netCDF and zarr."""
    ts = np.linspace(0, 0.3, 4)
    with jax.enable_x64(False):  # a float32 run, its state built in float32 too
        model = tw.Model(lambda s, a, p: jnp.sum(jnp.abs(a) ** 2), n_bosons=2)
        init = tw.states.product(bosons=tw.states.thermal([0.0, 1.0]))
        r = tw.simulate(model, init, ts, n_traj=8, key=0, dt=0.05, keep_trajectories=3,
                        observables=tw.observables.boson_moments())
    assert np.asarray(r.ts).dtype == np.float32
    ds = r.to_xarray()
    for name in ("n", "n2", "adag2_a2"):
        assert ds[name].dims == ("time", "mode") and ds[f"{name}_sem"].dims == ("time", "mode")
        assert ds[f"{name}_trajectories"].dims == ("trajectory", "time", "mode")
        assert ds[f"{name}_trajectories"].shape == (3, 4, 2)
    assert "n_traj" not in ds.variables and ds.attrs["n_traj"] == 8
    assert ds["time"].dtype == np.float64
    np.testing.assert_array_equal(ds["time"].values, np.asarray(r.ts).astype(np.float64))
    text = repr(r)
    assert "n2[mode=1] final" in text and "adag2_a2[mode=0] final" in text
    ds.to_netcdf(tmp_path / "m.nc")
    ds.to_zarr(tmp_path / "m.zarr")
    for path in (tmp_path / "m.nc", tmp_path / "m.zarr"):
        r2 = Result.from_xarray(path)
        assert r2.dims == r.dims and list(r2.trajectories) == list(r.trajectories)
        for name in r.mean:
            for a, b in ((r.mean, r2.mean), (r.sem, r2.sem), (r.trajectories, r2.trajectories)):
                np.testing.assert_array_equal(b[name], np.asarray(a[name]))
                assert b[name].dtype == np.asarray(a[name]).dtype
        np.testing.assert_array_equal(r2.ts, np.asarray(r.ts, np.float64))
        assert repr(r2).splitlines()[1:] == text.splitlines()[1:]


def test_from_xarray_reads_the_old_trajectory_suffix():
    """A Dataset without twa_* attributes written with the former ``<name>_traj`` suffix."""
    ds = xr.Dataset({"sz": ("time", np.zeros(3)), "sz_traj": (("trajectory", "time"), np.ones((2, 3)))},
                    coords={"time": np.arange(3.0)})
    r = Result.from_xarray(ds)
    assert list(r.mean) == ["sz"] and r.trajectories["sz"].shape == (2, 3)


def test_compare_accepts_a_float32_run_against_a_float64_reference():
    """Save times equal up to float32 rounding are the same times (an exact result is float64
    whatever JAX's precision); times that differ by more are refused."""
    import twa_jax as tw

    ts = np.linspace(0, 10, 51)
    a = tw.Result(ts=np.asarray(ts, np.float32), mean={"x": np.zeros(51)}, sem={"x": np.full(51, 0.1)}, n_traj=10)
    b = tw.Result(ts=ts, mean={"x": np.zeros(51)}, sem={"x": np.zeros(51)}, n_traj=0)
    assert tw.compare(a, b)["x"].max_abs == 0.0
    c = tw.Result(ts=ts * (1 + 1e-4), mean={"x": np.zeros(51)}, sem={"x": np.zeros(51)}, n_traj=0)
    with pytest.raises(ValueError, match="different save times"):
        tw.compare(a, c)


def test_the_mode_axis_is_decided_by_the_function_not_the_name():
    """``mode`` names the axis of the package's per-mode observables (the default ``n``, the
    outputs of ``boson_moments``) whatever they are called; a user's observable called ``n2``
    with one value per spin keeps ``n2_dim1`` (it was labelled by mode, and ``to_xarray`` failed
    on the conflicting sizes of ``mode``: 3 sites against 1 mode)."""
    model = tw.Model(lambda s, a, p: jnp.sum(jnp.abs(a) ** 2) + 0.5 * jnp.sum(s[:, 2]), n_spins=3, n_bosons=1)
    init = tw.states.product(spins=tw.states.spins_up(3), bosons=tw.states.coherent([1.0]))
    ts = np.linspace(0, 0.1, 2)
    moments = tw.observables.boson_moments()
    obs = {"n": tw.boson_number, "n2": lambda s, a: (1 + s[:, 2]) / 2, "bm2": moments["n2"]}
    r = tw.simulate(model, init, ts, n_traj=8, key=0, dt=0.05, observables=obs)
    assert r.dims == {"n": ("mode",), "bm2": ("mode",)}
    text = repr(r)
    assert "n2[2] final" in text and "n2[mode" not in text and "bm2[mode=0] final" in text
    ds = r.to_xarray()
    assert ds["n2"].dims == ("time", "n2_dim1") and ds.sizes["n2_dim1"] == 3 and ds.sizes["mode"] == 1
    assert ds["bm2"].dims == ("time", "mode")
