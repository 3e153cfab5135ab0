"""``python -m twa_jax sweep run|resume|status`` (twa_jax/_sweep_cli.py, twa_jax/__main__.py).

One real ``run`` in a subprocess (module fixture; the reference ``tw.sweep`` runs in this process
meanwhile) feeds the status and resume tests; the error tests call ``main`` in this process and
stop before any JAX work. The other executors (processes, submitit, dask) are ``slow``: each
starts a fresh interpreter that compiles the sweep again.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import twa_jax as tw
from twa_jax import _sweep_cli as cli
from twa_jax.__main__ import main as package_main

SPEC = textwrap.dedent("""\
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    import twa_jax as tw

    SWEEP = dict(spec=(tw.models.driven_spin(gamma_down=0.3), tw.states.spins_down(1)),
                 grid={"Omega": [0.5, 1.0]}, ts=np.linspace(0, 1, 3), n_traj=N_TRAJ, key=0, dt=0.05)
    """)


def write_spec(folder: Path, name="spec.py", n_traj=16, text=None) -> Path:
    path = folder / name
    path.write_text(SPEC.replace("N_TRAJ", str(n_traj)) if text is None else textwrap.dedent(text))
    return path


def reference():
    return tw.sweep((tw.models.driven_spin(gamma_down=0.3), tw.states.spins_down(1)), {"Omega": [0.5, 1.0]},
                    np.linspace(0, 1, 3), n_traj=16, key=0, dt=0.05, progress=False)


def cli_cmd(*args):
    return [sys.executable, "-m", "twa_jax", "sweep", *map(str, args)]


def assert_same(ds, ref, tol=1e-12):
    assert set(ds.data_vars) == set(ref.data_vars)
    np.testing.assert_array_equal(ds["Omega"].values, ref["Omega"].values)
    np.testing.assert_array_equal(ds["time"].values, ref["time"].values)
    for v in ref.data_vars:
        if ref[v].dtype.kind == "f":
            np.testing.assert_allclose(ds[v].values, ref[v].values, rtol=0, atol=tol, err_msg=v)
        else:
            np.testing.assert_array_equal(ds[v].values, ref[v].values, err_msg=v)


def log_lines(store: Path) -> int:
    return sum(len(f.read_text().splitlines()) for f in (store / "_sweep" / "log").glob("*.jsonl"))


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """``sweep run spec.py --store x.zarr --netcdf x.nc`` in a subprocess, and the reference."""
    d = tmp_path_factory.mktemp("cli")
    spec = write_spec(d)
    proc = subprocess.Popen(cli_cmd("run", spec, "--store", d / "x.zarr", "--netcdf", d / "x.nc"), cwd=d,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ref = reference()  # meanwhile, in this process
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    return SimpleNamespace(dir=d, spec=spec, store=d / "x.zarr", nc=d / "x.nc", rc=proc.returncode,
                           out=out, err=err, ref=ref)


@pytest.fixture
def keep_sys_path(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_spec puts the spec's folder on it


# ------------------------------------------------------------------------------ run, status, resume


def test_run_in_a_subprocess_gives_the_numbers_of_tw_sweep(ran):
    import xarray as xr

    assert ran.rc == 0, ran.err
    assert "2 of 2 points done (2 computed now, 0 from the store), 0 failed" in ran.out
    assert f"wrote {ran.nc}" in ran.out
    assert_same(xr.load_dataset(ran.nc), ran.ref)


@pytest.mark.slow
def test_status_prints_the_points_done(ran, capsys, keep_sys_path):
    assert cli.main(["status", str(ran.store)]) == 0
    out = capsys.readouterr().out
    assert "2 points done, 0 failed, 0 in flight" in out
    assert "--total N or --spec SPEC.py" in out  # the store does not know the grid size
    assert cli.main(["status", str(ran.store), "--spec", str(ran.spec)]) == 0
    assert "2 of 2 points done, 0 failed, 0 in flight, 0 pending" in capsys.readouterr().out
    assert cli.main(["status", str(ran.store), "--total", "3", "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert (st["done"], st["failed"], st["pending"], st["in_flight"]) == (2, 0, 1, [])
    assert cli.main(["status", str(ran.store), "--total", "2", "--watch", "0.01"]) == 0  # stops: complete
    assert "sweep complete" in capsys.readouterr().out


@pytest.mark.slow
def test_resume_finds_every_point_done_and_computes_nothing(ran, capsys, keep_sys_path):
    import xarray as xr

    n_log = log_lines(ran.store)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (ran.store / "points").iterdir()}
    nc = ran.dir / "resumed.nc"
    assert cli.main(["resume", str(ran.spec), "--store", str(ran.store), "--netcdf", str(nc)]) == 0
    out = capsys.readouterr().out
    assert "all 2 points of the sweep are already done" in out and "nothing to compute" in out
    assert "(0 computed now, 2 from the store)" in out
    assert log_lines(ran.store) == n_log  # no point was finished (or failed) again
    assert {p.name: p.stat().st_mtime_ns for p in (ran.store / "points").iterdir()} == mtimes
    assert_same(xr.load_dataset(nc), ran.ref)


@pytest.mark.slow
def test_a_store_of_another_sweep_is_refused(ran, tmp_path, capsys, keep_sys_path):
    spec = write_spec(tmp_path, n_traj=32)
    assert cli.main(["resume", str(spec), "--store", str(ran.store)]) == 2
    err = capsys.readouterr().err
    assert "belongs to another sweep" in err and "n_traj" in err


# ------------------------------------------------------------------------------ errors, before any work


@pytest.mark.parametrize("text, args, message", [
    ("x = 1\n", ["run"], "defines no SWEEP"),
    ("SWEEP = [1, 2]\n", ["run"], "must be a dict"),
    ("SWEEP = dict(spec=None, grid={}, ts=[0.0], n_trajs=4, key=0)\n", ["run"], "did you mean 'n_traj'?"),
    ("SWEEP = dict(spec=None, grid={}, ts=[0.0], n_traj=4)\n", ["run"], "lacks 'key'"),
    ("raise RuntimeError('broken spec')\n", ["run"], "raised RuntimeError: broken spec"),
    ("SWEEP = dict(spec=None, grid={'a': [1]}, ts=[0.0], n_traj=4, key=0)\n", ["run", "--executor", "slurm"],
     "--executor slurm needs a store"),
    ("SWEEP = dict(spec=None, grid={'a': [1]}, ts=[0.0], n_traj=4, key=0)\n", ["run", "--executor", "dask"],
     "--executor dask needs a store"),
    ("SWEEP = dict(spec=None, grid={'a': [1]}, ts=[0.0], n_traj=4, key=0)\n", ["resume"], "resume needs a store"),
    ("SWEEP = dict(spec=None, grid={'a': [1]}, ts=[0.0], n_traj=4, key=0)\n", ["run", "--slurm-partition", "gpu"],
     "--slurm-partition needs --executor slurm"),
    ("SWEEP = dict(spec=None, grid={'a': [1]}, ts=[0.0], n_traj=4, key=0)\n", ["run", "--workers", "2"],
     "--workers applies to --executor processes and dask only"),
    ("SWEEP = dict(spec=None, grid={'a': [1]}, ts=[0.0], n_traj=4, key=0)\n",
     ["run", "--executor", "dask", "--dask-address", "tcp://x:1", "--workers", "2", "--store", "s.zarr"],
     "with --dask-address the cluster has its own"),
    ("SWEEP = dict(spec=None, grid={'a': []}, ts=[0.0], n_traj=4, key=0)\n", ["run"], "SWEEP['grid']"),
], ids=["no-SWEEP", "SWEEP-not-a-dict", "unknown-key", "missing-key", "spec-raises", "slurm-without-store",
        "dask-without-store", "resume-without-store", "slurm-option-elsewhere", "workers-inprocess",
        "workers-with-address", "bad-grid"])
def test_bad_input_is_one_clear_message(tmp_path, capsys, keep_sys_path, text, args, message):
    spec = write_spec(tmp_path, text=text)
    assert cli.main([args[0], str(spec), *args[1:]]) == 2
    captured = capsys.readouterr()
    assert f"python -m twa_jax sweep {args[0]}: error:" in captured.err
    assert message in captured.err
    assert not list(tmp_path.glob("*.zarr"))  # nothing was created


def test_missing_files_and_unknown_options(tmp_path, capsys, keep_sys_path):
    assert cli.main(["run", str(tmp_path / "nope.py")]) == 2
    assert "not found" in capsys.readouterr().err
    assert cli.main(["status", str(tmp_path / "nope.zarr")]) == 2
    assert "no sweep store at" in capsys.readouterr().err
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    assert cli.main(["status", str(tmp_path / "plain")]) == 2
    assert "not a sweep store" in capsys.readouterr().err
    assert cli.main(["status"]) == 2
    assert "status needs a store" in capsys.readouterr().err
    for argv in (["run", "spec.py", "--stor", "x.zarr"], ["run", "spec.py", "--executor", "mpi"], ["bogus"], []):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --stor" in err and "invalid choice: 'mpi'" in err


def test_help_and_the_package_entry_point(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m twa_jax sweep")
    for text in ("sweep run SPEC.py", "sweep resume SPEC.py", "sweep status", "ProcessPoolExecutor", "submitit",
                 "--slurm-local", "LocalCluster"):
        assert text in out
    assert package_main(["--help"]) == 0
    assert "sweep" in capsys.readouterr().out
    assert package_main(["bogus"]) == 2
    assert "unknown command 'bogus'" in capsys.readouterr().err


# ------------------------------------------------------------------------------ the other executors


@pytest.mark.slow
def test_processes_executor_gives_the_same_numbers(ran):
    import xarray as xr

    nc = ran.dir / "processes.nc"
    out = subprocess.run(cli_cmd("run", ran.spec, "--executor", "processes", "--workers", "1", "--netcdf", nc),
                         cwd=ran.dir, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "2 of 2 points done (2 computed now), 0 failed" in out.stdout
    assert_same(xr.load_dataset(nc), ran.ref)  # float64 in the worker too (JAX_ENABLE_X64 passed on)


@pytest.mark.slow
def test_submitit_debug_executor_writes_the_store(ran, tmp_path):
    # a subprocess: `import submitit` binds its log handlers to the sys.stdout/stderr of the
    # moment, which under pytest's capture are closed after the test
    import xarray as xr

    store, nc = tmp_path / "s.zarr", tmp_path / "s.nc"
    out = subprocess.run(cli_cmd("run", ran.spec, "--store", store, "--executor", "slurm", "--slurm-cluster", "debug",
                                 "--slurm-time", "5", "--slurm-partition", "gpu", "--slurm-param", "constraint=a100",
                                 "--netcdf", nc), cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert "2 of 2 points done (2 computed now, 0 from the store)" in out.stdout
    assert (tmp_path / "s_submitit").is_dir()
    assert_same(xr.load_dataset(nc), ran.ref)


@pytest.mark.slow
def test_dask_local_cluster(ran, tmp_path):
    import xarray as xr

    nc = tmp_path / "d.nc"
    out = subprocess.run(cli_cmd("run", ran.spec, "--store", tmp_path / "d.zarr", "--executor", "dask", "--workers",
                                 "1", "--netcdf", nc), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "dask: a local cluster of 1 worker processes" in out.stdout
    assert_same(xr.load_dataset(nc), ran.ref)


def test_spec_functions_travel_by_value(tmp_path, keep_sys_path):
    """A builder defined in the spec is pickled by value (workers cannot import the spec)."""
    import cloudpickle

    spec = write_spec(tmp_path, text="""\
        def build():
            return "built"
        SWEEP = dict(spec=build, grid={"a": [1]}, ts=[0.0], n_traj=4, key=0)
        """)
    build = cli.load_spec(spec)["spec"]
    blob = cloudpickle.dumps(build)
    assert b"__twa_jax_spec__" in blob or b"built" in blob
    code = f"import pickle, sys; print(pickle.loads(bytes.fromhex({blob.hex()!r}))())"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=os.path.dirname(sys.executable), env={**os.environ, "PYTHONPATH": ""})
    assert res.stdout.strip() == "built", res.stderr


def test_failed_points_of_a_grid_and_of_a_list():
    import xarray as xr

    grid = xr.Dataset({"failed": (("g", "N"), np.array([["", "nan at t = 1"], ["", ""]]))},
                      coords={"g": [0.1, 0.2], "N": [4, 8]})
    assert cli.failed_points(grid) == [({"g": 0.1, "N": 8}, "nan at t = 1")]
    listed = xr.Dataset({"failed": (("point",), np.array(["boom", ""]))},
                        coords={"g": ("point", [0.1, 0.2]), "N": ("point", [4, 8])})
    assert cli.failed_points(listed) == [({"g": 0.1, "N": 4}, "boom")]
