"""Points per second of `tw.sweep` over a parameter grid of a small model, against running the
points one at a time, and the cost of the sweep's store and of an executor.

    python benchmarks/bench_sweep.py --n-points-per-axis 10 --n-traj 1000 --n-steps 100 [--out FILE]

Model: `tw.models.rydberg_chain(N, boundary="open", gamma_down=0.2)` (N = 4 by default), all spins
down, discrete sampling, grid Omega in [0.5, 2] x J in [0, 4] (P x P points), ts =
linspace(0, t_max, n_save), dt = t_max / n_steps, rotation Heun, float32, the model's
observables (site-averaged sx, sy, sz). Contenders, timed round-robin after one warm-up call each
(its time is reported as the first call: compilation plus one run):

* ``sweep``: `tw.sweep`, default batch size (all points of the grid in one compiled batch, up to 128);
* ``sweep_bs1``: `tw.sweep(..., batch_size=1)`: one point per compiled batch, same engine;
* ``loop``: a Python loop of `tw.simulate` over the points (what users write without `sweep`);
  its first pass compiles once (dt fixed: new parameters reuse the program);
* ``scan``: the baseline of the same equations: a hand-written fused rotation Heun in `lax.scan`,
  all trajectories of a point as one batch ``(n_traj, 3, N)`` (as in `bench_rydberg.py`), `vmap`-ed
  over the points, one key per point (the noise is drawn per point, as the package does);
* ``scan_tlast``: the same scan with the state ``(3, N, n_traj)``: trajectories on the vectorized
  (last) axis, which for N <= 8 spins is several times faster on CPU than the package's layout;
* ``scan_tlast_common``: ``scan_tlast`` with one key for all points (common random numbers drawn
  once and shared: what drawing the noise per point costs);
* ``sweep_store``: `sweep(..., store=<fresh tmp.zarr each repeat>)`;
* ``sweep_executor``: `sweep(..., executor=ProcessPoolExecutor(2, spawn), task_size=ceil(P^2/2))`:
  two tasks; the pool is created once (its first call includes starting the workers and compiling
  in each) and reused.

Prints a table (wall min / median over the repeats, points/s from the minimum) and the ratios;
writes JSON with every timing, the load average before and after each round, and the check that
the contenders agree (sweep against the loop: the same trajectory keys, so equal to rounding; the
scan against the sweep: within the standard errors).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_chain import _peak_memory, machine_name, write_json  # noqa: E402

GAMMA = 0.2  # gamma_down; kappa = 0


def grid_of(p):
    return {"Omega": np.linspace(0.5, 2.0, p), "J": np.linspace(0.0, 4.0, p)}


def points_of(grid):
    return [{"Omega": float(o), "J": float(j)} for o in grid["Omega"] for j in grid["J"]]


def _rotate_first(s, th):
    """Rodrigues rotation with the components on the first axis ``(3, ...)``."""
    import jax.numpy as jnp

    th2 = th[0] * th[0] + th[1] * th[1] + th[2] * th[2]
    small = th2 < 1e-6
    safe = jnp.where(small, 1.0, th2)
    t = jnp.sqrt(safe)
    c1 = jnp.where(small, 1.0 - th2 / 6.0, jnp.sin(t) / t)
    c2 = jnp.where(small, 0.5 - th2 / 24.0, (1.0 - jnp.cos(t)) / safe)

    def cross(u, v):
        return jnp.stack([u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0]])

    a = cross(th, s)
    return s + c1 * a + c2 * cross(th, a)


def scan_sweep(n, n_traj, n_steps, n_save, dt, common=False, layout="traj_first"):
    """Rotation Heun of the open Rydberg chain H = Omega sum s^x + (J/4) sum (1 + s^z_i)(1 + s^z_{i+1}),
    L_i = sigma^-_i at rate GAMMA, in ``lax.scan``, ``vmap``-ed over the points. ``layout``:
    ``"traj_first"``: state ``(n_traj, 3, N)`` (the package's layout, its ``rotate``);
    ``"traj_last"``: ``(3, N, n_traj)`` (trajectories on the vectorized axis). ``common``: one key
    for all points (the noise is drawn once), else one key per point. Returns
    ``run(Omega (P,), J (P,), key) -> (mean, sem)`` of the site-averaged ``(sx, sy, sz)``, each
    ``(P, n_save, 3)``."""
    import jax.numpy as jnp

    from twa_jax._brackets import rotate

    dtype = jnp.zeros(()).dtype
    every = n_steps // (n_save - 1)
    g = GAMMA
    first = layout == "traj_first"
    shape = (n_traj, 1, n) if first else (1, n, n_traj)

    def comps(s):
        return (s[:, 0], s[:, 1], s[:, 2]) if first else (s[0], s[1], s[2])

    def one_point(Omega, J, key):
        k0, kn = jax.random.split(key)
        r = jax.random.rademacher(k0, (n_traj, 2, n) if first else (2, n, n_traj), dtype)
        s = jnp.concatenate([r, -jnp.ones(shape, dtype)], 1 if first else 0)
        sp = 1 if first else 0  # the spin axis of one component

        def theta(s, zr, zi):
            sx, sy, sz = comps(s)
            pad_hi = [(0, 0)] * sx.ndim
            pad_lo = [(0, 0)] * sx.ndim
            pad_hi[sp], pad_lo[sp] = (0, 1), (1, 0)
            up = jax.lax.slice_in_dim(sz, 1, n, axis=sp)
            down = jax.lax.slice_in_dim(sz, 0, n - 1, axis=sp)
            nb = jnp.pad(1 + up, pad_hi) + jnp.pad(1 + down, pad_lo)
            ph_r = 0.5 * (g * sx / 2 * dt + np.sqrt(g) * zr)
            ph_i = 0.5 * (-g * sy / 2 * dt + np.sqrt(g) * zi)
            return jnp.stack([2 * (dt * Omega + ph_i), 2 * ph_r, 2 * dt * (J / 4) * nb], 1 if first else 0)

        rot = rotate if first else _rotate_first

        def step(s, k):
            z = jax.random.normal(k, (2, n_traj, n) if first else (2, n, n_traj), dtype) * jnp.sqrt(dt).astype(dtype)
            t0 = theta(s, z[0], z[1])
            t1 = theta(rot(s, t0), z[0], z[1])
            return rot(s, 0.5 * (t0 + t1)), None

        def moments(s):
            o = jnp.mean(s, axis=2) if first else jnp.mean(s, axis=1).T  # (n_traj, 3): site averages
            return jnp.mean(o, 0), jnp.mean(o * o, 0)

        def interval(s, ks):
            s, _ = jax.lax.scan(step, s, ks)
            return s, moments(s)

        keys = jax.random.split(kn, (n_save - 1) * every).reshape(n_save - 1, every)
        _, (m, m2) = jax.lax.scan(interval, s, keys)
        m0, m20 = moments(s)
        m, m2 = jnp.concatenate([m0[None], m]), jnp.concatenate([m20[None], m2])
        return m, jnp.sqrt(jnp.maximum(m2 - m * m, 0) / (n_traj - 1))

    @jax.jit
    def run(Omega, J, key):
        if common:
            return jax.vmap(one_point, in_axes=(0, 0, None))(Omega, J, key)
        return jax.vmap(one_point)(Omega, J, jax.random.split(key, Omega.shape[0]))

    return run


def code_state():
    """The package's commit and the hashes of the files a sweep runs through (others edit the
    tree while benchmarks run; some of these files may be uncommitted)."""
    import hashlib
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "twa_jax"], capture_output=True,
                               text=True).stdout.splitlines()
    except OSError:
        head, dirty = None, []
    files = {}
    for f in ("_sweep.py", "_plan.py", "_engine.py", "_store.py", "_solve.py"):
        try:
            with open(os.path.join(root, "twa_jax", f), "rb") as fh:
                files[f] = hashlib.sha256(fh.read()).hexdigest()[:12]
        except OSError:
            pass
    return {"git_head": head, "twa_jax_uncommitted": dirty, "sha256_12": files}


def _timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t, time.process_time() - c


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-spins", type=int, default=4, help="spins of the Rydberg chain (<= 8 for this benchmark)")
    ap.add_argument("--n-points-per-axis", type=int, default=10, help="P: the grid has P x P points")
    ap.add_argument("--n-traj", type=int, default=1000)
    ap.add_argument("--n-steps", type=int, default=100, help="steps in [0, t_max]; a multiple of n_save - 1")
    ap.add_argument("--n-save", type=int, default=11)
    ap.add_argument("--t-max", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip", default="", help="comma-separated contenders to leave out "
                    "(sweep_bs1, loop, scan, scan_tlast, scan_tlast_common, sweep_store, sweep_executor)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if (args.n_steps % (args.n_save - 1)) != 0:
        ap.error("--n-steps must be a multiple of --n-save - 1")
    skip = {s for s in args.skip.split(",") if s}

    import twa_jax as tw

    n, P, nt, ns = args.n_spins, args.n_points_per_axis, args.n_traj, args.n_steps
    dt = args.t_max / ns
    ts = np.linspace(0.0, args.t_max, args.n_save)
    grid = grid_of(P)
    points = points_of(grid)
    n_points = len(points)
    model = tw.models.rydberg_chain(n, boundary="open", gamma_down=GAMMA)
    initial = tw.states.spins_down(n)
    spec = (model, initial)
    common = dict(n_traj=nt, key=0, dt=dt, progress=False)
    task_size = math.ceil(n_points / 2)
    res = {
        "model": f"rydberg_chain({n}, boundary='open', gamma_down={GAMMA}), spins_down, discrete sampling",
        "n_spins": n, "grid": {k: [float(v[0]), float(v[-1]), len(v)] for k, v in grid.items()},
        "n_points": n_points, "n_traj": nt, "n_steps": ns, "n_save": args.n_save, "t_max": args.t_max, "dt": dt,
        "dtype": str(jax.numpy.zeros(()).dtype), "repeats": args.repeats, "executor_task_size": task_size,
        "contenders": {
            "sweep": "tw.sweep, default batch size", "sweep_bs1": "tw.sweep(batch_size=1)",
            "loop": "Python loop of tw.simulate over the points (dt fixed)",
            "scan": "hand-written rotation Heun, lax.scan over steps, (n_traj, 3, N), vmap over points, one key per point",
            "scan_tlast": "the same scan with state (3, N, n_traj): trajectories on the vectorized axis",
            "scan_tlast_common": "scan_tlast with one key shared by all points (noise drawn once)",
            "sweep_store": "tw.sweep(store=fresh tmp.zarr each repeat)",
            "sweep_executor": f"tw.sweep(executor=ProcessPoolExecutor(2, spawn), task_size={task_size}): 2 tasks",
        },
        "skipped": sorted(skip),
        "machine": machine_name(), "jax": jax.__version__, "twa_jax": tw.__version__,
        "platform": __import__("platform").platform(), "cpu_count": os.cpu_count(),
        "code": code_state(), "load_at_start": list(os.getloadavg()), "complete": False,
    }
    out = args.out
    write_json(res, out, quiet=True)

    # --- the contenders: fn() -> (sz (n_points, n_save) final-check array, sz_sem or None)
    tmp = tempfile.mkdtemp(prefix="bench_sweep_")
    counter = [0]

    def ds_sz(ds):
        return ds["sz"].values.reshape(n_points, -1), ds["sz_sem"].values.reshape(n_points, -1)

    def run_sweep(**kw):
        return ds_sz(tw.sweep(spec, grid, ts, **common, **kw))

    def run_store():
        counter[0] += 1
        path = os.path.join(tmp, f"sweep{counter[0]}.zarr")
        try:
            return run_sweep(store=path)
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def run_loop():
        sz, sem = [], []
        for p in points:
            r = tw.simulate(model, initial, ts, params=p, **common)
            sz.append(np.asarray(r.mean["sz"]))
            sem.append(np.asarray(r.sem["sz"]))
        return np.stack(sz), np.stack(sem)

    Om = jax.numpy.asarray([p["Omega"] for p in points], jax.numpy.zeros(()).dtype)
    Jv = jax.numpy.asarray([p["J"] for p in points], jax.numpy.zeros(()).dtype)

    def scan_fn(shared, layout):
        run = scan_sweep(n, nt, ns, args.n_save, dt, common=shared, layout=layout)

        def f():
            m, s = run(Om, Jv, jax.random.key(0))
            return np.asarray(m[:, :, 2]), np.asarray(s[:, :, 2])
        return f

    pool = None
    contenders = {"sweep": lambda: run_sweep(), "sweep_bs1": lambda: run_sweep(batch_size=1), "loop": run_loop}
    for name, shared, layout in (("scan", False, "traj_first"), ("scan_tlast", False, "traj_last"),
                                 ("scan_tlast_common", True, "traj_last")):
        if name not in skip:
            contenders[name] = scan_fn(shared, layout)
    contenders["sweep_store"] = run_store
    if "sweep_executor" not in skip:
        pool = concurrent.futures.ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn"))
        contenders["sweep_executor"] = lambda: run_sweep(executor=pool, task_size=task_size)
    contenders = {k: f for k, f in contenders.items() if k not in skip}

    title = (f"sweep benchmark: rydberg_chain N={n}, {P}x{P} = {n_points} points, {nt} trajectories, "
             f"{ns} steps (dt={dt:.3g}), {len(ts)} save times; {res['machine']}")
    print(title, flush=True)
    try:
        outputs = {}
        res["first_call_s"] = {}
        for name, f in contenders.items():
            o, w, c = _timed(f)
            outputs[name] = o
            res["first_call_s"][name] = w
            print(f"  first call {name:15s} {w:8.2f} s", flush=True)
            write_json(res, out, quiet=True)
        # set-up per point outside the compiled run: make_plan (what each simulate call pays) and
        # Plan.values_at (what sweep pays for each point after the first, where it exists)
        from twa_jax._plan import make_plan
        kw = {k: v for k, v in common.items() if k != "progress"}
        t = time.perf_counter()
        plans = [make_plan(model, initial, ts, params=p, progress=False, **kw) for p in points]
        res["make_plan_per_point_s"] = (time.perf_counter() - t) / n_points
        if hasattr(plans[0], "values_at"):
            t = time.perf_counter()
            for p in points:
                plans[0].values_at(p)
            res["values_at_per_point_s"] = (time.perf_counter() - t) / n_points

        # --- steady state, round-robin
        walls = {k: [] for k in contenders}
        cpus = {k: [] for k in contenders}
        res["load_per_round"] = []
        for rep in range(args.repeats):
            load0 = os.getloadavg()
            for name, f in contenders.items():
                _, w, c = _timed(f)
                walls[name].append(w)
                cpus[name].append(c)
            res["load_per_round"].append([list(load0), list(os.getloadavg())])
            res["wall_s"], res["cpu_s"] = walls, cpus
            write_json(res, out, quiet=True)
            print(f"  round {rep + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in walls.items())
                  + f"  (load {os.getloadavg()[0]:.2f})", flush=True)
    finally:
        if pool is not None:
            pool.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)

    # --- summary
    st = {k: dict(wall_min=min(v), wall_median=float(np.median(v)), cpu_min=min(cpus[k])) for k, v in walls.items()}
    for k, v in st.items():
        v["points_per_s"] = n_points / v["wall_min"]
        v["points_per_s_median"] = n_points / v["wall_median"]
    res["stats"] = st
    ratios = {}
    for other in ("sweep_bs1", "loop", "scan", "scan_tlast", "scan_tlast_common"):
        if other in st:
            ratios[f"sweep_vs_{other}"] = st[other]["wall_min"] / st["sweep"]["wall_min"]
            ratios[f"sweep_vs_{other}_median"] = st[other]["wall_median"] / st["sweep"]["wall_median"]
    res["ratios"] = ratios  # > 1: the batched sweep is faster
    overhead = {}
    for name in ("sweep_store", "sweep_executor"):
        if name in st:
            d, dm = (st[name][k] - st["sweep"][k] for k in ("wall_min", "wall_median"))
            overhead[name] = dict(extra_s_min=d, extra_s_median=dm, extra_ms_per_point_min=1e3 * d / n_points,
                                  extra_ms_per_point_median=1e3 * dm / n_points,
                                  relative_min=st[name]["wall_min"] / st["sweep"]["wall_min"])
    res["overhead"] = overhead

    # --- checks: the contenders integrate the same equations
    ref, ref_sem = outputs["sweep"]
    checks = {}
    for name, (sz, sem) in outputs.items():
        if name == "sweep":
            continue
        d = np.abs(np.asarray(sz) - ref)
        entry = {"max_abs_diff_sz": float(d.max())}
        if name.startswith("scan"):
            z = d / np.sqrt(np.asarray(sem) ** 2 + ref_sem**2 + 1e-30)
            entry.update(max_z=float(z[:, 1:].max()), mean_abs_z=float(z[:, 1:].mean()))
        checks[name] = entry
    res["checks"] = checks
    kind, peak = _peak_memory()
    res["peak_memory_kind"], res["peak_memory_bytes"] = kind, peak
    res["load_at_end"] = list(os.getloadavg())
    if code_state()["sha256_12"] != res["code"]["sha256_12"]:
        res["code_changed_during_run"] = code_state()
        print("warning: package files changed during the run (this process measured the code it imported at the start)")

    print(f"\n{'contender':16s} {'first call s':>12s} {'wall min s':>10s} {'median s':>9s} {'cpu min s':>9s} "
          f"{'points/s':>9s} {'sweep x':>8s}")
    for k, v in st.items():
        rat = ratios.get(f"sweep_vs_{k}")
        print(f"{k:16s} {res['first_call_s'][k]:12.2f} {v['wall_min']:10.3f} {v['wall_median']:9.3f} "
              f"{v['cpu_min']:9.3f} {v['points_per_s']:9.2f} {'' if rat is None else f'{rat:8.2f}'}")
    print("(sweep x: the other contender's wall min / sweep's: > 1 means the batched sweep is faster)")
    for name, o in overhead.items():
        print(f"{name}: +{o['extra_s_min']:.3f} s per sweep (min; median {o['extra_s_median']:.3f} s), "
              f"{o['extra_ms_per_point_min']:.2f} ms per point, {o['relative_min']:.2f}x the in-process sweep without store")
    print(f"set-up per point: make_plan {1e3 * res['make_plan_per_point_s']:.1f} ms"
          + (f", Plan.values_at {1e3 * res['values_at_per_point_s']:.2f} ms" if "values_at_per_point_s" in res else ""))
    for name, c in checks.items():
        print(f"check {name} vs sweep: " + ", ".join(f"{k} {v:.3g}" for k, v in c.items()))
    print(f"load average start {res['load_at_start'][0]:.2f}, end {res['load_at_end'][0]:.2f}; {res['machine']}")
    res["complete"] = True
    write_json(res, out)
    return res


if __name__ == "__main__":
    main()
