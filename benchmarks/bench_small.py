"""Small systems: `tw.simulate` against a hand-written kernel with the trajectories on the vector
lanes and against vectorized NumPy, at the paper's sizes (N = 4..30 x 1e4 trajectories).

    python benchmarks/bench_small.py [--models rydberg,tavis_cummings,chain] [--sizes 4,10,15,30]
                                     [--n-traj 10000] [--n-steps 100] [--x64] [--out FILE]

Three models, each integrated by all contenders with the same equations and the same scheme
(rotation Heun for the spins, Heun for the mode, Stratonovich noise, fixed dt = 0.01):

* ``rydberg``: the open driven Rydberg chain of ``bench_rydberg.py`` (local decay, N channels);
* ``tavis_cummings``: N spins + one lossy mode of ``bench_tavis_cummings.py`` (N + 1 channels);
* ``chain``: the correlated-decay dipole chain of ``bench_chain.py`` (paper Eq. 56, dense Gamma
  and J, a = lambda/5), the user's plain jnp model.

The kernel (``lanes``) is the baseline the package is measured against: state ``(3, N, n_traj)``
(components, sites, trajectories on the minor axis), a ``lax.scan`` over steps, one
``jax.random.normal`` call per step for the whole batch, the package's rotation coefficients. Each size
prints the throughput (spin-steps/s), the first call (compilation included) and the ratios,
measured round-robin in one process; ``--out`` writes all rows to one JSON.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import twa_jax  # noqa: F401  (first, as users do: its XLA workaround flag applies; TWA_JAX_NO_XLA_WORKAROUND=1 measures without it)

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_chain  # noqa: E402
import bench_rydberg  # noqa: E402
import bench_tavis_cummings  # noqa: E402
from bench_chain import machine_name, measure, write_json  # noqa: E402


# --------------------------------------------------------------------------- lane kernels
def _scan(init, increments, n_steps, n_noise, n_traj, dt):
    """Rotation Heun over ``n_steps`` in ``lax.scan``; ``increments(s, b, z) -> (theta, vb)`` with
    ``s (3, N, T)``, ``b (2, T)`` and ``z (2, n_noise, T)`` of variance ``dt``."""
    import jax.numpy as jnp

    from twa_jax._brackets import SERIES_MAX_TH2, _exact_coefficients, _series

    def cross(u, v):
        return jnp.stack([u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0]])

    def rot(s, th):  # the package's rotation (series when every angle is small), components first
        th2 = th[0] * th[0] + th[1] * th[1] + th[2] * th[2]
        limit, terms = SERIES_MAX_TH2[jnp.dtype(th2.dtype).itemsize]
        c1, c2 = jax.lax.cond(jnp.max(th2) <= limit, lambda x: (_series(x, terms, 1), 0.5 * _series(x, terms, 2)),
                              _exact_coefficients, th2)
        t = cross(th, s)
        return s + c1 * t + c2 * cross(th, t)

    @jax.jit
    def run(key):
        k0, kn = jax.random.split(key)
        s, b = init(k0)

        def step(c, k):
            s, b = c
            z = jax.random.normal(k, (2, n_noise, n_traj), s.dtype) * jnp.sqrt(dt).astype(s.dtype)
            t0, v0 = increments(s, b, z)
            t1, v1 = increments(rot(s, t0), b + v0, z)
            s, b = rot(s, 0.5 * (t0 + t1)), b + 0.5 * (v0 + v1)
            return (s, b), s[2].mean()

        return jax.lax.scan(step, (s, b), jax.random.split(kn, n_steps))[1]

    return run


def _spins(key, n, n_traj, sz, dtype):
    import jax.numpy as jnp

    r = jax.random.rademacher(key, (2, n, n_traj), dtype)
    return jnp.concatenate([r, jnp.full((1, n, n_traj), sz, dtype)], 0)


def rydberg_lanes(n, n_traj, n_steps, dt):
    import jax.numpy as jnp

    p = bench_rydberg.P
    dtype = jnp.zeros(()).dtype

    def init(k):
        return _spins(k, n, n_traj, -1.0, dtype), jnp.zeros((2, n_traj), dtype)

    def inc(s, b, z):
        sx, sy, sz = s
        up = 1 + sz
        nb = jnp.pad(up[1:], ((0, 1), (0, 0))) + jnp.pad(up[:-1], ((1, 0), (0, 0)))
        g = p["gamma"]
        ph_r = 0.5 * (g * sx / 2 * dt + np.sqrt(g) * z[0])
        ph_i = 0.5 * (-g * sy / 2 * dt + np.sqrt(g) * z[1])
        th = jnp.stack([2 * (dt * p["Omega"] + ph_i), 2 * ph_r, 2 * dt * (-p["Delta"] / 2 + p["V"] / 4 * nb)])
        return th, jnp.zeros_like(b)

    return _scan(init, inc, n_steps, n, n_traj, dt)


def tavis_cummings_lanes(n, n_traj, n_steps, dt):
    import jax.numpy as jnp

    p = bench_tavis_cummings.P
    dtype = jnp.zeros(()).dtype
    g, k, gm = p["g"] / np.sqrt(n), p["kappa"], p["gamma"]

    def init(key):
        k0, k1 = jax.random.split(key)
        return _spins(k0, n, n_traj, 1.0, dtype), 0.5 * jax.random.normal(k1, (2, n_traj), dtype)

    def inc(s, b, z):
        sx, sy, _ = s
        ar, ai = b
        zs, zb = z[:, :n], z[:, n]
        ph_r = 0.5 * (gm * sx / 2 * dt + np.sqrt(gm) * zs[0])
        ph_i = 0.5 * (-gm * sy / 2 * dt + np.sqrt(gm) * zs[1])
        pa_r = 0.5 * (k * ar * dt + np.sqrt(k) * zb[0])
        pa_i = 0.5 * (k * ai * dt + np.sqrt(k) * zb[1])
        tx = 2 * (dt * g * ar + ph_i)
        ty = 2 * (-dt * g * ai + ph_r)
        tz = jnp.full_like(tx, 2 * dt * p["eps"] / 2)
        gx = dt * (2 * p["omega"] * ar + g * sx.sum(0)) + 2 * pa_i
        gy = dt * (2 * p["omega"] * ai - g * sy.sum(0)) - 2 * pa_r
        return jnp.stack([tx, ty, tz]), jnp.stack([gy / 2, -gx / 2])

    return _scan(init, inc, n_steps, n + 1, n_traj, dt)


def chain_lanes(G, J, B, Omega, n_traj, n_steps, dt):
    import jax.numpy as jnp

    dtype = jnp.zeros(()).dtype
    n, kp = G.shape[0], B.shape[1]
    G, J, B = (jnp.asarray(x, dtype) for x in (G, J, B))

    def init(k):
        return _spins(k, n, n_traj, 1.0, dtype), jnp.zeros((2, n_traj), dtype)

    def inc(s, b, z):
        sx, sy, _ = s
        xr, xi = B @ z[0], B @ z[1]
        tx = dt * (2 * Omega + J @ sx) - 0.5 * dt * (G @ sy) + xi
        ty = dt * (J @ sy) + 0.5 * dt * (G @ sx) + xr
        return jnp.stack([tx, ty, jnp.zeros_like(tx)]), jnp.zeros_like(b)

    return _scan(init, inc, n_steps, kp, n_traj, dt)


# --------------------------------------------------------------------------- the table
def contenders_for(model, n, nt, ns, dt, npd, skip_numpy, only=None):
    """``{name: (timed call, final <s^z> of its output)}`` for one model and size."""
    want = lambda name: only is None or name in only  # noqa: E731
    if model == "rydberg":
        sim = bench_rydberg.simulate_fn(n, nt, ns, dt)
        lanes = want("lanes") and rydberg_lanes(n, nt, ns, dt)
        numpy = lambda: bench_rydberg.numpy_run(n, nt, ns, dt, npd)  # noqa: E731
    elif model == "tavis_cummings":
        sim = bench_tavis_cummings.simulate_fn(n, nt, ns, dt)
        lanes = want("lanes") and tavis_cummings_lanes(n, nt, ns, dt)
        numpy = lambda: bench_tavis_cummings.numpy_run(n, nt, ns, dt, npd)  # noqa: E731
    elif model == "chain":
        from twa_jax._noise import decompose

        G, J = bench_chain.chain_couplings(n)
        B = np.asarray(decompose(G).factor)
        sim = bench_chain.simulate_fn(bench_chain.chain_model(G, J), 1.0, n, nt, ns, dt)
        lanes = want("lanes") and chain_lanes(G, J, B, 1.0, nt, ns, dt)
        numpy = lambda: bench_chain.numpy_run(G, J, B, 1.0, nt, ns, dt, npd)  # noqa: E731
    else:
        raise ValueError(f"unknown model {model!r}")
    out = {"simulate": (lambda: sim(0).mean["sz"].block_until_ready(), lambda r: float(np.asarray(r)[-1])),
           "lanes": (lambda: lanes(jax.random.key(0)).block_until_ready(), lambda r: float(np.asarray(r)[-1]))}
    if not skip_numpy:
        out["numpy"] = (numpy, lambda r: float(r[-1]))
    return {k: v for k, v in out.items() if only is None or k in only}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="rydberg,tavis_cummings,chain")
    ap.add_argument("--sizes", default="4,10,15,30")
    ap.add_argument("--n-traj", type=int, default=10_000)
    ap.add_argument("--n-steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--x64", action="store_true")
    ap.add_argument("--skip-numpy", action="store_true")
    ap.add_argument("--only", default=None, help="comma-separated contenders (simulate,lanes,numpy); "
                    "'simulate' alone runs against an older checkout of the package (PYTHONPATH)")
    ap.add_argument("--no-keep-padded", action="store_true",
                    help="write every pad of the batch-last generator out as it comes (twa_jax._lanes.KEEP_PADDED "
                    "= False): the baseline of that change")
    ap.add_argument("--no-complex-parts", action="store_true",
                    help="leave complex arithmetic of the batch-last generator to XLA (twa_jax._lanes.KEEP_COMPLEX_PARTS "
                    "= False): the baseline of that change")
    ap.add_argument("--noise-by", choices=("cond", "barrier"), default=None,
                    help="how simulate keeps a step's noise from being recomputed by its consumers "
                    "(twa_jax._solvers.MATERIALIZE_NOISE; default: cond on CPU, barrier elsewhere)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    from twa_jax import _lanes, _solvers

    _solvers.MATERIALIZE_NOISE = args.noise_by

    if args.no_keep_padded:
        _lanes.KEEP_PADDED = False
    if args.no_complex_parts:
        _lanes.KEEP_COMPLEX_PARTS = False
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    dtype = "float64" if args.x64 else "float32"
    npd = np.float64 if args.x64 else np.float32
    nt, ns, dt = args.n_traj, args.n_steps, 0.01
    machine = machine_name()
    print(f"small systems, {nt} trajectories, {ns} steps, {dtype}; {machine}")
    rows = []
    for model in args.models.split(","):
        for n in (int(x) for x in args.sizes.split(",")):
            cont = contenders_for(model, n, nt, ns, dt, npd, args.skip_numpy, args.only and args.only.split(","))
            first, finals = {}, {}
            for name, (f, final) in cont.items():  # first calls: compilation included
                t0 = time.perf_counter()
                finals[name] = final(f())
                first[name] = time.perf_counter() - t0
            times = measure({name: f for name, (f, _) in cont.items()}, args.repeats)
            row = {"model": model, "n_spins": n, "n_traj": nt, "n_steps": ns, "dtype": dtype,
                   "keep_padded": not args.no_keep_padded, "complex_parts": not args.no_complex_parts,
                   "noise_by": args.noise_by or ("cond" if jax.default_backend() == "cpu" else "barrier"),
                   "backend": jax.default_backend()}
            for name in cont:
                wall = times[name]["wall_min"]
                row[f"{name}_spin_steps_per_s"] = nt * n * ns / wall
                row[f"{name}_wall_min_s"] = wall
                row[f"{name}_first_call_s"] = first[name]
                row[f"{name}_final_sz"] = finals[name]
            if "lanes" in cont:
                row["simulate_over_lanes"] = row["simulate_spin_steps_per_s"] / row["lanes_spin_steps_per_s"]
            if "numpy" in cont:
                row["simulate_over_numpy"] = row["simulate_spin_steps_per_s"] / row["numpy_spin_steps_per_s"]
            rows.append(row)
            print(f"{model:15s} N={n:3d}: simulate {row['simulate_spin_steps_per_s']:.3e} (first call "
                  f"{first['simulate']:.1f} s)"
                  + (f", lanes {row['lanes_spin_steps_per_s']:.3e} (first {first['lanes']:.1f} s), "
                     f"simulate/lanes {row['simulate_over_lanes']:.2f}" if "lanes" in cont else "")
                  + (f", simulate/numpy {row['simulate_over_numpy']:.2f}" if "numpy" in cont else "")
                  + "; final sz " + ", ".join(f"{k} {v:.4f}" for k, v in finals.items()))
    write_json({"benchmark": "bench_small", "machine": machine, "twa_jax": twa_jax.__version__,
                "twa_jax_path": os.path.dirname(twa_jax.__file__), "xla_workaround": twa_jax._xla_workaround.STATUS,
                "argv": sys.argv[1:], "rows": rows}, args.out)


if __name__ == "__main__":
    main()
