"""Experiment: what ``tw.correlation(..., jacobian=True)`` costs against the correlation itself,
in each state layout and on one or all CPU devices, and which XLA kernels take the time.

    python benchmarks/exp_correlation_jacobian.py [--n-spins 10] [--n-traj 500] [--profile] [--out FILE]

Model as ``bench_correlation.py`` (driven spins with local decay, ``A = sum sigma^+``,
``B = sum sigma^-``, 101 lags, one start time, dt = 0.02), the Jacobian with respect to
``Omega``. Each configuration (layout ``batch_first``/``batch_last`` x ``TWA_JAX_CPU_DEVICES``
1/default) runs in a process of its own, since the layout and the device count are fixed when the
package is imported; within it the correlation and the Jacobian are timed interleaved (min of the
repeats). ``--profile``: also the five XLA kernels with the most time in one Jacobian call
(``jax.profiler``), one device, batch last.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

CHILD = "_EXP_CORRELATION_JACOBIAN_CHILD"


def child(n, n_traj, repeats, profile):
    import collections

    import jax
    import jax.numpy as jnp
    import numpy as np

    import twa_jax as tw

    model = tw.Model(lambda s, a, p: 0.5 * p["Omega"] * s[:, 0].sum(), jumps=lambda s, a, p: tw.weyl.sigma_minus(s),
                     gamma=lambda p: jnp.full(n, p["gamma"]), n_spins=n, params={"Omega": 1.0, "gamma": 0.3})
    A = lambda s, a: tw.weyl.sigma_plus(s).sum()  # noqa: E731
    B = lambda s, a: tw.weyl.sigma_minus(s).sum()  # noqa: E731
    init, taus = tw.states.spins_down(n), np.linspace(0, 10, 101)
    kw = dict(n_traj=n_traj, key=0, dt=0.02, progress=False)
    runs = {"correlation": lambda: tw.correlation(model, init, [10.0], taus, A, B, **kw).value,
            "jacobian": lambda: tw.correlation(model, init, [10.0], taus, A, B, params={"Omega": 1.0},
                                               jacobian=True, **kw).jacobian["Omega"]}
    for f in runs.values():
        jax.block_until_ready(f())
    best = {k: float("inf") for k in runs}
    for _ in range(repeats):
        for k, f in runs.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f())
            best[k] = min(best[k], time.perf_counter() - t0)
    out = {"devices": len(jax.devices()), **{f"{k}_s": v for k, v in best.items()},
           "ratio": best["jacobian"] / best["correlation"]}
    if profile:
        from jax.profiler import ProfileData

        d = tempfile.mkdtemp()
        with jax.profiler.trace(d):
            jax.block_until_ready(runs["jacobian"]())
        pd = ProfileData.from_file(glob.glob(os.path.join(d, "**", "*.xplane.pb"), recursive=True)[0])
        kernels = collections.defaultdict(float)
        for plane in pd.planes:
            for line in plane.lines:
                if "XLAEigen" in line.name:  # XLA:CPU's worker threads
                    for e in line.events:
                        kernels[e.name] += e.duration_ns * 1e-9
        total = kernels.pop("ThunkExecutor::Execute", sum(kernels.values()))
        out["thread_s"] = total
        out["top_kernels"] = sorted(([k, v] for k, v in kernels.items()), key=lambda kv: -kv[1])[:5]
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-spins", type=int, default=10)
    ap.add_argument("--n-traj", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if os.environ.get(CHILD):
        child(args.n_spins, args.n_traj, args.repeats, args.profile)
        return
    rows = []
    for devices in ("1", None):
        for layout in ("batch_first", "batch_last"):
            env = {**os.environ, CHILD: "1", "TWA_JAX_LAYOUT": layout}
            if devices:
                env["TWA_JAX_CPU_DEVICES"] = devices
            argv = [sys.executable, __file__, "--n-spins", str(args.n_spins), "--n-traj", str(args.n_traj),
                    "--repeats", str(args.repeats)]
            if args.profile and devices == "1" and layout == "batch_last":
                argv.append("--profile")
            res = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
            row = {"layout": layout, **json.loads(res.stdout.strip().splitlines()[-1])}
            rows.append(row)
            print(f"{layout:12s} {row['devices']} device(s): correlation {row['correlation_s']:.3f} s, jacobian "
                  f"{row['jacobian_s']:.3f} s, {row['ratio']:.2f}x")
            for name, t in row.get("top_kernels", []):
                print(f"    {t:.3f} s of {row['thread_s']:.3f} s of XLA threads: {name}")
    if args.out:
        import platform

        with open(args.out, "w") as f:
            json.dump({"experiment": "exp_correlation_jacobian", "machine": platform.processor() or platform.machine(),
                       "cores": os.cpu_count(), "n_spins": args.n_spins, "n_traj": args.n_traj, "rows": rows}, f,
                      indent=1)


if __name__ == "__main__":
    main()
