"""Main job: the superradiant burst of a sub-wavelength atomic chain (paper Sec. III F, Fig. 7).

    python -m twa_jax.demo                               # N = 100, a = lambda/10, CPU, < 2 min
    python -m twa_jax.demo --n-atoms 1000 --n-traj 2000  # bigger, on a GPU

``N`` two-level atoms on a line with spacing ``a``, dipoles perpendicular to it, all excited at
t = 0, decay collectively through the free-space Gamma_ij of Eq. 53 (dense, N x N) with the
dipolar exchange J_ij of Eq. 52. The normalized emission rate R(t) of Eq. 61 rises above the
independent-atom value e^{-Gamma0 t} (superradiant burst) before subradiant modes slow the decay.
Prints a summary (peak of R, its time, standard errors, the time step, the wall time, the device)
and saves a plot. A small exact check (N = 6, QuTiP) runs first when QuTiP is installed.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import twa_jax as tw


def burst(n_atoms: int, spacing: float, n_traj: int, t_max: float, key: int):
    model = tw.models.dipole_array(tw.models.chain_positions(n_atoms, spacing), wavelength=1.0, dipole=(0, 0, 1.0))
    ts = np.linspace(0, t_max, 61)
    res = tw.simulate(model, tw.states.spins_up(n_atoms), ts, n_traj=n_traj, key=key)
    return model, ts, res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-atoms", type=int, default=100, help="atoms in the chain (default 100)")
    ap.add_argument("--spacing", type=float, default=0.1, help="lattice constant in wavelengths (default 0.1)")
    ap.add_argument("--n-traj", type=int, default=600, help="TWA trajectories (default 600)")
    ap.add_argument("--t-max", type=float, default=1.5, help="final time in units of 1/Gamma0 (default 1.5)")
    ap.add_argument("--key", type=int, default=0, help="random seed")
    ap.add_argument("--out", default="twa_demo.png", help="output plot (default twa_demo.png)")
    ap.add_argument("--no-exact", action="store_true", help="skip the small exact check")
    args = ap.parse_args(argv)
    if args.n_atoms < 2 or args.n_traj < 2 or not (0 < args.spacing) or not (args.t_max > 0):
        ap.error("need --n-atoms >= 2, --n-traj >= 2, --spacing > 0 and --t-max > 0")
    jax.config.update("jax_enable_x64", True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = time.perf_counter()
    fig, ax = plt.subplots(figsize=(6, 4))
    if not args.no_exact:
        try:
            import twa_jax.exact as exact
        except ImportError:
            exact = None
            print("QuTiP not installed: skipping the exact check (pip install -e '.[test]')")
        if exact is not None:
            model, ts, res = burst(6, args.spacing, 4000, args.t_max, args.key)
            ex = exact.solve(model, tw.states.spins_up(6), ts)
            d = np.abs(np.asarray(res.mean["emission_rate"]) - np.asarray(ex.mean["emission_rate"]))
            print(f"exact check, N = 6: max |R_TWA - R_exact| = {d.max():.3f} "
                  f"(TWA sem {np.max(np.asarray(res.sem['emission_rate'])):.3f}; exact peak "
                  f"{np.max(np.asarray(ex.mean['emission_rate'])):.3f}, TWA peak {np.max(np.asarray(res.mean['emission_rate'])):.3f})")
            ax.plot(ts, np.asarray(res.mean["emission_rate"]), color="C1", label="TWA, N=6")
            ax.plot(ts[::3], np.asarray(ex.mean["emission_rate"])[::3], "o", mfc="none", color="C1", label="exact, N=6")

    model, ts, res = burst(args.n_atoms, args.spacing, args.n_traj, args.t_max, args.key)
    R, dR = np.asarray(res.mean["emission_rate"]), np.asarray(res.sem["emission_rate"])
    i = int(np.argmax(R))
    G = np.asarray(model.gamma_of(model.params))
    ev = np.linalg.eigvalsh(G)
    print(res)
    print(f"N = {args.n_atoms} atoms, a = {args.spacing:g} lambda, {args.n_traj} trajectories on "
          f"{jax.devices()[0].platform}: peak R = {R[i]:.3f} +- {dR[i]:.3f} at Gamma0 t = {ts[i]:.3f} "
          f"(independent atoms: R = 1 at t = 0); R(t_max) = {R[-1]:.4f} +- {dR[-1]:.4f}; "
          f"Gamma eigenvalues {ev.min():.2e} .. {ev.max():.2f} Gamma0; dt = {res.dt:.3g}; "
          f"simulate took {res.wall_time:.1f} s, total {time.perf_counter() - t0:.1f} s")
    ax.plot(ts, R, color="C0", label=f"TWA, N={args.n_atoms}")
    ax.fill_between(ts, R - dR, R + dR, color="C0", alpha=0.3, lw=0)
    ax.plot(ts, np.exp(-ts), "k--", lw=1, label="independent atoms")
    ax.set(xlabel=r"$\Gamma_0 t$", ylabel=r"emission rate $R(t)$ (Eq. 61)",
           title=f"Superradiant burst, chain with a = {args.spacing:g} λ")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=130)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
