"""Reproduce the paper's Figs. 2-7: TWA against the exact solution, one command per figure.

    python -m twa_jax.paper fig3                 # one figure
    python -m twa_jax.paper all --out figures    # all of them
    python -m twa_jax.paper fig2 --quick         # small sizes, a smoke test

Each figure is saved as ``<out>/<fig>.png`` with ``<out>/<fig>.json`` next to it: for every
curve, the maximum and final-time absolute and relative deviation of TWA from the exact result,
the largest standard error, the trajectory count, the wall times and the machine. The paper's
cumulant-expansion curves are left out. Where the paper does not print a parameter (the drive
strengths of Figs. 2, 5 and 6, the spacings of Fig. 7, the time windows), the value used is
stated in the JSON and on the docs' Validation page (``docs/validation.md``).

Progress goes to stderr (``tqdm``): one bar over the figures and one over the current figure's
cases (curves, sizes); ``--no-progress`` turns both off. The figures run in float64 (switched on
for the run and restored after it); importing this module changes no global setting.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import numpy as np
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from . import exact, models
from . import states as S
from ._solve import simulate

# Importing this module changes nothing global: figures are drawn on ``matplotlib.figure.Figure``
# objects (no pyplot, so no backend is selected or switched), and float64 is switched on only
# while :func:`main` runs (``run`` below).


# ----------------------------------------------------------------------------- helpers
def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    dev = jax.devices()[0]
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "jax_backend": jax.default_backend(),
            "jax_device": getattr(dev, "device_kind", str(dev)), "jax": jax.__version__}


def deviation(twa, ex, name, scale=1.0) -> dict:
    """Deviation of TWA from exact for observable ``name`` (both divided by ``scale``)."""
    m = np.asarray(twa.mean[name]).squeeze() / scale
    e = np.asarray(ex.mean[name]).squeeze() / scale
    s = np.asarray(twa.sem[name]).squeeze() / scale
    d = np.abs(m - e)
    ref = max(np.max(np.abs(e)), 1e-12)
    out = {
        "max_abs": float(d.max()), "final_abs": float(d[-1]),
        "max_rel": float(d.max() / ref), "final_rel": float(d[-1] / max(abs(e[-1]), 1e-12)),
        "max_sem": float(s.max()), "n_traj": int(twa.n_traj), "twa_wall_s": round(float(twa.wall_time), 2),
        "exact_method": ex.method, "exact_wall_s": round(float(ex.wall_time), 2), "dt": twa.dt,
    }
    series = {"t": np.asarray(twa.ts), "twa": m, "twa_sem": s, "exact": e}
    if ex.method == "mcsolve":
        out["exact_max_sem"] = float(np.asarray(ex.sem[name]).max() / scale)
        out["exact_n_traj"] = int(ex.n_traj)
        series["exact_sem"] = np.asarray(ex.sem[name]).squeeze() / scale
    out["series"] = {k: np.round(np.asarray(v, float), 6).tolist() for k, v in series.items()}
    return out


def _plot_pair(ax, twa, ex, name, label, color, scale=1.0, fmt="o"):
    t = np.asarray(twa.ts)
    m = np.asarray(twa.mean[name]).squeeze() / scale
    s = np.asarray(twa.sem[name]).squeeze() / scale
    ax.plot(t, m, "-", color=color, label=f"TWA {label}")
    ax.fill_between(t, m - s, m + s, color=color, alpha=0.25, lw=0)
    te = np.asarray(ex.ts)
    every = max(1, len(te) // 25)
    e = np.asarray(ex.mean[name]).squeeze() / scale
    if ex.method == "mcsolve":
        es = np.asarray(ex.sem[name]).squeeze() / scale
        ax.errorbar(te[::every], e[::every], es[::every], fmt=fmt, mfc="none", color=color, ms=4)
    else:
        ax.plot(te[::every], e[::every], fmt, mfc="none", color=color, ms=4)


def _n(args, default):
    if args.n_traj:
        return args.n_traj
    return max(200, default // 20) if args.quick else default


def _cases(args, name, items, label=str):
    """Iterate over the cases (curves, sizes) of figure ``name`` with a progress bar showing the
    case being computed; ``--no-progress`` (``args.progress = False``) hides it."""
    items = list(items)
    bar = tqdm(items, desc=name, unit="case", leave=False, disable=not getattr(args, "progress", True))
    for item in bar:
        bar.set_postfix_str(label(item), refresh=True)
        yield item


def _save(fig, record, args, name):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=130)
    record.update({"figure": name, "quick": bool(args.quick), "machine": machine(), "key": args.key})
    (out / f"{name}.json").write_text(json.dumps(record, indent=1))
    lines = [f"{name}: wrote {out / name}.png and .json"]
    for k, v in record.get("curves", {}).items():
        lines.append(f"  {k}: max |dev| {v['max_abs']:.4f} (rel {v['max_rel']:.3f}), final |dev| "
                     f"{v['final_abs']:.4f} (rel {v['final_rel']:.3f}), max sem {v['max_sem']:.4f}")
    tqdm.write("\n".join(lines))  # one write: the progress bars are redrawn once
    return record


# ----------------------------------------------------------------------------- the figures
def fig2(args):
    """Driven spin (Sec. III B): <sigma^z>(t) for gamma_down/Omega = 0.1, 0.5, 1, 4, plus the
    no-noise TWA at 0.1."""
    ts = np.linspace(0, 10, 101 if not args.quick else 41)
    n = _n(args, 20000)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    curves = {}
    init = S.spins_down(1)
    cases = zip((0.1, 0.5, 1.0, 4.0), ("C0", "C1", "C2", "C3"))
    for g, c in _cases(args, "fig2", cases, lambda gc: f"gamma_down={gc[0]}"):
        m = models.driven_spin(Omega=1.0, gamma_down=g)
        twa = simulate(m, init, ts, n_traj=n, key=args.key)
        ex = exact.solve(m, init, ts)
        _plot_pair(ax, twa, ex, "sz", f"$\\gamma_\\downarrow/\\Omega={g}$", c)
        curves[f"gamma_down={g}"] = deviation(twa, ex, "sz")
        if g == 0.1:
            nn = simulate(m, init, ts, n_traj=n, key=args.key, method="no_noise")
            ax.plot(ts, np.asarray(nn.mean["sz"]), ":", color=c, label="no noise, 0.1")
            curves["gamma_down=0.1 no_noise"] = deviation(nn, ex, "sz")
    ax.set(xlabel=r"$\Omega t$", ylabel=r"$\langle\sigma^z\rangle$", title="Fig. 2: driven spin (circles: exact)")
    ax.legend(fontsize=7)
    return _save(fig, {"observable": "sz", "params": {"Omega": 1.0}, "curves": curves}, args, "fig2")


def _tc(n, p, ts, args, n_traj, cutoff):
    m = models.tavis_cummings(n, **p)
    init = S.product(spins=S.spins_up(n), bosons=S.vacuum(1))
    twa = simulate(m, init, ts, n_traj=n_traj, key=args.key)
    ex = exact.solve(m, init, ts, method="piqs", cutoff=cutoff)
    return twa, ex


def fig3(args):
    """Tavis-Cummings (Sec. III C): <a^dag a>/N, N = 15 (inset N = 12 without pumping)."""
    n_main, n_inset = (15, 12) if not args.quick else (4, 4)
    ts = np.linspace(0, 20, 101 if not args.quick else 41)
    n = _n(args, 10000)
    main = dict(omega=1.0, eps=1.0, kappa=1.0, g=0.9, gamma_down=1 / 8, gamma_up=3 / 8)
    inset = dict(omega=1.0, eps=0.5, kappa=1.0, g=1.7, gamma_down=0.25, gamma_up=0.0)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    steps = _cases(args, "fig3", (f"N={n_main}", f"inset N={n_inset}"))  # two cases, no loop:
    next(steps)                                                            # advanced by hand
    twa, ex = _tc(n_main, main, ts, args, n, cutoff=30 if not args.quick else 12)
    _plot_pair(ax, twa, ex, "n", f"N={n_main}", "C0", scale=n_main)
    curves = {f"N={n_main}": deviation(twa, ex, "n", scale=n_main)}
    ax.set(xlabel=r"$\omega t$", ylabel=r"$\langle a^\dagger a\rangle/N$", title="Fig. 3: Tavis-Cummings (circles: exact, PIQS)")
    ins = ax.inset_axes([0.52, 0.08, 0.45, 0.36])
    ts2 = np.linspace(0, 10, 51 if not args.quick else 21)
    next(steps)
    twa2, ex2 = _tc(n_inset, inset, ts2, args, n, cutoff=30 if not args.quick else 12)
    _plot_pair(ins, twa2, ex2, "n", f"N={n_inset}", "C1", scale=n_inset)
    ins.tick_params(labelsize=6)
    curves[f"inset N={n_inset}"] = deviation(twa2, ex2, "n", scale=n_inset)
    ax.legend(fontsize=7, loc="upper left")
    next(steps, None)  # close the bar
    return _save(fig, {"observable": "n/N", "params": {"main": main, "inset": inset}, "curves": curves}, args, "fig3")


def _cs(n, p, ts, args, n_traj):
    m = models.central_spin(n, **p)
    init = S.product(spins=[S.spins_down(1), S.spins_up(n)])
    twa = simulate(m, init, ts, n_traj=n_traj, key=args.key)
    ex = exact.solve(m, init, ts, method="piqs")
    return twa, ex


def fig4(args):
    """Central spin (Sec. III D): central population (1 + <tau^z>)/2 for N = 30, and its steady
    state against N (inset; TWA averaged over t in [7, 10], exact at t = 10)."""
    p = dict(omega=1.0, eps=1.0, kappa=1.0, g=3.0, gamma_down=0.5, gamma_up=1.5)
    n_main = 30 if not args.quick else 4
    ts = np.linspace(0, 8, 81 if not args.quick else 33)
    n = _n(args, 10000)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    sizes = (5, 10, 20, 30) if not args.quick else (2, 4)
    steps = _cases(args, "fig4", [("main", n_main)] + [("steady state", N) for N in sizes],
                   lambda c: f"{c[0]} N={c[1]}")
    next(steps)  # the main curve; the loop below takes the steady-state sizes
    twa, ex = _cs(n_main, p, ts, args, n)
    for r in (twa, ex):  # population n = (1 + tau_z)/2
        r.mean["pop"] = (1 + np.asarray(r.mean["tau_z"])) / 2
        r.sem["pop"] = np.asarray(r.sem["tau_z"]) / 2
    _plot_pair(ax, twa, ex, "pop", f"N={n_main}", "C0")
    curves = {f"N={n_main}": deviation(twa, ex, "pop")}
    ax.set(xlabel=r"$\omega t$", ylabel=r"$(1+\langle\tau^z\rangle)/2$", title="Fig. 4: central spin (circles: exact, PIQS)")
    ts_ss = np.linspace(0, 10, 41)
    ss = {"N": [], "twa": [], "twa_sem": [], "exact": []}
    for _, N in steps:
        t2, e2 = _cs(N, p, ts_ss, args, max(100, n // 4))
        late = ts_ss >= 7
        ss["N"].append(N)
        ss["twa"].append(float((1 + np.mean(np.asarray(t2.mean["tau_z"])[late])) / 2))
        ss["twa_sem"].append(float(np.max(np.asarray(t2.sem["tau_z"])[late]) / 2))
        ss["exact"].append(float((1 + np.asarray(e2.mean["tau_z"])[-1]) / 2))
    ins = ax.inset_axes([0.5, 0.1, 0.46, 0.36])
    ins.errorbar(ss["N"], ss["twa"], ss["twa_sem"], fmt="-", color="C0")
    ins.set_title("steady state (late-time average)", fontsize=7)
    ins.plot(ss["N"], ss["exact"], "o", mfc="none", color="k")
    ins.set_xlabel("N", fontsize=7)
    ins.tick_params(labelsize=6)
    ss["rel_err"] = [abs(a - b) / b for a, b in zip(ss["twa"], ss["exact"])]
    ss["twa_sem_note"] = "largest per-time standard error in the averaging window (the average's own is smaller)"
    ax.legend(fontsize=7, loc="upper right")
    return _save(fig, {"observable": "(1+tau_z)/2", "params": p, "curves": curves, "steady_state": ss}, args, "fig4")


def fig5(args):
    """Rydberg chain (Sec. III E): <sigma^z>(t), N = 10, gamma_down/J = kappa/J = 0.1, periodic,
    for Omega/J = 0.5, 1, 2; exact by quantum trajectories (mcsolve)."""
    N = 10 if not args.quick else 4
    ts = np.linspace(0, 10, 101 if not args.quick else 21)
    n = _n(args, 10000)
    n_mc = 500 if not args.quick else 100
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    curves = {}
    cases = zip((0.5, 1.0, 2.0), ("C0", "C1", "C2"))
    for Om, c in _cases(args, "fig5", cases, lambda oc: f"Omega/J={oc[0]}"):
        m = models.rydberg_chain(N, Omega=Om, J=1.0, kappa=0.1, gamma_down=0.1)
        twa = simulate(m, S.spins_down(N), ts, n_traj=n, key=args.key)
        ex = exact.solve(m, S.spins_down(N), ts, method="mcsolve", n_traj=n_mc, seed=args.key)
        _plot_pair(ax, twa, ex, "sz", f"$\\Omega/J={Om}$", c)
        curves[f"Omega/J={Om}"] = deviation(twa, ex, "sz")
    ax.set(xlabel=r"$J t$", ylabel=r"$\langle\sigma^z\rangle$", title=f"Fig. 5: Rydberg chain N={N} (circles: mcsolve)")
    ax.legend(fontsize=7)
    return _save(fig, {"observable": "sz", "params": {"J": 1.0, "kappa": 0.1, "gamma_down": 0.1}, "curves": curves}, args, "fig5")


def fig6(args):
    """Driven sub-wavelength chain (Sec. III F): excitation (1 + <sigma^z>)/2, N = 8, a = lambda/5,
    dipoles perpendicular to the chain, all atoms down, Omega/Gamma0 = 0.5, 1, 2."""
    N = 8 if not args.quick else 4
    ts = np.linspace(0, 10, 101 if not args.quick else 41)
    n = _n(args, 10000)
    pos = models.chain_positions(N, 0.2)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    curves = {}
    cases = zip((0.5, 1.0, 2.0), ("C0", "C1", "C2"))
    for Om, c in _cases(args, "fig6", cases, lambda oc: f"Omega/Gamma0={oc[0]}"):
        m = models.dipole_array(pos, 1.0, (0, 0, 1.0), Gamma0=1.0, Omega=Om)
        twa = simulate(m, S.spins_down(N), ts, n_traj=n, key=args.key)
        ex = exact.solve(m, S.spins_down(N), ts, method="full")
        _plot_pair(ax, twa, ex, "excitation", f"$\\Omega/\\Gamma_0={Om}$", c)
        curves[f"Omega/Gamma0={Om}"] = deviation(twa, ex, "excitation")
    ax.set(xlabel=r"$\Gamma_0 t$", ylabel="excitation per atom", title=f"Fig. 6: driven chain N={N}, a=λ/5 (circles: exact)")
    ax.legend(fontsize=7)
    return _save(fig, {"observable": "excitation", "params": {"a": "lambda/5", "dipole": "perpendicular"}, "curves": curves}, args, "fig6")


def fig7(args):
    """Superradiant burst (Sec. III F): emission rate R(t) (Eq. 61) of an inverted chain, N = 10,
    lambda/a = 10, 5, 3, 2; inset: lambda/a = 10 for N = 10, 100, 1000 (TWA only)."""
    N = 10 if not args.quick else 4
    ts = np.linspace(0, 3, 61 if not args.quick else 31)
    n = _n(args, 10000)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    curves = {}
    cases = zip((10, 5, 3, 2), ("C0", "C1", "C2", "C3"))
    for inv_a, c in _cases(args, "fig7", cases, lambda ac: f"lambda/a={ac[0]}"):
        m = models.dipole_array(models.chain_positions(N, 1.0 / inv_a))
        twa = simulate(m, S.spins_up(N), ts, n_traj=n, key=args.key)
        ex = exact.solve(m, S.spins_up(N), ts, method="full")
        _plot_pair(ax, twa, ex, "emission_rate", f"$\\lambda/a={inv_a}$", c)
        curves[f"lambda/a={inv_a}"] = deviation(twa, ex, "emission_rate")
        curves[f"lambda/a={inv_a}"]["peak_twa"] = float(np.max(np.asarray(twa.mean["emission_rate"])))
        curves[f"lambda/a={inv_a}"]["peak_exact"] = float(np.max(np.asarray(ex.mean["emission_rate"])))
    ax.set(xlabel=r"$\Gamma_0 t$", ylabel="R(t)", title=f"Fig. 7: burst of an inverted chain, N={N} (circles: exact)")
    ax.legend(fontsize=7, loc="upper right")
    ins = ax.inset_axes([0.5, 0.25, 0.35, 0.35])
    inset = {}
    sizes = ((10, n), (100, max(200, n // 10)), (1000, max(100, n // 50))) if not args.quick else ((10, 200), (50, 100))
    ts_i = np.linspace(0, 1.5, 31)
    cases = zip(sizes, ("C0", "C4", "C5"))
    for (Ni, nt), c in _cases(args, "fig7 inset", cases, lambda sc: f"N={sc[0][0]}, {sc[0][1]} traj."):
        m = models.dipole_array(models.chain_positions(Ni, 0.1))
        r = simulate(m, S.spins_up(Ni), ts_i, n_traj=nt, key=args.key)
        ins.plot(ts_i, np.asarray(r.mean["emission_rate"]), color=c, label=f"N={Ni}")
        inset[f"N={Ni}"] = {"n_traj": nt, "peak": float(np.max(np.asarray(r.mean["emission_rate"]))),
                            "max_sem": float(np.max(np.asarray(r.sem["emission_rate"]))),
                            "wall_s": round(float(r.wall_time), 1), "dt": r.dt}
    ins.set_yscale("log")
    ins.legend(fontsize=5)
    ins.tick_params(labelsize=6)
    return _save(fig, {"observable": "emission_rate (Eq. 61)", "curves": curves, "inset_twa_only": inset}, args, "fig7")


FIGURES = {"fig2": fig2, "fig3": fig3, "fig4": fig4, "fig5": fig5, "fig6": fig6, "fig7": fig7}


def run(names, args) -> dict:
    """Run the figures ``names`` (keys of :data:`FIGURES`) with the options ``args`` (as parsed by
    :func:`main`); returns ``{name: record}``.

    float64 is switched on for the run (the comparisons with exact results are at the 1e-3 level)
    and restored afterwards, so calling this from a session leaves its JAX settings as they were.
    """
    x64 = bool(jax.config.jax_enable_x64)
    jax.config.update("jax_enable_x64", True)
    records = {}
    try:
        bar = tqdm(names, desc="figures", unit="fig", disable=not getattr(args, "progress", True))
        for f in bar:
            bar.set_postfix_str(f, refresh=True)
            t0 = time.perf_counter()
            records[f] = FIGURES[f](args)
            tqdm.write(f"  ({time.perf_counter() - t0:.0f} s)")
    finally:
        jax.config.update("jax_enable_x64", x64)
    return records


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("figures", nargs="+", help=f"any of {sorted(FIGURES)} or 'all'")
    ap.add_argument("--quick", action="store_true", help="small sizes and few trajectories (smoke test)")
    ap.add_argument("--n-traj", type=int, default=None, help="TWA trajectories per curve (default per figure)")
    ap.add_argument("--out", default="figures", help="output folder (default: figures)")
    ap.add_argument("--key", type=int, default=0, help="random seed")
    ap.add_argument("--no-progress", dest="progress", action="store_false",
                    help="no progress bars (default: one over the figures, one over each figure's cases; stderr)")
    args = ap.parse_args(argv)
    names = sorted(FIGURES) if args.figures == ["all"] else args.figures
    bad = [f for f in names if f not in FIGURES]
    if bad:
        ap.error(f"unknown figure(s) {bad}; choose from {sorted(FIGURES)} or 'all'")
    if args.n_traj is not None and args.n_traj < 2:
        ap.error("--n-traj must be >= 2")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    return run(names, args)


if __name__ == "__main__":
    main()
