"""Every core of a CPU: `tw.simulate` on one CPU device against the package's default, which
since 0.6 makes one CPU device per core at import and uses as many of them as give each at least
2048 spin-trajectories (`twa_jax/_cpu_devices.py`), and what the package's XLA workaround flag
costs, at the paper's small sizes and below (where the crossover is).

    python benchmarks/bench_cores.py [--sizes 4,10,15] [--n-traj 256,1024,4096,20000] [--n-steps 100] [--out FILE]

Times, round-robin in one process, the Rydberg chain and Tavis-Cummings models of
``bench_small.py`` with ``devices=jax.devices()[:1]`` and with no ``devices`` (the default; the
number it used is recorded). The results are the same trajectories either way (trajectory ``i``
depends only on ``(key, i)``); the script checks it. Run it twice, with and without
``TWA_JAX_NO_XLA_WORKAROUND=1``, for the flag's cost.
"""

from __future__ import annotations

import argparse
import os
import sys

import twa_jax as tw  # noqa: E402  (first: its XLA flag and the CPU devices apply)

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_rydberg  # noqa: E402
import bench_tavis_cummings  # noqa: E402
from bench_chain import machine_name, measure, write_json  # noqa: E402
from twa_jax._cpu_devices import MIN_WORK_PER_DEVICE, default_devices  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="4,15")
    ap.add_argument("--n-traj", default="256,1024,4096,20000")
    ap.add_argument("--n-steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    ns, dt = args.n_steps, 0.01
    devs = jax.devices()
    machine = machine_name()
    print(f"cores: {len(devs)} CPU devices ({tw._cpu_devices.STATUS}), {ns} steps, float32, XLA workaround "
          f"{tw._xla_workaround.STATUS}; {machine}")
    rows = []
    orig = tw.simulate
    for model, mod, modes in (("rydberg", bench_rydberg, 0), ("tavis_cummings", bench_tavis_cummings, 1)):
        for n in (int(x) for x in args.sizes.split(",")):
            for nt in (int(x) for x in args.n_traj.split(",")):
                run = mod.simulate_fn(n, nt, ns, dt)
                used = len(default_devices(devs, n + modes, nt))
                fns, finals = {}, {}
                for name, kw in (("one_device", {"devices": devs[:1]}), ("default", {})):
                    def f(kw=kw):
                        tw.simulate = lambda *a, **k: orig(*a, **kw, **k)
                        try:
                            return run(0).mean["sz"]
                        finally:
                            tw.simulate = orig
                    finals[name] = np.asarray(f())
                    fns[name] = f
                same = float(np.max(np.abs(finals["one_device"] - finals["default"])))
                t = measure(fns, args.repeats)
                row = {"model": model, "n_spins": n, "n_traj": nt, "n_steps": ns, "n_devices": len(devs),
                       "default_uses": used, "spin_trajectories": (n + modes) * nt,
                       "xla_workaround": tw._xla_workaround.STATUS, "max_abs_difference": same}
                for name in fns:
                    row[f"{name}_wall_min_s"] = t[name]["wall_min"]
                    row[f"{name}_spin_steps_per_s"] = nt * n * ns / t[name]["wall_min"]
                row["default_over_one"] = row["default_spin_steps_per_s"] / row["one_device_spin_steps_per_s"]
                rows.append(row)
                print(f"{model:15s} N={n:3d} n_traj={nt:6d}: one device {row['one_device_spin_steps_per_s']:.3e}, "
                      f"default ({used} devices) {row['default_spin_steps_per_s']:.3e} spin-steps/s: "
                      f"x{row['default_over_one']:.2f}; max |difference| {same:.1e}", flush=True)
    write_json({"benchmark": "bench_cores", "machine": machine, "min_work_per_device": MIN_WORK_PER_DEVICE,
                "cpu_devices": tw._cpu_devices.STATUS, "load_at_end": list(os.getloadavg()), "rows": rows}, args.out)


if __name__ == "__main__":
    main()
