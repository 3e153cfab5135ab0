"""What time dependence costs: the same model constant and time-dependent, in one process.

N spins with a drive and a dense dissipation matrix Gamma_0 (exponentially decaying correlations,
full rank), 100 steps of a fixed dt, timed round-robin (minimum of the repeats):

* ``constant``: H = Omega/2 sum s^x, L_i = sigma^-_i, Gamma_0;
* ``drive(t)``: the same with Omega(t) = Omega (1 + sin t / 2) (only a scalar of H depends on time);
* ``gamma(t)``: Gamma(t) = r(t) Gamma_0 as a function of time (factored at every stage, O(K^3));
* ``jumps(t)``: the same master equation with sqrt(r(t)) in the jump operators and Gamma_0
  constant (the cheap path ``docs/conventions.md`` recommends);
* ``2 pulses``, ``8 pulses``: the constant model with instantaneous rotations of every spin
  (``tw.Pulse``): two at t = 0.5 (about x and y), and eight at t = 0.1 .. 0.8.

The final <sigma^z> of ``gamma(t)`` and ``jumps(t)`` agree within their standard errors (the same
master equation). Usage: ``python benchmarks/bench_protocol.py [--n-spins 10] [--n-traj 10000]
[--out FILE]``.
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


def models(N):
    idx = np.arange(N)
    G0 = jnp.asarray(np.exp(-np.abs(idx[:, None] - idx[None, :]) / 2.0))
    om = 2.0

    def sm(s):
        return (s[:, 0] - 1j * s[:, 1]) / 2

    def r(t):
        return 0.5 * (1.0 + 0.5 * jnp.sin(t))

    return {
        "constant": tw.Model(lambda s, a, p: 0.5 * om * s[:, 0].sum(), jumps=lambda s, a, p: sm(s), gamma=G0 * 0.5,
                             n_spins=N),
        "drive(t)": tw.Model(lambda s, a, p, t: 0.5 * om * (1 + 0.5 * jnp.sin(t)) * s[:, 0].sum(),
                             jumps=lambda s, a, p, t: sm(s), gamma=G0 * 0.5, n_spins=N, time_dependent=True),
        "gamma(t)": tw.Model(lambda s, a, p, t: 0.5 * om * s[:, 0].sum(), jumps=lambda s, a, p, t: sm(s),
                             gamma=lambda p, t: r(t) * G0, n_spins=N, time_dependent=True),
        "jumps(t)": tw.Model(lambda s, a, p, t: 0.5 * om * s[:, 0].sum(), jumps=lambda s, a, p, t: jnp.sqrt(r(t)) * sm(s),
                             gamma=G0, n_spins=N, time_dependent=True),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-spins", type=int, default=10)
    ap.add_argument("--n-traj", type=int, default=10_000)
    ap.add_argument("--n-steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    N, n_traj = args.n_spins, args.n_traj
    ts = np.linspace(0, 1, 11)
    dt = 1.0 / args.n_steps
    init = tw.states.spins_down(N)
    ms = {name: (m, {}) for name, m in models(N).items()}
    jx = lambda s, a, p: tw.weyl.collective(s, "x")  # noqa: E731
    jy = lambda s, a, p: tw.weyl.collective(s, "y")  # noqa: E731
    ms["2 pulses"] = (ms["constant"][0], dict(pulses=[tw.Pulse(0.5, jx, np.pi / 2), tw.Pulse(0.5, jy, np.pi / 4)]))
    ms["8 pulses"] = (ms["constant"][0], dict(pulses=[tw.Pulse(0.1 * k, jx, 0.2) for k in range(1, 9)]))
    first, times, final = {}, {k: [] for k in ms}, {}
    for name, (m, extra) in ms.items():
        t0 = time.perf_counter()
        res = tw.simulate(m, init, ts, n_traj=n_traj, key=0, dt=dt, progress=False, **extra)
        jax.block_until_ready(res.mean["sz"])
        first[name] = time.perf_counter() - t0
        final[name] = (float(res.mean["sz"][-1]), float(res.sem["sz"][-1]))
    for _ in range(args.repeats):
        for name, (m, extra) in ms.items():
            t0 = time.perf_counter()
            res = tw.simulate(m, init, ts, n_traj=n_traj, key=0, dt=dt, progress=False, **extra)
            jax.block_until_ready(res.mean["sz"])
            times[name].append(time.perf_counter() - t0)
    base = min(times["constant"])
    rows = []
    print(f"N = {N}, {n_traj} trajectories, {args.n_steps} steps; {jax.devices()[0].device_kind} "
          f"x{len(jax.devices())}, {os.cpu_count()} cores, jax {jax.__version__}")
    print(f"{'model':<10} {'time (s)':>9} {'vs constant':>12} {'first call (s)':>15} {'final sz':>18}")
    for name in ms:
        best = min(times[name])
        rows.append(dict(model=name, time_s=best, ratio=best / base, first_call_s=first[name],
                         final_sz=final[name][0], final_sz_sem=final[name][1]))
        print(f"{name:<10} {best:9.3f} {best / base:12.2f} {first[name]:15.2f} "
              f"{final[name][0]:10.4f} +- {final[name][1]:.4f}")
    if args.out:
        meta = dict(benchmark="bench_protocol", machine=f"{jax.devices()[0].platform}:{jax.devices()[0].device_kind} "
                    f"x{len(jax.devices())}; host {platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                    jax=jax.__version__, twa_jax=tw.__version__, n_spins=N, n_traj=n_traj, n_steps=args.n_steps,
                    dtype=str(jnp.zeros(()).dtype), rows=rows)
        with open(args.out, "w") as f:
            json.dump(meta, f, indent=1)


if __name__ == "__main__":
    main()
