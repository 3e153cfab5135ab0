"""Experiment: can forward mode propagate each parameter's tangent by its own JVP inside one loop
and let XLA share the primal? (The question behind the gradient's "union of paths" cost:
``benchmarks/README.md``, "Gradients".)

    python benchmarks/exp_tangent_cse.py

A toy step with the shape of the package's (a generator behind a conditional, as
``GridNoise`` draws the noise on CPU; ``sin``/``cos``; two scalar parameters), state (10, 20 000),
200 steps in ``lax.scan``, one CPU device, float32. Contenders, interleaved, min of 5:

* ``primal``: the step alone;
* ``vmap``: one ``jax.jvp`` per step, ``vmap``-ed over the two one-hot tangents (the package's
  ``_engine.SumsJVP`` does this through the whole solve);
* ``sep``: two ``jax.jvp`` per step, each closing over the other parameter (symbolic zeros), in
  the same loop body, hoping that XLA's common-subexpression elimination merges the two primals.

Prints the times over ``primal`` and, from the optimized HLO, the number of conditionals, ``sine``
instructions and threefry calls: if the primal were shared, ``sep`` would have as many as
``vmap``.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TWA_JAX_CPU_DEVICES", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

N, n, STEPS = 10, 20_000, 200


def noise(k):
    return jax.lax.cond(k >= 0, lambda: jax.random.normal(jax.random.fold_in(jax.random.key(0), k), (N, n)),
                        lambda: jnp.zeros((N, n)))


def step(y, p, k):
    th = p[0] * jnp.sin(y) + p[1] * jnp.roll(y, 1, 0) * y + 0.1 * noise(k)
    return y + 0.01 * jnp.cos(th) * th


P0 = jnp.array([1.0, 0.5])


def body_primal(y, k):
    return step(y, P0, k), None


def body_sep(c, k):
    y, d1, d2 = c
    y1, t1 = jax.jvp(lambda y_, a: step(y_, jnp.stack([a, P0[1]]), k), (y, P0[0]), (d1, 1.0))
    _, t2 = jax.jvp(lambda y_, b: step(y_, jnp.stack([P0[0], b]), k), (y, P0[1]), (d2, 1.0))
    return (y1, t1, t2), None


def body_vmap(c, k):
    y, d = c
    y1, t = jax.vmap(lambda dy, e: jax.jvp(lambda y_, q: step(y_, q, k), (y, P0), (dy, e)),
                     out_axes=(None, 0))(d, jnp.eye(2))
    return (y1, t), None


def main():
    ks = jnp.arange(STEPS)
    y0 = jnp.ones((N, n))
    runs = {
        "primal": jax.jit(lambda y: jax.lax.scan(body_primal, y, ks)[0]),
        "vmap": jax.jit(lambda y: jax.lax.scan(body_vmap, (y, jnp.zeros((2,) + y.shape)), ks)[0]),
        "sep": jax.jit(lambda y: jax.lax.scan(body_sep, (y, jnp.zeros_like(y), jnp.zeros_like(y)), ks)[0]),
    }
    for f in runs.values():
        jax.block_until_ready(f(y0))
    times = {k: [] for k in runs}
    for _ in range(5):
        for k, f in runs.items():
            t = time.perf_counter()
            jax.block_until_ready(f(y0))
            times[k].append(time.perf_counter() - t)
    for k, f in runs.items():
        hlo = f.lower(y0).compile().as_text()
        print(f"{k:<7} min {min(times[k]):.3f} s, {min(times[k]) / min(times['primal']):.2f}x primal; optimized HLO: "
              f"{hlo.count('conditional(')} conditionals, {hlo.count(' sine(')} sine, {hlo.count('threefry')} threefry")
    print(f"device: {jax.devices()[0]}")


if __name__ == "__main__":
    main()
