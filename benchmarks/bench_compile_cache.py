"""First call of a new process with and without JAX's persistent compilation cache.

    python benchmarks/bench_compile_cache.py [--out FILE]

Each variant runs in fresh Python processes (the Rydberg chain N = 10, 1000 trajectories,
100 steps): ``none`` (no cache), ``cache`` (the cache alone: diffrax's solve holds equinox's host
callbacks and is not cached) and ``cache+nan`` (the cache and ``EQX_ON_ERROR=nan``: everything
cached). For the cached variants the first process fills an empty cache and the second one is
timed. Prints the time of the first ``simulate`` (compilation included) and the final ``<sz>``,
which must be identical across variants.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap

SCRIPT = textwrap.dedent("""
    import sys, time, jax
    if sys.argv[1] != "-":
        jax.config.update("jax_compilation_cache_dir", sys.argv[1])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    import numpy as np, twa_jax as tw
    model = tw.models.rydberg_chain(10, Omega=1.0, J=1.0, gamma_down=0.2, boundary="open")
    t = time.perf_counter()
    r = tw.simulate(model, tw.states.spins_down(10), np.linspace(0, 1, 11), n_traj=1000, key=0, dt=0.01, progress=False)
    jax.block_until_ready(r.mean["sz"])
    print(time.perf_counter() - t, repr(float(r.mean["sz"][-1])))
""")


def run(script, cache, env):
    out = subprocess.run([sys.executable, script, cache], env=env, capture_output=True, text=True, check=True)
    secs, value = out.stdout.split()
    return float(secs), value


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    script = os.path.join(tmp, "first_call.py")
    with open(script, "w") as f:
        f.write(SCRIPT)
    base = {k: v for k, v in os.environ.items() if k != "EQX_ON_ERROR"}
    rows = {}
    rows["none"] = run(script, "-", base)
    for name, env in (("cache", base), ("cache+nan", {**base, "EQX_ON_ERROR": "nan"})):
        cache = os.path.join(tmp, name)
        run(script, cache, env)  # fills the cache
        rows[name] = run(script, cache, env)
    for name, (secs, value) in rows.items():
        print(f"{name:10s} first simulate {secs:6.2f} s   final <sz> {value}")
    res = {"benchmark": "bench_compile_cache", "platform": platform.platform(), "cpu_count": os.cpu_count(),
           "first_simulate_s": {k: v[0] for k, v in rows.items()}, "final_sz": {k: v[1] for k, v in rows.items()},
           "identical": len({v[1] for v in rows.values()}) == 1}
    print("identical results:", res["identical"])
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
