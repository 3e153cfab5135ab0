"""Throughput of `tw.simulate` on a driven-dissipative Rydberg chain (nearest-neighbour, O(N) work
per step, memory-bound), against a hand-written fused `lax.scan` and vectorized NumPy of the same
equations and algorithm (rotation Heun, local decay, diagonal Gamma: N noise channels).

    python benchmarks/bench_rydberg.py --n-spins 10000 --n-traj 100 --n-steps 100 [--x64] [--out FILE]

H = Omega sum_i s^x_i - (Delta/2) sum_i s^z_i + (V/4) sum_i (1 + s^z_i)(1 + s^z_{i+1}) (open
chain), L_i = sigma^-_i with rate gamma; all spins down, discrete sampling, Omega = 1, Delta = 0.5,
V = 2, gamma = 0.2, dt = 0.01. Same output format as bench_chain.py.
"""

from __future__ import annotations

import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_chain import (  # noqa: E402
    _rotate_np, machine_name, parse_throughput_args, run_benchmark, three_contenders, write_json)

P = dict(Omega=1.0, Delta=0.5, V=2.0, gamma=0.2)

# Peak memory bandwidth in GB/s (vendor data sheets), keyed by substrings that must all occur in
# the lower-cased ``jax.devices()[0].device_kind``; the first match wins (specific entries first).
DEVICE_BANDWIDTH_GBS = (
    (("h100", "pcie"), 2000.0),
    (("h100", "nvl"), 3900.0),
    (("h100",), 3350.0),  # SXM5, device kind "NVIDIA H100 80GB HBM3"
    (("gh200",), 4000.0),  # 96 GB HBM3 version (the 144 GB HBM3e one: 4900; pass --bandwidth-gbs)
    (("h200",), 4800.0),
    (("a100", "pcie", "40gb"), 1555.0),
    (("a100", "pcie"), 1935.0),
    (("a100", "40gb"), 1555.0),
    (("a100",), 2039.0),
)


def device_bandwidth(given_gbs=None):
    """``(GB/s or None, where it came from)``: ``given_gbs`` if set, else the table entry for
    the first JAX device."""
    if given_gbs:
        return float(given_gbs), "--bandwidth-gbs"
    kind = jax.devices()[0].device_kind
    k = kind.lower()
    for keys, gbs in DEVICE_BANDWIDTH_GBS:
        if all(x in k for x in keys):
            return gbs, f"table entry {'+'.join(keys)} for device kind {kind!r}"
    return None, f"device kind {kind!r} not in the table; pass --bandwidth-gbs"


def _gz(xp, sz, dt):
    """dt * dH/ds^z_i for the open chain, spins along the last axis."""
    if xp is np:
        nb = np.zeros_like(sz)
        nb[..., :-1] += 1 + sz[..., 1:]
        nb[..., 1:] += 1 + sz[..., :-1]
    else:
        pad = [(0, 0)] * (sz.ndim - 1)
        nb = xp.pad(1 + sz[..., 1:], pad + [(0, 1)]) + xp.pad(1 + sz[..., :-1], pad + [(1, 0)])
    return dt * (-P["Delta"] / 2 + P["V"] / 4 * nb)


def _theta(xp, sx, sy, sz, zr, zi, dt):
    """Rotation vector components over one step; Phi = (gamma L dt + sqrt(gamma) dW) / 2 with
    L = (s^x - i s^y) / 2."""
    g = P["gamma"]
    ph_r = 0.5 * (g * sx / 2 * dt + np.sqrt(g) * zr)
    ph_i = 0.5 * (-g * sy / 2 * dt + np.sqrt(g) * zi)
    return 2 * (dt * P["Omega"] + ph_i), 2 * ph_r, 2 * _gz(xp, sz, dt)


def numpy_run(n, n_traj, n_steps, dt, dtype, seed=0):
    """Vectorized NumPy, state ``(3, n_traj, N)``."""
    rng = np.random.default_rng(seed)
    s = np.empty((3, n_traj, n), dtype)
    s[:2] = rng.choice(np.array([-1.0, 1.0], dtype), size=(2, n_traj, n))
    s[2] = -1.0

    def theta(s, zr, zi):
        return np.stack(_theta(np, s[0], s[1], s[2], zr, zi, dt))

    sz = []
    for _ in range(n_steps):
        z = rng.standard_normal((2, n_traj, n)).astype(dtype) * np.sqrt(dt).astype(dtype)
        t0 = theta(s, z[0], z[1])
        t1 = theta(_rotate_np(s, t0), z[0], z[1])
        s = _rotate_np(s, 0.5 * (t0 + t1))
        sz.append(s[2].mean())
    return np.array(sz)


def scan_run(n, n_traj, n_steps, dt):
    """Hand-written fused rotation Heun in lax.scan, state ``(n_traj, 3, N)``, one key per step."""
    import jax.numpy as jnp

    from twa_jax._brackets import rotate

    dtype = jnp.zeros(()).dtype

    def theta(s, zr, zi):
        return jnp.stack(_theta(jnp, s[:, 0], s[:, 1], s[:, 2], zr, zi, dt), 1)

    @jax.jit
    def run(key):
        k0, kn = jax.random.split(key)
        r = jax.random.rademacher(k0, (n_traj, 2, n), dtype)
        s = jnp.concatenate([r, -jnp.ones((n_traj, 1, n), dtype)], 1)

        def step(s, k):
            z = jax.random.normal(k, (2, n_traj, n), dtype) * jnp.sqrt(dt)
            t0 = theta(s, z[0], z[1])
            t1 = theta(rotate(s, t0), z[0], z[1])
            s = rotate(s, 0.5 * (t0 + t1))
            return s, s[:, 2].mean()

        return jax.lax.scan(step, s, jax.random.split(kn, n_steps))[1]

    return run


def rydberg_model(n):
    """The open driven Rydberg chain as a user writes it (plain jnp, parameters ``P``)."""
    import jax.numpy as jnp

    import twa_jax as tw

    def H(s, a, p):
        n_up = 1 + s[:, 2]
        return (p["Omega"] * jnp.sum(s[:, 0]) - p["Delta"] / 2 * jnp.sum(s[:, 2])
                + p["V"] / 4 * jnp.sum(n_up[:-1] * n_up[1:]))

    return tw.Model(H, jumps=lambda s, a, p: (s[:, 0] - 1j * s[:, 1]) / 2,
                    gamma=lambda p: jnp.full(n, p["gamma"]), n_spins=n)


def simulate_fn(n, n_traj, n_steps, dt):
    import jax.numpy as jnp

    import twa_jax as tw

    model = rydberg_model(n)
    ts = np.array([0.0, n_steps * dt])
    obs = {"sz": lambda s, a: jnp.mean(s[:, 2])}

    def run(key):
        return tw.simulate(model, tw.states.spins_down(n), ts, n_traj=n_traj, key=key, params=P, dt=dt,
                           observables=obs)

    return run


def main(argv=None):
    args = parse_throughput_args(
        __doc__, argv, 10_000, 100, 100,
        extra=lambda ap: ap.add_argument("--bandwidth-gbs", type=float, default=None,
                                         help="device memory bandwidth for the roofline fraction (default: "
                                              "from a table keyed by the device kind, e.g. H100 SXM 3350, H200 4800)"))
    n, nt, ns, dt = args.n_spins, args.n_traj, args.n_steps, 0.01
    dtype = "float64" if args.x64 else "float32"
    item = 8 if args.x64 else 4
    res = {"model": "rydberg_chain", "n_spins": n, "n_traj": nt, "n_steps": ns, "dtype": dtype,
           "noise_channels": n, "params": P,
           "roofline_bytes_per_spin_step": 6 * item,
           "roofline_note": "read + write s (3 floats each) per spin-step; the random numbers are generated"}
    sim = simulate_fn(n, nt, ns, dt)
    scan = None if args.skip_scan else scan_run(n, nt, ns, dt)
    npd = np.float64 if args.x64 else np.float32
    contenders, finals = three_contenders(sim, scan, None if args.skip_numpy else (lambda: numpy_run(n, nt, ns, dt, npd)))
    title = f"Rydberg chain N={n}, {nt} trajectories, {ns} steps, {dtype}; {machine_name()}"
    peak_gbs, source = device_bandwidth(args.bandwidth_gbs)
    res.update(device_bandwidth_gbs=peak_gbs, device_bandwidth_source=source)
    res = run_benchmark(title, res, nt * n * ns, contenders, finals, args.repeats, args.out)
    nbytes = res["roofline_bytes_per_spin_step"]
    for name in ("simulate", "scan"):  # (NumPy runs on the host, not the device)
        if f"{name}_spin_steps_per_s" not in res:
            continue
        bw = res[f"{name}_spin_steps_per_s"] * nbytes / 1e9
        res[f"{name}_roofline_gbs"] = bw
        frac = None if peak_gbs is None else bw / peak_gbs
        res[f"{name}_roofline_fraction"] = frac
        print(f"{name} moves at least {bw:.2f} GB/s at the {nbytes}-byte roofline count"
              + ("" if frac is None else f": {100 * frac:.1f} % of {peak_gbs:.0f} GB/s"))
    if peak_gbs is None:
        print(f"roofline fraction not computed: {source}")
    else:
        print(f"peak bandwidth {peak_gbs:.0f} GB/s: {source}")
    write_json(res, args.out)


if __name__ == "__main__":
    main()
