"""Experiment: the package's step with the trajectories on the last (vector) axis, through the
batch-last jaxpr interpreter (``twa_jax/_lanes.py``), against the same step ``vmap``-ed
(batch first, as the engine runs it), ``tw.simulate`` and the lanes kernel of ``bench_small.py``.

    python benchmarks/exp_lanes_interpreter.py [--models rydberg,tavis_cummings] [--sizes 10] [--n-traj 10000]

The two ``scan_*`` contenders are one ``lax.scan`` over the steps of the package's own pieces
(``generator_and_jumps`` of the user's model, the counter-based noise, the rotation Heun), the
only difference being the layout: ``scan_vmap`` state ``(n_traj, 3, N)`` with the bracket
``vmap``-ed, ``scan_lanes`` state ``(3, N, n_traj)`` with the bracket's jaxpr evaluated batch last.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import twa_jax as tw  # noqa: F401

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_rydberg  # noqa: E402
import bench_small  # noqa: E402
import bench_tavis_cummings  # noqa: E402
from bench_chain import machine_name, measure  # noqa: E402

from twa_jax._brackets import SERIES_MAX_TH2, _exact_coefficients, _series, generator_and_jumps, rotate  # noqa: E402
from twa_jax._lanes import batch_last_call  # noqa: E402
from twa_jax._random import complex_normals, step_key  # noqa: E402


def rotate_last(s, th):
    """The package's rotation with the components on axis 0 (``(3, N, n_traj)``)."""
    def cross(u, v):
        return jnp.stack([u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0]])

    th2 = th[0] * th[0] + th[1] * th[1] + th[2] * th[2]
    limit, terms = SERIES_MAX_TH2[jnp.dtype(th2.dtype).itemsize]
    c1, c2 = jax.lax.cond(jnp.max(th2) <= limit, lambda x: (_series(x, terms, 1), 0.5 * _series(x, terms, 2)),
                          _exact_coefficients, th2)
    t = cross(th, s)
    return s + c1 * t + c2 * cross(th, t)


def scan_fn(model, params, n, nt, ns, dt, layout):
    from twa_jax._noise import decompose

    noise = decompose(model.gamma_of(params))
    dtype = jnp.zeros(()).dtype
    m = model.n_bosons

    def one(y1, dW1, params, noise, t, h):
        def phi(L):
            return 0.5 * (noise.apply_gamma(L) * h + noise.xi(dW1))

        return generator_and_jumps(model, y1, phi, params, h, t)

    def gen(y, dW, t, h):
        if layout == "vmap":
            return jax.vmap(one, in_axes=(0, 0, None, None, None, None))(y, dW, params, noise, t, h)
        return batch_last_call(one, (y, dW, params, noise, t, h), (True, True, False, False, False, False), nt)

    rot = rotate if layout == "vmap" else rotate_last

    @jax.jit
    def run(key):
        k0, kn = jax.random.split(key)
        r = jax.random.rademacher(k0, (nt, n, 2), dtype)
        s = jnp.concatenate([r, jnp.full((nt, n, 1), 1.0, dtype)], -1)
        y = (jnp.swapaxes(s, -1, -2), jnp.zeros((nt, 2, m), dtype))
        if layout == "lanes":
            y = jax.tree_util.tree_map(lambda x: jnp.moveaxis(x, 0, -1), y)
        idx = jnp.arange(nt)
        h = jnp.asarray(dt, dtype)

        def step(y, j):
            z = complex_normals(step_key(kn, j), idx, noise.n_channels, dtype)  # (nt, K')
            if layout == "lanes":
                z = z.T
            z = jax.lax.optimization_barrier(z * jnp.sqrt(h))
            t = j * h
            s0, b0 = y
            g0 = gen(y, z, t, h)
            g1 = gen((rot(s0, g0[0]), b0 + g0[1]), z, t + h, h)
            om, vb = 0.5 * (g0[0] + g1[0]), 0.5 * (g0[1] + g1[1])
            y = (rot(s0, om), b0 + vb)
            sz = y[0][..., 2, :, :] if layout == "lanes" else y[0][:, 2]
            return y, jnp.mean(sz)

        return jax.lax.scan(step, y, jnp.arange(ns))[1]

    return run


def model_of(name, n):
    """The Model of bench_small's ``rydberg`` / ``tavis_cummings`` and its params."""
    import twa_jax as tw

    if name == "rydberg":
        P = bench_rydberg.P

        def H(s, a, p):
            n_up = 1 + s[:, 2]
            return (p["Omega"] * jnp.sum(s[:, 0]) - p["Delta"] / 2 * jnp.sum(s[:, 2])
                    + p["V"] / 4 * jnp.sum(n_up[:-1] * n_up[1:]))

        return tw.Model(H, jumps=lambda s, a, p: (s[:, 0] - 1j * s[:, 1]) / 2,
                        gamma=lambda p: jnp.full(n, p["gamma"]), n_spins=n), P
    P = bench_tavis_cummings.P

    def H(s, a, p):
        sm = (s[:, 0] - 1j * s[:, 1]) / 2
        return (p["omega"] * jnp.abs(a[0]) ** 2 + p["eps"] / 2 * jnp.sum(s[:, 2])
                + p["g"] / jnp.sqrt(n) * 2 * jnp.real(jnp.conj(a[0]) * jnp.sum(sm)))

    return tw.Model(H, jumps=lambda s, a, p: jnp.concatenate([a, (s[:, 0] - 1j * s[:, 1]) / 2]),
                    gamma=lambda p: jnp.concatenate([jnp.array([p["kappa"]]), jnp.full(n, p["gamma"])]),
                    n_spins=n, n_bosons=1), P


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="rydberg")
    ap.add_argument("--sizes", default="10")
    ap.add_argument("--n-traj", type=int, default=10_000)
    ap.add_argument("--n-steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", default=None)
    args = ap.parse_args(argv)
    nt, ns, dt = args.n_traj, args.n_steps, 0.01
    print(f"{nt} trajectories, {ns} steps; {machine_name()}; load {os.getloadavg()}")
    for name in args.models.split(","):
        for n in (int(x) for x in args.sizes.split(",")):
            model, P = model_of(name, n)
            params = {k: jnp.asarray(v) for k, v in P.items()}
            cont = bench_small.contenders_for(name, n, nt, ns, dt, np.float32, True, ["simulate", "lanes"])
            fns = {k: f for k, (f, _) in cont.items()}
            for layout in ("vmap", "lanes"):
                run = scan_fn(model, params, n, nt, ns, dt, layout)
                fns[f"scan_{layout}"] = (lambda run=run: run(jax.random.key(0)).block_until_ready())
            if args.only:
                fns = {k: v for k, v in fns.items() if k in args.only.split(",")}
            first = {}
            for k, f in fns.items():
                t0 = time.perf_counter()
                f()
                first[k] = time.perf_counter() - t0
            times = measure(fns, args.repeats)
            rate = {k: nt * n * ns / v["wall_min"] for k, v in times.items()}
            print(f"{name} N={n}: " + ", ".join(f"{k} {v:.3e} (first {first[k]:.1f} s)" for k, v in rate.items()))
            if "lanes" in rate:
                print("   relative to the lanes kernel: " + ", ".join(f"{k} {v / rate['lanes']:.2f}" for k, v in rate.items()))
            print(f"   load {os.getloadavg()}")


if __name__ == "__main__":
    main()
