"""``tw.compare``: TWA against an exact (or any reference) result, per observable, in one line."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._correlation import Correlation
from ._result import Result


@dataclass(frozen=True)
class Deviation:
    """How far one observable of a TWA result is from the reference.

    Attributes:
        max_abs: the largest ``|twa - reference|`` over times and components.
        max_sigma: the largest deviation in units of the combined standard error
            ``sqrt(sem_twa^2 + sem_ref^2)``, over the points where that is positive (NaN if none).
        t: the time of ``max_abs``; ``index``: its component (``()`` for a scalar observable).
        sem: the combined standard error at that point.
        sigma_t: the time of ``max_sigma``; ``sigma_index``: its component (it may differ from
            ``index``: a small deviation with a tiny error bar beats a large one with a large).
    """

    max_abs: float
    max_sigma: float
    t: float
    index: tuple
    sem: float
    sigma_t: float
    sigma_index: tuple = ()


@dataclass(frozen=True)
class Comparison:
    """The result of :func:`compare`: ``deviations[name]`` per observable, and both results
    (``time``: what the times are, ``"t"``, or ``"tau"`` for the lags of a correlation)."""

    deviations: dict
    twa: object
    reference: object
    time: str = "t"

    def __getitem__(self, name) -> Deviation:
        return self.deviations[name]

    def __str__(self):
        at = f"at {self.time}"
        rows = [f"{'observable':<16} {'max |dev|':>10} {at:>12} {'sem there':>10} {'max dev/sem':>12} {at:>12}"]

        def where(t, index):  # the time, and the component of a vector observable
            return f"{t:.3g}" + (f" {list(index)}" if index else "")

        for name, d in self.deviations.items():
            rows.append(f"{name:<16} {d.max_abs:>10.4g} {where(d.t, d.index):>12} {d.sem:>10.2g} "
                        f"{d.max_sigma:>12.3g} {where(d.sigma_t, d.sigma_index):>12}")
        for which, res in (("the TWA result", self.twa), ("the reference", self.reference)):
            if _single_sampled(res):
                rows.append(f"{which} has 1 trajectory: no error bar, so sem and dev/sem are nan")
        return "\n".join(rows)

    def plot(self, names=None, *, axes=None, n_sigma: float = 2.0):
        """Overlay per observable: the TWA mean with a band of ``n_sigma`` standard errors, and the
        reference as a dashed line. Returns the figure."""
        import matplotlib.pyplot as plt

        names = list(self.deviations) if names is None else list(names)
        if axes is None:
            fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.2), squeeze=False)
            axes = axes[0]
        else:
            axes = np.atleast_1d(axes)
            fig = axes[0].figure
        ts = np.asarray(self.twa.ts)
        for ax, name in zip(axes, names):
            m, s = _as_columns(self.twa.mean[name]), _as_columns(self.twa.sem[name])
            r = _as_columns(self.reference.mean[name])
            for k in range(m.shape[1]):
                suffix = f"[{k}]" if m.shape[1] > 1 else ""
                line = ax.plot(ts, m[:, k].real, label=f"TWA{suffix}")[0]
                ax.fill_between(ts, m[:, k].real - n_sigma * s[:, k], m[:, k].real + n_sigma * s[:, k],
                                color=line.get_color(), alpha=0.25, lw=0)
                ax.plot(np.asarray(self.reference.ts), r[:, k].real, "--", color="k", lw=1,
                        label=f"{getattr(self.reference, 'method', 'reference')}{suffix}")
            ax.set_xlabel("t")
            ax.set_title(f"{name}: max |dev| {self.deviations[name].max_abs:.3g}")
            ax.legend(fontsize=7)
        fig.tight_layout()
        return fig


def _single_sampled(res) -> bool:
    """A sampled run of one trajectory (its standard error is NaN: no spread to measure)."""
    return getattr(res, "n_traj", None) == 1 and getattr(res, "method", None) in ("twa", "no_noise")


def _as_columns(x):
    x = np.asarray(x)
    return x.reshape(x.shape[0], -1)


def _correlation_results(twa, reference):
    """A :class:`~twa_jax.Correlation` and its reference (a Correlation, or the array
    ``tw.exact.correlation`` returns) as results over the lags: observables ``re``, ``im`` with
    one component per start time."""
    if isinstance(reference, Correlation):
        ref_value, ref_sem = np.asarray(reference.value), np.asarray(reference.sem)
        if not (np.allclose(reference.ts, twa.ts) and np.allclose(reference.taus, twa.taus)):
            raise ValueError("the two correlations have different start times or lags")
    else:
        ref_value = np.asarray(reference)
        ref_sem = np.zeros(ref_value.shape)
        if ref_value.shape != np.shape(twa.value):
            raise ValueError(f"the reference has shape {ref_value.shape}, the correlation {np.shape(twa.value)} "
                             "(start times x lags)")

    def as_result(v, e, n):
        v, e = np.asarray(v).T, np.asarray(e).T  # (n_tau, n_t): lags play the save times
        return Result(ts=np.asarray(twa.taus, float), mean={"re": v.real, "im": v.imag}, sem={"re": e, "im": e},
                      n_traj=n, method="twa" if n else "exact-full")

    return as_result(twa.value, twa.sem, twa.n_traj), as_result(ref_value, ref_sem, 0)


def compare(twa, reference, *, names=None) -> Comparison:
    """Compare a TWA :class:`~twa_jax.Result` with a reference (usually ``tw.exact.solve``'s), or
    a :class:`~twa_jax.Correlation` with ``tw.exact.correlation``'s array (observables ``re`` and
    ``im``, times the lags, one component per start time).

    Args:
        twa: the result to check.
        reference: a result on the same save times (its own ``sem`` counts, e.g. for
            ``method="mcsolve"``; zero for a density-matrix solution).
        names: the observables to compare (default: every one both results have).

    Returns:
        A :class:`Comparison`: ``str()`` prints a table, ``.plot()`` overlays the curves, and
        ``comparison[name]`` is a :class:`Deviation` with the largest absolute deviation, the
        largest deviation in standard errors, and where each occurs.

    Raises:
        ValueError: different save times, no observable in common, or shapes that differ.
    """
    time = "t"
    if isinstance(twa, Correlation):
        twa, reference = _correlation_results(twa, reference)
        time = "tau"
    ts, tr = np.asarray(twa.ts, float), np.asarray(reference.ts, float)
    # equal to the coarser of the two precisions (a float32 run against a float64 exact result)
    eps = max(np.finfo(np.asarray(x).dtype).eps if np.issubdtype(np.asarray(x).dtype, np.floating) else 0.0
              for x in (twa.ts, reference.ts))
    tol = 8 * max(eps, 1e-15)
    if ts.shape != tr.shape or not np.allclose(ts, tr, rtol=tol, atol=tol * max(1.0, float(np.max(np.abs(tr), initial=0.0)))):
        raise ValueError(
            f"the two results have different save times ({ts.size} from {ts[0]:g} to {ts[-1]:g}, and "
            f"{tr.size} from {tr[0]:g} to {tr[-1]:g}); solve both on the same ts"
        )
    common = [k for k in twa.mean if k in reference.mean]
    names = common if names is None else list(names)
    if not names:
        raise ValueError(f"no observable in common: {sorted(twa.mean)} and {sorted(reference.mean)}")
    out = {}
    for name in names:
        if name not in twa.mean or name not in reference.mean:
            raise ValueError(f"observable {name!r} is not in both results (common: {common})")
        m, r = np.asarray(twa.mean[name]), np.asarray(reference.mean[name])
        if m.shape != r.shape:
            raise ValueError(f"observable {name!r} has shape {m.shape} in the TWA result but {r.shape} in the reference")
        sem = np.sqrt(np.asarray(twa.sem[name], float) ** 2 + np.asarray(reference.sem[name], float) ** 2)
        dev = np.abs(m - r)
        i = np.unravel_index(int(np.argmax(dev)), dev.shape)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(sem > 0, dev / sem, np.nan)
        if np.all(np.isnan(z)):
            zmax, zt, zi = float("nan"), float("nan"), ()
        else:
            j = np.unravel_index(int(np.nanargmax(z)), z.shape)
            zmax, zt, zi = float(z[j]), float(ts[j[0]]), tuple(int(k) for k in j[1:])
        out[name] = Deviation(float(dev[i]), zmax, float(ts[i[0]]), tuple(int(k) for k in i[1:]), float(sem[i]), zt,
                              zi)
    return Comparison(out, twa, reference, time)
