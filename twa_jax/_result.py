"""``Result``: means and standard errors of observables at the save times, plus metadata.

Besides the summary (``repr``) and a plot, a Result converts to an ``xarray.Dataset`` that writes
to both netCDF (including netCDF3 through scipy: no complex dtype, no bool or None attributes,
restricted attribute names) and zarr, and :meth:`Result.from_xarray` rebuilds it from one.
"""

from __future__ import annotations

import json
import re
from typing import Any

import equinox as eqx
import jax
import numpy as np

_MAX_COMPONENTS = 8  # components per observable listed by repr


class _Dims(dict):
    """``{name: tuple of dimension names}``, hashable (it is a static field of :class:`Result`)."""

    def __hash__(self):
        return hash(tuple(sorted(self.items())))

    def _readonly(self, *args, **kwargs):
        raise TypeError("Result.dims is read-only")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = _readonly

    def __reduce__(self):
        return (_Dims, (dict(self),))


class _Named(dict):
    """``{observable name: array}`` whose missing key raises a ``KeyError`` naming the available
    observables (and the closest name, if one is close). A pytree like a plain dict."""

    def __missing__(self, key):
        import difflib

        names = [str(k) for k in self]
        lower = {n.lower(): n for n in names}  # case first: "sZ" -> "sz"
        close = difflib.get_close_matches(str(key).lower(), list(lower), n=1)
        hint = f"; did you mean {lower[close[0]]!r}?" if close else ""
        raise KeyError(f"no observable {key!r}; this Result has {names}{hint}")

    def __reduce__(self):
        return (_Named, (dict(self),))


def _named_flatten(d):
    keys = sorted(d)
    return [(jax.tree_util.DictKey(k), d[k]) for k in keys], tuple(keys)


jax.tree_util.register_pytree_with_keys(
    _Named, _named_flatten, lambda keys, values: _Named(zip(keys, values)),
    flatten_func=lambda d: ([d[k] for k in sorted(d)], tuple(sorted(d))),
)


class Result(eqx.Module):
    """Output of :func:`twa_jax.simulate` (and of the exact references).

    Attributes:
        ts: ``(n_times,)`` save times.
        mean: ``{name: (n_times, ...)}`` trajectory means of each observable.
        sem: ``{name: (n_times, ...)}`` standard errors of those means (zero for a single
            deterministic trajectory, ``method="mean_field"``, or an exact result; NaN for a
            sampled run of one trajectory, which says nothing about the spread).
        n_traj: number of trajectories run, the failed ones included (the statistics use
            ``n_traj - n_failed``).
        n_failed: trajectories that turned non-finite and were left out of the statistics.
        method, solver, dt, n_steps, chunk_size, key, params, wall_time: how it was computed.
        average: ``{name: (...)}`` time average of each observable (or None), with standard
            errors ``average_sem``.
        trajectories: ``{name: (k, n_times, ...)}`` observables of the first ``k`` trajectories
            (or None).
        dims: ``{name: tuple of names}`` for the non-time axes of observables (e.g.
            ``{"n": ("mode",)}``, which ``simulate`` and ``tw.exact.solve`` give the package's
            per-mode observables: the default ``n`` and the outputs of
            ``tw.observables.boson_moments``); observables missing from it get ``<name>_dim<i>``.
        xla_workaround: what the CPU-compiler workaround did at import (``_xla_workaround.apply``).
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
    average: dict | None = None
    average_sem: dict | None = None
    trajectories: dict | None = None
    dims: dict | None = eqx.field(static=True, default=None)
    xla_workaround: str | None = eqx.field(static=True, default=None)

    def __post_init__(self):
        for field in ("mean", "sem", "average", "average_sem", "trajectories"):
            value = getattr(self, field)
            if isinstance(value, dict) and not isinstance(value, _Named):
                setattr(self, field, _Named(value))
        if self.dims is not None:
            if not isinstance(self.dims, dict):
                raise TypeError(
                    f"dims must be a dict {{name: tuple of dimension names}}, got {type(self.dims).__name__}"
                )
            dims = {}
            for name, d in self.dims.items():
                d = (d,) if isinstance(d, str) else tuple(d)
                if not all(isinstance(x, str) and x for x in d):
                    raise TypeError(f"dims[{name!r}] must be a tuple of non-empty strings, got {d!r}")
                dims[name] = d
            self.dims = _Dims(dims)

    # ---------------------------------------------------------------- naming of components

    def _dim_names(self, name, extra_ndim):
        """``(dimension names, named)`` of the non-time axes of observable ``name``; ``named`` is
        False for the generic ``<name>_dim<i>`` defaults (components are then labelled by index)."""
        d = None if self.dims is None else self.dims.get(name)
        if d is not None:
            if len(d) != extra_ndim:
                raise ValueError(
                    f"dims[{name!r}] = {d} names {len(d)} axes, but the observable has {extra_ndim} "
                    "non-time axes"
                )
            return tuple(d), True
        return default_dims(name, extra_ndim), False

    def _components(self, name, extra_shape):
        """``[(index, label)]`` for each component of an observable with non-time shape
        ``extra_shape``: ``n[mode=0]`` (named dims), ``x[0, 1]`` (defaults) or ``x`` (scalar)."""
        if len(extra_shape) == 0:
            return [((), name)]
        dims, named = self._dim_names(name, len(extra_shape))
        out = []
        for idx in np.ndindex(*extra_shape):
            if named:
                inner = ", ".join(f"{d}={i}" for d, i in zip(dims, idx))
            else:
                inner = ", ".join(str(i) for i in idx)
            out.append((idx, f"{name}[{inner}]"))
        return out

    # ---------------------------------------------------------------- summary

    def __repr__(self):
        try:
            n_times = len(self.ts)
        except Exception:
            n_times = "?"
        head = (
            f"Result(method={self.method!r}, solver={self.solver!r}, n_traj={self.n_traj}, "
            f"n_failed={_fmt(self.n_failed)}, n_times={n_times}, dt={_fmt(self.dt)}, "
            f"n_steps={self.n_steps}, chunk_size={self.chunk_size}, key={self.key}, "
            f"wall_time={_fmt(self.wall_time)} s"
        )
        if self.xla_workaround is not None:
            head += f", xla_workaround={self.xla_workaround!r}"
        lines = [head + ")"]
        if self.n_traj == 1 and self.method in ("twa", "no_noise"):
            lines.append("  1 trajectory: no error bar (sem is NaN; the spread needs at least 2 trajectories)")
        for name, m in self.mean.items():
            lines.extend(self._repr_observable(name, m))
        if self.trajectories:
            ks = []
            for v in self.trajectories.values():
                try:
                    ks.append(int(np.shape(v)[0]))
                except Exception:
                    pass
            k = ks[0] if ks and all(x == ks[0] for x in ks) else "?"
            lines.append(f"  trajectories: first {k} saved ({', '.join(map(str, self.trajectories))})")
        return "\n".join(lines)

    __str__ = __repr__

    def _repr_observable(self, name, m):
        try:
            shape = tuple(np.shape(m))
        except Exception:
            shape = "?"
        try:
            last = np.asarray(m)[-1]
            err = np.asarray(self.sem[name])[-1] if name in self.sem else None
            avg = avg_err = None
            if self.average is not None and name in self.average:
                avg = np.asarray(self.average[name])
                if self.average_sem is not None and name in self.average_sem:
                    avg_err = np.asarray(self.average_sem[name])
            comps = self._components(name, np.shape(last))
        except Exception:  # traced values inside a transformation
            return [f"  {name}: {shape}"]

        def text(idx):
            t = f"final {_fmt_value(last[idx])}"
            if err is not None:
                t += f" +- {_fmt_value(err[idx], '.2g')}"
            if avg is not None:
                t += f", average {_fmt_value(avg[idx])}"
                if avg_err is not None:
                    t += f" +- {_fmt_value(avg_err[idx], '.2g')}"
            return t

        try:
            if np.ndim(last) == 0:
                return [f"  {name}: {shape} {text(())}"]
            out = [f"  {name}: {shape}"]
            for idx, lab in comps[:_MAX_COMPONENTS]:
                out.append(f"    {lab} {text(idx)}")
            if len(comps) > _MAX_COMPONENTS:
                out.append(f"    ... ({len(comps) - _MAX_COMPONENTS} more)")
            return out
        except Exception:
            return [f"  {name}: {shape}"]

    # ---------------------------------------------------------------- xarray / netCDF / zarr

    def to_xarray(self):
        """An ``xarray.Dataset`` that writes to netCDF (``ds.to_netcdf``, also netCDF3) and zarr.

        Variables (on dimension ``time``; other axes named from :attr:`dims` or the defaults):
        ``<name>`` (mean) and ``<name>_sem``; ``<name>_average`` and ``<name>_average_sem``
        (no time axis); ``<name>_trajectories`` (leading ``trajectory`` axis). The coordinate
        ``time`` is float64. A complex array is stored
        as two real variables with suffixes ``_real`` and ``_imag``. Every variable records the
        observable, its role and its original dtype in ``twa_*`` attributes, which
        :meth:`from_xarray` reads back.

        Attributes: ``n_traj, n_failed, method, solver, dt, n_steps, chunk_size, key`` (str),
        ``wall_time, xla_workaround, twa_jax_version, jax_version`` (None values left out);
        ``params_json`` (exact, see :meth:`from_xarray`) and one ``param_<path>`` attribute per
        parameter (nested keys joined by ``.``, e.g. ``param_drive.omega``; arrays of more than
        one axis as JSON strings; complex values split into ``..._real`` and ``..._imag``).
        """
        import xarray as xr

        import twa_jax

        data = {}
        used = {"time"}

        def add(name, role, arr, dims):
            arr = np.asarray(arr)
            base = _safe_name(name) + _SUFFIX[role]
            dtype = _dtype_name(arr.dtype)
            if arr.dtype.kind == "c":
                parts = [("real", arr.real), ("imag", arr.imag)]
            else:
                parts = [(None, arr)]
            for part, values in parts:
                var = base if part is None else f"{base}_{part}"
                if var in used:
                    raise ValueError(
                        f"variable name {var!r} (for {role} of observable {name!r}) is already taken; "
                        "rename an observable"
                    )
                used.add(var)
                attrs = {"twa_observable": str(name), "twa_role": role, "twa_dtype": dtype}
                if part is not None:
                    attrs["twa_part"] = part
                attrs["long_name"] = f"{_LONG[role]} of {name}" + ("" if part is None else f" ({part} part)")
                data[var] = (dims, _storable(values), attrs)

        layout = {"mean": [str(n) for n in self.mean]}
        for name, m in self.mean.items():
            m = np.asarray(m)
            dims = ("time",) + self._safe_dims(name, m.ndim - 1)
            add(name, "mean", m, dims)
            if name in self.sem:
                add(name, "sem", self.sem[name], dims)
        layout["sem"] = [str(n) for n in self.mean if n in self.sem]
        for role, tree, lead in (
            ("average", self.average, ()),
            ("average_sem", self.average_sem, ()),
            ("traj", self.trajectories, ("trajectory", "time")),
        ):
            layout[role] = None if tree is None else [str(n) for n in tree]
            for name, v in (tree or {}).items():
                v = np.asarray(v)
                if v.ndim < len(lead):
                    raise ValueError(f"{role} of {name!r} has shape {v.shape}; expected {len(lead)} leading axes")
                add(name, role, v, lead + self._safe_dims(name, v.ndim - len(lead)))

        attrs = dict(n_traj=int(self.n_traj))
        try:
            attrs["n_failed"] = int(np.asarray(self.n_failed))
        except Exception:  # traced or missing
            pass
        attrs.update(method=str(self.method), solver=str(self.solver))
        for k, conv in (("dt", float), ("n_steps", int), ("chunk_size", int), ("wall_time", float)):
            v = getattr(self, k)
            if v is not None:
                attrs[k] = conv(v)
        if self.key is not None:
            attrs["key"] = str(self.key)
        if self.xla_workaround is not None:
            attrs["xla_workaround"] = str(self.xla_workaround)
        attrs["twa_jax_version"] = str(twa_jax.__version__)
        attrs["jax_version"] = str(jax.__version__)
        attrs["twa_layout"] = json.dumps(layout)
        dims_json = None if self.dims is None else {str(k): list(v) for k, v in self.dims.items()}
        attrs["dims_json"] = json.dumps(dims_json)
        if self.params is not None:
            attrs["params_json"] = json.dumps(_to_json(self.params))
            flat = {}
            _flatten_params(self.params, "param", flat, top=True)
            for k, v in flat.items():
                while k in attrs:
                    k += "_"
                attrs[k] = v
        # time in float64 whatever the run's precision: float32 save times print as 0.30000001
        return xr.Dataset(data, coords={"time": ("time", np.asarray(self.ts, np.float64))}, attrs=attrs)

    def _safe_dims(self, name, extra_ndim):
        return tuple(_safe_name(d) for d in self._dim_names(name, extra_ndim)[0])

    @classmethod
    def from_xarray(cls, ds) -> Result:
        """Rebuild a Result from a Dataset written by :meth:`to_xarray` (also after a netCDF or
        zarr round trip: pass ``xr.open_dataset(path)`` / ``xr.open_zarr(path)``, or the path).

        Parameters come back from ``params_json`` as the original nesting of dicts, lists and
        tuples with numpy arrays (0-d arrays as numpy scalars) and Python numbers as leaves.
        """
        import os

        if isinstance(ds, (str, os.PathLike)):
            import xarray as xr

            path = os.fspath(ds)
            opened = xr.open_zarr(path) if os.path.isdir(path) else xr.open_dataset(path)
            with opened:
                return cls.from_xarray(opened.load())

        a = {k: _py(v) for k, v in ds.attrs.items()}
        layout = json.loads(a["twa_layout"]) if "twa_layout" in a else None

        parts = {}  # (role, observable) -> {part: array}, plus dtype and dims
        for var_name, var in ds.data_vars.items():
            va = var.attrs
            if "twa_role" in va:
                role, obs, part = va["twa_role"], str(va["twa_observable"]), va.get("twa_part")
            else:  # a Dataset not written by to_xarray (or an older version): go by the names
                role, obs, part = _role_from_name(str(var_name))
            entry = parts.setdefault((role, obs), {"dtype": va.get("twa_dtype"), "values": {}})
            entry["values"][part] = np.asarray(var.values)

        def get(role, obs):
            entry = parts[(role, obs)]
            vals = entry["values"]
            if "real" in vals or "imag" in vals:
                x = vals.get("real", 0) + 1j * vals.get("imag", 0)
            else:
                x = vals[None]
            return _restore_dtype(x, entry["dtype"])

        if layout is None:
            layout = {"mean": [o for r, o in parts if r == "mean"]}
            layout["sem"] = [o for o in layout["mean"] if ("sem", o) in parts]
            for role in ("average", "average_sem", "traj"):
                names = [o for r, o in parts if r == role]
                layout[role] = names or None

        def tree(role):
            names = layout.get(role)
            return None if names is None else {o: get(role, o) for o in names}

        mean = tree("mean")
        sem = tree("sem") or {}

        if "dims_json" in a:
            dj = json.loads(a["dims_json"])
            dims = None if dj is None else {k: tuple(v) for k, v in dj.items()}
        else:  # dimension names as stored, where they are not the defaults
            dims = {}
            probe = cls(ts=np.zeros(0), mean={}, sem={}, n_traj=0)
            for name in mean:
                var = next(
                    (ds[v] for v in ds.data_vars if (ds[v].attrs.get("twa_observable", v) == name)),
                    None,
                )
                if var is not None:
                    d = tuple(str(x) for x in var.dims[1:])
                    if d != probe._dim_names(name, len(d))[0]:
                        dims[name] = d
            dims = dims or None

        if "params_json" in a:
            params = _from_json(json.loads(a["params_json"]))
        else:
            flat = {k[len("param_") :]: v for k, v in a.items() if k.startswith("param_")}
            params = flat or None

        key = a.get("key")
        if isinstance(key, str) and re.fullmatch(r"-?\d+", key):
            key = int(key)

        def opt(k, conv):
            return conv(a[k]) if k in a else None

        return cls(
            ts=np.asarray(ds["time"].values),
            mean=mean,
            sem=sem,
            n_traj=int(a.get("n_traj", 0)),
            n_failed=int(a.get("n_failed", 0)),
            method=str(a.get("method", "twa")),
            solver=str(a.get("solver", "")),
            dt=opt("dt", float),
            n_steps=opt("n_steps", int),
            chunk_size=opt("chunk_size", int),
            key=key,
            params=params,
            wall_time=opt("wall_time", float),
            average=tree("average"),
            average_sem=tree("average_sem"),
            trajectories=tree("traj"),
            dims=dims,
            xla_workaround=opt("xla_workaround", str),
        )

    # ---------------------------------------------------------------- plot

    def plot(self, names=None, ax=None, label=None, imag=True, **kwargs):
        """Plot every component of each observable's mean with a shaded ``+-1 sem`` band.

        Components are labelled ``n[mode=0]`` (named dimensions, see :attr:`dims`) or ``x[0]``.
        A complex observable is drawn as its real part (label ``Re ...``, solid) and, with
        ``imag=True``, its imaginary part (label ``Im ...``, dashed, same colour).

        Args:
            names: observables to plot, a name or a list (default: all).
            ax: a matplotlib axis (default: a new figure).
            label: legend prefix.
            imag: also draw the imaginary part of complex observables.
            **kwargs: passed to ``ax.plot``.

        Returns:
            The matplotlib axis.
        """
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 4))
        ts = np.asarray(self.ts)
        if names is None:
            names = list(self.mean)
        elif isinstance(names, str):
            names = [names]
        for name in names:
            if name not in self.mean:
                raise KeyError(f"no observable {name!r}; this Result has {list(self.mean)}")
            m = np.asarray(self.mean[name])
            e = np.asarray(self.sem[name]) if name in self.sem else np.zeros(m.shape)
            if m.ndim == 0 or m.shape[0] != ts.shape[0]:
                raise ValueError(f"observable {name!r} has shape {m.shape}; expected ({ts.shape[0]}, ...)")
            is_complex = np.iscomplexobj(m)
            for idx, lab in self._components(name, m.shape[1:]):
                mi, ei = m[(slice(None),) + idx], e[(slice(None),) + idx]
                if is_complex:
                    e_re, e_im = (np.real(ei), np.imag(ei)) if np.iscomplexobj(ei) else (ei, ei)
                    lines = [("Re ", np.real(mi), e_re, {})]
                    if imag:
                        dashed = {} if ("ls" in kwargs or "linestyle" in kwargs) else {"linestyle": "--"}
                        lines.append(("Im ", np.imag(mi), e_im, dashed))
                else:
                    lines = [("", mi, np.real(ei), {})]
                color = None
                for prefix, y, err, extra in lines:
                    text = prefix + lab if label is None else f"{label} {prefix}{lab}"
                    opts = dict(kwargs, **extra)
                    if color is not None and "color" not in opts and "c" not in opts:
                        opts["color"] = color
                    (line,) = ax.plot(ts, y, label=text, **opts)
                    color = line.get_color()
                    ax.fill_between(ts, y - err, y + err, color=color, alpha=0.25, lw=0)
        ax.set_xlabel("t")
        if ax.lines:
            ax.legend()
        return ax


# -------------------------------------------------------------------- helpers

#: variable name = observable + suffix; single trajectories are ``<name>_trajectories`` (``_traj``
#: made ``n_traj`` for the occupation ``n``, the name of the run's trajectory count attribute)
_SUFFIX = {"mean": "", "sem": "_sem", "average": "_average", "average_sem": "_average_sem", "traj": "_trajectories"}
_LEGACY_SUFFIX = {"traj": "_traj"}  # read back from Datasets written before 0.6
_LONG = {
    "mean": "mean",
    "sem": "standard error",
    "average": "time average",
    "average_sem": "standard error of the time average",
    "traj": "single trajectories",
}
# names netCDF3 reserves (xarray.backends.netcdf3._reserved_names)
_NC3_RESERVED = {
    "byte", "char", "short", "ushort", "int", "uint", "int64", "uint64", "float", "real", "double", "bool", "string"
}
_INT32 = np.iinfo(np.int32)


def default_dims(name, ndim):
    """Names of an observable's non-time axes when none are given: ``<name>_dim<i>`` (used by
    ``Result`` and by ``tw.sweep``)."""
    return tuple(f"{name}_dim{i}" for i in range(1, ndim + 1))


def mode_dims(observables) -> dict | None:
    """``{name: ("mode",)}`` for the package's per-mode observables among ``{name: f}`` (the
    default ``n`` and the outputs of ``tw.observables.boson_moments``, marked ``f.per_mode``),
    whatever their names; ``None`` if there are none. Decided by the function, not the name: a
    user's observable called ``n2`` may have one value per site."""
    out = {name: ("mode",) for name, f in observables.items() if getattr(f, "per_mode", False)}
    return out or None


def _fmt(v):
    try:
        return f"{float(v):.4g}"
    except Exception:
        return str(v)


def _fmt_value(v, spec=".5g"):
    """A real or complex number (numpy scalar or 0-d array) as text."""
    v = np.asarray(v)[()]
    if np.iscomplexobj(v):
        c = complex(v)
        return f"({c.real:{spec}}{c.imag:+{spec}}j)"
    return f"{float(v):{spec}}"


def _safe_name(s) -> str:
    """A name netCDF3 (attribute, variable, dimension) and zarr accept: ASCII letters, digits and
    ``_ . - +``, starting with a letter, digit or ``_``."""
    s = re.sub(r"[^A-Za-z0-9_.+\-]", "_", str(s))
    if not s or not (s[0].isalnum() or s[0] == "_"):
        s = "_" + s
    if s in _NC3_RESERVED:
        s += "_"
    return s


def _dtype_name(dtype) -> str:
    return np.dtype(dtype).name


def _storable(x):
    """A real array of a dtype both netCDF3 and zarr store (float16, bfloat16, ... become float32)."""
    x = np.asarray(x)
    if x.dtype.kind in "fiub" and not (x.dtype.kind == "f" and x.dtype.itemsize < 4):
        return x
    return x.astype(np.float32)


def _restore_dtype(x, name):
    if not name:
        return np.asarray(x)
    try:
        dtype = np.dtype(name)
    except TypeError:
        try:
            import jax.numpy as jnp

            dtype = jnp.dtype(name)
        except Exception:
            return np.asarray(x)
    x = np.asarray(x)
    if dtype.kind != "c" and x.dtype.kind == "c":
        x = x.real
    return x.astype(dtype)


def _py(v):
    """An attribute as read back (numpy scalar, 1-element array, bytes) as a Python value."""
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.ndarray):
        return v.item() if v.size == 1 else v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, list) and len(v) == 1:
        return v[0]
    return v


def _role_from_name(var):
    """``(role, observable, part)`` from a variable name, for Datasets without ``twa_*`` attrs."""
    part = None
    for p in ("real", "imag"):
        if var.endswith("_" + p):
            part, var = p, var[: -len(p) - 1]
    for role in ("average_sem", "average", "traj", "sem"):
        for suffix in (_SUFFIX[role], _LEGACY_SUFFIX.get(role)):
            if suffix and var.endswith(suffix):
                return role, var[: -len(suffix)], part
    return "mean", var, part


def _array_like(x):
    return isinstance(x, (np.ndarray, np.generic, jax.Array)) or (hasattr(x, "__array__") and hasattr(x, "dtype"))


def _to_json(x):
    """Parameters as JSON-able data, tagged so that :func:`_from_json` restores types and dtypes."""
    if x is None or isinstance(x, (bool, str, int, float)):
        return x
    if isinstance(x, complex):
        return {"__complex__": [x.real, x.imag]}
    if isinstance(x, dict):
        if all(isinstance(k, str) for k in x):
            return {k: _to_json(v) for k, v in x.items()}
        return {"__items__": [[_to_json(k), _to_json(v)] for k, v in x.items()]}
    if isinstance(x, tuple):
        return {"__tuple__": [_to_json(v) for v in x]}
    if isinstance(x, list):
        return [_to_json(v) for v in x]
    if _array_like(x):
        try:
            a = np.asarray(x)
        except Exception:  # traced
            return {"__repr__": repr(x)}
        dtype = _dtype_name(a.dtype)
        if a.dtype.kind == "c":
            data = {"real": a.real.tolist(), "imag": a.imag.tolist()}
        elif a.dtype.kind in "fiub":
            data = a.tolist()
        else:
            data = a.astype(np.float64).tolist()
        return {"__ndarray__": data, "dtype": dtype, "shape": list(a.shape)}
    return {"__repr__": repr(x)}


def _from_json(x):
    if isinstance(x, list):
        return [_from_json(v) for v in x]
    if not isinstance(x, dict):
        return x
    if "__complex__" in x:
        re_, im = x["__complex__"]
        return complex(re_, im)
    if "__tuple__" in x:
        return tuple(_from_json(v) for v in x["__tuple__"])
    if "__items__" in x:
        return {_hashable(_from_json(k)): _from_json(v) for k, v in x["__items__"]}
    if "__ndarray__" in x:
        data, shape = x["__ndarray__"], tuple(x["shape"])
        if isinstance(data, dict):
            a = np.asarray(data["real"], dtype=float) + 1j * np.asarray(data["imag"], dtype=float)
        else:
            a = np.asarray(data)
        a = _restore_dtype(a.reshape(shape), x["dtype"])
        return a[()] if a.ndim == 0 else a
    if "__repr__" in x:
        return x["__repr__"]
    return {k: _from_json(v) for k, v in x.items()}


def _hashable(k):
    return tuple(_hashable(v) for v in k) if isinstance(k, list) else k


def _flatten_params(x, name, out, top=False):
    """One attribute per parameter leaf: ``param_<key>``, nested keys joined by ``.``."""

    def child(k):
        return f"{name}_{_safe_name(k)}" if top else f"{name}.{_safe_name(k)}"

    if isinstance(x, dict):
        for k, v in x.items():
            _flatten_params(v, child(k), out)
    elif isinstance(x, (list, tuple)):
        for i, v in enumerate(x):
            _flatten_params(v, child(i), out)
    else:
        _attr_values(name, x, out)


def _attr_values(name, x, out):
    """Attribute(s) for one parameter leaf, in types netCDF3 and zarr accept."""
    if x is None:
        return
    if isinstance(x, str):
        out[name] = x
        return
    if not (isinstance(x, (bool, int, float, complex)) or _array_like(x)):
        out[name] = repr(x)
        return
    try:
        a = np.asarray(x)
    except Exception:  # traced
        return
    if a.dtype.kind == "c":
        _attr_values(name + "_real", a.real, out)
        _attr_values(name + "_imag", a.imag, out)
        return
    if a.dtype.kind == "b":
        a = a.astype(np.int32)
    elif a.dtype.kind in "iu":
        if a.size and (a.min() < _INT32.min or a.max() > _INT32.max):
            out[name] = json.dumps(a.tolist())  # netCDF3 has no 64-bit integers
            return
        a = a.astype(np.int32)
    else:
        a = a.astype(np.float64)
    if a.ndim == 0:
        out[name] = a.item()
    elif a.ndim == 1 and a.size:
        out[name] = a.tolist()
    else:
        out[name] = json.dumps(a.tolist())
