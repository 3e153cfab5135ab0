"""Throughput of `tw.simulate` on the Tavis-Cummings model (N spins + one cavity mode, collective
coupling, cavity loss and local spin decay), against a hand-written fused `lax.scan` and
vectorized NumPy of the same equations and algorithm (rotation Heun for the spins, Heun for the
mode, diagonal Gamma: N + 1 noise channels).

    python benchmarks/bench_tavis_cummings.py --n-spins 10000 --n-traj 100 --n-steps 100 [--x64] [--out FILE]

H = omega |a|^2 + (eps/2) sum_i s^z_i + (g/sqrt(N)) sum_i (a s^+_i + a^* s^-_i), L = (a, sigma^-_i)
with rates (kappa, gamma); all spins up, cavity in vacuum, discrete spin sampling; omega = eps =
0, g = 1, kappa = 1, gamma = 0.1, dt = 0.01. Same output format as bench_chain.py.
"""

from __future__ import annotations

import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_chain import _rotate_np, machine_name, parse_throughput_args, run_benchmark, three_contenders  # noqa: E402

P = dict(omega=0.0, eps=0.0, g=1.0, kappa=1.0, gamma=0.1)


def _increments(xp, sx, sy, b, zs, zb, dt, n):
    """Spin rotation vector components ``(tx, ty, tz)`` (each ``(..., N)``) and the cavity
    increment ``(dar, dai)`` over one step.

    b: ``(ar, ai)``; zs: (2, ..., N) real/imag spin noise, zb: (2, ...) cavity noise, each of variance dt."""
    g, k, gm = P["g"] / np.sqrt(n), P["kappa"], P["gamma"]
    ar, ai = b
    # Phi = (gamma L dt + sqrt(gamma) dW) / 2 for L_i = (s^x - i s^y)/2 and L_a = a
    ph_r = 0.5 * (gm * sx / 2 * dt + np.sqrt(gm) * zs[0])
    ph_i = 0.5 * (-gm * sy / 2 * dt + np.sqrt(gm) * zs[1])
    pa_r = 0.5 * (k * ar * dt + np.sqrt(k) * zb[0])
    pa_i = 0.5 * (k * ai * dt + np.sqrt(k) * zb[1])
    tx = 2 * (dt * g * ar[..., None] + ph_i)
    ty = 2 * (-dt * g * ai[..., None] + ph_r)
    tz = 2 * dt * P["eps"] / 2 * xp.ones_like(tx)
    Sx, Sy = sx.sum(-1), sy.sum(-1)
    gx = dt * (2 * P["omega"] * ar + g * Sx) + 2 * pa_i
    gy = dt * (2 * P["omega"] * ai - g * Sy) - 2 * pa_r
    return (tx, ty, tz), (gy / 2, -gx / 2)


def numpy_run(n, n_traj, n_steps, dt, dtype, seed=0):
    """Vectorized NumPy, spins ``(3, n_traj, N)``, mode ``(2, n_traj)``."""
    rng = np.random.default_rng(seed)
    s = np.empty((3, n_traj, n), dtype)
    s[:2] = rng.choice(np.array([-1.0, 1.0], dtype), size=(2, n_traj, n))
    s[2] = 1.0
    b = (0.5 * rng.standard_normal((2, n_traj))).astype(dtype)

    def inc(s, b, zs, zb):
        t, v = _increments(np, s[0], s[1], b, zs, zb, dt, n)
        return np.stack(t), np.stack(v)

    sz = []
    for _ in range(n_steps):
        zs = rng.standard_normal((2, n_traj, n)).astype(dtype) * np.sqrt(dt).astype(dtype)
        zb = rng.standard_normal((2, n_traj)).astype(dtype) * np.sqrt(dt).astype(dtype)
        t0, v0 = inc(s, b, zs, zb)
        t1, v1 = inc(_rotate_np(s, t0), b + v0, zs, zb)
        s, b = _rotate_np(s, 0.5 * (t0 + t1)), b + 0.5 * (v0 + v1)
        sz.append(s[2].mean())
    return np.array(sz)


def scan_run(n, n_traj, n_steps, dt):
    """Hand-written fused scan, spins ``(n_traj, 3, N)``, mode ``(n_traj, 2)``, one key per step."""
    import jax.numpy as jnp

    from twa_jax._brackets import rotate

    dtype = jnp.zeros(()).dtype

    def inc(s, b, zs, zb):
        t, v = _increments(jnp, s[:, 0], s[:, 1], (b[:, 0], b[:, 1]), zs, zb, dt, n)
        return jnp.stack(t, 1), jnp.stack(v, 1)

    @jax.jit
    def run(key):
        k0, k1, kn = jax.random.split(key, 3)
        r = jax.random.rademacher(k0, (n_traj, 2, n), dtype)
        s = jnp.concatenate([r, jnp.ones((n_traj, 1, n), dtype)], 1)
        b = 0.5 * jax.random.normal(k1, (n_traj, 2), dtype)

        def step(c, k):
            s, b = c
            z = jax.random.normal(k, (2, n_traj, n + 1), dtype) * jnp.sqrt(dt)
            zs, zb = z[..., :n], z[..., n]
            t0, v0 = inc(s, b, zs, zb)
            t1, v1 = inc(rotate(s, t0), b + v0, zs, zb)
            s, b = rotate(s, 0.5 * (t0 + t1)), b + 0.5 * (v0 + v1)
            return (s, b), s[:, 2].mean()

        return jax.lax.scan(step, (s, b), jax.random.split(kn, n_steps))[1]

    return run


def simulate_fn(n, n_traj, n_steps, dt):
    import jax.numpy as jnp

    import twa_jax as tw

    def H(s, a, p):
        sm = (s[:, 0] - 1j * s[:, 1]) / 2
        return (p["omega"] * jnp.abs(a[0]) ** 2 + p["eps"] / 2 * jnp.sum(s[:, 2])
                + p["g"] / jnp.sqrt(n) * 2 * jnp.real(jnp.conj(a[0]) * jnp.sum(sm)))

    model = tw.Model(
        H,
        jumps=lambda s, a, p: jnp.concatenate([a, (s[:, 0] - 1j * s[:, 1]) / 2]),
        gamma=lambda p: jnp.concatenate([jnp.array([p["kappa"]]), jnp.full(n, p["gamma"])]),
        n_spins=n,
        n_bosons=1,
    )
    init = tw.states.product(spins=tw.states.spins_up(n), bosons=tw.states.vacuum(1))
    ts = np.array([0.0, n_steps * dt])
    obs = {"sz": lambda s, a: jnp.mean(s[:, 2])}

    def run(key):
        return tw.simulate(model, init, ts, n_traj=n_traj, key=key, params=P, dt=dt, observables=obs)

    return run


def main(argv=None):
    args = parse_throughput_args(__doc__, argv, 10_000, 100, 100)
    n, nt, ns, dt = args.n_spins, args.n_traj, args.n_steps, 0.01
    dtype = "float64" if args.x64 else "float32"
    res = {"model": "tavis_cummings", "n_spins": n, "n_bosons": 1, "n_traj": nt, "n_steps": ns, "dtype": dtype,
           "noise_channels": n + 1, "params": P}
    sim = simulate_fn(n, nt, ns, dt)
    scan = None if args.skip_scan else scan_run(n, nt, ns, dt)
    npd = np.float64 if args.x64 else np.float32
    contenders, finals = three_contenders(sim, scan, None if args.skip_numpy else (lambda: numpy_run(n, nt, ns, dt, npd)))
    title = f"Tavis-Cummings N={n} + 1 mode, {nt} trajectories, {ns} steps, {dtype}; {machine_name()}"
    run_benchmark(title, res, nt * n * ns, contenders, finals, args.repeats, args.out)


if __name__ == "__main__":
    main()
