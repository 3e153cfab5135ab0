"""Accuracy per cost: error of <sigma^z>(t) against a fine-dt reference, versus dt and wall time,
for each solver ("rotation_heun", "heun"), plus the spin-length drift; justifies the default dt.

    python benchmarks/bench_accuracy.py [--model spin|chain] [--n-traj 40000] [--x64] [--out FILE]

Models: ``spin`` is the driven dissipative spin (H = Omega sigma^x, L = sigma^-, gamma/Omega = 1
by default, all down, t in [0, 10/Omega]); ``chain`` is the correlated-decay chain of the paper's
Eq. 56 (N = 16, a = lambda/5, all up, t in [0, 5/Gamma0]).

For each dt = default_dt * f (f in --factors) and each solver, ``simulate`` runs with the same key
as the reference (same initial samples; the noise differs, since it is drawn per grid step), and
we print:

* err: max over the save times of |<sz>_dt - <sz>_ref|, the reference being rotation Heun at
  dt = default_dt / 8 with the same number of trajectories;
* floor: max over the save times of sqrt(sem_dt^2 + sem_ref^2), the statistical error of that
  difference: an err below about 2-3 x floor is not resolved;
* norm drift: mean over trajectories of max_k ||s_k|^2 - 3| at the last time (Pauli spins,
  discrete sampling: exactly 0 for the exact flow), and the number of failed trajectories;
* wall time (compilation excluded, one repeat after a warm-up call).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def build(name, x64):
    import jax.numpy as jnp

    import twa_jax as tw

    if name == "spin":
        model = tw.Model(
            lambda s, a, p: p["Omega"] * jnp.sum(s[:, 0]),
            jumps=lambda s, a, p: (s[:, 0] - 1j * s[:, 1]) / 2,
            gamma=lambda p: jnp.array([p["gamma"]]),
            n_spins=1,
        )
        return model, tw.states.spins_down(1), np.linspace(0, 10, 21), {"Omega": 1.0, "gamma": 1.0}
    if name == "chain":
        from bench_chain import chain_couplings, chain_model

        n = 16
        model = chain_model(*chain_couplings(n))
        return model, tw.states.spins_up(n), np.linspace(0, 5, 11), {"Omega": 1.0}
    raise ValueError(name)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="spin", choices=("spin", "chain"))
    ap.add_argument("--n-traj", type=int, default=40_000)
    ap.add_argument("--gamma", type=float, default=1.0, help="gamma/Omega of the driven spin")
    ap.add_argument("--factors", default="0.5,1,2,4,8,16", help="dt / default dt")
    ap.add_argument("--key", type=int, default=0)
    ap.add_argument("--solvers", default="rotation_heun,heun")
    ap.add_argument("--t-max", type=float, default=None,
                    help="end time (default: the model's, 10 for the spin, 5 for the chain); for smoke tests")
    ap.add_argument("--x64", action="store_true")
    from bench_chain import _cpu_name, add_precision_arg, set_precision

    add_precision_arg(ap)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    set_precision(args)
    import jax.numpy as jnp

    import twa_jax as tw

    model, init, ts, params = build(args.model, args.x64)
    if args.model == "spin":
        params["gamma"] = args.gamma
    if args.t_max is not None:
        ts = ts * (args.t_max / ts[-1])
    n_spins = model.n_spins
    obs = {
        "sz": lambda s, a: jnp.mean(s[:, 2]),
        "norm_dev": lambda s, a: jnp.max(jnp.abs(jnp.sum(s * s, -1) - 3.0)),
    }
    # norm_dev is the classical spin length, a diagnostic of the integrator, not a quantum observable
    warnings.filterwarnings("ignore", category=tw.SameSiteWarning)
    kw = dict(n_traj=args.n_traj, key=args.key, params=params, observables=obs)
    probe = tw.simulate(model, init, ts, **{**kw, "n_traj": 2})
    dt0 = probe.dt
    dev = jax.devices()[0]
    machine = f"{dev.platform}:{dev.device_kind}; host {_cpu_name()}, {os.cpu_count()} cores"
    dtype = "float64" if args.x64 else f"float32, matmul precision {args.matmul_precision}"
    print(f"accuracy per cost: model {args.model} (N={n_spins}), {args.n_traj} trajectories, {dtype}, "
          f"default dt {dt0:.4g} (DT_SAFETY = 0.02); {machine}")

    def run(dt, solver):
        r = tw.simulate(model, init, ts, dt=dt, solver=solver, **kw)  # compile + warm-up
        t = time.perf_counter()
        r = tw.simulate(model, init, ts, dt=dt, solver=solver, **kw)
        jax.block_until_ready(r.mean)
        return r, time.perf_counter() - t

    ref, t_ref = run(dt0 / 8, "rotation_heun")
    rows = []
    print(f"reference: rotation_heun, dt = {dt0 / 8:.4g}, {ref.n_steps} steps, {t_ref:.2f} s")
    print(f"{'solver':14s} {'dt/dt0':>6s} {'dt':>8s} {'steps':>6s} {'err':>9s} {'floor':>9s} {'err/floor':>9s} "
          f"{'norm drift':>10s} {'failed':>6s} {'wall s':>7s}")
    for solver in args.solvers.split(","):
        for f in (float(x) for x in args.factors.split(",")):
            dt = dt0 * f
            try:
                with np.errstate(all="ignore"):
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        r, wall = run(dt, solver)
            except RuntimeError as e:  # every trajectory failed
                print(f"{solver:14s} {f:6.3g} {dt:8.4g}  all trajectories failed ({str(e)[:40]}...)")
                rows.append(dict(solver=solver, factor=f, dt=dt, all_failed=True))
                continue
            m, s = np.asarray(r.mean["sz"], float), np.asarray(r.sem["sz"], float)
            mr, sr = np.asarray(ref.mean["sz"], float), np.asarray(ref.sem["sz"], float)
            err = float(np.max(np.abs(m - mr)))
            floor = float(np.max(np.sqrt(s**2 + sr**2)))
            drift = float(np.asarray(r.mean["norm_dev"])[-1])
            n_failed = int(r.n_failed)
            print(f"{solver:14s} {f:6.3g} {dt:8.4g} {r.n_steps:6d} {err:9.2e} {floor:9.2e} {err / floor:9.2f} "
                  f"{drift:10.2e} {n_failed:6d} {wall:7.2f}")
            rows.append(dict(solver=solver, factor=f, dt=dt, n_steps=r.n_steps, err=err, floor=floor,
                             norm_drift=drift, n_failed=n_failed, wall_s=wall))
    res = dict(model=args.model, n_spins=n_spins, n_traj=args.n_traj, dtype=dtype, params=params,
               t_max=float(ts[-1]), default_dt=dt0, ref_dt=dt0 / 8, ref_wall_s=t_ref, machine=machine,
               jax=jax.__version__, platform=platform.platform(), rows=rows)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as fh:
            json.dump(res, fh, indent=1)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
