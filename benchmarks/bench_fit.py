"""Fit convergence: Levenberg-Marquardt (the default least-squares fit) against Adam.

The fitting notebook's problem: Rabi frequency and decay rate of a driven 2-atom array at
lambda/4 from noisy synthetic data (key 1, 10 x n_traj trajectories, noise 0.02), fitted with
n_traj trajectories (key 2) from a 20 % off start. In one run: `tw.fit` with its default
(optimistix Levenberg-Marquardt, forward-mode Jacobian) and with `optimizer=` the previous
default (`optax.adam` with a cosine-decayed learning rate 0.05, 40 steps, then Gauss-Newton
polish). Prints steps taken, wall time (first call, compilation included, and a second call),
final loss, parameters and whether the fit reports convergence.

    python benchmarks/bench_fit.py --n-traj 500 --out results/fit_notebook_cpu2.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import twa_jax as tw  # noqa: E402


def problem(n_traj):
    N = 2
    positions = np.stack([np.arange(N) * 0.25, np.zeros(N), np.zeros(N)], -1)

    def couplings(p):
        return tw.models.dipole_couplings(positions, 1.0, jnp.array([0.0, 0.0, 1.0]), p["Gamma0"])

    def H(s, a, p):
        sm = (s[:, 0] - 1j * s[:, 1]) / 2
        return p["Omega"] * jnp.sum(s[:, 0]) + jnp.real(jnp.conj(sm) @ couplings(p)[1] @ sm)

    model = tw.Model(H, jumps=lambda s, a, p: (s[:, 0] - 1j * s[:, 1]) / 2, gamma=lambda p: couplings(p)[0], n_spins=N)
    init, ts = tw.states.spins_down(N), np.linspace(0, 3, 13)
    syn = tw.simulate(model, init, ts, n_traj=10 * n_traj, key=1, params={"Omega": 1.0, "Gamma0": 0.5}, dt=0.05)
    data = {"sz": np.asarray(syn.mean["sz"]) + 0.02 * np.random.default_rng(0).normal(size=len(ts))}
    sigma = {"sz": np.sqrt(0.02**2 + np.asarray(syn.sem["sz"]) ** 2)}
    return model, init, ts, data, sigma


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-traj", type=int, default=500)
    ap.add_argument("--adam-steps", type=int, default=40)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    model, init, ts, data, sigma = problem(args.n_traj)
    kw = dict(n_traj=args.n_traj, key=2, sigma=sigma, bounds={"Gamma0": (0.0, None)}, dt=0.05, progress=False)
    p0 = {"Omega": 0.8, "Gamma0": 0.6}
    adam = optax.adam(optax.cosine_decay_schedule(0.05, args.adam_steps, alpha=0.01))
    runs = {
        "levenberg_marquardt": dict(steps=50),
        "adam": dict(steps=args.adam_steps, optimizer=adam, polish=2),
    }
    out = {"device": str(jax.devices()[0]), "machine": platform.processor() or platform.machine(),
           "jax": jax.__version__, "n_traj": args.n_traj, "runs": {}}
    for name, extra in runs.items():
        times = []
        for _ in range(2):
            t = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = tw.fit(model, init, ts, data, p0, **kw, **extra)
            times.append(time.perf_counter() - t)
        hist = np.asarray(res.loss_history)
        rec = {"steps": int(res.steps), "first_call_s": times[0], "second_call_s": times[1], "loss": float(res.loss),
               "loss_history": hist.tolist(), "converged": bool(res.converged),
               "params": {k: float(v) for k, v in res.params.items()},
               "stderr": {k: float(v) for k, v in res.stderr.items()}}
        out["runs"][name] = rec
        print(f"{name:20s} steps {rec['steps']:3d}  {times[0]:6.1f} s (first) {times[1]:6.1f} s (second)  "
              f"loss {rec['loss']:.4g}  converged {rec['converged']}  "
              + "  ".join(f"{k} = {v:.4f} +- {rec['stderr'][k]:.4f}" for k, v in rec["params"].items()), flush=True)
    lm, ad = out["runs"]["levenberg_marquardt"], out["runs"]["adam"]
    print(f"second-call time ratio adam / LM: {ad['second_call_s'] / lm['second_call_s']:.2f}x; "
          f"steps {ad['steps']} + polish against {lm['steps']}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
