"""``Result``: means and standard errors of observables at the save times, plus metadata."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import numpy as np


class Result(eqx.Module):
    """Output of :func:`twa_jax.simulate` (and of the exact references).

    Attributes:
        ts: ``(n_times,)`` save times.
        mean: ``{name: (n_times, ...)}`` trajectory means of each observable.
        sem: ``{name: (n_times, ...)}`` standard errors of those means (zero for a single
            deterministic trajectory or an exact result).
        n_traj: number of trajectories requested.
        n_failed: trajectories that turned non-finite and were left out of the statistics.
        method, solver, dt, n_steps, chunk_size, key, params, wall_time: how it was computed.
    """

    ts: Any
    mean: dict
    sem: dict
    n_traj: int = eqx.field(static=True)
    n_failed: Any = 0
    method: str = eqx.field(static=True, default="twa")
    solver: str = eqx.field(static=True, default="")
    dt: float | None = eqx.field(static=True, default=None)
    n_steps: int | None = eqx.field(static=True, default=None)
    chunk_size: int | None = eqx.field(static=True, default=None)
    key: Any = eqx.field(static=True, default=None)
    params: Any = None
    wall_time: float | None = eqx.field(static=True, default=None)

    def __repr__(self):
        lines = [
            f"Result(method={self.method!r}, solver={self.solver!r}, n_traj={self.n_traj}, "
            f"n_failed={_fmt(self.n_failed)}, n_times={len(self.ts)}, dt={_fmt(self.dt)}, "
            f"n_steps={self.n_steps}, chunk_size={self.chunk_size}, key={self.key}, "
            f"wall_time={_fmt(self.wall_time)} s)"
        ]
        for name, m in self.mean.items():
            shape = tuple(np.shape(m))
            try:
                last = np.asarray(m)[-1]
                err = np.asarray(self.sem[name])[-1]
                tail = (
                    f"final {last:.5g} +- {err:.2g}" if np.ndim(last) == 0 else f"final shape {np.shape(last)}"
                )
            except Exception:  # traced values inside a transformation
                tail = ""
            lines.append(f"  {name}: {shape} {tail}")
        return "\n".join(lines)

    __str__ = __repr__

    def to_xarray(self):
        """An ``xarray.Dataset``: one variable per observable and ``<name>_sem`` for its error,
        on dimension ``time`` (extra axes are named ``<name>_dim<i>``), metadata in ``attrs``."""
        import xarray as xr

        data = {}
        for name, m in self.mean.items():
            m = np.asarray(m)
            dims = ("time",) + tuple(f"{name}_dim{i}" for i in range(1, m.ndim))
            data[name] = (dims, m)
            data[f"{name}_sem"] = (dims, np.asarray(self.sem[name]))
        attrs = dict(
            n_traj=self.n_traj,
            n_failed=int(np.asarray(self.n_failed)),
            method=self.method,
            solver=self.solver,
        )
        for k in ("dt", "n_steps", "chunk_size", "wall_time"):
            v = getattr(self, k)
            if v is not None:
                attrs[k] = v
        if self.key is not None:
            attrs["key"] = str(self.key)
        if self.params is not None:
            for path, leaf in jax.tree_util.tree_leaves_with_path(self.params):
                try:
                    attrs["param" + jax.tree_util.keystr(path)] = np.asarray(leaf).tolist()
                except Exception:
                    pass
        return xr.Dataset(data, coords={"time": np.asarray(self.ts)}, attrs=attrs)

    def plot(self, names=None, ax=None, label=None, **kwargs):
        """Plot each (real, scalar-per-time) observable's mean with a shaded ``+-1 sem`` band.

        Args:
            names: observables to plot (default: all scalar ones).
            ax: a matplotlib axis (default: a new figure).
            label: legend prefix.

        Returns:
            The matplotlib axis.
        """
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 4))
        ts = np.asarray(self.ts)
        names = names or [n for n, m in self.mean.items() if np.ndim(m) == 1]
        for name in names:
            m = np.real(np.asarray(self.mean[name]))
            e = np.asarray(self.sem[name])
            if m.ndim != 1:
                raise ValueError(f"observable {name!r} has shape {m.shape}; plot scalars only")
            lab = name if label is None else f"{label} {name}"
            (line,) = ax.plot(ts, m, label=lab, **kwargs)
            ax.fill_between(ts, m - e, m + e, color=line.get_color(), alpha=0.25, lw=0)
        ax.set_xlabel("t")
        ax.legend()
        return ax


def _fmt(v):
    try:
        return f"{float(v):.4g}"
    except Exception:
        return str(v)
