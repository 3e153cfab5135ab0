"""Set-up time before the first step with a dense Gamma: how often Gamma is eigendecomposed.

A dipole chain of N atoms (dense Gamma and J, `tw.models.dipole_couplings`), one trajectory, one
step, so what is timed is the set-up (validation, the factorization of Gamma, the default dt)
around a solve that takes milliseconds. Each case runs twice and the second call is timed (the
first compiles). Every call of `jnp.linalg.eigh`, `np.linalg.eigh` and `np.linalg.eigvalsh` on an
N x N matrix is counted.

It uses only the public API, so the same script measures another checkout of the package:

    python benchmarks/bench_setup.py --n-spins 2000 --out results/setup_N2000_cpu2.json
    PYTHONPATH=/path/to/old/checkout python benchmarks/bench_setup.py --n-spins 2000 --out ...
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import twa_jax as tw

COUNT = {"n": 0}


def _counting(f, n):
    def g(a, *args, **kw):
        if getattr(a, "shape", None) == (n, n):
            COUNT["n"] += 1
        return f(a, *args, **kw)

    return g


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-spins", type=int, default=2000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    n = args.n_spins
    jnp.linalg.eigh = _counting(jnp.linalg.eigh, n)
    np.linalg.eigh = _counting(np.linalg.eigh, n)
    np.linalg.eigvalsh = _counting(np.linalg.eigvalsh, n)

    pos = np.stack([np.arange(n) * 0.3, np.zeros(n), np.zeros(n)], -1)  # a = 0.3 lambda: full rank
    G, J = tw.models.dipole_couplings(pos, 1.0, jnp.array([0.0, 0.0, 1.0]), 1.0)
    G, J = np.asarray(G), np.asarray(J)

    def H(s, a, p):
        sm = (s[:, 0] - 1j * s[:, 1]) / 2
        return p["Omega"] * jnp.sum(s[:, 0]) + jnp.real(jnp.conj(sm) @ (J @ sm))

    L = lambda s, a, p: (s[:, 0] - 1j * s[:, 1]) / 2  # noqa: E731
    init, ts, p = tw.states.spins_down(n), np.array([0.0, 1e-3]), {"Omega": 1.0}
    out = {"n_spins": n, "device": str(jax.devices()[0]), "machine": platform.processor() or platform.machine(),
           "jax": jax.__version__, "twa_jax": getattr(tw, "__version__", "?"), "cases": {}}

    def case(name, fn):
        fn()  # compile
        COUNT["n"] = 0
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        out["cases"][name] = {"seconds": dt, "eigendecompositions": COUNT["n"]}
        print(f"{name:40s} {dt:8.2f} s   {COUNT['n']} eigendecompositions of the {n} x {n} Gamma", flush=True)

    case("Model(constant Gamma) + simulate", lambda: tw.simulate(
        tw.Model(H, jumps=L, gamma=G, n_spins=n), init, ts, n_traj=1, key=0, params=p, dt=1e-3))
    model_fn = tw.Model(H, jumps=L, gamma=lambda q: jnp.asarray(G), n_spins=n)
    case("simulate (Gamma a function of params)", lambda: tw.simulate(model_fn, init, ts, n_traj=1, key=0, params=p, dt=1e-3))
    loss = lambda m: m["sz"][-1]  # noqa: E731  (one function object: the second call reuses the compiled program)
    case("value_and_grad (Gamma a function)", lambda: tw.value_and_grad(
        loss, model_fn, init, ts, params=p, n_traj=1, key=0, dt=1e-3))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
