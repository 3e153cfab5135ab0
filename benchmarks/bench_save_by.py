"""How a solve saves at its save times: diffrax's save loop against a scan over the save intervals.

    python benchmarks/bench_save_by.py [--cases 1000:400,10000:100,256:200] [--repeats 7] [--out FILE]

`twa_jax._plan.SAVE_BY` picks how a solve records the save times: ``"loop"`` (one diffrax solve
with ``SaveAt(ts)``, which checks in a nested loop of every step whether a save time was reached)
or ``"intervals"`` (a ``lax.scan`` over the save intervals, one diffrax solve of each, saving its
end). Both give the same numbers. This script times `tw.simulate` with each, interleaved in one
process (minimum over ``--repeats`` calls after one compiling call each), on the open Rydberg
chain N = 10 of `bench_rydberg.py` with 11 save times and dt = 0.01, for each case
``n_traj:n_steps``, on the default devices (``TWA_JAX_CPU_DEVICES=1`` for one CPU device).
Prints the ratio (loop time / intervals time: > 1 means the intervals are faster) and writes JSON.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_chain import machine_name, write_json  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-spins", type=int, default=10)
    ap.add_argument("--cases", default="1000:400,10000:100,256:200", help="n_traj:n_steps, comma-separated")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp

    import bench_rydberg
    import twa_jax as tw
    from twa_jax import _plan

    n = args.n_spins
    model = bench_rydberg.rydberg_model(n)
    obs = {"sz": lambda s, a: jnp.mean(s[:, 2])}
    res = {"benchmark": "bench_save_by", "model": f"rydberg chain N={n} (bench_rydberg.py), 11 save times, dt=0.01",
           "machine": machine_name(), "jax": jax.__version__, "twa_jax": tw.__version__,
           "repeats": args.repeats, "rows": []}
    print(res["machine"])
    default = _plan.SAVE_BY
    try:
        for case in args.cases.split(","):
            nt, ns = (int(x) for x in case.split(":"))
            ts = np.linspace(0.0, ns * 0.01, 11)

            def call(how):
                _plan.SAVE_BY = how
                r = tw.simulate(model, tw.states.spins_down(n), ts, n_traj=nt, key=0, params=bench_rydberg.P,
                                dt=0.01, observables=obs)
                return r.mean["sz"].block_until_ready()

            hows = ("loop", "intervals")
            first = {h: np.asarray(call(h)) for h in hows}
            walls = {h: [] for h in hows}
            for _ in range(args.repeats):
                for h in hows:
                    t = time.perf_counter()
                    call(h)
                    walls[h].append(time.perf_counter() - t)
            row = {"n_traj": nt, "n_steps": ns, "walls_s": walls,
                   "loop_min_s": min(walls["loop"]), "intervals_min_s": min(walls["intervals"]),
                   "loop_over_intervals": min(walls["loop"]) / min(walls["intervals"]),
                   "max_abs_diff_sz": float(np.max(np.abs(first["loop"] - first["intervals"])))}
            res["rows"].append(row)
            print(f"{nt} x {ns} steps: loop {1e3 * row['loop_min_s']:.1f} ms, intervals "
                  f"{1e3 * row['intervals_min_s']:.1f} ms, loop / intervals {row['loop_over_intervals']:.3f} "
                  f"(|diff sz| {row['max_abs_diff_sz']:.1e})", flush=True)
    finally:
        _plan.SAVE_BY = default
    write_json(res, args.out)
    return res


if __name__ == "__main__":
    main()
