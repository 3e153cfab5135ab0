"""A 2-task ``srun`` of ``simulate`` joined by ``jax.distributed.initialize()`` (JAX reads SLURM's
environment) equals the 1-process result: trajectory i depends only on (key, i)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

pytestmark = [pytest.mark.slow, pytest.mark.slurm]
HERE = os.path.dirname(os.path.abspath(__file__))


def test_two_task_srun_equals_one_process(slurm_cluster, tmp_path):
    out, ref = str(tmp_path / "srun.nc"), str(tmp_path / "one.nc")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    r = subprocess.run(["srun", "-n", "2", "--cpus-per-task=1", "--time=10", "--job-name=twa-multihost",
                        sys.executable, os.path.join(HERE, "run_twa.py"), out],
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    # the same script as one process, outside SLURM (no SLURM_* variables: initialize() is skipped)
    one = {k: v for k, v in env.items() if not k.startswith("SLURM_")} | {"SLURM_CONF": env["SLURM_CONF"]}
    code = open(os.path.join(HERE, "run_twa.py")).read().replace("jax.distributed.initialize()", "pass")
    r1 = subprocess.run([sys.executable, "-c", code, ref], env=one, capture_output=True, text=True, timeout=900)
    assert r1.returncode == 0, r1.stderr[-3000:]
    a, b = xr.load_dataset(out), xr.load_dataset(ref)
    assert a.attrs["process_count"] == 2 and a.attrs["n_devices"] == 2
    assert b.attrs["process_count"] == 1
    for k in ("sx", "sy", "sz"):
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-12)
        np.testing.assert_allclose(a[k + "_sem"], b[k + "_sem"], rtol=0, atol=1e-12)
