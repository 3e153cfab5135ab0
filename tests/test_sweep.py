"""tw.sweep: batched points equal point-by-point simulate runs with the same keys, random numbers
depend only on the key and the point, stores resume after SIGKILL with identical numbers,
executors give the in-process result, failures are recorded without stopping the sweep."""

import concurrent.futures
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

import twa_jax as tw
from twa_jax._store import SweepStore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TS = np.linspace(0.0, 1.0, 5)
KW = dict(n_traj=32, key=3, dt=0.05, progress=False)


def _spin():
    return tw.models.driven_spin(gamma_down=0.3), tw.states.spins_down(1)


def build(N):
    """A structural axis (atom number); the model's parameters (Omega) are parameter axes."""
    return tw.models.dicke(N), tw.states.spins_up(N)


def test_batched_points_equal_point_by_point_runs():
    model, init = _spin()
    ds = tw.sweep((model, init), {"Omega": [0.5, 1.0, 1.5], "kappa": [0.1, 0.2]}, TS, **KW)
    assert ds["sz"].dims == ("Omega", "kappa", "time") and ds["sz_sem"].shape == (3, 2, 5)
    for Om, ka in [(0.5, 0.1), (1.5, 0.2)]:
        r = tw.simulate(model, init, TS, params={"Omega": Om, "kappa": ka}, **KW)
        for k in ("sx", "sz"):
            np.testing.assert_allclose(ds[k].sel(Omega=Om, kappa=ka), r.mean[k], rtol=0, atol=1e-12)
            np.testing.assert_allclose(ds[k + "_sem"].sel(Omega=Om, kappa=ka), r.sem[k], rtol=0, atol=1e-12)
    assert ds.attrs["n_traj"] == 32 and ds.attrs["twa_jax_version"] == tw.__version__
    assert int(ds["n_failed"].sum()) == 0 and set(np.asarray(ds["failed"]).ravel()) == {""}


@pytest.mark.slow
def test_structural_axis_in_the_same_sweep():
    ds = tw.sweep(build, {"N": [2, 3], "Omega": [0.0, 0.5]}, TS, **KW)
    assert ds["emission_rate"].dims == ("N", "Omega", "time")
    model, init = build(3)
    r = tw.simulate(model, init, TS, params={"Omega": 0.5}, **KW)
    np.testing.assert_allclose(ds["emission_rate"].sel(N=3, Omega=0.5), r.mean["emission_rate"], atol=1e-12)
    assert ds.attrs["structural_axes"] == "N"


@pytest.mark.slow
def test_random_numbers_depend_only_on_key_and_point():
    model, init = _spin()
    for mode in ("common", "independent"):
        big = tw.sweep((model, init), {"Omega": [0.5, 1.0, 2.0]}, TS, random_numbers=mode, **KW)
        alone = tw.sweep((model, init), {"Omega": [1.0]}, TS, random_numbers=mode, batch_size=1, **KW)
        np.testing.assert_allclose(big["sz"].sel(Omega=1.0), alone["sz"].sel(Omega=1.0), atol=1e-12)
    common = tw.sweep((model, init), {"Omega": [1.0]}, TS, **KW)
    indep = tw.sweep((model, init), {"Omega": [1.0]}, TS, random_numbers="independent", **KW)
    assert float(np.max(np.abs(common["sz"] - indep["sz"]))) > 1e-3
    # independent: the point's own key, fold_in(key, first 32 bits of its id)
    pid = SweepStore.point_id({"Omega": 1.0})
    r = tw.simulate(model, init, TS, params={"Omega": 1.0}, **{**KW, "key": jax.random.fold_in(jax.random.key(3), int(pid[:8], 16))})
    np.testing.assert_allclose(indep["sz"].sel(Omega=1.0), r.mean["sz"], atol=1e-12)


def test_explicit_points_and_duplicates():
    model, init = _spin()
    pts = [{"Omega": 0.5, "kappa": 0.1}, {"Omega": 2.0, "kappa": 0.0}]
    ds = tw.sweep((model, init), pts, TS, **KW)
    assert ds["sz"].dims == ("point", "time")
    np.testing.assert_array_equal(ds["Omega"], [0.5, 2.0])
    with pytest.raises(ValueError, match="has the point .* twice"):
        tw.sweep((model, init), pts + [{"Omega": 0.5, "kappa": 0.1}], TS, **KW)
    with pytest.raises(ValueError, match="has a value twice"):
        tw.sweep((model, init), {"Omega": [0.5, 0.5]}, TS, **KW)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['Omgea'\]"):
        tw.sweep((model, init), {"Omgea": [0.5]}, TS, **KW)
    with pytest.raises(ValueError, match="needs"):
        tw.sweep(lambda N, spacing: build(N), {"N": [2]}, TS, **KW)


def test_failures_are_recorded_and_the_sweep_goes_on():
    def kerr(U):
        if U > 100:
            raise ValueError("U too large for this test")
        return tw.Model(lambda s, a, p: U * jnp.abs(a[0]) ** 4, n_bosons=1), tw.states.coherent(3.0)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = tw.sweep(kerr, {"U": [0.0, 50.0, 1000.0]}, np.linspace(0, 4, 3), n_traj=8, key=0, dt=1.0, progress=False)
    failed = dict(zip(ds["U"].values.tolist(), ds["failed"].values.tolist()))
    assert failed[0.0] == ""
    assert "trajectories became non-finite" in failed[50.0]
    assert "reduce dt" in failed[50.0] and "an observable is NaN" in failed[50.0]  # both causes named
    assert "raised ValueError: U too large" in failed[1000.0]
    assert np.all(np.isfinite(ds["n"].sel(U=0.0))) and np.all(np.isnan(ds["n"].sel(U=1000.0)))


def test_a_point_refused_by_validation_is_a_failure_in_the_store(tmp_path):
    """A point whose values the plan refuses (a negative rate) is recorded in the store as a
    failure, as a failed run is (it was only in the returned Dataset: the store's status called
    it pending and a rerun computed it again), and a rerun skips it unless retry_failed."""
    from twa_jax._store import SweepStore

    path, model, init = str(tmp_path / "v.zarr"), *_spin()
    with pytest.warns(RuntimeWarning, match="1 of 2 points failed"):
        ds = tw.sweep((model, init), {"gamma_down": [0.1, -0.1]}, TS, store=path, **KW)
    assert "rates must be non-negative" in str(ds["failed"].sel(gamma_down=-0.1).values)
    failed = os.listdir(os.path.join(path, "_sweep", "failed"))
    assert len(failed) == 1 and SweepStore.point_id({"gamma_down": -0.1}) in failed[0]
    with pytest.warns(RuntimeWarning, match="1 of 2 points failed"):
        tw.sweep((model, init), {"gamma_down": [0.1, -0.1]}, TS, store=path, **KW)


def test_default_dt_is_each_points_own():
    """Without dt each point runs at simulate's default dt for that point, whatever the other
    points of the grid: a point's numbers do not depend on its neighbours, on the task split or
    on a store being resumed (Omega = 8 needs a finer step than Omega = 1)."""
    model, init = tw.models.driven_spin(gamma_down=0.5), tw.states.spins_down(1)
    ts, kw = np.linspace(0.0, 0.5, 3), dict(n_traj=16, key=0)
    ds = tw.sweep((model, init), {"Omega": [1.0, 8.0]}, ts, progress=False, **kw)
    for omega in (1.0, 8.0):
        r = tw.simulate(model, init, ts, params={"Omega": omega}, **kw)
        assert float(ds["dt"].sel(Omega=omega)) == r.dt
        np.testing.assert_allclose(ds["sz"].sel(Omega=omega).values, np.asarray(r.mean["sz"]), rtol=0, atol=1e-6)
    assert float(ds["dt"].sel(Omega=1.0)) > float(ds["dt"].sel(Omega=8.0))


def test_observable_names_that_would_overwrite_a_variable_are_refused_before_any_work():
    model, init = _spin()
    z = lambda s, a: s[0, 2]  # noqa: E731
    for obs, what in [({"dt": z}, "the sweep's own 'dt'"), ({"sz": z, "sz_sem": z}, "the mean of observable 'sz_sem'"),
                      ({"Omega": z}, "the grid axis 'Omega'"), ({"n_failed": z}, "the sweep's own 'n_failed'")]:
        with pytest.raises(ValueError, match=f"would overwrite {what}: rename the observable"):
            tw.sweep((model, init), {"Omega": [0.5, 1.0]}, TS, observables=obs, **KW)
    # a grid axis named like an observable's own axis failed inside xarray after every point had run
    with pytest.raises(ValueError, match="grid axis 'mode' has the name of an axis of observable 'n'"):
        tw.sweep(lambda mode: (tw.models.tavis_cummings(2), tw.states.product(
            spins=tw.states.spins_up(2), bosons=tw.states.vacuum(1))), {"mode": [1, 2]}, TS, **KW)


def test_points_over_several_chunks_equal_point_by_point_runs():
    """A batch of points over several chunks: each point's counts are merged with its own means
    (P, n_times, modes), also when points lose different numbers of trajectories."""
    model = tw.Model(lambda s, a, p: p["U"] * jnp.abs(a[0]) ** 6 + jnp.abs(a[0]) ** 2, n_bosons=1, params={"U": 0.0})
    init = tw.states.product(bosons=tw.states.coherent(jnp.array([1.0])))
    kw = dict(n_traj=96, key=5, dt=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the last point loses trajectories
        ds = tw.sweep((model, init), {"U": [0.0, 0.02, 3.0]}, TS, chunk_size=32, fail_fraction=0.99, progress=False, **kw)
        assert dict(ds["n"].sizes) == {"U": 3, "time": len(TS), "mode": 1}
        failed = ds["n_failed"].values
        assert failed[0] == failed[1] == 0 and 0 < failed[2] < 96, failed
        for U in (0.0, 0.02, 3.0):
            r = tw.simulate(model, init, TS, params={"U": U}, **kw)
            np.testing.assert_allclose(ds["n"].sel(U=U).values, np.asarray(r.mean["n"]), rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(ds["n_sem"].sel(U=U).values, np.asarray(r.sem["n"]), rtol=1e-5, atol=1e-6)


def test_store_refuses_another_sweep_and_reuses_points_of_a_grown_grid(tmp_path):
    model, init = _spin()
    path = str(tmp_path / "s.zarr")
    a = tw.sweep((model, init), {"Omega": [0.5, 1.0]}, TS, store=path, **KW)
    finish = _finish_times(path)
    with pytest.raises(ValueError, match=r"n_traj: 32 \(stored\) vs 64 \(now\)"):
        tw.sweep((model, init), {"Omega": [0.5, 1.0]}, TS, store=path, **{**KW, "n_traj": 64})
    b = tw.sweep((model, init), {"Omega": [0.5, 1.0, 1.5]}, TS, store=path, **KW)
    np.testing.assert_array_equal(b["sz"].sel(Omega=[0.5, 1.0]), a["sz"])
    again = _finish_times(path)
    assert all(again[pid] == t for pid, t in finish.items())  # not recomputed
    assert len(again) == 3


def test_store_refuses_a_sweep_of_other_code_under_the_same_names(tmp_path):
    """The signature names the model, observables and state; a store written by other parameters,
    captured constants, states or observable code under the same names is refused (it would hand
    back the other sweep's numbers), while the same sweep, rebuilt, reopens it."""
    path = str(tmp_path / "s.zarr")
    ts = TS[:3]
    kw = {**KW, "n_traj": 8}
    sz = {"sz": lambda s, a: s[:, 2].mean()}
    tw.sweep(_spin(), {"Omega": [0.5]}, ts, store=path, observables=sz, **kw)
    for spec, obs, what in [
        ((tw.models.driven_spin(gamma_down=0.4), _spin()[1]), sz, "gamma"),
        ((_spin()[0], tw.states.spins_up(1)), sz, "initial mean"),
        (_spin(), {"sz": lambda s, a: -s[:, 2].mean()}, "observable 'sz'"),
    ]:
        with pytest.raises(ValueError, match=f"at its point {{'Omega': 0.5}}, .*{what}.* give other values"):
            tw.sweep(spec, {"Omega": [0.5]}, ts, store=path, observables=obs, **kw)
    tw.sweep(_spin(), {"Omega": [0.5, 1.0]}, ts, store=path, observables={"sz": lambda s, a: s[:, 2].mean()}, **kw)

    def chain(spacing):  # a builder whose model captures a constant: same name, other numbers
        def build(N):
            return tw.models.dipole_array(tw.models.chain_positions(N, spacing)), tw.states.spins_up(N)
        return build

    path = str(tmp_path / "b.zarr")
    tw.sweep(chain(0.1), {"N": [2], "Omega": [0.0]}, ts, store=path, **kw)
    tw.sweep(chain(0.1), {"N": [3, 2], "Omega": [0.0]}, ts, store=path, **kw)  # grown at the front: reopened
    with pytest.raises(ValueError, match=r"at its point \{'N': 2, 'Omega': 0.0\}, hamiltonian"):
        tw.sweep(chain(0.5), {"N": [2], "Omega": [0.0]}, ts, store=path, **kw)

    def drive(scale):  # other code whose change does not show at the store's first point, Omega = 0
        return tw.Model(lambda s, a, p: scale * p["Omega"] * s[:, 0].sum(), n_spins=1, params={"Omega": 1.0})

    path = str(tmp_path / "d.zarr")
    tw.sweep((drive(1.0), tw.states.spins_down(1)), {"Omega": [0.0, 1.0]}, ts, store=path, **kw)
    with pytest.raises(ValueError, match=r"hamiltonian at probe 0 at other parameter values"):
        tw.sweep((drive(0.5), tw.states.spins_down(1)), {"Omega": [0.0, 1.0, 2.0]}, ts, store=path, **kw)


def test_a_builder_must_return_the_model_and_its_state():
    with pytest.raises(TypeError, match=r"the builder only_model\(\*\*\{'N': 2\}\) must return \(model, initial\), "
                                        r"got Model"):
        tw.sweep(only_model, {"N": [2, 3]}, TS, **KW)


def only_model(N):
    return tw.models.dicke(N)


def _finish_times(path):
    """When each stored point was computed (the store's own record in the point's attrs)."""
    import zarr

    return {pid: zarr.open_group(f"{path}/points/{pid}", mode="r").attrs["_twa_point"]["finished"]
            for pid, *_ in _points(path)}


def _points(path):
    import zarr

    root = zarr.open_group(path, mode="r")
    meta = root.attrs["twa_jax_sweep"]
    st = SweepStore(path, meta["signature"], tuple(meta["axes"]))
    return list(st.iter_points())


SPEC = """
import sys, jax
jax.config.update("jax_enable_x64", True)
import numpy as np, twa_jax as tw
model, init = tw.models.driven_spin(gamma_down=0.3), tw.states.spins_down(1)
grid = {"Omega": [0.25, 0.5, 0.75, 1.0, 1.25, 1.5], "kappa": [0.0, 0.2]}
ts = np.linspace(0.0, 1.0, 5)
def run(store):
    return tw.sweep((model, init), grid, ts, n_traj=64, key=5, dt=0.02, store=store, batch_size=1, progress=False)
if __name__ == "__main__":
    print("ready", flush=True)
    run(sys.argv[1])
"""


@pytest.mark.slow  # 24 s; test_store.py kills writers by SIGKILL in the default run
def test_resume_after_sigkill_gives_the_uninterrupted_values(tmp_path):
    """A sweep in a subprocess is killed with SIGKILL at random moments (several times) and run
    again each time; the resumed store's values and sems equal an uninterrupted run's."""
    spec = tmp_path / "spec.py"
    spec.write_text(SPEC)
    path = str(tmp_path / "k.zarr")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OPENBLAS_NUM_THREADS="1")
    rng = random.Random(0)
    kills = 0
    for _ in range(3):
        p = subprocess.Popen([sys.executable, str(spec), path], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p.stdout.readline()  # "ready": JAX imported
        time.sleep(rng.uniform(0.5, 4.0))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait()
    assert kills >= 1
    ns = {}
    exec(compile(SPEC.replace('if __name__ == "__main__":', "if False:"), "spec", "exec"), ns)
    resumed = ns["run"](path)
    fresh = ns["run"](None)
    for k in ("sx", "sy", "sz"):
        np.testing.assert_array_equal(resumed[k], fresh[k])
        np.testing.assert_array_equal(resumed[k + "_sem"], fresh[k + "_sem"])
    assert len(_points(path)) == 12


def _executor_sweep(executor, store=None):
    model, init = _spin()
    return tw.sweep((model, init), {"Omega": [0.5, 1.0, 1.5, 2.0]}, TS, executor=executor, task_size=2, store=store, **KW)


@pytest.mark.slow
def test_process_pool_executor_gives_the_in_process_result(tmp_path):
    ref = _executor_sweep(None)
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as ex:
        ds = _executor_sweep(ex, store=str(tmp_path / "p.zarr"))
    for k in ("sz", "sz_sem"):
        np.testing.assert_allclose(ds[k], ref[k], rtol=0, atol=1e-12)


@pytest.mark.slow
def test_submitit_and_dask_executors_give_the_in_process_result(tmp_path):
    submitit = pytest.importorskip("submitit")
    distributed = pytest.importorskip("distributed")
    ref = _executor_sweep(None)
    ex = submitit.LocalExecutor(folder=str(tmp_path / "submitit"))
    ex.update_parameters(timeout_min=10)
    ds = _executor_sweep(ex, store=str(tmp_path / "s.zarr"))
    np.testing.assert_allclose(ds["sz"], ref["sz"], atol=1e-12)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster, \
            distributed.Client(cluster) as client:
        ds = _executor_sweep(client, store=str(tmp_path / "d.zarr"))
    np.testing.assert_allclose(ds["sz"], ref["sz"], atol=1e-12)


@pytest.mark.slow
def test_sweep_dataset_round_trips_through_netcdf_and_zarr(tmp_path):
    ds = tw.sweep(build, {"N": [2, 3], "Omega": [0.0, 0.5]}, TS, time_average={"emission_rate": (0.5, 1.0)}, **KW)
    assert ds["emission_rate_average"].dims == ("N", "Omega")
    for path, write, read in ((tmp_path / "s.nc", ds.to_netcdf, xr.open_dataset), (tmp_path / "s.zarr", ds.to_zarr, xr.open_zarr)):
        write(path)
        back = read(path).load()
        xr.testing.assert_allclose(back.drop_vars("failed"), ds.drop_vars("failed"))
        assert back.attrs == ds.attrs


def test_mean_field_sweep_has_zero_sem_like_simulate():
    """A mean-field sweep is one deterministic trajectory per point: its standard error is 0, as
    simulate's (a sampled run of one trajectory has none: NaN)."""
    import twa_jax as tw

    model = tw.models.driven_spin()
    ts = np.linspace(0, 1, 3)
    ds = tw.sweep((model, tw.states.spins_down(1)), {"Omega": [0.5, 1.0]}, ts, n_traj=1, key=None, dt=0.05,
                  method="mean_field")
    one = tw.simulate(model, tw.states.spins_down(1), ts, dt=0.05, method="mean_field", params={"Omega": 1.0})
    np.testing.assert_allclose(ds["sz"].sel(Omega=1.0).values, one.mean["sz"], atol=1e-12)
    assert np.all(ds["sz_sem"].values == 0)
