"""Every core of a CPU: `tw.simulate` on one CPU device against the same run split over one CPU
device per core (``--xla_force_host_platform_device_count``), and what the package's XLA
workaround flag costs, at the paper's small sizes.

    python benchmarks/bench_cores.py [--sizes 10,15] [--n-traj 20000] [--n-steps 100] [--out FILE]

XLA:CPU runs one program's elementwise work on one thread, so a second core idles unless the
trajectories are split over several CPU devices. This script starts JAX with one device per core
(the flag must be set before JAX starts), imports ``twa_jax`` first (its workaround flag applies,
unless ``TWA_JAX_NO_XLA_WORKAROUND=1``), and times, round-robin in one process, the Rydberg chain
and Tavis-Cummings models of ``bench_small.py`` with ``devices=jax.devices()[:1]`` and with all
devices. The results are the same either way (trajectory ``i`` depends only on ``(key, i)``);
the script checks it. Run it twice, with and without ``TWA_JAX_NO_XLA_WORKAROUND=1``, for the
flag's cost.
"""

from __future__ import annotations

import argparse
import os
import sys

N_CORES = os.cpu_count() or 1
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={N_CORES}").strip()

import twa_jax as tw  # noqa: E402  (first: its XLA flag applies)

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_rydberg  # noqa: E402
import bench_tavis_cummings  # noqa: E402
from bench_chain import machine_name, measure, write_json  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,15")
    ap.add_argument("--n-traj", type=int, default=20_000)
    ap.add_argument("--n-steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    nt, ns, dt = args.n_traj, args.n_steps, 0.01
    devs = jax.devices()
    machine = machine_name()
    print(f"cores: {len(devs)} CPU devices, {nt} trajectories, {ns} steps, float32, XLA workaround "
          f"{tw._xla_workaround.STATUS}; {machine}")
    rows = []
    orig = tw.simulate
    for model, mod in (("rydberg", bench_rydberg), ("tavis_cummings", bench_tavis_cummings)):
        for n in (int(x) for x in args.sizes.split(",")):
            run = mod.simulate_fn(n, nt, ns, dt)
            fns, finals = {}, {}
            for name, d in (("one_device", devs[:1]), ("all_devices", devs)):
                def f(d=d):
                    tw.simulate = lambda *a, **k: orig(*a, devices=d, **k)
                    try:
                        return run(0).mean["sz"]
                    finally:
                        tw.simulate = orig
                finals[name] = np.asarray(f())
                fns[name] = f
            same = float(np.max(np.abs(finals["one_device"] - finals["all_devices"])))
            t = measure(fns, args.repeats)
            row = {"model": model, "n_spins": n, "n_traj": nt, "n_steps": ns, "n_devices": len(devs),
                   "xla_workaround": tw._xla_workaround.STATUS, "max_abs_difference": same}
            for name in fns:
                row[f"{name}_wall_min_s"] = t[name]["wall_min"]
                row[f"{name}_spin_steps_per_s"] = nt * n * ns / t[name]["wall_min"]
            row["all_over_one"] = row["all_devices_spin_steps_per_s"] / row["one_device_spin_steps_per_s"]
            rows.append(row)
            print(f"{model:15s} N={n:3d}: one device {row['one_device_spin_steps_per_s']:.3e}, {len(devs)} devices "
                  f"{row['all_devices_spin_steps_per_s']:.3e} spin-steps/s: x{row['all_over_one']:.2f}; "
                  f"max |difference| {same:.1e}")
    write_json({"benchmark": "bench_cores", "machine": machine, "rows": rows}, args.out)


if __name__ == "__main__":
    main()
