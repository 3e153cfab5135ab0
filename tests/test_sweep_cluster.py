"""What a sweep on a cluster needs besides the scheduler: the store opens with xr.open_zarr on its
own (the finished points, NaN and a status where pending or failed), Ctrl-C ends with one line
saying what is saved, a fork process pool is refused and executor="processes" works."""

import concurrent.futures
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr

import twa_jax as tw
from twa_jax._store import SweepStore

from test_sweep import KW, ROOT, TS, _spin  # noqa: E402  (the sweep tests' set-up, shared)


def test_store_opens_with_xr_open_zarr_on_its_own(tmp_path):
    path = str(tmp_path / "v.zarr")
    small = tw.sweep(_spin(), {"Omega": [0.5, 1.0], "kappa": [0.1, 0.2]}, TS, store=path, **KW)
    view = xr.open_zarr(path).load()
    xr.testing.assert_equal(view.drop_vars("status"), small.drop_vars("failed"))
    assert view.attrs["n_traj"] == 32 and view.attrs["parameter_axes"] == "Omega,kappa"
    assert (view["status"] == SweepStore.STATUS["done"]).all()
    assert view["status"].attrs["flag_meanings"] == "pending done failed"
    # a grown grid: the view grows with it
    ds = tw.sweep(_spin(), {"Omega": [0.5, 1.0, 1.5], "kappa": [0.1, 0.2]}, TS, store=path, **KW)
    view = xr.open_zarr(path).load()
    assert view["sz"].shape == (3, 2, 5)
    np.testing.assert_array_equal(view["sz"], ds["sz"])


def test_store_view_marks_failed_points_nan(tmp_path):
    def kerr(U):
        if U > 100:
            raise ValueError("U too large for this test")
        return tw.Model(lambda s, a, p: U * abs(a[0]) ** 4, n_bosons=1), tw.states.coherent(3.0)

    path = str(tmp_path / "f.zarr")
    with pytest.warns(RuntimeWarning, match="1 of 2 points failed"):
        tw.sweep(kerr, {"U": [0.0, 1000.0]}, np.linspace(0, 1, 3), n_traj=8, key=0, dt=0.1, store=path, progress=False)
    view = xr.open_zarr(path).load()
    assert view["status"].values.tolist() == [SweepStore.STATUS["done"], SweepStore.STATUS["failed"]]
    assert np.isfinite(view["n"].sel(U=0.0)).all() and np.isnan(view["n"].sel(U=1000.0)).all()


def test_a_fork_process_pool_is_refused_naming_spawn():
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as ex:
        with pytest.raises(ValueError, match=r"'fork' start method.*spawn.*executor=\"processes\""):
            tw.sweep(_spin(), {"Omega": [0.5]}, TS, executor=ex, **KW)
    with pytest.raises(ValueError, match='executor must be an executor object or "processes"'):
        tw.sweep(_spin(), {"Omega": [0.5]}, TS, executor="threads", **KW)


@pytest.mark.slow
def test_executor_processes_gives_the_in_process_result():
    grid = {"Omega": [0.5, 1.0, 1.5, 2.0]}
    ref = tw.sweep(_spin(), grid, TS, **KW)
    ds = tw.sweep(_spin(), grid, TS, executor="processes", task_size=2, **KW)
    for k in ("sz", "sz_sem"):
        np.testing.assert_array_equal(ds[k], ref[k])


SPEC = """
import sys, jax
jax.config.update("jax_enable_x64", True)
import numpy as np, twa_jax as tw
model, init = tw.models.driven_spin(gamma_down=0.3), tw.states.spins_down(1)
print("ready", flush=True)
tw.sweep((model, init), {"Omega": list(np.linspace(0.1, 3.0, 30))}, np.linspace(0.0, 1.0, 5), n_traj=4096,
         key=5, dt=0.002, store=sys.argv[1], batch_size=1, progress=False)
"""


@pytest.mark.slow
def test_ctrl_c_ends_with_one_line_saying_what_is_saved(tmp_path):
    spec = tmp_path / "spec.py"
    spec.write_text(SPEC)
    path = str(tmp_path / "i.zarr")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OPENBLAS_NUM_THREADS="1")
    p = subprocess.Popen([sys.executable, str(spec), path], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p.stdout.readline()
    points = os.path.join(path, "points")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (os.path.isdir(points) and len(set(os.listdir(points)) - {"zarr.json"}) >= 3):
        time.sleep(0.1)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    n = len(set(os.listdir(points)) - {"zarr.json"})
    assert p.returncode == 130, err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == f"sweep interrupted: {n} of 30 points saved in {path}; rerun the same call to resume"
    assert 3 <= n < 30
    view = xr.open_zarr(path).load()  # the view shows what was saved, the rest pending and NaN
    done = view["status"] == SweepStore.STATUS["done"]
    assert int(done.sum()) == n and bool((view["status"][~done] == SweepStore.STATUS["pending"]).all())
    assert np.isfinite(view["sz"][done]).all() and np.isnan(view["sz"][~done]).all()
