"""One CPU device per core (``twa_jax/_cpu_devices.py``), checked in fresh interpreters.

``import twa_jax`` sets ``jax_num_cpu_devices`` to the cores the process may use (or to
``TWA_JAX_CPU_DEVICES``) when JAX has not started and the user chose nothing; a run uses as many
of them as give each at least ``MIN_WORK_PER_DEVICE`` spin-trajectories, and its results do not
depend on how many it used.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from twa_jax import _cpu_devices as cd

ROOT = Path(__file__).resolve().parents[1]
REPORT = "import json, jax, twa_jax; print(json.dumps({'status': twa_jax._cpu_devices.STATUS, 'n': len(jax.devices('cpu'))}))"


def _run(code, **env_changes):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", cd.ENV, "JAX_NUM_CPU_DEVICES")}
    env.update({"JAX_PLATFORMS": "cpu", "OPENBLAS_NUM_THREADS": "1"})
    for k, v in env_changes.items():
        env[k] = v
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    return out


def _report(code=REPORT, **env):
    out = _run(code, **env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_one_device_per_core_by_default():
    n = cd.available_cores()
    rep = _report()
    assert rep == ({"status": f"{n} CPU devices", "n": n} if n > 1 else {"status": "one core", "n": 1})


@pytest.mark.parametrize("value, n", [("1", 1), ("3", 3)])
def test_the_variable_sets_the_count(value, n):
    rep = _report(TWA_JAX_CPU_DEVICES=value)
    assert rep["n"] == n
    assert rep["status"] == ("one core" if n == 1 else f"{n} CPU devices")


def test_a_bad_count_is_refused_by_name():
    out = _run("import twa_jax", TWA_JAX_CPU_DEVICES="two")
    assert out.returncode != 0 and "TWA_JAX_CPU_DEVICES must be a positive integer" in out.stderr


def test_the_users_choice_and_a_started_jax_are_left_alone():
    rep = _report(XLA_FLAGS="--xla_force_host_platform_device_count=3")
    assert rep == {"status": "set by the user", "n": 3}
    rep = _report("import jax; jax.config.update('jax_num_cpu_devices', 1); " + REPORT)
    assert rep == {"status": "set by the user", "n": 1}
    rep = _report("import jax.numpy as jnp; jnp.ones(2).sum(); " + REPORT)  # JAX started first
    assert rep == {"status": "too late", "n": 1}


def test_runs_use_as_many_devices_as_their_size_justifies_and_agree():
    """With 4 CPU devices: a run of N = 4 spins uses 1 device at 100 trajectories (400
    spin-trajectories), 2 at 1024, 4 at 4096 (2048 per device); the means do not depend on it (the
    same trajectories, summed in another order)."""
    code = """
import json, jax, numpy as np, twa_jax as tw
from twa_jax._plan import make_plan
m = tw.models.rydberg_chain(4, boundary="open", gamma_down=0.2); s0 = tw.states.spins_down(4); ts = np.linspace(0, 1, 3)
used = [make_plan(m, s0, ts, n_traj=n, key=0).n_devices for n in (100, 1024, 4096)]
mf = make_plan(m, s0, ts, method="mean_field").n_devices
a = tw.simulate(m, s0, ts, n_traj=4096, key=1, progress=False)
b = tw.simulate(m, s0, ts, n_traj=4096, key=1, progress=False, devices=jax.devices()[:1])
print(json.dumps({"used": used, "mf": mf, "diff": float(np.max(np.abs(a.mean["sz"] - b.mean["sz"]))),
                  "sem": float(np.max(a.sem["sz"]))}))
"""
    rep = _report(code, TWA_JAX_CPU_DEVICES="4")
    assert rep["used"] == [1, 2, 4]
    assert rep["mf"] == 1
    assert rep["diff"] < 1e-5 * max(1.0, rep["sem"])  # rounding of the sums only, float32
