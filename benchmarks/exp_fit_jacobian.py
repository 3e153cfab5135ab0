"""Experiment: Levenberg-Marquardt fits with the means' Jacobian from one run with a tangent per
parameter next to the trajectories (``_fit._traced_mean``'s rule, what ``tw.fit`` does) against a
``jax.jvp`` through the traced run (what it did before: every tangent carries every parameter's
paths), in one process, interleaved.

    python benchmarks/exp_fit_jacobian.py [--n-spins 50] [--n-traj 500] [--n-steps 300] [--repeats 2] [--out FILE]

Model as ``bench_grad.py --model scaled`` (driven dipole chain, dense Gamma and J scaled by
Gamma0); data: ``<sigma^z>(t)`` of ``simulate`` at Omega = Gamma0 = 1 (key 1, 4x the
trajectories) plus noise 0.01; fit of (Omega, Gamma0) from (0.8, 1.2) with key 2. Both
contenders take the same steps to the same parameters (the same Jacobian up to rounding); the
final pass (means, Jacobian, covariance) is the package's in both.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np

import twa_jax as tw
from twa_jax import _engine, _fit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from exp_tangent_solver import interleaved, scaled_chain  # noqa: E402  (the same model and timing)


class JvpResiduals(_fit._Residuals):
    """The replaced residuals: differentiated by ``jax.jvp`` through the traced run."""

    def __call__(self, z, args):
        sums, n, _ = _engine.run_traced(self.plan, _engine.Sums(), _engine.add, chunk_size=self.chunk,
                                        params=self.coords(z), extra=self.rest, refactor=self.refactor)
        mean = _engine.flatten_obs({k: v / jnp.maximum(n, 1) for k, v in sums.items()}, self.names)
        return (mean - self.data) * self.weight, None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-spins", type=int, default=50)
    ap.add_argument("--n-traj", type=int, default=500)
    ap.add_argument("--n-steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    n = a.n_spins
    model = scaled_chain(n, observables={"sz": lambda s, _: jnp.mean(s[:, 2])})
    init, dt = tw.states.spins_down(n), 0.01
    ts = np.linspace(0, a.n_steps * dt, 11)
    truth = {"Omega": 1.0, "Gamma0": 1.0}
    syn = tw.simulate(model, init, ts, params=truth, n_traj=4 * a.n_traj, key=1, dt=dt)
    data = {"sz": np.asarray(syn.mean["sz"]) + 0.01 * np.random.default_rng(0).normal(size=len(ts))}
    kw = dict(n_traj=a.n_traj, key=2, dt=dt, steps=30, sigma={"sz": np.full(len(ts), 0.01)}, progress=False)
    p0 = {"Omega": 0.8, "Gamma0": 1.2}
    keep = _fit._Residuals

    def fit(cls):
        def run():
            _fit._Residuals = cls
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return tw.fit(model, init, ts, data, p0, **kw)
            finally:
                _fit._Residuals = keep
        return run

    runs = {"jvp_through_run": fit(JvpResiduals), "tangents": fit(keep)}
    outs, first, times, best = interleaved(runs, a.repeats)
    results = {k: {"steps": int(r.steps), "loss": float(r.loss), "params": {p: float(v) for p, v in r.params.items()}}
               for k, r in outs.items()}
    for k in runs:
        print(f"{k:16s} first {first[k]:6.1f} s, then min {best[k]:6.2f} s; {results[k]}")
    print(f"jvp / tangents: {best['jvp_through_run'] / best['tangents']:.2f}x")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(dict(n_spins=n, n_traj=a.n_traj, n_steps=a.n_steps, machine=f"{jax.devices()[0]}; {os.cpu_count()} cores",
                           jax=jax.__version__, first_call_s=first, times_s=times, min_s=best, results=results,
                           speedup=best["jvp_through_run"] / best["tangents"]), f, indent=1)


if __name__ == "__main__":
    main()
