"""Plots of a :func:`~twa_jax.sweep` Dataset that xarray does not draw by itself.

xarray already plots a sweep: ``ds["emission_rate"].max("time").plot(hue="N")`` draws lines,
``.plot.pcolormesh(x="spacing", y="N")`` a map. What it lacks is the statistics a TWA sweep
carries next to every mean, ``<obs>_sem``. This module adds only that:

* :func:`errorbars`: a reduced variable against one axis, one line per value of a second one,
  with a band (or bars) of plus/minus one standard error;
* :func:`time_bands`: the time traces of every (or the selected) point with their bands;
* :func:`overview`: one figure, one panel per observable, reduced over time, failed points marked;
* :func:`reduce_time` and :func:`peak`: the reductions over time with the standard error that
  goes with each (the sem of a maximum, of a final value, of a time mean; the time of a peak
  and its sem), returned as Datasets that :func:`errorbars` plots directly.

A standard error here is the one ``sweep`` reports: of each point's mean over trajectories, at
each time (``docs/conventions.md``). It is not an error bar of the TWA itself.

Matplotlib is imported on first use only.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

#: the reductions over time of :func:`reduce_time` and :func:`overview`
REDUCE = ("max", "final", "mean")
_BAND_ALPHA = 0.25


# --------------------------------------------------------------------------- looking things up
def _xr():
    import xarray as xr

    return xr


def _variable(ds, var, role="variable"):
    """``ds[var]``, or a ValueError that lists what there is."""
    xr = _xr()
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"expected an xarray.Dataset (from tw.sweep), got {type(ds).__name__}")
    if not isinstance(var, str):
        raise TypeError(f"the {role} must be a variable name (str), got {type(var).__name__} {var!r}")
    if var not in ds.data_vars:
        raise ValueError(f"{var!r} is not a variable of the Dataset; its variables: {sorted(map(str, ds.data_vars))}")
    return ds[var]


def _sem_variable(ds, var):
    """``ds[var + "_sem"]`` (``<obs>_sem``, or ``<obs>_average_sem`` for ``<obs>_average``)."""
    name = f"{var}_sem"
    if name not in ds.data_vars:
        raise ValueError(
            f"the Dataset has no standard error {name!r} for {var!r}; give one with sem= "
            f"(a variable name or a DataArray). Variables: {sorted(map(str, ds.data_vars))}"
        )
    return ds[name]


def _real(da, name):
    """``da`` if real; a ValueError for a complex observable (a plot or a maximum of one would
    silently take its real part). Its ``_sem`` is real and bounds the error of ``.real``,
    ``.imag`` and ``abs`` of the mean alike."""
    if np.issubdtype(da.dtype, np.complexfloating):
        raise ValueError(
            f"{name!r} is complex: pass a real part of it, e.g. errorbars(ds, abs(ds[{name!r}]), x, "
            f"sem=ds[{name + '_sem'!r}]) or ds[{name!r}].real (its sem bounds the error of .real, .imag "
            f"and abs alike)")
    return da


def _sweep_axes(ds):
    """The sweep's axes: the dims of ``failed`` (an outer-product grid), or the coordinates along
    ``point`` (an explicit list of points)."""
    lead = ds["failed"].dims if "failed" in ds else tuple(d for d in ds.dims if d != "time")
    if lead == ("point",):
        return tuple(str(c) for c, v in ds.coords.items() if v.dims == ("point",) and c != "point") or ("point",)
    return tuple(str(d) for d in lead)


def _failed_mask(ds):
    if ds is None or "failed" not in ds:
        return None
    return ds["failed"] != ""


def _fmt(v):
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    if isinstance(v, np.generic):
        return str(v.item())
    return str(v)


def _label(da, name=None):
    name = da.attrs.get("long_name", name if name is not None else da.name)
    units = da.attrs.get("units")
    return f"{name} [{units}]" if units else str(name)


# --------------------------------------------------------------------------- reductions over time
def _reduce_pair(mean, sem, how):
    if how not in REDUCE:
        raise ValueError(f"reduce must be one of {REDUCE}, got {how!r}")
    _real(mean, mean.name)
    if "time" not in mean.dims:
        raise ValueError(f"{mean.name!r} has no time dimension to reduce (dims {mean.dims})")
    if how == "max":
        # a failed (all-NaN) point: index 0, its mean stays NaN; computed (a lazy store view's dask
        # index cannot index)
        i = mean.fillna(-np.inf).argmax("time").compute()
        m, s = mean.isel(time=i), sem.isel(time=i)
    elif how == "final":
        m, s = mean.isel(time=-1), sem.isel(time=-1)
    else:
        m, s = mean.mean("time", skipna=False), sem.mean("time", skipna=False)
    return m.drop_vars("time", errors="ignore"), s.drop_vars("time", errors="ignore")


def _carry_failures(out, ds):
    for name in ("failed", "n_failed"):
        if name in ds:
            out[name] = ds[name]
    out.attrs = dict(ds.attrs)
    return out


def reduce_time(ds, var: str, how: str = "max"):
    """A timed variable reduced over time, with its standard error.

    Args:
        ds: a Dataset from :func:`~twa_jax.sweep`.
        var: a timed observable (``ds[var]`` and ``ds[var + "_sem"]`` exist).
        how: ``"max"``: the largest mean over the save times; its sem is the sem **at the time of
            the maximum** (the sem of that one mean; it leaves out that the maximum of noisy means
            is biased upward by up to about one sem). ``"final"``: the value at the last save
            time. ``"mean"``: the mean over the save times; its sem is the mean of the sems, an
            upper bound (exact when the errors at all times are fully correlated), since the
            covariances between times are not recorded: for a steady state prefer
            ``sweep(..., time_average={var: (t0, t1)})``, whose ``<var>_average_sem`` is exact.

    Returns:
        ``xarray.Dataset`` with ``<var>`` and ``<var>_sem`` (no ``time`` dim), and ``failed`` /
        ``n_failed`` carried over, ready for :func:`errorbars`.

    Example:
        >>> red = reduce_time(ds, "emission_rate", "max")            # doctest: +SKIP
        >>> errorbars(red, "emission_rate", "spacing", hue="N")        # doctest: +SKIP
    """
    xr = _xr()
    m, s = _reduce_pair(_variable(ds, var), _sem_variable(ds, var), how)
    out = xr.Dataset({var: m, f"{var}_sem": s})
    out[var].attrs = {**ds[var].attrs, "reduce": how}
    return _carry_failures(out, ds)


def peak(ds, var: str):
    """The peak of a timed variable: its height and its time, each with a standard error.

    The height is the largest mean over the save times and its sem the sem at that time (as
    :func:`reduce_time` with ``"max"``; resolve the peak with ``ts``). The time is refined by a
    parabola through the maximum and its two neighbours; its sem propagates the three sems
    linearly, treating them as independent. The errors at neighbouring times of one set of
    trajectories are strongly positively correlated, which makes the differences the vertex
    depends on more precise than that, so the estimate errs on the large side. A maximum at the
    first or last save time (no burst, or a grid too short) gives that time and a sem of NaN.

    Returns:
        ``xarray.Dataset`` with ``peak``, ``peak_sem``, ``peak_time``, ``peak_time_sem`` (and
        ``failed`` / ``n_failed``), ready for :func:`errorbars`.
    """
    xr = _xr()
    mean, sem = _variable(ds, var), _sem_variable(ds, var)
    height, height_sem = _reduce_pair(mean, sem, "max")
    t = np.asarray(mean["time"].values, dtype=float)
    n = t.size
    i = mean.fillna(-np.inf).argmax("time").compute()  # a store view is lazy (dask)
    ok = (i > 0) & (i < n - 1) & mean.notnull().all("time")
    im, ip = np.clip(i - 1, 0, n - 1), np.clip(i + 1, 0, n - 1)
    # in float64: the central differences below step by 1e-6 of the value, 8 ulps of a float32
    ys = [mean.isel(time=j).drop_vars("time").values.astype(float) for j in (im, i, ip)]
    ss = [sem.isel(time=j).drop_vars("time").values.astype(float) for j in (im, i, ip)]
    ts = [t[np.asarray(j.values)] for j in (im, i, ip)]

    def vertex(y0, y1, y2):
        a, b = (ts[1] - ts[0]), (ts[1] - ts[2])
        num = a**2 * (y1 - y2) - b**2 * (y1 - y0)
        den = a * (y1 - y2) - b * (y1 - y0)
        with np.errstate(divide="ignore", invalid="ignore"):
            v = ts[1] - 0.5 * num / den
        return np.clip(np.where(den != 0, v, ts[1]), ts[0], ts[2])

    ok_v = np.asarray(ok.values)
    tv = np.where(ok_v, vertex(*ys), ts[1])
    var_t = np.zeros_like(tv)
    for k in range(3):  # linear propagation, central differences in each of the three means
        h = 1e-6 * np.maximum(np.abs(ys[k]), 1.0)
        up, dn = list(ys), list(ys)
        up[k], dn[k] = ys[k] + h, ys[k] - h
        with np.errstate(invalid="ignore"):
            var_t = var_t + ((vertex(*up) - vertex(*dn)) / (2 * h) * ss[k]) ** 2
    t_sem = np.where(ok_v, np.sqrt(var_t), np.nan)
    t_peak = np.where(mean.notnull().all("time").values, tv, np.nan)
    out = xr.Dataset({
        "peak": height, "peak_sem": height_sem,
        "peak_time": (height.dims, t_peak), "peak_time_sem": (height.dims, t_sem),
    })
    out["peak"].attrs = {"long_name": f"peak {var}"}
    out["peak_time"].attrs = {"long_name": f"time of the peak of {var}"}
    return _carry_failures(out, ds)


# --------------------------------------------------------------------------- errorbars
def _squeeze_extra(da, keep):
    """Drop size-1 dims outside ``keep`` (an observable dim such as ``mode`` of one mode)."""
    extra = [d for d in da.dims if d not in keep and da.sizes[d] == 1]
    return da.squeeze(extra, drop=True) if extra else da


def errorbars(ds, var, x: str, *, hue: str | None = None, ax=None, band: bool = True, sem=None, **kw):
    """Plot a variable of a sweep against one axis with plus/minus one standard error.

    Args:
        ds: the Dataset from :func:`~twa_jax.sweep` (or from :func:`reduce_time` / :func:`peak`),
            or ``None`` when ``var`` and ``sem`` are DataArrays.
        var: a variable name whose dims, apart from those of ``x`` and ``hue``, are none
            (reduce a timed variable first: :func:`reduce_time`, ``.isel(time=-1)``, or use
            ``<obs>_average``); size-1 dims (one cavity mode) are dropped. Or a DataArray.
        x: the coordinate on the horizontal axis (a sweep axis; with an explicit list of
            points, a coordinate along ``point``).
        hue: a second coordinate: one line per value.
        ax: the matplotlib axis (default: the current one).
        band: a shaded band (``fill_between``); ``False``: error bars (``errorbar``).
        sem: the standard errors: a variable name, a DataArray, or ``None`` for ``var + "_sem"``
            (``<obs>_sem``; ``<obs>_average_sem`` for ``<obs>_average``).
        **kw: passed to ``ax.plot`` (or ``ax.errorbar``); ``marker="o"`` unless given.

    Points that failed (``ds["failed"] != ""``) are marked with an ``x`` at the bottom of the axis,
    in the colour of their line.

    Returns:
        The matplotlib axis.

    Raises:
        ValueError: a name that is not a variable or coordinate, no standard error, or dims left
            over (naming them).
    """
    xr = _xr()
    if isinstance(var, xr.DataArray):
        mean = var
        name = str(var.name) if var.name is not None else "value"
        if sem is None:
            if ds is None or f"{name}_sem" not in ds:
                raise ValueError(f"give the standard errors of the DataArray {name!r} as sem= (a DataArray)")
            sem = ds[f"{name}_sem"]
    else:
        mean = _variable(ds, var)
        name = var
    if sem is None:
        sem = _sem_variable(ds, name)
    elif isinstance(sem, str):
        sem = _variable(ds, sem, "sem")
    elif not isinstance(sem, xr.DataArray):
        raise TypeError(f"sem must be a variable name, a DataArray or None, got {type(sem).__name__}")
    failed = _failed_mask(ds) if isinstance(ds, xr.Dataset) else None
    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.gca()
    _draw(ax, mean, sem, x, hue, band, failed, name, kw)
    return ax


def _draw(ax, mean, sem, x, hue, band, failed, name, kw):
    for c, role in ((x, "x"), (hue, "hue")):
        if c is not None and c not in mean.coords:
            raise ValueError(f"{role}={c!r} is not a coordinate of {name!r}; its coordinates: "
                             f"{sorted(map(str, mean.coords))} (dims {mean.dims})")
    if hue is not None and hue == x:
        raise ValueError(f"x and hue are both {x!r}")
    _real(mean, name)
    keep = set(mean[x].dims) | (set(mean[hue].dims) if hue is not None else set())
    mean, sem = _squeeze_extra(mean, keep), _squeeze_extra(sem, keep)
    extra = [d for d in mean.dims if d not in keep]
    if extra:
        hint = " (a timed variable: reduce it first, e.g. reduce_time(ds, var, 'max'), or pass ds[var].isel(time=-1))" \
            if "time" in extra else ""
        raise ValueError(f"{name!r} has dims {extra} besides x={x!r}" + (f" and hue={hue!r}" if hue else "")
                         + f"; select or reduce them first{hint}")
    if set(sem.dims) - set(mean.dims):
        raise ValueError(f"the standard errors of {name!r} have dims {sorted(set(sem.dims) - set(mean.dims))} "
                         f"that {name!r} has not")
    parts = [mean, sem.broadcast_like(mean), mean[x].broadcast_like(mean)]
    if hue is not None:
        parts.append(mean[hue].broadcast_like(mean))
    if failed is not None:
        f = _squeeze_extra(failed, keep)
        parts.append(f.broadcast_like(mean) if not (set(f.dims) - set(mean.dims)) else None)
    else:
        parts.append(None)
    flat = [None if p is None else np.asarray(p.transpose(*mean.dims).values).ravel() for p in parts]
    m, s, xs = flat[0].astype(float), flat[1].astype(float), flat[2]
    hs = flat[3] if hue is not None else np.zeros(m.size, dtype=int)
    fl = flat[-1]
    groups = {}
    for k, h in enumerate(hs.tolist()):
        groups.setdefault(h, []).append(k)
    kw = dict(kw)
    kw.setdefault("marker", "o")
    user_label = kw.pop("label", None)
    failed_drawn = False
    for h, idx in groups.items():
        idx = np.asarray(idx)
        idx = idx[np.argsort(xs[idx], kind="stable")]
        label = f"{hue} = {_fmt(h)}" if hue is not None else user_label
        if band:
            (line,) = ax.plot(xs[idx], m[idx], label=label, **kw)
            ax.fill_between(xs[idx], m[idx] - s[idx], m[idx] + s[idx], color=line.get_color(),
                            alpha=_BAND_ALPHA, linewidth=0)
            color = line.get_color()
        else:
            kwe = dict(kw)
            kwe.setdefault("capsize", 3)
            cont = ax.errorbar(xs[idx], m[idx], yerr=s[idx], label=label, **kwe)
            color = cont.lines[0].get_color()
        if fl is not None and fl[idx].any():
            bad = idx[fl[idx]]
            ax.plot(xs[bad], np.full(bad.size, 0.03), linestyle="none", marker="x", markersize=8, color=color,
                    markeredgewidth=2, transform=ax.get_xaxis_transform(), clip_on=False,
                    label=None if failed_drawn else "failed")
            failed_drawn = True
    ax.set_xlabel(_label(mean[x], x))
    ax.set_ylabel(_label(mean, name))
    if hue is not None or failed_drawn or user_label is not None:
        ax.legend(fontsize="small")
    return ax


# --------------------------------------------------------------------------- time traces
def _select(da, sel):
    """``da.sel`` for dims; a mask for coordinates along ``point`` (an explicit list of points)."""
    dims = {k: v for k, v in sel.items() if k in da.dims}
    other = {k: v for k, v in sel.items() if k not in da.dims}
    for k in other:
        if k not in da.coords:
            raise ValueError(f"cannot select {k}=...: not a dim or coordinate of {da.name!r} "
                             f"(coordinates {sorted(map(str, da.coords))})")
    if dims:
        da = da.sel(dims)
    for k, v in other.items():
        c = da[k]
        if c.ndim == 0:  # already one value (selected before)
            if c.values.item() not in np.atleast_1d(v).tolist():
                raise ValueError(f"no point has {k} = {v!r}; the value here: {c.values.item()!r}")
            continue
        if c.ndim != 1:
            raise ValueError(f"cannot select {k}=...: its coordinate has dims {c.dims}")
        mask = np.isin(c.values, np.atleast_1d(v))
        if not mask.any():
            raise ValueError(f"no point has {k} = {v!r}; values: {np.unique(c.values).tolist()}")
        da = da.isel({c.dims[0]: np.nonzero(mask)[0]})
    return da


def time_bands(ds, var: str, *, ax=None, **sel):
    """The time traces of ``var`` with their standard-error bands, one line per point.

    Args:
        ds: the Dataset from :func:`~twa_jax.sweep`.
        var: a timed variable (``ds[var + "_sem"]`` is the band).
        ax: the matplotlib axis (default: the current one).
        **sel: points to draw, by axis value (a value or a list of values: ``N=4``,
            ``spacing=[0.1, 0.3]``; also ``mode=0`` for an observable dim); default: every point.

    Each line is labelled with the coordinates that differ between the lines; those common to all
    go in the title. Failed points (no finite value) are left out and counted in the title.

    Returns:
        The matplotlib axis.
    """
    mean, sem = _real(_variable(ds, var), var), _sem_variable(ds, var)
    if "time" not in mean.dims:
        raise ValueError(f"{var!r} has no time dimension (dims {mean.dims}); plot it with errorbars")
    mean, sem = _select(mean, sel), _select(sem, sel)
    rest = [d for d in mean.dims if d != "time"]
    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.gca()
    t = np.asarray(mean["time"].values, dtype=float)
    fixed = {str(c): v.values.item() for c, v in mean.coords.items() if v.ndim == 0}
    if rest:
        mean = mean.transpose(*rest, "time")
        sem = sem.transpose(*rest, "time")
    shape = tuple(mean.sizes[d] for d in rest)
    # what labels a trace: the coordinates (or, without one, the index) of its dims
    labellers = []
    for d in rest:
        coords = [str(c) for c, v in mean.coords.items() if v.dims == (d,) and (c != d or d != "point")]
        if d == "point" and not coords:
            coords = ["point"]
        labellers.append((d, coords or [None]))
    m2 = np.asarray(mean.values, dtype=float).reshape(-1, t.size)
    s2 = np.asarray(sem.values, dtype=float).reshape(-1, t.size)
    n_failed = 0
    for flat, index in enumerate(np.ndindex(*shape) if shape else [()]):
        if not np.isfinite(m2[flat]).any():
            n_failed += 1
            continue
        parts = []
        for (d, coords), i in zip(labellers, index):
            if mean.sizes[d] == 1 and d != "point":
                continue
            for c in coords:
                parts.append(f"{d}={i}" if c is None else f"{c}={_fmt(mean[c].values[i])}")
        (line,) = ax.plot(t, m2[flat], label=", ".join(parts) or str(var))
        ax.fill_between(t, m2[flat] - s2[flat], m2[flat] + s2[flat], color=line.get_color(),
                        alpha=_BAND_ALPHA, linewidth=0)
    for (d, coords) in labellers:  # size-1 dims: common to all lines
        if mean.sizes[d] == 1 and d != "point":
            for c in coords:
                fixed[d if c is None else c] = 0 if c is None else mean[c].values[0]
    title = ", ".join(f"{k}={_fmt(v)}" for k, v in fixed.items() if k != "time")
    if n_failed:
        title = (title + "; " if title else "") + f"{n_failed} failed point{'s' * (n_failed > 1)} not shown"
    ax.set_title(title, fontsize="medium")
    ax.set_xlabel(_label(mean["time"], "time"))
    ax.set_ylabel(_label(mean, var))
    if 0 < len(ax.lines) <= 12:
        ax.legend(fontsize="small")
    return ax


# --------------------------------------------------------------------------- overview
def _observables(ds):
    """``(timed observables, time averages)``: the variables that have a ``_sem`` partner."""
    timed, averages = [], []
    for v in map(str, ds.data_vars):
        if v.endswith("_sem") or f"{v}_sem" not in ds.data_vars:
            continue
        (timed if "time" in ds[v].dims else averages).append(v)
    return timed, averages


def overview(ds, *, x: str | None = None, hue: str | None = None, reduce: str = "max", band: bool = True):
    """One figure, one panel per observable of a sweep, each reduced over time, with sem bands.

    Args:
        ds: the Dataset from :func:`~twa_jax.sweep`, with at most two axes that vary (select the
            others first: ``overview(ds.sel(c=1.0))``).
        x: the axis on the horizontal axis (default: the first axis).
        hue: one line per value of this axis (default: the other axis, if there is one).
        reduce: over time: ``"max"`` (the largest mean; its sem is the sem **at the time of the
            maximum**, which leaves out the upward bias of a maximum of noisy means),
            ``"final"`` (the last save time) or ``"mean"`` (the mean over save times; its sem is
            the mean of the sems, an upper bound). ``<obs>_average`` variables (``time_average=``)
            get a panel of their own, as they are.
        band: bands (default) or error bars.

    Failed points (``ds["failed"] != ""``) are marked with an ``x`` at the bottom of each panel.
    Observables with more than one component (per-site, several modes) are left out with a
    warning; plot them with :func:`errorbars` after selecting a component.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    xr = _xr()
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"expected an xarray.Dataset (from tw.sweep), got {type(ds).__name__}")
    if reduce not in REDUCE:
        raise ValueError(f"reduce must be one of {REDUCE}, got {reduce!r}")
    axes = _sweep_axes(ds)
    if x is None:
        x = axes[0]
    if x not in ds.coords:
        raise ValueError(f"x={x!r} is not an axis of the sweep; its axes: {list(axes)}")
    others = [a for a in axes if a != x and ds[a].size > 1 and np.unique(ds[a].values).size > 1]
    if hue is None and others:
        hue = others[0]
    if hue is not None and hue not in ds.coords:
        raise ValueError(f"hue={hue!r} is not an axis of the sweep; its axes: {list(axes)}")
    left = [a for a in others if a != hue]
    if left:
        raise ValueError(f"the sweep has axes {list(axes)}; overview draws two (x={x!r}, hue={hue!r}): "
                         f"select the others first, e.g. overview(ds.sel({left[0]}=...))")
    timed, averages = _observables(ds)
    keep = set(ds[x].dims) | (set(ds[hue].dims) if hue is not None else set())
    panels, skipped = [], []
    for v in timed + averages:
        m, s = ds[v], ds[f"{v}_sem"]
        if np.issubdtype(m.dtype, np.complexfloating):
            skipped.append(v)
            continue
        if v in timed:
            m, s = _reduce_pair(m, s, reduce)
            label = f"{reduce} {v}" if reduce != "final" else f"{v}(t = {_fmt(ds['time'].values[-1])})"
        else:
            label = v
        m, s = _squeeze_extra(m, keep), _squeeze_extra(s, keep)
        if set(m.dims) - keep:
            skipped.append(v)
            continue
        panels.append((v, m, s, label))
    if skipped:
        warnings.warn(f"overview leaves out {skipped} (more than one component, or complex); plot them with "
                      "errorbars after selecting a component or a real part (abs, .real)", UserWarning, stacklevel=2)
    if not panels:
        raise ValueError(f"nothing to draw: no observable with a standard error among {sorted(map(str, ds.data_vars))}")
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axs = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False, layout="constrained")
    failed = _failed_mask(ds)
    for k, (v, m, s, label) in enumerate(panels):
        ax = axs.flat[k]
        _draw(ax, m, s, x, hue, band, failed, v, {})
        ax.set_ylabel(label)
    for ax in list(axs.flat)[len(panels):]:
        ax.set_visible(False)
    head = ds.attrs.get("model", "sweep")
    n_traj = ds.attrs.get("n_traj")
    n_bad = int(failed.sum()) if failed is not None else 0
    fig.suptitle(f"{head}" + (f", {n_traj} trajectories" if n_traj is not None else "")
                 + (f", {n_bad} failed point{'s' * (n_bad > 1)}" if n_bad else ""), fontsize="medium")
    return fig
