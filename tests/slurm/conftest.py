"""A real single-node SLURM for the tests in this folder (run with ``pytest --runslow``).

The session fixture ``slurm_cluster`` runs ``start.sh`` here (munged, MariaDB + slurmdbd for
accounting, slurmctld, slurmd, all under ``$TWA_SLURM_BASE``, default ``/tmp/twa-slurm``; it
installs Debian's packages with apt-get if the binaries are missing) and ``stop.sh`` at the end of
the session. Tests are skipped, with the reason, where that is impossible (not root, no apt-get).
Job processes import ``twa_jax`` from this checkout: ``PYTHONPATH`` is set to the repository root
and SLURM passes the environment on to jobs.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """``dict(base=..., env=...)`` of a running single-node cluster; ``SLURM_CONF`` is exported."""
    if os.geteuid() != 0:
        pytest.skip("the SLURM tests start slurmctld/slurmd/munged and need root")
    missing = [b for b in ("slurmctld", "slurmd", "munged", "slurmdbd", "mariadbd") if shutil.which(b) is None]
    if missing and shutil.which("apt-get") is None:
        pytest.skip(f"SLURM binaries {missing} are missing and there is no apt-get to install them")
    base = os.environ.get("TWA_SLURM_BASE", "/tmp/twa-slurm")
    env = dict(os.environ, SLURM_BASE=base)
    r = subprocess.run(["bash", str(HERE / "start.sh")], env=env, capture_output=True, text=True, timeout=900)
    if r.returncode == 3:
        pytest.skip(f"cannot start SLURM here: {r.stderr.strip()}")
    if r.returncode != 0:
        pytest.fail(f"tests/slurm/start.sh failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    conf = f"{base}/etc/slurm.conf"
    old = {k: os.environ.get(k) for k in ("SLURM_CONF", "PYTHONPATH")}
    os.environ["SLURM_CONF"] = conf
    os.environ["PYTHONPATH"] = os.pathsep.join(x for x in (str(ROOT), old["PYTHONPATH"]) if x)
    yield dict(base=base, conf=conf)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    if not os.environ.get("TWA_SLURM_KEEP"):
        subprocess.run(["bash", str(HERE / "stop.sh")], env=env, capture_output=True, timeout=120)


def squeue(*args):
    """``squeue`` output lines (no header)."""
    return subprocess.run(["squeue", "-h", *args], capture_output=True, text=True, check=True).stdout.split("\n")
