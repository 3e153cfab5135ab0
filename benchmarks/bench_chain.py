"""Throughput of `tw.simulate` on the correlated-decay chain of the paper's Eq. 56, against two
baselines of the same equations and the same algorithm (rotation Heun, dense Gamma and J):

* a hand-written fused `lax.scan` over steps, all trajectories as one batch with matmuls;
* a vectorized NumPy implementation.

`simulate` runs the built-in `tw.models.dipole_array` (its pair term uses `tw.quadratic_form`);
`simulate_plain` runs the same model as a user would first write it in plain jnp.

    python benchmarks/bench_chain.py --n-spins 100 --n-traj 500 --n-steps 200 [--x64] [--out FILE]

Prints spin-steps/s for each, the ratios, compile time and the machine; writes JSON.
Chain along x with spacing a = lambda/5, dipoles along z (perpendicular), all spins up,
discrete sampling, Omega = Gamma0, omega_z = 0, dt = 0.01/Gamma0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time

import jax
import numpy as np


def chain_couplings(n, a_over_lambda=0.2, gamma0=1.0):
    """Gamma_ij = Gamma0 Im f(u), J_ij = -(Gamma0/2) Re f(u), f = (3/2) e^{iu}(u^2 + iu - 1)/u^3
    (docs/conventions.md, "Atoms in free space"; dipoles perpendicular to the chain); Gamma_ii = Gamma0, J_ii = 0."""
    x = np.arange(n) * a_over_lambda * 2 * np.pi  # k r
    u = np.abs(x[:, None] - x[None, :])
    np.fill_diagonal(u, 1.0)
    f = 1.5 * np.exp(1j * u) * (u**2 + 1j * u - 1) / u**3
    G = gamma0 * f.imag
    J = -0.5 * gamma0 * f.real
    np.fill_diagonal(G, gamma0)
    np.fill_diagonal(J, 0.0)
    return G, J


def _rotate_np(s, th):
    """Rodrigues rotation of ``s`` by ``th``, components on the first axis ``(3, ...)`` (NumPy's
    fastest layout here: each component a contiguous block)."""
    th2 = th[0] * th[0] + th[1] * th[1] + th[2] * th[2]
    t = np.sqrt(np.maximum(th2, 1e-30))
    small = th2 < 1e-6
    c1 = np.where(small, 1 - th2 / 6, np.sin(t) / t)
    c2 = np.where(small, 0.5 - th2 / 24, (1 - np.cos(t)) / np.maximum(th2, 1e-30))

    def cross(u, v):
        return np.stack([u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0]])

    txs = cross(th, s)
    return s + c1 * txs + c2 * cross(th, txs)


def numpy_run(G, J, B, Omega, n_traj, n_steps, dt, dtype, seed=0):
    """Vectorized NumPy, state ``(3, n_traj, N)``; the noise image ``B dW`` is drawn once per step."""
    rng = np.random.default_rng(seed)
    n = G.shape[0]
    G, J = G.astype(dtype), J.astype(dtype)
    BT = np.ascontiguousarray(B.T.astype(dtype))
    s = np.empty((3, n_traj, n), dtype)
    s[:2] = rng.choice(np.array([-1.0, 1.0], dtype), size=(2, n_traj, n))
    s[2] = 1.0

    def theta(s, xr, xi):
        # 2 (dt grad H + Im/Re Phi) with Phi = (G L dt + xi) / 2, L = (s^x - i s^y) / 2, G and J symmetric
        th = np.empty_like(s)
        th[0] = dt * (2 * Omega + s[0] @ J) - 0.5 * dt * (s[1] @ G) + xi
        th[1] = dt * (s[1] @ J) + 0.5 * dt * (s[0] @ G) + xr
        th[2] = 0.0
        return th

    kp = B.shape[1]
    sz = []
    for _ in range(n_steps):
        z = rng.standard_normal((2, n_traj, kp)).astype(dtype) * np.sqrt(dt).astype(dtype)
        xr, xi = z[0] @ BT, z[1] @ BT
        t0 = theta(s, xr, xi)
        t1 = theta(_rotate_np(s, t0), xr, xi)
        s = _rotate_np(s, 0.5 * (t0 + t1))
        sz.append(s[2].mean())
    return np.array(sz)


def scan_run(G, J, B, Omega, n_traj, n_steps, dt):
    """Hand-written fused rotation Heun in lax.scan, all trajectories as one batch ``(n_traj, 3, N)``
    (the package's layout, the fastest for XLA here), one key per step."""
    import jax.numpy as jnp

    from twa_jax._brackets import rotate

    n, kp = G.shape[0], B.shape[1]
    dtype = jnp.zeros(()).dtype
    G, J, B = (jnp.asarray(x, dtype) for x in (G, J, B))

    def theta(s, xr, xi):
        sx, sy = s[:, 0], s[:, 1]
        tx = dt * (2 * Omega + sx @ J) - 0.5 * dt * (sy @ G) + xi
        ty = dt * (sy @ J) + 0.5 * dt * (sx @ G) + xr
        return jnp.stack([tx, ty, jnp.zeros_like(tx)], 1)

    @jax.jit
    def run(key):
        k0, kn = jax.random.split(key)
        r = jax.random.rademacher(k0, (n_traj, 2, n), dtype)
        s = jnp.concatenate([r, jnp.ones((n_traj, 1, n), dtype)], 1)

        def step(s, k):
            z = jax.random.normal(k, (2, n_traj, kp), dtype) * jnp.sqrt(dt)
            xr, xi = z[0] @ B.T, z[1] @ B.T
            t0 = theta(s, xr, xi)
            t1 = theta(rotate(s, t0), xr, xi)
            s = rotate(s, 0.5 * (t0 + t1))
            return s, s[:, 2].mean()

        return jax.lax.scan(step, s, jax.random.split(kn, n_steps))[1]

    return run


def chain_model(G, J):
    """The Eq. 56 chain as a user would first write it, in plain jnp:
    H = Omega sum s^x + sum_ij J_ij s_i^+ s_j^- = Omega sum s^x + (s^x J s^x + s^y J s^y) / 4, L_i = sigma_i^-."""
    import jax.numpy as jnp

    import twa_jax as tw

    dtype = jnp.zeros(()).dtype
    Gj, Jj = jnp.asarray(G, dtype), jnp.asarray(J, dtype)
    return tw.Model(
        lambda s, a, p: p["Omega"] * jnp.sum(s[:, 0]) + 0.25 * (s[:, 0] @ Jj @ s[:, 0] + s[:, 1] @ Jj @ s[:, 1]),
        jumps=lambda s, a, p: (s[:, 0] - 1j * s[:, 1]) / 2,
        gamma=Gj,
        n_spins=G.shape[0],
    )


def builtin_chain_model(n, a_over_lambda=0.2):
    """The same chain from the package: ``tw.models.dipole_array`` (pair term via ``tw.quadratic_form``)."""
    import twa_jax as tw

    return tw.models.dipole_array(tw.models.chain_positions(n, a_over_lambda), wavelength=1.0)


def simulate_fn(model, Omega, n, n_traj, n_steps, dt):
    import jax.numpy as jnp

    import twa_jax as tw

    ts = np.array([0.0, n_steps * dt])
    obs = {"sz": lambda s, a: jnp.mean(s[:, 2])}
    params = {"Omega": Omega} if model.params is None else {**model.params, "Omega": Omega}

    def run(key):
        return tw.simulate(model, tw.states.spins_up(n), ts, n_traj=n_traj, key=key, params=params,
                           dt=dt, observables=obs)

    return run


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_stats():
    try:
        return jax.devices()[0].memory_stats() or {}
    except Exception:
        return {}


def _peak_memory():
    """Peak memory so far: device peak from memory_stats (GPU), else the process's peak RSS."""
    stats = _memory_stats()
    if "peak_bytes_in_use" in stats:
        return "device peak", int(stats["peak_bytes_in_use"])
    return "process peak RSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def write_json(res, out, quiet=False):
    """Write ``res`` to ``out`` (if given), creating its folder."""
    if not out:
        return
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    if not quiet:
        print(f"wrote {out}")


def measure(fns, repeats):
    """Time each ``fns[name]()`` ``repeats`` times, interleaved (round-robin), so that load from
    other processes hits every contender alike. Returns ``{name: dict(wall_min, wall_median,
    cpu_min)}``; cpu is this process's CPU time (all threads), less sensitive to contention."""
    out = {k: ([], []) for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t, c = time.perf_counter(), time.process_time()
            jax.block_until_ready(f())
            out[k][0].append(time.perf_counter() - t)
            out[k][1].append(time.process_time() - c)
    return {k: dict(wall_min=min(w), wall_median=float(np.median(w)), cpu_min=min(c)) for k, (w, c) in out.items()}


def machine_name():
    dev = jax.devices()[0]
    return (f"{dev.platform}:{dev.device_kind} x{len(jax.devices())}; host {_cpu_name()}, {os.cpu_count()} cores; "
            f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")


def run_benchmark(title, res, work, contenders, finals, repeats, out=None):
    """Shared driver: first call of each contender (compile time, final <sz> as a check that they
    integrate the same equations), interleaved timing, ratios, peak memory; writes JSON.

    ``contenders``: ``{name: (first_call, timed_call)}`` with names among simulate, scan, numpy;
    ``finals``: ``{name: f(first_call_output) -> final <sz>}``.
    """
    print(title)
    res.update(machine=res.get("machine", machine_name()), jax=jax.__version__, platform=platform.platform(),
               matmul_precision=str(jax.config.jax_default_matmul_precision or "default"), complete=False)
    if "bytes_limit" in (stats := _memory_stats()):
        res["device_memory_limit_bytes"] = int(stats["bytes_limit"])  # what simulate's chunks are sized from
    write_json(res, out, quiet=True)  # written as it goes: a run killed later keeps what was measured
    timed = {}
    for name, (first, again) in contenders.items():
        t = time.perf_counter()
        o = first()
        jax.block_until_ready(o)
        res[f"{name}_first_call_s"] = time.perf_counter() - t
        res[f"{name}_final_sz"] = float(finals[name](o))
        kind, peak = _peak_memory()
        res[f"{name}_peak_memory_bytes"] = peak
        res["peak_memory_kind"] = kind
        timed[name] = again
        write_json(res, out, quiet=True)
    stats = measure(timed, repeats)
    for name, st in stats.items():
        res[f"{name}_s"] = [st["wall_min"], st["wall_median"]]
        res[f"{name}_cpu_s"] = st["cpu_min"]
        res[f"{name}_spin_steps_per_s"] = work / st["wall_min"]
        print(f"{name:9s}: {work / st['wall_min']:.3e} spin-steps/s (wall min {st['wall_min']:.3f} s, median "
              f"{st['wall_median']:.3f} s, cpu {st['cpu_min']:.3f} s; first call {res[f'{name}_first_call_s']:.1f} s; "
              f"peak mem after it {res[f'{name}_peak_memory_bytes'] / 2**20:.0f} MiB), final sz {res[f'{name}_final_sz']:.4f}")
    for sim in [k for k in stats if k.startswith("simulate")]:
        prefix = "" if sim == "simulate" else f"{sim}_"
        for other in ("scan", "numpy"):
            if other in stats:
                r = stats[other]["wall_min"] / stats[sim]["wall_min"]
                rc = stats[other]["cpu_min"] / stats[sim]["cpu_min"]
                res[f"{prefix}ratio_vs_{other}"] = r
                res[f"{prefix}ratio_vs_{other}_cpu"] = rc
                print(f"{sim} / {other} throughput: {r:.2f} (wall), {rc:.2f} (cpu time)")
    print(res["machine"])
    res["complete"] = True
    write_json(res, out)
    return res


def three_contenders(sim, scan, numpy_thunk=None, more_sims=None):
    """``(contenders, finals)`` for :func:`run_benchmark`: for simulate, the hand-written scan
    (unless ``scan`` is None) and NumPy (unless ``numpy_thunk`` is None), the timed call and the call giving the checked output,
    and how to read each one's final ``<s^z>``. ``more_sims``: ``{name: run}`` further simulate
    variants (names starting with ``simulate_``)."""
    sims = {"simulate": sim, **(more_sims or {})}
    contenders = {name: ((lambda f=f: f(0)), (lambda f=f: f(0).mean["sz"])) for name, f in sims.items()}
    if scan is not None:
        contenders["scan"] = (lambda: scan(jax.random.key(0)), lambda: scan(jax.random.key(0)))
    if numpy_thunk is not None:
        contenders["numpy"] = (numpy_thunk,) * 2
    finals = {name: (lambda r: r.mean["sz"][-1]) for name in sims}
    finals.update(scan=lambda o: o[-1], numpy=lambda o: o[-1])
    return contenders, finals


def parse_throughput_args(doc, argv, n_spins, n_traj, n_steps, extra=None):
    """The options every throughput benchmark takes (sizes, repeats, precision, output);
    switches on float64 when asked. ``extra(parser)`` adds a script's own options."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-spins", type=int, default=n_spins)
    ap.add_argument("--n-traj", type=int, default=n_traj)
    ap.add_argument("--n-steps", type=int, default=n_steps)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--x64", action="store_true")
    ap.add_argument("--skip-numpy", action="store_true")
    ap.add_argument("--skip-scan", action="store_true", help="time simulate alone (e.g. sizes the scan cannot hold)")
    add_precision_arg(ap)
    ap.add_argument("--out", default=None)
    if extra is not None:
        extra(ap)
    args = ap.parse_args(argv)
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    set_precision(args)
    return args


def add_precision_arg(ap):
    ap.add_argument("--matmul-precision", default="default", choices=("default", "high", "highest"),
                    help="jax_default_matmul_precision; 'default' is TF32 for float32 on NVIDIA GPUs, "
                         "'highest' full float32 (no effect on CPU)")


def set_precision(args):
    if args.matmul_precision != "default":
        jax.config.update("jax_default_matmul_precision", args.matmul_precision)


def main(argv=None):
    args = parse_throughput_args(
        __doc__, argv, 100, 500, 200,
        extra=lambda ap: ap.add_argument("--skip-plain", action="store_true",
                                         help="time the built-in model alone, not also the plain jnp one"))
    from twa_jax._noise import decompose

    n, nt, ns, dt, Omega = args.n_spins, args.n_traj, args.n_steps, 0.01, 1.0
    G, J = chain_couplings(n)
    builtin = builtin_chain_model(n)
    # the baselines integrate the built-in model's equations: same couplings (docs/conventions.md, "Atoms in free space")
    # float32 separations r = x_j - x_i of positions up to N a carry an error up to N a 2^-23, so the
    # phases k r one up to 2 pi (N a / lambda) 2^-23 (GPU and CPU round differently: 2.9e-4 at N = 1e4)
    atol = max(2e-5, 2 * 2 * np.pi * (n / 5) * 2.0**-23)
    np.testing.assert_allclose(np.asarray(builtin.gamma_of(builtin.params)), G, rtol=1e-4, atol=atol)
    B = np.asarray(decompose(G).factor)
    dtype = "float64" if args.x64 else "float32"
    res = {"model": "eq56_chain", "n_spins": n, "n_traj": nt, "n_steps": ns, "dtype": dtype,
           "noise_channels": int(B.shape[1]),
           "contenders": {"simulate": "tw.models.dipole_array (pair term via tw.quadratic_form)",
                          "simulate_plain": "user model in plain jnp: 0.25 (sx J sx + sy J sy)",
                          "scan": "hand-written fused rotation Heun, lax.scan, (n_traj, 3, N)",
                          "numpy": "vectorized NumPy, (3, n_traj, N)"}}
    sim = simulate_fn(builtin, Omega, n, nt, ns, dt)
    plain = None if args.skip_plain else simulate_fn(chain_model(G, J), Omega, n, nt, ns, dt)
    scan = None if args.skip_scan else scan_run(G, J, B, Omega, nt, ns, dt)
    npd = np.float64 if args.x64 else np.float32
    contenders, finals = three_contenders(
        sim, scan, None if args.skip_numpy else (lambda: numpy_run(G, J, B, Omega, nt, ns, dt, npd)),
        more_sims=None if args.skip_plain else {"simulate_plain": plain})
    title = (f"Eq. 56 chain N={n}, {nt} trajectories, {ns} steps, {dtype}, {B.shape[1]} noise channels; "
             f"{machine_name()}")
    run_benchmark(title, res, nt * n * ns, contenders, finals, args.repeats, args.out)


if __name__ == "__main__":
    main()
