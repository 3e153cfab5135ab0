"""Cost of reading the exact twin off a model's functions (tw.exact.twin), against building the same
model by hand in QuTiP, for the Rydberg chain (degree 2, 3N variables) and a Kerr oscillator with a
spin (degree 4 in the boson). One run prints both times and their ratio, with the machine.

    python benchmarks/bench_twin.py [--sizes 4 6 8 10]
"""

import argparse
import json
import os
import platform
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import numpy as np  # noqa: E402
import qutip as qt  # noqa: E402

import twa_jax as tw  # noqa: E402
import twa_jax.exact  # noqa: E402,F401


def hand_rydberg(n, Omega=1.0, J=1.0, kappa=0.1, gamma=0.1):
    def site(op, i):
        ops = [qt.qeye(2)] * n
        ops[i] = op
        return qt.tensor(ops)
    x = [site(qt.sigmax(), i) for i in range(n)]
    z = [site(qt.sigmaz(), i) for i in range(n)]
    m = [site(qt.sigmam(), i) for i in range(n)]
    one = qt.qeye([2] * n)
    H = Omega * sum(x) + J / 4 * sum((one + z[i]) * (one + z[(i + 1) % n]) for i in range(n))
    return qt.liouvillian(H, [np.sqrt(gamma) * o for o in m] + [np.sqrt(kappa) * o for o in z])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[4, 6, 8, 10])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = []
    for n in args.sizes:
        model = tw.models.rydberg_chain(n, kappa=0.1, gamma_down=0.1)
        t0 = time.perf_counter()
        L_derived = tw.exact.twin(model).liouvillian()
        t_derived = time.perf_counter() - t0
        t0 = time.perf_counter()
        L_hand = hand_rydberg(n)
        t_hand = time.perf_counter() - t0
        d = (L_derived - L_hand).to("csr").data.as_scipy()
        diff = float(np.max(np.abs(d.data), initial=0.0))
        rows.append(dict(model=f"rydberg_chain({n})", derived_s=t_derived, hand_s=t_hand,
                         ratio=t_derived / t_hand, max_liouvillian_diff=diff))
        print(f"rydberg N={n:2d}: twin {t_derived:6.2f} s, by hand {t_hand:6.2f} s, ratio {t_derived / t_hand:5.1f}, "
              f"max |L_derived - L_hand| = {diff:.1e}")
    info = dict(machine=platform.machine(), processor=platform.processor(), cpus=os.cpu_count(),
                jax=jax.__version__, qutip=qt.__version__, backend=jax.default_backend())
    print(info)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(rows=rows, machine=info), f, indent=1)


if __name__ == "__main__":
    main()
