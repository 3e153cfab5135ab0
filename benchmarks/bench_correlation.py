"""What a two-time correlation costs against ``simulate`` of the same run, in one process.

N driven spins with local decay; ``A = sum sigma^+``, ``B = sum sigma^-`` (complex: two real kicks
per start time). Timed round-robin after a first call each (minimum of the repeats):

* ``simulate``: the same save grid (the start times and every start + lag) and the observables
  ``A`` and ``B``, no kicks;
* ``correlation``, 1 and 4 start times: the kicked run with one forward-mode tangent per kick;
* ``correlation(jacobian=True)``, 1 start time, with respect to ``Omega`` and to ``(Omega,
  gamma)``: one more tangent per parameter over the kicked run (forward over forward mode).

Usage: ``python benchmarks/bench_correlation.py [--n-spins 10] [--n-traj 2000] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import twa_jax as tw  # first: the XLA workaround is applied before JAX starts

import jax
import jax.numpy as jnp
import numpy as np

from twa_jax._plan import merge_times  # the grid tw.correlation saves on


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-spins", type=int, default=10)
    ap.add_argument("--n-traj", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    N = args.n_spins
    model = tw.Model(lambda s, a, p: 0.5 * p["Omega"] * s[:, 0].sum(), jumps=lambda s, a, p: tw.weyl.sigma_minus(s),
                     gamma=lambda p: jnp.full(N, p["gamma"]), n_spins=N, params={"Omega": 1.0, "gamma": 0.3})
    A = lambda s, a: tw.weyl.sigma_plus(s).sum()  # noqa: E731
    B = lambda s, a: tw.weyl.sigma_minus(s).sum()  # noqa: E731
    init = tw.states.spins_down(N)
    taus = np.linspace(0, 10, 101)
    kw = dict(n_traj=args.n_traj, key=0, dt=0.02, progress=False)
    runs = {}
    for n_t in (1, 4):
        ts = np.linspace(10, 13, n_t)
        save = merge_times(np.concatenate([[0.0], ts, (ts[:, None] + taus[None, :]).ravel()]))
        runs[f"simulate ({n_t} start)"] = lambda save=save: tw.simulate(model, init, save, observables={"A": A, "B": B}, **kw).mean["A"]
        runs[f"correlation ({n_t} start)"] = lambda ts=ts: tw.correlation(model, init, ts, taus, A, B, **kw).value
    ts1 = np.linspace(10, 13, 1)
    for wrt in (("Omega",), ("Omega", "gamma")):
        runs[f"jacobian {wrt}"] = lambda wrt=wrt: tw.correlation(
            model, init, ts1, taus, A, B, params={k: model.params[k] for k in wrt}, jacobian=True, **kw).jacobian
    first, times = {}, {k: [] for k in runs}
    for name, f in runs.items():
        t0 = time.perf_counter()
        jax.block_until_ready(f())
        first[name] = time.perf_counter() - t0
    for _ in range(args.repeats):
        for name, f in runs.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f())
            times[name].append(time.perf_counter() - t0)
    print(f"N = {N}, {args.n_traj} trajectories, {len(taus)} lags, dt = 0.02; {jax.devices()[0].device_kind} "
          f"x{len(jax.devices())}, {os.cpu_count()} cores, jax {jax.__version__}")
    rows = []
    for n_t in (1, 4):
        s, c = min(times[f"simulate ({n_t} start)"]), min(times[f"correlation ({n_t} start)"])
        tangents = 2 * n_t
        rows.append(dict(start_times=n_t, tangents=tangents, simulate_s=s, correlation_s=c, ratio=c / s,
                         ratio_per_tangent=(c / s - 1) / tangents,
                         first_call_simulate_s=first[f"simulate ({n_t} start)"],
                         first_call_correlation_s=first[f"correlation ({n_t} start)"]))
        print(f"{n_t} start time(s), {tangents} tangents: simulate {s:.3f} s, correlation {c:.3f} s, "
              f"ratio {c / s:.2f} ({(c / s - 1) / tangents:.2f} per tangent); first calls "
              f"{first[f'simulate ({n_t} start)']:.1f} / {first[f'correlation ({n_t} start)']:.1f} s")
    c1 = min(times["correlation (1 start)"])
    jac_rows = []
    for wrt in (("Omega",), ("Omega", "gamma")):
        j = min(times[f"jacobian {wrt}"])
        jac_rows.append(dict(start_times=1, params=list(wrt), correlation_s=c1, jacobian_s=j, ratio=j / c1,
                             first_call_s=first[f"jacobian {wrt}"]))
        print(f"jacobian with respect to {', '.join(wrt)} (1 start time): {j:.3f} s, {j / c1:.2f}x the correlation; "
              f"first call {first[f'jacobian {wrt}']:.1f} s")
    if args.out:
        meta = dict(benchmark="bench_correlation", machine=f"{jax.devices()[0].platform}:{jax.devices()[0].device_kind} "
                    f"x{len(jax.devices())}; host {platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                    jax=jax.__version__, twa_jax=tw.__version__, n_spins=N, n_traj=args.n_traj, n_lags=len(taus),
                    dtype=str(jnp.zeros(()).dtype), rows=rows, jacobian_rows=jac_rows)
        with open(args.out, "w") as f:
            json.dump(meta, f, indent=1)


if __name__ == "__main__":
    main()
