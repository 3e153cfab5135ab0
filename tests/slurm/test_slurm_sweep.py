"""tw.sweep on a real SLURM (tests/slurm/start.sh): the tasks go as one job array whose numbers
equal the in-process run, the array's parallelism limit holds (the scheduler's own start/end
times), and a cancelled array task leaves its unfinished points pending for a resume."""

import os
import subprocess
import threading
import time
import uuid
import warnings

import numpy as np
import pytest

import twa_jax as tw
from twa_jax._store import SweepStore

submitit = pytest.importorskip("submitit")
pytestmark = [pytest.mark.slow, pytest.mark.slurm]

TS = np.linspace(0.0, 1.0, 5)
KW = dict(n_traj=32, key=3, dt=0.05, progress=False)
GRID = {"Omega": [0.5, 1.0, 1.5], "kappa": [0.1, 0.2]}


def _spin():
    return tw.models.driven_spin(gamma_down=0.3), tw.states.spins_down(1)


def _executor(tmp_path, name, **kw):
    ex = submitit.AutoExecutor(folder=str(tmp_path / "jobs"), cluster="slurm")
    ex.update_parameters(name=name, timeout_min=20, cpus_per_task=1, mem_gb=2, **kw)
    return ex


def _sacct(name):
    """``[(job id, state, start, end)]`` of the array tasks named ``name``, from slurmdbd."""
    out = subprocess.run(["sacct", "-X", "-n", "-P", "--name", name, "-o", "JobID,State,Start,End"],
                         capture_output=True, text=True, check=True).stdout
    return [tuple(line.split("|")) for line in out.split("\n") if line]


def test_job_array_sweep_equals_the_in_process_result(slurm_cluster, tmp_path):
    ref = tw.sweep(_spin(), GRID, TS, **KW)
    name = f"twa-{uuid.uuid4().hex[:8]}"
    ds = tw.sweep(_spin(), GRID, TS, executor=_executor(tmp_path, name), task_size=2,
                  store=str(tmp_path / "a.zarr"), **KW)
    for k in ("sx", "sz", "sz_sem"):
        np.testing.assert_array_equal(ds[k], ref[k])
    rows = _sacct(name)
    # one submission: three tasks <array id>_0.._2 of one array, all completed
    assert sorted(r[0] for r in rows) == [f"{rows[0][0].split('_')[0]}_{i}" for i in range(3)], rows
    assert {r[1] for r in rows} == {"COMPLETED"}, rows


def test_array_parallelism_limits_concurrent_tasks(slurm_cluster, tmp_path):
    name = f"twa-{uuid.uuid4().hex[:8]}"
    tw.sweep(_spin(), GRID, TS, executor=_executor(tmp_path, name, slurm_array_parallelism=1), task_size=2, **KW)
    rows = sorted(_sacct(name), key=lambda r: r[2])
    assert len(rows) == 3 and {r[1] for r in rows} == {"COMPLETED"}, rows
    for a, b in zip(rows, rows[1:]):  # the node has room for 2 tasks; the throttle lets one run at a time
        assert b[2] >= a[3], f"task {b[0]} started at {b[2]} before {a[0]} ended at {a[3]}"


def test_scancel_of_one_task_leaves_its_points_pending_and_a_resume_finishes_them(slurm_cluster, tmp_path):
    grid = {"Omega": [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]}
    kw = dict(KW, n_traj=16384, dt=0.001)  # about 3 s a point: the cancel (SIGTERM, SIGKILL after KillWait=5 s) lands mid-task
    path = str(tmp_path / "c.zarr")
    name = f"twa-{uuid.uuid4().hex[:8]}"
    victim = [{"Omega": x} for x in grid["Omega"][4:]]  # the block of array task 1
    ids = {SweepStore.point_id(p) for p in victim}
    cancelled = {}

    def cancel_after_first_point():
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            pts = os.path.join(path, "points")
            if os.path.isdir(pts) and ids & set(os.listdir(pts)):
                job = subprocess.run(["squeue", "-h", "--name", name, "-o", "%i"], capture_output=True, text=True).stdout.split()
                task = [j for j in job if j.endswith("_1")]
                if task:
                    subprocess.run(["scancel", task[0]], check=True)
                    cancelled["job"] = task[0]
                return
            time.sleep(0.2)

    t = threading.Thread(target=cancel_after_first_point)
    t.start()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ds = tw.sweep(_spin(), grid, TS, executor=_executor(tmp_path, name), task_size=4, batch_size=1, store=path, **kw)
    t.join()
    assert "job" in cancelled, "task 1 finished before it could be cancelled"
    state = dict((r[0], r[1]) for r in _sacct(name))
    assert state[cancelled["job"]].startswith("CANCELLED"), state
    done = set(os.listdir(os.path.join(path, "points"))) - {"zarr.json"}
    assert {SweepStore.point_id({"Omega": x}) for x in grid["Omega"][:4]} <= done  # task 0 untouched
    assert 1 <= len(ids & done) < 4, len(ids & done)  # task 1: the points before the cancel
    assert os.listdir(os.path.join(path, "_sweep", "failed")) == []  # pending, not failed
    pending = ds["failed"].values == "not run"
    assert pending.sum() == 4 - len(ids & done) and np.isnan(ds["sz"].values[pending]).all()
    assert any("ended without a result" in str(x.message) for x in w)
    resumed = tw.sweep(_spin(), grid, TS, store=path, **kw)  # in-process resume of the rest
    ref = tw.sweep(_spin(), grid, TS, **kw)
    np.testing.assert_array_equal(resumed["sz"], ref["sz"])


def test_without_accounting_a_cancelled_array_does_not_hang(slurm_cluster, tmp_path):
    """Restarted without slurmdbd, sacct cannot tell submitit that a job was cancelled; the sweep
    sees the array leave the queue and returns with its points pending instead of waiting forever."""
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, SLURM_BASE=slurm_cluster["base"])
    subprocess.run(["bash", os.path.join(here, "start.sh")], env=dict(env, SLURM_ACCOUNTING="0"), check=True,
                   capture_output=True)
    try:
        assert subprocess.run(["sacct", "-n"], capture_output=True).returncode != 0  # no accounting now
        name = f"twa-{uuid.uuid4().hex[:8]}"
        ex = _executor(tmp_path, name, slurm_additional_parameters={"hold": True})  # stays queued until cancelled
        result = {}

        def run():
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                try:
                    tw.sweep(_spin(), GRID, TS, executor=ex, task_size=3, store=str(tmp_path / "h.zarr"), **KW)
                except RuntimeError as e:
                    result["error"] = str(e)
            result["warnings"] = [str(x.message) for x in w]

        t = threading.Thread(target=run, daemon=True)
        t.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ids = subprocess.run(["squeue", "-h", "--name", name, "-o", "%A"], capture_output=True, text=True).stdout.split()
            if ids:
                break
            time.sleep(0.5)
        assert ids, "the array never reached the queue"
        subprocess.run(["scancel", ids[0]], check=True)
        t.join(timeout=180)
        assert not t.is_alive(), "tw.sweep still waits for a cancelled array without accounting"
        assert result["error"].startswith("no point of the sweep finished: all 6 are pending"), result
        assert any("6 points are in tasks that ended without a result" in m for m in result["warnings"])
    finally:
        subprocess.run(["bash", os.path.join(here, "start.sh")], env=env, check=True, capture_output=True)


def test_a_preempted_task_is_requeued_and_redoes_only_its_unfinished_points(slurm_cluster, tmp_path):
    """submitit's pre-emption signals (SIGTERM, then USR2, as ``job._interrupt()`` sends them) make
    the checkpointable task requeue itself; the requeued run skips the points in the store."""
    import glob
    import json

    grid = {"Omega": [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]}
    kw = dict(KW, n_traj=16384, dt=0.001)  # about 3 s a point
    path = str(tmp_path / "p.zarr")
    name = f"twa-{uuid.uuid4().hex[:8]}"
    sent = {}

    def preempt_after_two_points():
        deadline = time.monotonic() + 600
        pts = os.path.join(path, "points")
        while time.monotonic() < deadline:
            if os.path.isdir(pts) and len(set(os.listdir(pts)) - {"zarr.json"}) >= 2:
                job = subprocess.run(["squeue", "-h", "--name", name, "-o", "%i"], capture_output=True,
                                     text=True).stdout.split()
                for sig in ("SIGTERM", "USR2"):
                    subprocess.run(["scancel", job[0], "--signal", sig], check=True)
                sent["job"] = job[0]
                return
            time.sleep(0.2)

    t = threading.Thread(target=preempt_after_two_points)
    t.start()
    ds = tw.sweep(_spin(), grid, TS, executor=_executor(tmp_path, name), task_size=6, batch_size=1, store=path, **kw)
    t.join()
    assert "job" in sent
    runs = subprocess.run(["sacct", "-D", "-X", "-n", "-P", "--name", name, "-o", "JobID,State"],
                          capture_output=True, text=True, check=True).stdout.split()
    assert len(runs) == 2 and runs[-1].endswith("|COMPLETED"), runs  # the task ran twice: requeued once
    finished = [json.loads(line)["id"] for f in glob.glob(os.path.join(path, "_sweep", "log", "*.jsonl"))
                for line in open(f) if line.strip() and json.loads(line).get("ok")]
    assert sorted(finished) == sorted({SweepStore.point_id({"Omega": x}) for x in grid["Omega"]})  # each once
    ref = tw.sweep(_spin(), grid, TS, **kw)
    np.testing.assert_array_equal(ds["sz"], ref["sz"])
