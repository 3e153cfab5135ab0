"""Which changes of a `tw.simulate` call reuse the compiled program, and what a call costs then.

    python benchmarks/bench_reuse.py [--n 6] [--n-traj 1000] [--out FILE]

Model: `tw.models.rydberg_chain(N, boundary="open", gamma_down=0.2)`, all spins down, default
`dt` (from the model's rates), `ts = linspace(0, 2, 11)`. One process, calls in this order, each
timed (wall, `block_until_ready`), with the number of compiled chunk programs after it (the
engine's jit cache; other small programs are not counted):

1. the first call (compiles); 2. a new key; 3. a new `Omega` whose default `dt` gives another step
count below the same power of two (the first such value, smaller or larger); 4. a new `Omega` as a `float32` scalar (not a Python float);
5. a new `Omega` that moves the step count past a power of two; 6. a new `n_traj` on the same
chunk size (`n_traj + 2`); 7. a new `n_traj` on another chunk size (`1.5 n_traj`); 8. `ts` over
twice the span, same length (twice the steps); 9. `dt` given explicitly.

Baseline: the same calls, where the program is reused, cost one run (call 2). A call that
compiles costs about the first call. Prints a table and writes JSON (`--out`).

Then the cost of the padded grid itself: Rydberg chain N = 10, 10 256 trajectories (one chunk),
100 steps, on the first device, with the grid padded to 128 steps (`_plan.PAD_GRID = True`: the
loop stops at the last save time, trip count unknown to XLA) and exact (`False`: diffrax's
`StepTo`, 100 trips known to XLA), ``--repeats`` calls of each, interleaved in this process.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_chain import machine_name, write_json  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--n-traj", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import twa_jax as tw
    from twa_jax import _engine
    from twa_jax._plan import make_plan  # the step count of a parameter value, without a run

    n, nt = args.n, args.n_traj
    model = tw.models.rydberg_chain(n, boundary="open", gamma_down=0.2)
    init, ts = tw.states.spins_down(n), np.linspace(0.0, 2.0, 11)
    omega0 = float(model.params["Omega"])

    def cache():
        return _engine._chunk._cached._cache_size()

    rows = []

    def call(what, **kw):
        t_s = kw.pop("ts", ts)
        t0 = time.perf_counter()
        r = tw.simulate(model, init, t_s, key=kw.pop("key", 0), n_traj=kw.pop("n_traj", nt), **kw)
        jax.block_until_ready(r.mean)
        wall = time.perf_counter() - t0
        rows.append({"call": what, "wall_s": wall, "programs": cache(), "n_steps": r.n_steps, "dt": r.dt,
                     "chunk_size": r.chunk_size})
        print(f"{what:<46} {wall:8.3f} s  programs {cache():2d}  steps {r.n_steps:5d}  chunk {r.chunk_size}",
              flush=True)
        return r

    first = call("first call")
    call("new key", key=1)
    # a new Omega whose step count stays below the same power of two, and one past it
    steps0 = first.n_steps
    near = far = None
    for f in np.concatenate([np.linspace(0.98, 0.5, 50), np.linspace(1.02, 3.0, 100)]):
        s = make_plan(model, init, ts, key=0, n_traj=8, params={"Omega": omega0 * f}).n_steps
        if near is None and s != steps0 and (s - 1).bit_length() == (steps0 - 1).bit_length():
            near = f
        if far is None and (s - 1).bit_length() != (steps0 - 1).bit_length():
            far = f
    if near is not None:
        call(f"new Omega = {near:.3g} x default, same octave", params={"Omega": omega0 * near})
        call("new Omega as float32", params={"Omega": np.float32(omega0 * near * 1.001)})
    if far is not None:
        call(f"new Omega = {far:.3g} x default, next octave", params={"Omega": omega0 * far})
    call(f"n_traj = {nt + 2} (same chunk size)", n_traj=nt + 2)
    call(f"n_traj = {int(1.5 * nt)} (another chunk size)", n_traj=int(1.5 * nt))
    call("ts over twice the span, same length", ts=2 * ts)
    call("dt given", dt=first.dt * 0.9)

    from twa_jax import _plan

    ryd = tw.models.rydberg_chain(10, boundary="open", gamma_down=0.2)
    init10, n_pad = tw.states.spins_down(10), 10_256

    def run_grid(pad):
        _plan.PAD_GRID = pad
        try:
            r = tw.simulate(ryd, init10, np.linspace(0, 2, 11), n_traj=n_pad, key=0, dt=0.02, chunk_size=n_pad,
                            devices=jax.devices()[:1], progress=False)
            return jax.block_until_ready(r.mean["sz"])
        finally:
            _plan.PAD_GRID = True

    same = float(np.max(np.abs(np.asarray(run_grid(True)) - np.asarray(run_grid(False)))))
    grid_times = {"padded": [], "exact": []}
    for _ in range(args.repeats):
        for name, pad in (("padded", True), ("exact", False)):
            t0 = time.perf_counter()
            run_grid(pad)
            grid_times[name].append(time.perf_counter() - t0)
    for name, t in grid_times.items():
        print(f"grid {name:<7} Rydberg N = 10 x {n_pad}, 100 steps: min {min(t):.4f} s, median {np.median(t):.4f} s")
    print(f"padded / exact (min): {min(grid_times['padded']) / min(grid_times['exact']):.3f}; "
          f"largest difference of <sz>: {same:.2g}")

    out = {"grid_padded_vs_exact": {"times_s": grid_times, "max_abs_diff_sz": same,
                                    "ratio_min": min(grid_times["padded"]) / min(grid_times["exact"])},
           "model": f"rydberg_chain({n}, boundary='open', gamma_down=0.2), spins_down, default dt",
           "n_traj": nt, "ts": "linspace(0, 2, 11)", "machine": machine_name(), "jax": jax.__version__,
           "twa_jax": tw.__version__, "calls": rows}
    if args.out:
        write_json(out, args.out)


if __name__ == "__main__":
    main()
