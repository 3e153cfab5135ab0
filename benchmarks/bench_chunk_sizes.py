"""Time per trajectory-step against the chunk size: powers of two against odd multiples of 16.

    python benchmarks/bench_chunk_sizes.py [--repeats 5] [--out FILE]

With the trajectories on the last axis of the state, ``(3, N, n)``, a chunk of ``n = 2**k``
trajectories puts the rows of every spin component at addresses ``4 n`` bytes apart, so the
rows a fused loop reads together fall into the same cache sets (4K aliasing); ``n = 16 x odd``
spreads them over all sets. The chunk ladder (``twa_jax._plan.on_chunk_ladder``) takes odd
multiples of 16 from 256 on. Two workloads, one CPU device (``TWA_JAX_CPU_DEVICES=1`` is set
here), float32, sizes interleaved round-robin in one process, ``chunk_size = n_traj = n``:

* ``simulate`` of the Rydberg chain N = 10 (`tw.models.rydberg_chain(10, boundary="open",
  gamma_down=0.2)`, all down, dt = 0.02, 100 steps) at n = 4096, 4112, 10000, 10240, 10256;
* ``value_and_grad`` (forward mode, 2 parameters) of the dense dipole chain N = 100 of
  `bench_grad.py` (300 steps) at n = 500, 512, 528, 1024, 1040.

Prints ns per spin-step (simulate) and us per trajectory-step (gradient), min over the repeats.
Baseline: the sizes next to each power of two, in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TWA_JAX_CPU_DEVICES", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_chain import machine_name, write_json  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import twa_jax as tw

    ryd = tw.models.rydberg_chain(10, boundary="open", gamma_down=0.2)
    init10, ts = tw.states.spins_down(10), np.linspace(0, 2, 11)

    def forward(n):
        return lambda: jax.block_until_ready(
            tw.simulate(ryd, init10, ts, n_traj=n, key=0, dt=0.02, chunk_size=n, progress=False).mean)

    N = 100
    chain = np.stack([np.arange(N) * 1.0, np.zeros(N), np.zeros(N)], -1)
    G1, J1 = tw.models.dipole_couplings(chain * 0.2, 1.0, jnp.array([0.0, 0.0, 1.0]), 1.0)

    def H(s, a, p):
        return p["Omega"] * jnp.sum(s[:, 0]) + tw.quadratic_form(p["Gamma0"] * J1, (s[:, 0] - 1j * s[:, 1]) / 2)

    dense = tw.Model(H, jumps=lambda s, a, p: (s[:, 0] - 1j * s[:, 1]) / 2, gamma=lambda p: p["Gamma0"] * G1, n_spins=N)
    init100, ts3 = tw.states.spins_down(N), np.linspace(0, 3, 11)
    obs = {"sz": lambda s, a: jnp.mean(s[:, 2])}

    def grad(n):
        return lambda: jax.block_until_ready(tw.value_and_grad(
            lambda m: jnp.sum((m["sz"] - 0.5) ** 2), dense, init100, ts3, params={"Omega": 1.0, "Gamma0": 1.0},
            n_traj=n, key=0, observables=obs, dt=0.01, chunk_size=n, progress=False))

    cases = [("simulate_rydberg10", n, forward(n), n * 10 * 100, 1e9, "ns per spin-step")
             for n in (4096, 4112, 10000, 10240, 10256)]
    cases += [("value_and_grad_dense100", n, grad(n), n * 300, 1e6, "us per trajectory-step")
              for n in (500, 512, 528, 1024, 1040)]
    first = {}
    for name, n, f, *_ in cases:
        t = time.perf_counter()
        f()
        first[f"{name}/{n}"] = time.perf_counter() - t
    times = {f"{name}/{n}": [] for name, n, *_ in cases}
    for _ in range(args.repeats):
        for name, n, f, *_ in cases:
            t = time.perf_counter()
            f()
            times[f"{name}/{n}"].append(time.perf_counter() - t)
    rows = []
    for name, n, f, work, scale, unit in cases:
        k = f"{name}/{n}"
        per = min(times[k]) / work * scale
        rows.append({"workload": name, "n": n, "power_of_two": n & (n - 1) == 0, "min_s": min(times[k]),
                     "median_s": float(np.median(times[k])), "per_unit": per, "unit": unit, "first_call_s": first[k]})
        print(f"{name:<26} n = {n:6d}{' (2**k)' if n & (n - 1) == 0 else '       '}  {per:7.3f} {unit}  "
              f"(min {min(times[k]):.3f} s, median {np.median(times[k]):.3f} s)", flush=True)
    print(f"machine: {machine_name()}")
    write_json({"machine": machine_name(), "jax": jax.__version__, "twa_jax": tw.__version__, "dtype": "float32",
                "repeats": args.repeats, "rows": rows}, args.out)


if __name__ == "__main__":
    main()
