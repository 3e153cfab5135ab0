"""The state's layout: `tw.simulate` with the trajectories first (the generator ``vmap``-ed) and
last (the generator's jaxpr evaluated batch last, ``twa_jax/_lanes.py``), forced through
``twa_jax._plan.LAYOUT``, timed round-robin in one process. Measures where the plan's automatic
choice (``LANES_MIN_BATCH``, ``LANES_MIN_WORK``) should switch.

    python benchmarks/bench_layout.py [--cases rydberg:10:16,rydberg:300:1000,...] [--n-steps 100] [--x64] [--out FILE]

A case is ``model:N:n_traj`` with model ``rydberg`` (O(N) work), ``tavis_cummings`` or ``chain``
(dense N x N couplings and Gamma, bench_chain.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import twa_jax as tw

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_chain  # noqa: E402
import bench_rydberg  # noqa: E402
import bench_tavis_cummings  # noqa: E402
from bench_chain import machine_name, measure, write_json  # noqa: E402

from twa_jax import _plan  # noqa: E402

DEFAULT = ("rydberg:10:8,rydberg:10:32,rydberg:10:128,rydberg:30:10000,rydberg:100:3000,rydberg:300:1000,"
           "rydberg:1000:300,chain:30:10000,chain:100:3000,tavis_cummings:100:3000")


def sim_fn(model, n, nt, ns, dt):
    if model == "rydberg":
        return bench_rydberg.simulate_fn(n, nt, ns, dt)
    if model == "tavis_cummings":
        return bench_tavis_cummings.simulate_fn(n, nt, ns, dt)
    G, J = bench_chain.chain_couplings(n)
    return bench_chain.simulate_fn(bench_chain.chain_model(G, J), 1.0, n, nt, ns, dt)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=DEFAULT)
    ap.add_argument("--n-steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--x64", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    ns, dt = args.n_steps, 0.01
    print(f"layouts, {ns} steps, {'float64' if args.x64 else 'float32'}; {machine_name()}")
    rows = []
    for case in args.cases.split(","):
        model, n, nt = case.split(":")
        n, nt = int(n), int(nt)
        fns, first = {}, {}
        for layout in _plan.LAYOUTS:
            f = sim_fn(model, n, nt, ns, dt)

            def call(f=f, layout=layout):
                _plan.LAYOUT = layout
                try:
                    return f(0).mean["sz"].block_until_ready()
                finally:
                    _plan.LAYOUT = None

            t0 = time.perf_counter()
            call()
            first[layout] = time.perf_counter() - t0
            fns[layout] = call
        times = measure(fns, args.repeats)
        row = {"model": model, "n_spins": n, "n_traj": nt, "n_steps": ns, "load": os.getloadavg()[0],
               "backend": jax.default_backend()}
        for layout in fns:
            row[f"{layout}_spin_steps_per_s"] = nt * n * ns / times[layout]["wall_min"]
            row[f"{layout}_first_call_s"] = first[layout]
        row["last_over_first"] = row["batch_last_spin_steps_per_s"] / row["batch_first_spin_steps_per_s"]
        sites = n + (model == "tavis_cummings")
        big = nt >= _plan.LANES_MIN_BATCH and sites * nt >= _plan.LANES_MIN_WORK  # the plan's size rule
        row["auto"] = "batch_last" if big else "batch_first"
        rows.append(row)
        print(f"{model:15s} N={n:5d} x {nt:6d}: batch_first {row['batch_first_spin_steps_per_s']:.3e}, batch_last "
              f"{row['batch_last_spin_steps_per_s']:.3e} ({row['last_over_first']:.2f}x); first call "
              f"{first['batch_first']:.1f} / {first['batch_last']:.1f} s; auto: {row['auto']}; load {row['load']:.1f}")
    write_json({"benchmark": "bench_layout", "machine": machine_name(), "twa_jax": tw.__version__,
                "argv": sys.argv[1:], "rows": rows}, args.out)


if __name__ == "__main__":
    main()
