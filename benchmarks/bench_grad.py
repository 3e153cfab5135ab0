"""Cost of a pathwise value-and-gradient (`tw.value_and_grad`) relative to a forward run
(`tw.simulate`), in time and peak memory, on a driven dipole chain (dense Gamma and J).

    python benchmarks/bench_grad.py --n-spins 100 --n-traj 1000 --n-steps 1000 [--x64] [--out FILE]

Model: chain along x with spacing a = lambda/5, dipoles along z, H = Omega sum s^x +
sum_{i != j} J_ij s^+_i s^-_j (written with tw.quadratic_form), jumps sigma^-_i with the dense Gamma of tw.models.dipole_couplings;
all spins down, Omega = Gamma0 = 1, dt = 0.01, observable <sigma^z>(t) at 11 times, loss
L = sum_t (<sigma^z>(t) - 0.5)^2.

* ``--model scaled`` (default): Gamma = Gamma0 G1, J = Gamma0 J1 with (G1, J1) computed once; the
  gradient is taken with respect to (Omega, Gamma0): the drive and a rate inside the dense Gamma.
* ``--model geometry``: (Gamma, J) = dipole_couplings(positions * a, ...) evaluated inside H and
  gamma from the parameters; gradient with respect to (Omega, Gamma0, a). The backward pass then
  differentiates dipole_couplings at every stage of every step for every trajectory (the cotangent
  of J is per trajectory inside the vmapped loop), which costs O(n_traj N^2) transcendental
  operations per stage: expect a much larger ratio.
* ``--fields K``: K more parameters, a field ``h_k sum s^z`` on each of K blocks of sites (what
  forward mode, one tangent per parameter, costs against reverse mode as parameters are added).

Each measurement runs in a fresh subprocess so that its peak resident memory (ru_maxrss) is its
own; "memory" is the peak RSS minus the RSS after imports and set-up (JAX runtime excluded).
Times: first call (includes compilation) and the min/median of the repeats after it.
The ratio gradient / forward is the baseline figure (the issue's aim: <= 4x time, <= 2x memory).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _hwm_mb():
    """Peak resident memory since the last :func:`_reset_peak` (``VmHWM``), MB; None if unknown."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak():
    """Reset the peak resident memory to the current one (Linux: ``5`` into
    ``/proc/self/clear_refs``); the current RSS in MB, or None where this is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return _rss_mb()


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
            else:
                name = platform.processor()
    except OSError:
        name = platform.processor()
    return f"{name}, {os.cpu_count()} cores"


def _measure(which, n, n_traj, n_steps, repeats, x64, variant, checkpoints=None, mode="auto", wrt=None, fields=0):
    import jax

    from twa_jax import _grad

    if mode != "auto":  # value_and_grad's own choice: forward mode for at most FORWARD_MODE_MAX_PARAMS
        _grad.FORWARD_MODE_MAX_PARAMS = 0 if mode == "reverse" else 10**9

    jax.config.update("jax_enable_x64", x64)
    import jax.numpy as jnp
    import numpy as np

    import twa_jax as tw

    chain = np.stack([np.arange(n) * 1.0, np.zeros(n), np.zeros(n)], -1)

    G1, J1 = tw.models.dipole_couplings(chain * 0.2, 1.0, jnp.array([0.0, 0.0, 1.0]), 1.0)

    def couplings(p):
        if variant == "scaled":
            return p["Gamma0"] * G1, p["Gamma0"] * J1
        return tw.models.dipole_couplings(chain * p["a"], 1.0, jnp.array([0.0, 0.0, 1.0]), p["Gamma0"])

    blocks = np.array_split(np.arange(n), max(fields, 1))

    def H(s, a, p):
        sm = (s[:, 0] - 1j * s[:, 1]) / 2
        local = sum(p[f"h{k}"] * jnp.sum(s[blocks[k], 2]) for k in range(fields))
        return p["Omega"] * jnp.sum(s[:, 0]) + tw.quadratic_form(couplings(p)[1], sm) + local

    params = {"Omega": 1.0, "Gamma0": 1.0} if variant == "scaled" else {"Omega": 1.0, "Gamma0": 1.0, "a": 0.2}
    params.update({f"h{k}": 0.3 for k in range(fields)})
    defaults = dict(params) if wrt else None  # the model's defaults; value_and_grad differentiates what it is given
    params = {k: v for k, v in params.items() if k in wrt} if wrt else params
    model = tw.Model(H, jumps=lambda s, a, p: (s[:, 0] - 1j * s[:, 1]) / 2, gamma=lambda p: couplings(p)[0], n_spins=n,
                     params=defaults)
    init = tw.states.spins_down(n)
    dt = 0.01
    ts = np.linspace(0, n_steps * dt, 11)
    obs = {"sz": lambda s, a: jnp.mean(s[:, 2])}

    def loss(mean):
        return jnp.sum((mean["sz"] - 0.5) ** 2)

    if which == "forward":
        def run():
            r = tw.simulate(model, init, ts, n_traj=n_traj, key=0, params=params, observables=obs, dt=dt)
            return jax.block_until_ready(r.mean["sz"])
    else:
        def run():
            v, g = tw.value_and_grad(loss, model, init, ts, params=params, n_traj=n_traj, key=0, observables=obs, dt=dt,
                                     checkpoints=checkpoints)
            return jax.block_until_ready((v, g))

    rss0 = _rss_mb()
    t = time.perf_counter()
    out = run()
    first = time.perf_counter() - t
    rss1 = _reset_peak()  # what the runs take beyond what compiling left on the heap
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB -> MB on Linux
    hwm = _hwm_mb()
    res = dict(first_call_s=first, times_s=times, min_s=min(times), median_s=float(np.median(times)),
               rss_before_mb=rss0, peak_rss_mb=peak, memory_mb=peak - rss0,
               run_memory_mb=None if rss1 is None or hwm is None else hwm - rss1,
               device=str(jax.devices()[0]), jax=jax.__version__)
    if which == "grad":
        res["value"] = float(out[0])
        res["grad"] = {k: float(v) for k, v in out[1].items()}
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-spins", type=int, default=100)
    ap.add_argument("--n-traj", type=int, default=1000)
    ap.add_argument("--n-steps", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--x64", action="store_true")
    ap.add_argument("--model", choices=["scaled", "geometry"], default="scaled")
    ap.add_argument("--checkpoints", type=int, default=None,
                    help="states stored per trajectory for the reverse pass (default: diffrax's)")
    ap.add_argument("--mode", choices=["auto", "reverse", "forward"], default="auto",
                    help="value_and_grad's mode: its own choice (forward mode for at most "
                    "FORWARD_MODE_MAX_PARAMS parameters, else reverse), or forced")
    ap.add_argument("--wrt", default=None, help="comma-separated parameters to differentiate (default: all); "
                    "the others are fixed model defaults")
    ap.add_argument("--fields", type=int, default=0,
                    help="add this many parameters: a field h_k s^z on each of k blocks of sites")
    ap.add_argument("--out", default=None)
    ap.add_argument("--only", choices=["forward", "grad"], default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.only:  # child process: one measurement, JSON on the last line of stdout
        print(json.dumps(_measure(args.only, args.n_spins, args.n_traj, args.n_steps, args.repeats, args.x64, args.model,
                                  args.checkpoints, args.mode, args.wrt.split(",") if args.wrt else None,
                                  args.fields)))
        return
    base = [sys.executable, os.path.abspath(__file__), "--n-spins", str(args.n_spins), "--n-traj", str(args.n_traj),
            "--n-steps", str(args.n_steps), "--repeats", str(args.repeats), "--model", args.model] + (["--x64"] if args.x64 else []) + (
        ["--checkpoints", str(args.checkpoints)] if args.checkpoints else []) + ["--mode", args.mode] + (
        ["--wrt", args.wrt] if args.wrt else []) + ["--fields", str(args.fields)]
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    out = {}
    for which in ("forward", "grad"):
        p = subprocess.run(base + ["--only", which], capture_output=True, text=True, env=env)
        if p.returncode:
            sys.stderr.write(p.stderr)
            raise SystemExit(p.returncode)
        out[which] = json.loads(p.stdout.strip().splitlines()[-1])
        print(f"{which:8s}: first call {out[which]['first_call_s']:.1f} s, then min {out[which]['min_s']:.2f} s "
              f"(median {out[which]['median_s']:.2f} s), memory {out[which]['memory_mb']:.0f} MB "
              f"(peak RSS {out[which]['peak_rss_mb']:.0f} MB)")
    f, g = out["forward"], out["grad"]
    res = dict(
        model=args.model, n_spins=args.n_spins, n_traj=args.n_traj, n_steps=args.n_steps, checkpoints=args.checkpoints,
        mode=args.mode,
        n_params=len(args.wrt.split(",")) if args.wrt else (2 if args.model == "scaled" else 3) + args.fields,
        wrt=args.wrt, fields=args.fields,
        dtype="float64" if args.x64 else "float32", machine=f"{f['device']}; host {_cpu_name()}", jax=f["jax"],
        forward=f, grad=g,
        time_ratio=g["min_s"] / f["min_s"],
        memory_ratio=g["memory_mb"] / max(f["memory_mb"], 1e-9),
        peak_rss_ratio=g["peak_rss_mb"] / f["peak_rss_mb"],
        run_memory_ratio=(g["run_memory_mb"] / max(f["run_memory_mb"], 1e-9)
                          if g["run_memory_mb"] is not None and f["run_memory_mb"] is not None else None),
    )
    print(f"gradient / forward: time {res['time_ratio']:.2f}x (aim <= 4), memory {res['memory_ratio']:.2f}x "
          f"(aim <= 2), peak RSS {res['peak_rss_ratio']:.2f}x; machine {res['machine']}, {res['dtype']}")
    if res["run_memory_ratio"] is not None:
        print(f"the runs alone (peak after the first call, compilation's heap excluded): forward "
              f"{f['run_memory_mb']:.0f} MB, gradient {g['run_memory_mb']:.0f} MB: {res['run_memory_ratio']:.2f}x")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
