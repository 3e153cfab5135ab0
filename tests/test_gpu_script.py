"""Smoke test of ``benchmarks/run_gpu.sh``: its ``--tiny`` mode runs the same steps at tiny sizes
on CPU, so the GPU script (which no CPU session can run) cannot rot. Output goes to a temporary
folder; ``benchmarks/results`` must stay untouched.

By default only step c runs (Rydberg chain: simulate against the scan, roofline fraction, and the
script's machinery: time limits, step table, JSON, summary), about 20 s on 2 shared cores; a (chain
with scan and plain model), b (dense Gamma, simulate alone), d (TF32 / float32 accuracy) and e
(Tavis-Cummings) compile several more solvers (2-3 min) and run with ``--runslow``.
"""

import csv
import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "run_gpu.sh"
RESULTS = ROOT / "benchmarks" / "results"

# step -> JSON files (relative to the output folder) the --tiny run writes for it
FILES = {
    "a_chain": "chain_N32_tiny.json",
    "b_memory": "chain_N48_tiny_memory.json",
    "c_rydberg": "rydberg_N50_tiny.json",
    "d_accuracy_tf32": "accuracy_chain16_tiny_tf32.json",
    "d_accuracy_fp32": "accuracy_chain16_tiny_fp32.json",
    "e_tavis_cummings": "tc_N50_tiny.json",
    "p_profile": "profile_rydberg_tiny.json",
    "s_sweep": "sweep_tiny.json",
    "g_small_barrier": "small_N4_tiny_barrier.json",
    "g_small_cond": "small_N4_tiny_cond.json",
    "h_layout": "layout_tiny.json",
    "r_grad": "grad_tiny.json",
}


def _listing(path):
    return sorted((p.name, p.stat().st_mtime_ns) for p in path.iterdir()) if path.exists() else []


def _check_machine(d):
    assert d["machine"].startswith("cpu:"), d["machine"]  # device platform and kind: "cpu:cpu x1; host ..."
    assert d["platform"] and d["jax"]


def _check_throughput(step, d):
    _check_machine(d)
    assert d["complete"] is True
    assert d["dtype"] == "float32" and d["n_spins"] > 0 and d["n_traj"] > 0 and d["n_steps"] > 0
    expect = {"a_chain": ("simulate", "simulate_plain", "scan"), "b_memory": ("simulate",),
              "c_rydberg": ("simulate", "scan"), "e_tavis_cummings": ("simulate", "scan")}[step]
    got = {k[: -len("_spin_steps_per_s")] for k in d if k.endswith("_spin_steps_per_s")}
    assert got == set(expect), got  # no NumPy; b: no scan, no plain model
    for name in expect:
        rate = d[f"{name}_spin_steps_per_s"]
        assert math.isfinite(rate) and rate > 0
        assert d[f"{name}_first_call_s"] > 0 and min(d[f"{name}_s"]) > 0
        assert -1.0 <= d[f"{name}_final_sz"] <= 1.0
        assert d[f"{name}_peak_memory_bytes"] > 0
    assert d["peak_memory_kind"] == "process peak RSS"  # on a GPU: "device peak"
    if "scan" in expect:
        assert d["ratio_vs_scan"] > 0
    if step == "c_rydberg":
        assert d["roofline_bytes_per_spin_step"] == 24
        assert d["device_bandwidth_gbs"] == 20.0 and d["device_bandwidth_source"] == "--bandwidth-gbs"
        for name in expect:
            assert d[f"{name}_roofline_gbs"] > 0
            assert 0 < d[f"{name}_roofline_fraction"] == pytest.approx(d[f"{name}_roofline_gbs"] / 20.0)


def _check_accuracy(step, d):
    _check_machine(d)
    precision = "default" if step.endswith("tf32") else "highest"
    assert d["model"] == "chain" and d["dtype"] == f"float32, matmul precision {precision}"
    assert d["ref_wall_s"] > 0 and d["default_dt"] > 0
    assert d["rows"]
    for row in d["rows"]:
        assert row["solver"] == "rotation_heun" and row["n_steps"] > 0 and row["wall_s"] > 0
        assert math.isfinite(row["err"]) and row["floor"] > 0 and row["n_failed"] == 0
        assert row["norm_drift"] < 1e-3  # rotation Heun conserves |s|


def _check_rows(step, d):  # bench_small (g) and bench_layout (h): one row per model and size
    assert d["machine"].startswith("cpu:"), d["machine"]
    assert d["rows"]
    for row in d["rows"]:
        assert row["backend"] == "cpu" and row["n_traj"] > 0
        if step.startswith("g_"):
            assert row["noise_by"] == step[len("g_small_"):]
            assert row["simulate_spin_steps_per_s"] > 0 and row["simulate_over_lanes"] > 0
            assert -1.0 <= row["simulate_final_sz"] <= 1.0 and -1.0 <= row["lanes_final_sz"] <= 1.0
        else:
            assert row["batch_first_spin_steps_per_s"] > 0 and row["batch_last_spin_steps_per_s"] > 0


def _check_profile(step, d):  # profile_gpu.py (p): simulate and the lanes kernel, device and host
    assert d["benchmark"] == "profile_gpu" and d["machine"].startswith("cpu:"), d["machine"]
    assert [r["contender"] for r in d["rows"]] == ["simulate", "simulate_intervals", "lanes"]
    for r in d["rows"]:
        assert r["wall_min_s"] > 0 and r["spin_steps_per_s"] > 0 and -1.0 <= r["final_sz"] <= 1.0
        assert r["host_profile"] and all(h["cum_s"] >= h["own_s"] >= 0 for h in r["host_profile"])
        for plane in r["devices"]:  # none on CPU; on a GPU the device's kernels and copies
            assert plane["n_kernels"] >= 0 and plane["span_s"] >= 0
    # --loop-ops: what simulate's step loop runs besides its kernels (diffrax's save loop at least)
    assert any(o["opcode"] == "while" and "inner-loop" in o["op_name"] for o in d["loop_ops"]), d["loop_ops"]
    # saving by intervals: no save loop inside the step
    assert not any("inner-loop" in o["op_name"] for o in d["loop_ops_intervals"]), d["loop_ops_intervals"]


def _check_sweep(step, d):  # bench_sweep (s): the batched sweep against the loop of simulate and the kernels
    assert d["machine"].startswith("cpu:") and d["complete"] is True and d["n_points"] == 4, d["machine"]
    assert set(d["stats"]) == {"sweep", "loop", "scan_tlast", "scan_tlast_common"}
    assert all(d["ratios"][f"sweep_vs_{k}"] > 0 for k in ("loop", "scan_tlast", "scan_tlast_common"))
    assert d["checks"]["loop"]["max_abs_diff_sz"] < 1e-5  # the same trajectories as the loop of simulate


def _check_grad(step, d):
    assert d["machine"].startswith("cpu:") and d["n_params"] == 2, d["machine"]
    assert d["time_ratio"] > 0 and d["grad"]["min_s"] > 0 and d["forward"]["min_s"] > 0
    assert set(d["grad"]["grad"]) == {"Omega", "Gamma0"} and all(math.isfinite(v) for v in d["grad"]["grad"].values())


@pytest.mark.parametrize("only", [
    pytest.param("c", marks=pytest.mark.slow),
    pytest.param("a,b,d,e", marks=pytest.mark.slow),
    pytest.param("g,h,p,r", marks=pytest.mark.slow),
    pytest.param("s", marks=pytest.mark.slow),
])
def test_run_gpu_tiny(tmp_path, only):
    if shutil.which("timeout") is None:
        pytest.skip("needs coreutils timeout")
    before = _listing(RESULTS)
    out = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if k not in ("BENCH_OUT", "BENCH_BUDGET_S", "XLA_FLAGS")}
    p = subprocess.run(["bash", str(SCRIPT), "--tiny", "--only", only, "--out", str(out)], env=env,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    assert _listing(RESULTS) == before  # nothing written into the repository

    rows = list(csv.DictReader(open(out / "run_gpu_tiny_steps.tsv"), delimiter="\t"))
    wanted = [s for s in FILES if s[0] in only.split(",")]
    assert [r["step"] for r in rows] == wanted
    for r in rows:
        assert r["status"] == "ok" and r["exit"] == "0", r
        path = out / FILES[r["step"]]
        assert Path(r["json"]) == path
        d = json.loads(path.read_text())
        check = {"d": _check_accuracy, "g": _check_rows, "h": _check_rows, "p": _check_profile, "r": _check_grad,
                 "s": _check_sweep}.get(r["step"][0], _check_throughput)
        check(r["step"], d)
    assert sorted(f.name for f in out.glob("*.json")) == sorted(FILES[s] for s in wanted)
    log = (out / "run_gpu_tiny.log").read_text()
    assert "=== summary" in log and "required steps not finished: 0" in log
    for s in wanted:
        assert f"{s} (ok, {FILES[s]})" in log  # the summary line of each step


def test_loop_ops_finds_what_runs_inside_the_loop():
    """``profile_gpu.loop_ops`` (run_gpu.sh step p, ``--loop-ops``) lists the nested loops and
    conditionals of one loop's body from a compiled program, not those outside it."""
    import sys

    import jax
    import jax.numpy as jnp

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import profile_gpu

    def outer(x):
        x = jax.lax.cond(x[0] > 0, jnp.sin, jnp.cos, x)  # outside the loop: not listed

        def body(i, x):
            x = jax.lax.cond(jnp.sum(x) > i, lambda y: y * 2.0, lambda y: y - 1.0, x)
            return jax.lax.while_loop(lambda y: jnp.sum(y) < 1e3, lambda y: y * 1.5 + 1.0, x)

        return jax.lax.fori_loop(0, jnp.int32(x.shape[0]) + jnp.int32(x[1] > 0), body, x)

    hlo = jax.jit(outer).lower(jnp.ones(7)).compile().as_text()
    ops = profile_gpu.loop_ops(hlo, loop="jit(outer)/while")
    kinds = sorted(o["opcode"] for o in ops if o["opcode"] != "copy")
    assert kinds == ["conditional", "while"], ops
    assert all("jit(outer)/while/body" in o["op_name"] for o in ops if o["opcode"] != "copy")
    assert profile_gpu.loop_ops(hlo, loop="no such loop") == []
