"""Accuracy of TWA two-time correlations and spectra against exact results, and whether a
deviation is TWA's own (it stays when dt is halved and the trajectories quadrupled) or the
integrator's / the statistics' (it moves).

    python benchmarks/bench_spectra.py [--cases mollow5,mollow05,coop20,chain8,chain8_half] [--n-traj 4000] [--out FILE]

Cases (float64, units of the single-atom decay rate gamma = 1):

* ``mollow5``, ``mollow05``: resonance fluorescence of one driven two-level atom,
  ``H = (Omega_R / 2) sigma^x`` (``tw.models.driven_spin`` with ``Omega = Omega_R / 2``), Rabi
  frequency ``Omega_R / gamma = 5`` (the Mollow triplet) and ``0.5`` (weak drive);
  ``A = sigma^+``, ``B = sigma^-``.
* ``coop20``: cooperative resonance fluorescence of N = 20 atoms, one collective jump ``J^-``
  (``tw.models.dicke(20, gamma=1, Omega=N/8)``: ``H = 2 Omega J_x``, half the drive of the
  transition at ``Omega = N/4``), ``A = J^+``, ``B = J^-``; exact: QuTiP in the symmetric subspace
  ``j = N/2`` (dimension 21), written out here.
* ``chain8``: the correlated-decay dipole chain (paper Eq. 56, ``tw.models.dipole_array``), N = 8,
  spacing lambda/10, dipoles perpendicular to the chain, weak uniform drive ``Omega = 0.3``;
  ``A = J^+``, ``B = J^-`` (the collective dipole); exact: the derived twin (dimension 256).
  ``chain8_half``: the same at spacing lambda/2. (At lambda/10 the classical dynamics is chaotic:
  the commutator part's sem grows like ``exp(lambda tau)`` and TWA's spectrum is noise.)

For every case: the steady state is reached by ``t_ss``; TWA's ``tw.spectrum`` (fluctuation
spectrum, Hann window on ``[0, tau_max]``) is compared with the exact correlation put through the
same transform (the same lags, weights and subtraction of ``<A><B>``), so the window's broadening
is the same on both sides. Reported per run: ``max |S - S_exact| / sem``, ``max |S - S_exact|``
relative to the exact peak, and per peak window the position (parabola through the largest
point), the full width at half maximum and the weight ``int S domega / 2 pi``; runs at
``(n_traj, dt)``, ``(n_traj, dt / 2)`` and ``(4 n_traj, dt)``. A deviation that stays through
the three runs is TWA's bias; one that shrinks with the sem or with dt is not.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import qutip as qt  # noqa: E402

import twa_jax as tw  # noqa: E402
import twa_jax.exact as ex  # noqa: E402
from twa_jax._plan import make_plan  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_chain import machine_name, write_json  # noqa: E402

sp = lambda s, a: tw.weyl.sigma_plus(s)[0]  # noqa: E731
sm = lambda s, a: tw.weyl.sigma_minus(s)[0]  # noqa: E731
Jp = lambda s, a: tw.weyl.sigma_plus(s).sum()  # noqa: E731
Jm = lambda s, a: tw.weyl.sigma_minus(s).sum()  # noqa: E731


def hann_weights(taus):
    w = np.full(len(taus), taus[1] - taus[0]) * np.cos(np.pi * taus / (2 * taus[-1])) ** 2
    w[[0, -1]] *= 0.5
    return w


def transform(C, mean_ab, taus, oms):
    """The fluctuation spectrum of ``tw.spectrum(window="hann")`` from a correlation ``C(tau)``."""
    return 2 * np.real(np.exp(-1j * oms[:, None] * taus[None, :]) @ (hann_weights(taus) * (C - mean_ab)))


def cases():
    def spin(rabi, oms, windows):
        model = tw.models.driven_spin()
        p = {"Omega": rabi / 2, "gamma_down": 1.0}
        init = tw.states.spins_down(1)

        def exact_corr(t_ss, taus):
            C = ex.correlation(model, init, [t_ss], taus, sp, sm, params=p)[0]
            r = ex.solve(model, init, np.array([0.0, t_ss]), params=p, observables={"A": sp, "B": sm})
            return C, complex(r.mean["A"][-1] * r.mean["B"][-1])

        return dict(model=model, params=p, initial=init, a=sp, b=sm, t_ss=15.0, taus=np.linspace(0, 20, 401),
                    oms=oms, windows=windows, exact=exact_corr)

    def coop():
        n, om = 20, 20 / 8
        model = tw.models.dicke(n, gamma=1.0, Omega=om)
        j = n / 2

        def exact_corr(t_ss, taus):
            H, L = 2 * om * qt.jmat(j, "x"), qt.jmat(j, "-")
            rho0 = qt.ket2dm(qt.basis(n + 1, n))  # m = -j (all down)
            C = qt.correlation_2op_2t(H, rho0, [0.0, t_ss], taus, [L], qt.jmat(j, "+"), L,
                                      options={"atol": 1e-10, "rtol": 1e-8})[1]
            rho = qt.mesolve(H, rho0, [0.0, t_ss], [L], options={"atol": 1e-10, "rtol": 1e-8}).states[-1]
            return np.asarray(C), complex(qt.expect(qt.jmat(j, "+"), rho) * qt.expect(L, rho))

        return dict(model=model, params=None, initial=tw.states.spins_down(n), a=Jp, b=Jm, t_ss=3.0,
                    taus=np.linspace(0, 2, 201), oms=np.linspace(-20, 20, 81), windows=[(-20, 20)], exact=exact_corr)

    def chain(spacing):
        n = 8
        model = tw.models.dipole_array(tw.models.chain_positions(n, spacing), wavelength=1.0, dipole=(0, 0, 1),
                                       Gamma0=1.0, Omega=0.3)
        init = tw.states.spins_down(n)

        def exact_corr(t_ss, taus):
            C = ex.correlation(model, init, [t_ss], taus, Jp, Jm)[0]
            r = ex.solve(model, init, np.array([0.0, t_ss]), observables={"A": Jp, "B": Jm})
            return C, complex(r.mean["A"][-1] * r.mean["B"][-1])

        return dict(model=model, params=None, initial=init, a=Jp, b=Jm, t_ss=10.0, taus=np.linspace(0, 10, 201),
                    oms=np.linspace(-10, 10, 81), windows=[(-10, 10)], exact=exact_corr)

    return {
        "mollow5": lambda: spin(5.0, np.linspace(-10, 10, 201), [(-10, -2.5), (-2.5, 2.5), (2.5, 10)]),
        "mollow05": lambda: spin(0.5, np.linspace(-4, 4, 161), [(-4, 4)]),
        "coop20": coop,
        "chain8": lambda: chain(0.1),
        "chain8_half": lambda: chain(0.5),
    }


def peaks(oms, S, windows):
    """Per window: position (parabola through the largest point and its neighbours), FWHM (linear
    interpolation of the half-maximum crossings), weight ``int S domega / 2 pi`` (trapezoid)."""
    out = []
    for lo, hi in windows:
        m = (oms >= lo) & (oms <= hi)
        w, s = oms[m], S[m]
        k = int(np.argmax(s))
        pos = w[k]
        if 0 < k < len(s) - 1:
            den = s[k - 1] - 2 * s[k] + s[k + 1]
            if den < 0:
                pos = w[k] + 0.5 * (w[1] - w[0]) * (s[k - 1] - s[k + 1]) / den
        half = s[k] / 2
        left = next((i for i in range(k, 0, -1) if s[i - 1] < half), None)
        right = next((i for i in range(k, len(s) - 1) if s[i + 1] < half), None)
        fwhm = None
        if left is not None and right is not None:
            xl = w[left - 1] + (half - s[left - 1]) * (w[left] - w[left - 1]) / (s[left] - s[left - 1])
            xr = w[right] + (half - s[right]) * (w[right + 1] - w[right]) / (s[right + 1] - s[right])
            fwhm = float(xr - xl)
        out.append({"window": [lo, hi], "position": float(pos), "fwhm": fwhm,
                    "weight": float(np.trapezoid(s, w) / (2 * np.pi)), "height": float(s[k])})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="mollow5,mollow05,coop20,chain8,chain8_half")
    ap.add_argument("--n-traj", type=int, default=4000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    res = {"benchmark": "bench_spectra", "machine": machine_name(), "jax": jax.__version__, "twa_jax": tw.__version__,
           "platform": platform.platform(), "dtype": "float64", "window": "hann", "cases": {}}
    for name in args.cases.split(","):
        c = cases()[name]()
        t = time.perf_counter()
        C_ex, ab = c["exact"](c["t_ss"], c["taus"])
        S_ex = transform(C_ex, ab, c["taus"], c["oms"])
        t_exact = time.perf_counter() - t
        row = {"t_ss": c["t_ss"], "tau_max": float(c["taus"][-1]), "n_lags": len(c["taus"]),
               "omegas": [float(c["oms"][0]), float(c["oms"][-1]), len(c["oms"])], "exact_s": t_exact,
               "exact_peaks": peaks(c["oms"], S_ex, c["windows"]), "exact_incoherent_power": float(np.real(C_ex[0] - ab)),
               "runs": []}
        print(f"\n{name}: exact in {t_exact:.1f} s, peaks {row['exact_peaks']}", flush=True)
        # the default dt of a run over the same span (tw.simulate's rule)
        dt0 = float(make_plan(c["model"], c["initial"], np.array([0.0, c["t_ss"] + c["taus"][-1]]), n_traj=8, key=0,
                              params=c["params"]).dt)
        for n_traj, dt_factor in ((args.n_traj, 1.0), (args.n_traj, 0.5), (4 * args.n_traj, 1.0)):
            kw = dict(n_traj=n_traj, key=1, omegas=c["oms"], window="hann", params=c["params"], progress=False,
                      dt=dt0 * dt_factor)
            t = time.perf_counter()
            om, S, sem = tw.spectrum(c["model"], c["initial"], [c["t_ss"]], c["taus"], c["a"], c["b"], **kw)
            wall = time.perf_counter() - t
            d = np.abs(S - S_ex)
            run = {"n_traj": n_traj, "dt": dt0 * dt_factor, "wall_s": wall,
                   "max_dev_over_sem": float(np.max(d / sem)), "max_dev_rel_peak": float(np.max(d) / np.max(np.abs(S_ex))),
                   "max_sem_rel_peak": float(np.max(sem) / np.max(np.abs(S_ex))),
                   "peaks": peaks(c["oms"], S, c["windows"])}
            row["runs"].append(run)
            print(f"  n_traj {n_traj:6d} dt {run['dt']:.4g}: max|dS|/sem {run['max_dev_over_sem']:.1f}, "
                  f"max|dS|/peak {run['max_dev_rel_peak']:.3f} (sem/peak {run['max_sem_rel_peak']:.3f}), {wall:.0f} s; "
                  f"peaks {[(round(q['position'], 3), q['fwhm'] and round(q['fwhm'], 3), round(q['weight'], 4)) for q in run['peaks']]}",
                  flush=True)
        res["cases"][name] = row
        write_json(res, args.out, quiet=True)
    write_json(res, args.out)


if __name__ == "__main__":
    main()
