"""Experiment: forward-mode gradients with a tangent per parameter next to the state
(``_solvers.TangentSolver``, what ``value_and_grad`` uses for at most 4 parameters) against the
``vmap``-ed ``jax.jvp`` through the whole solve that it replaced, in one process, interleaved.

    python benchmarks/exp_tangent_solver.py [--n-spins 100] [--n-traj 1000] [--n-steps 300] [--wrt Omega,Gamma0] [--out FILE]

Model and loss as ``bench_grad.py --model scaled`` (driven dipole chain, dense Gamma and J, both
scaled by Gamma0). Contenders: ``forward`` (``tw.simulate``), ``vmap_jvp`` (``value_and_grad``
with the old reduction, written out below), ``tangents`` (``value_and_grad`` as it is). Prints
the min over the repeats and the ratios to the forward run; both gradients must agree.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import twa_jax as tw
from twa_jax import _engine


class VmapJVP(eqx.Module):
    """The replaced reduction: one ``jax.jvp`` of the whole chunk per one-hot tangent, ``vmap``-ed
    (every tangent pays for the union of the parameters' paths)."""

    def __call__(self, batch_of, diff, rest):
        x0, unravel = ravel_pytree(diff)

        def f(x):
            b = batch_of(_engine.combine_params(unravel(x), rest))
            return _engine.masked_sums(b), (jnp.sum(b.weight), jnp.sum(b.valid & ~b.finite))

        def along(t):
            return jax.jvp(f, (x0,), (t,), has_aux=True)

        sums, dsums, (n, bad) = jax.vmap(along, out_axes=(None, 0, None))(jnp.eye(x0.shape[0], dtype=x0.dtype))
        return sums, dsums, n, bad


def scaled_chain(n, **model_kw):
    """``bench_grad.py --model scaled``: the driven dipole chain at lambda/5, dense Gamma and J
    both scaled by the parameter Gamma0."""
    chain = np.stack([np.arange(n) * 1.0, np.zeros(n), np.zeros(n)], -1)
    G1, J1 = tw.models.dipole_couplings(chain * 0.2, 1.0, jnp.array([0.0, 0.0, 1.0]), 1.0)

    def H(s, _, p):
        return p["Omega"] * jnp.sum(s[:, 0]) + tw.quadratic_form(p["Gamma0"] * J1, (s[:, 0] - 1j * s[:, 1]) / 2)

    return tw.Model(H, jumps=lambda s, a, p: (s[:, 0] - 1j * s[:, 1]) / 2, gamma=lambda p: p["Gamma0"] * G1,
                    n_spins=n, **model_kw)


def interleaved(runs, repeats):
    """Each contender once (its first call: compilation plus a run), then ``repeats`` rounds of
    all of them in turn. Returns ``(outputs of the first calls, first-call times, times per
    contender, min per contender)``."""
    outs, first = {}, {}
    for k, f in runs.items():
        t = time.perf_counter()
        outs[k] = f()
        first[k] = time.perf_counter() - t
    times = {k: [] for k in runs}
    for _ in range(repeats):
        for k, f in runs.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return outs, first, times, {k: min(v) for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-spins", type=int, default=100)
    ap.add_argument("--n-traj", type=int, default=1000)
    ap.add_argument("--n-steps", type=int, default=300)
    ap.add_argument("--wrt", default="Omega,Gamma0")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    n = a.n_spins
    defaults = {"Omega": 1.0, "Gamma0": 1.0}
    model = scaled_chain(n, params=dict(defaults))
    init, dt = tw.states.spins_down(n), 0.01
    ts = np.linspace(0, a.n_steps * dt, 11)
    obs = {"sz": lambda s, _: jnp.mean(s[:, 2])}
    p = {k: defaults[k] for k in a.wrt.split(",")}
    kw = dict(params=p, n_traj=a.n_traj, key=0, observables=obs, dt=dt)

    def forward():
        return jax.block_until_ready(tw.simulate(model, init, ts, **kw).mean["sz"])

    def grad(reduction):
        def run():
            keep = _engine.SumsJVP
            _engine.SumsJVP = reduction
            try:
                out = tw.value_and_grad(lambda m: jnp.sum((m["sz"] - 0.5) ** 2), model, init, ts, **kw)
            finally:
                _engine.SumsJVP = keep
            return jax.block_until_ready(out)
        return run

    runs = {"forward": forward, "vmap_jvp": grad(VmapJVP), "tangents": grad(_engine.SumsJVP)}
    outs, first, times, best = interleaved(runs, a.repeats)
    grads = {k: {name: float(v) for name, v in out[1].items()} for k, out in outs.items() if k != "forward"}
    res = dict(n_spins=n, n_traj=a.n_traj, n_steps=a.n_steps, wrt=a.wrt, machine=f"{jax.devices()[0]}; {os.cpu_count()} cores",
               jax=jax.__version__, first_call_s=first, times_s=times, min_s=best, grads=grads,
               ratio_to_forward={k: best[k] / best["forward"] for k in ("vmap_jvp", "tangents")})
    for k in best:
        print(f"{k:9s} min {best[k]:.3f} s" + ("" if k == "forward" else f"  ({best[k] / best['forward']:.2f}x forward)"))
    print("gradients:", grads)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
