"""``sweep``: a grid of TWA runs in one call, batched on the device, persisted and resumable.

A sweep is one more reduction over the run plan and the engine that ``simulate`` uses: points
whose shapes agree (the same structural axes: atom number, geometry) are solved together in one
compiled batch, their parameters a batch axis next to the trajectories
(:class:`~twa_jax._engine.PointMoments`), so a sweep of small systems fills the device instead of
launching one small program per point. Each point's numbers depend only on the key and the point
itself (common random numbers by default: every point uses trajectory keys ``fold_in(key, i)``;
``random_numbers="independent"`` folds in the point's own id), never on its position in the grid
or on how the grid was split into tasks. With ``store=`` every finished point is written at once
(:class:`~twa_jax._store.SweepStore`: atomic, resumable, shared by many workers); ``executor=``
spreads tasks over processes or nodes.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import numbers
import time
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import _engine
from ._checks import check_int, check_positive, default_float
from ._cpu_devices import default_devices
from ._model import Model
from ._observables import finalize
from ._plan import as_arrays, balanced_chunk, bytes_per_trajectory, choose_layout, chunk_budget, make_plan
from ._result import default_dims, mode_dims
from ._store import OTHER_VALUES, SweepStore

RANDOM_NUMBERS = ("common", "independent")
#: the most points one compiled batch holds by default
MAX_BATCH = 128


# --------------------------------------------------------------------------- the grid
def _py(x):
    """A plain Python scalar (points are dicts of these: hashable, JSON-able)."""
    if isinstance(x, (np.generic,)):
        x = x.item()
    if isinstance(x, bool) or not isinstance(x, (numbers.Number, str)):
        raise TypeError(f"grid values must be numbers or strings, got {type(x).__name__} {x!r}")
    return x


def expand_grid(grid):
    """``(axes, values per axis or None, points)`` of an outer-product dict or an explicit list."""
    if isinstance(grid, dict):
        if not grid:
            raise ValueError("grid is empty: give {axis: 1-D values}")
        values = {}
        for axis, v in grid.items():
            if not isinstance(axis, str) or not axis.isidentifier():
                raise ValueError(f"grid axes must be identifiers, got {axis!r}")
            arr = np.asarray(v)
            if arr.ndim != 1 or arr.size == 0:
                raise ValueError(f"grid[{axis!r}] must be a non-empty 1-D sequence of values, got shape {arr.shape}")
            vals = [_py(x) for x in arr.tolist()]
            if len({SweepStore.point_id({axis: x}) for x in vals}) != len(vals):
                raise ValueError(f"grid[{axis!r}] has a value twice: {vals}")
            values[axis] = vals
        axes = tuple(values)
        return axes, values, [dict(zip(axes, c)) for c in itertools.product(*values.values())]
    if isinstance(grid, (list, tuple)):
        if not grid or not all(isinstance(p, dict) for p in grid):
            raise TypeError("grid must be a dict {axis: 1-D values} or a non-empty list of points {axis: value}")
        axes = tuple(grid[0])
        points, seen = [], {}
        for i, p in enumerate(grid):
            if tuple(p) != axes:
                raise ValueError(f"point {i} has axes {tuple(p)}; every point needs the axes {axes} in that order")
            p = {a: _py(v) for a, v in p.items()}
            pid = SweepStore.point_id(p)
            if pid in seen:
                raise ValueError(f"the explicit grid has the point {p} twice (at {seen[pid]} and {i})")
            seen[pid] = i
            points.append(p)
        return axes, None, points
    raise TypeError(f"grid must be a dict {{axis: 1-D values}} or a list of points, got {type(grid).__name__}")


def _split_axes(spec, axes):
    """``(builder or None, (model, initial) or None, structural axes, parameter axes)``."""
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], Model):
        return None, spec, (), axes
    if callable(spec) and not isinstance(spec, Model):
        sig = inspect.signature(spec)
        names = [n for n, p in sig.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        structural = tuple(a for a in axes if a in names)
        missing = [n for n in names if n not in axes and sig.parameters[n].default is inspect.Parameter.empty]
        if missing:
            raise ValueError(f"the builder {spec.__name__}({', '.join(names)}) needs {missing}, which are not grid axes")
        return spec, None, structural, tuple(a for a in axes if a not in structural)
    raise TypeError("spec must be (model, initial) or a function build(**structural axes) -> (model, initial)")


def _fingerprint_at(builder, pair, structural, param_axes, point, observables, pulses, built=None):
    """What the sweep's functions give at ``point`` (:func:`fingerprint`), for its store;
    ``built = (struct, (model, initial))``: a pair already built for those structural values."""
    struct = {a: point[a] for a in structural}
    if pair is not None:
        model, initial = pair
    elif built is not None and built[0] == struct:
        model, initial = built[1]
    else:
        model, initial = _build(builder, struct)
    return fingerprint(model, initial, {a: point[a] for a in param_axes if a in point}, observables, pulses)


#: the fixed probe states of :func:`fingerprint` come from this seed
_PROBE_SEED = 20261204


def fingerprint(model, initial, params, observables=None, pulses=None) -> dict:
    """``{quantity: [floats]}``: the Hamiltonian, jump operators, Gamma, the observables and the
    pulses' generators at two fixed pseudo-random phase-space points (and, for a time-dependent
    model, at two times), and the initial state's mean and one sample (fixed key); the model's
    functions also at other parameter values (:func:`_other_values`), so that a change of code
    that does not show at ``params`` (a term proportional to a parameter that is 0 there) does.
    Two sweeps whose functions have the same names but other code, captured constants or
    parameters give other numbers, so a store can tell them apart. An array longer than 8 is kept as 8 evenly
    spaced entries, its sum, its sum of squares and the sum of every 7th entry (real and
    imaginary parts apart) without a copy of it: a dense Gamma of 1e4 sites is 1e8 entries.

    The functions are evaluated in one compiled program: evaluated operation by operation, a
    process's first sweep with a store spent 1.2-1.9 s compiling each operation on its own."""
    rng = np.random.default_rng(_PROBE_SEED)
    n, m = model.n_spins, model.n_bosons
    probes = tuple((jnp.asarray(rng.normal(size=(n, 3)), default_float()),
                    jnp.asarray(rng.normal(size=m) + 1j * rng.normal(size=m))) for _ in range(2))
    obs = observables if observables is not None else (model.observables or {})
    p = as_arrays(model.with_params(params))
    values = jax.device_get(_probe_values(model, initial, p, obs, tuple(pulses or ()), probes))
    # and the model's functions at other parameter values: a change of code that does not show at
    # the store's first point (Omega * x against Omega / 2 * x at Omega = 0) shows there
    other = jax.device_get(_probe_values(model, initial, _other_values(p), obs, tuple(pulses or ()), probes))
    values += [(name + OTHER_VALUES, x) for name, x in other if name.startswith(("hamiltonian", "jumps", "gamma", "pulse"))]
    out = {}
    for name, x in values:
        x = np.ravel(np.asarray(x))
        parts = []
        for part in ((x.real, x.imag) if np.iscomplexobj(x) else (x,)):  # views
            if part.size > 8:
                part = np.concatenate([part[np.linspace(0, part.size - 1, 8).astype(int)],
                                       [np.sum(part, dtype=float), np.vdot(part, part), np.sum(part[::7], dtype=float)]])
            parts.append(np.asarray(part, float))
        x = np.nan_to_num(np.concatenate(parts), nan=-1.2345e300, posinf=1.2345e300, neginf=-1.2345e299)
        out[name] = [float(v) for v in x]
    return out


def _other_values(params):
    """Fixed other values of the floating parameters (``1.37 x + 0.29``), integers kept (they may
    be indices)."""
    def other(x):
        if isinstance(x, (np.ndarray, jax.Array)) and jnp.issubdtype(x.dtype, jnp.inexact):
            return x * 1.37 + 0.29
        return x

    return jax.tree_util.tree_map(other, params)


@eqx.filter_jit
def _probe_values(model, initial, p, obs, pulses, probes) -> list:
    """The raw arrays of :func:`fingerprint`: ``[(quantity, array)]`` (a list: a dict would come
    back sorted by name, and the first quantity named in a store's refusal should be the Hamiltonian)."""
    out = {}
    times = (0.0, 0.37) if model.time_dependent else (0.0,)
    for k, (s, a) in enumerate(probes):
        for t in times:
            at = f" at probe {k}" + (f", t = {t}" if model.time_dependent else "")
            out["hamiltonian" + at] = model.H(s, a, p, t)
            if model.jumps is not None:
                out["jumps" + at] = model.L(s, a, p, t)
        for name, f in obs.items():
            out[f"observable {name!r} at probe {k}"] = f(s, a)
        for i, pulse in enumerate(pulses):
            out[f"pulse {i}'s generator at probe {k}"] = pulse.generator(s, a, p)
    for t in times:
        if model.gamma is not None:
            out["gamma" + (f" at t = {t}" if model.time_dependent else "")] = model.gamma_of(p, t)
    s0, a0 = initial.mean()
    out["initial mean"] = jnp.concatenate([jnp.ravel(s0), jnp.real(jnp.ravel(a0)), jnp.imag(jnp.ravel(a0))])
    s1, a1 = initial.sample(jax.random.key(_PROBE_SEED))
    out["initial sample"] = jnp.concatenate([jnp.ravel(s1), jnp.real(jnp.ravel(a1)), jnp.imag(jnp.ravel(a1))])
    return list(out.items())


#: the Dataset's (and the store view's) own variables and coordinates besides the grid axes
_OWN_NAMES = ("dt", "n_failed", "failed", "status", "time", "point")


def _check_variable_names(observables, time_average, axes, shapes=None):
    """Every variable of the sweep's Dataset gets its own name: an observable called ``dt`` or
    ``sz_sem`` (next to ``sz``) or like a grid axis would overwrite another variable, silently or
    after every point has run; a grid axis named like an observable's own axis (``mode`` of the
    default ``n``, ``<name>_dim1``; ``shapes``: ``{name: shape}``) would fail after every point
    has run."""
    taken = {name: f"the sweep's own {name!r}" for name in _OWN_NAMES}
    taken.update({a: f"the grid axis {a!r}" for a in axes})
    modes = mode_dims(observables) or {}
    for name, shape in (shapes or {}).items():
        for dim in modes.get(name, default_dims(name, len(shape))):
            if dim in axes:
                raise ValueError(f"the grid axis {dim!r} has the name of an axis of observable {name!r} (its "
                                 f"values per {'mode' if dim == 'mode' else 'entry'}): rename the grid axis")
    made = [(name, f"the mean of observable {name!r}") for name in observables]
    made += [(f"{name}_sem", f"the standard error of observable {name!r}") for name in observables]
    made += [(f"{name}_average{x}", f"the time average{x and ' error'} of observable {name!r}")
             for name in time_average for x in ("", "_sem")]
    for var, what in made:
        if var in taken:
            raise ValueError(f"the sweep's variable {var!r} ({what}) would overwrite {taken[var]}: rename the observable")
        taken[var] = what


def _build(builder, struct):
    """``builder(**struct)``, which must be a ``(model, initial)`` pair."""
    out = builder(**struct)
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], Model)):
        raise TypeError(f"the builder {getattr(builder, '__name__', builder)}(**{struct}) must return "
                        f"(model, initial), got {type(out).__name__}")
    return out


def _spec_name(spec):
    if isinstance(spec, tuple):
        h = spec[0].hamiltonian
        return getattr(h, "__qualname__", type(h).__name__)
    return getattr(spec, "__qualname__", type(spec).__name__)


# --------------------------------------------------------------------------- one task: points of one shape
def run_points(model, initial, ts, points, param_axes, opts, store=None, on_point=None):
    """Solve ``points`` (dicts of axis values) of one ``(model, initial)``; returns
    ``{point id: result}`` with ``result = (arrays, attrs)`` or ``{"failed": reason}``.

    Each point runs at ``dt`` if given, else at its own default ``dt`` (on the step ladder, so
    nearby values share it), so its numbers do not depend on the other points of the call; points
    with the same step and the same structure of the factor of Gamma are batched together."""
    out, values, factors = {}, {}, {}
    ts_np = np.asarray(ts, dtype=float)
    base = None
    devices = opts["devices"]
    if devices is None and opts["method"] != "mean_field":  # the devices a whole batch's work justifies
        devices = default_devices(jax.devices(), model.n_spins + model.n_bosons,
                                  opts["n_traj"] * min(len(points), opts["batch_size"] or MAX_BATCH))
    for p in points:
        pid = SweepStore.point_id(p)
        params = {a: p[a] for a in param_axes}
        try:
            if base is None:  # every argument validated once, on the first point of this shape
                base = make_plan(
                    model, initial, ts, n_traj=opts["n_traj"], key=opts["key"], params=params,
                    observables=opts["observables"], dt=opts["dt"], solver=opts["solver"], method=opts["method"],
                    chunk_size=opts["chunk_size"], devices=devices, time_average=opts["time_average"],
                    progress=False, pulses=opts.get("pulses"),
                )
                values[pid] = (base.params, base.noise, base.dt)
            else:  # what depends on the values: NaN, Gamma and its factor, the default dt
                values[pid] = base.values_at(params, estimate_step=opts["dt"] is None, factors=factors)
        except (TypeError, ValueError, IndexError) as e:
            out[pid] = {"failed": f"{type(e).__name__}: {e}"}
            if store is not None:  # recorded as every failure is: a rerun skips it unless retry_failed
                store.write_failure(p, out[pid]["failed"])
            if on_point is not None:
                on_point(pid)
    if not values:
        return out
    by_id = {SweepStore.point_id(p): p for p in points}
    groups = {}
    for pid, v in values.items():  # by the point's own default step (none given) and Gamma's structure
        groups.setdefault((v[2] if opts["dt"] is None else None, _noise_signature(v[1])), []).append(pid)
    for (dt, _), pids in groups.items():
        grid = base if dt is None or dt == base.dt else base.with_dt(ts_np, dt)
        first = dataclasses.replace(grid, noise=values[pids[0]][1])
        chunk, batch = _sizes(first, len(pids), opts)
        if batch > 1:  # the points of a batch are work on the lanes too
            first = dataclasses.replace(first, layout=choose_layout(
                first.model, first.noise, first.params, first.dtype, first.method,
                min(chunk, -(-first.n_traj // first.n_devices)), batch, platform=first.devices[0].platform))
        for i in range(0, len(pids), batch):
            ids = pids[i:i + batch]
            if store is not None:
                for pid in ids:
                    store.started(by_id[pid])
            results = _solve_batch(first, [values[pid] for pid in ids], ids, chunk, batch, opts)
            for pid, res in results.items():
                out[pid] = res
                if store is not None:
                    if "failed" in res:
                        store.write_failure(by_id[pid], res["failed"])
                    else:
                        store.write_point(by_id[pid], res[0], res[1])
                if on_point is not None:
                    on_point(pid)
    return out


def _noise_signature(noise):
    if noise is None:
        return None
    leaves, treedef = jax.tree_util.tree_flatten(noise)
    return treedef, tuple((tuple(x.shape), str(x.dtype)) for x in leaves)


def _sizes(plan, n_points, opts):
    """``(trajectories per device per chunk, points per batch)`` from the memory rule."""
    per_device = -(-plan.n_traj // plan.n_devices)
    if opts["chunk_size"] is not None:
        chunk = min(opts["chunk_size"], per_device)
        budget = None
    else:
        per = bytes_per_trajectory(plan.model, plan.noise, len(plan.save_ts), plan.obs_shapes, plan.dtype)
        budget = chunk_budget(per, plan.devices)
        chunk = balanced_chunk(per_device, budget)
    batch = opts["batch_size"] or max(1, min(MAX_BATCH, n_points, (budget // chunk) if budget else MAX_BATCH))
    batch = min(batch, n_points)
    if opts["batch_size"] and budget is not None:
        chunk = balanced_chunk(per_device, max(1, budget // batch))
    return chunk, batch


def _solve_batch(first, values, ids, chunk, batch, opts):
    """One compiled batch of points, ``values = [(params, noise, dt), ...]`` (padded to ``batch``
    by repeating the last point, so every batch of a group has one shape and one compilation)."""
    pad = values + [values[-1]] * (batch - len(values))
    params = jax.tree_util.tree_map(lambda *x: jnp.asarray(np.stack([np.asarray(a) for a in x]), first.dtype
                                                          if np.asarray(x[0]).dtype.kind == "f" else None),
                                    *[v[0] for v in pad])
    noise = None if first.noise is None else jax.tree_util.tree_map(lambda *x: jnp.stack(x), *[v[1] for v in pad])
    key = first.key
    if opts["random_numbers"] == "independent":
        keys = [jax.random.fold_in(key, int(pid[:8], 16)) for pid in ids]
    else:
        keys = [key] * len(ids)
    keys = jnp.stack(keys + [keys[-1]] * (batch - len(ids)))
    acc, _ = _engine.run(first, _engine.PointMoments(first.time_average, opts["random_numbers"] == "common"), _engine.combine_moments,
                         chunk_size=chunk, params=params, extra=(noise, keys))
    mean, sem = {}, {}
    for name, mom in acc["moments"].items():
        mean[name], sem[name] = _finalize_batched(mom, first.method == "mean_field")
    avg = {name: _finalize_batched(mom, first.method == "mean_field") for name, mom in acc["averages"].items()}
    n_bad = np.asarray(acc["n_bad"])
    first_t = np.asarray(acc["first_bad_time"])
    ts = np.asarray(first.ts)
    out = {}
    for b, pid in enumerate(ids):
        nb = int(n_bad[b])
        if nb > opts["fail_fraction"] * first.n_traj or nb == first.n_traj:
            out[pid] = {"failed": f"{nb} of {first.n_traj} trajectories became non-finite (earliest by t = "
                                  f"{ts[min(int(first_t[b]), len(ts) - 1)]:.4g}, dt = {first.dt:.3g}): {_engine.NONFINITE_ADVICE}"}
            continue
        arrays = {}
        for name in mean:
            arrays[f"mean/{name}"] = mean[name][b]
            arrays[f"sem/{name}"] = sem[name][b]
        for name, (m, s) in avg.items():
            arrays[f"average/{name}"] = m[b]
            arrays[f"average_sem/{name}"] = s[b]
        out[pid] = (arrays, {"n_failed": nb, "dt": first.dt, "n_steps": first.n_steps})
    return out


def _finalize_batched(mom, deterministic=False):
    """:func:`finalize` of moments stacked over points (counts ``(B,)``, means ``(B, ...)``);
    ``deterministic``: a mean-field run (standard error zero, not NaN for its one trajectory)."""
    return tuple(np.asarray(x) for x in finalize(mom, deterministic))


# --------------------------------------------------------------------------- tasks for executors
_SPECS: dict = {}  # in a worker: unpickled specs by their bytes, so later tasks reuse compiled programs


def _run_task(x64, spec_bytes, payload):
    """Run one task (in this process or a worker's). ``spec_bytes``: ``cloudpickle`` bytes of the
    spec, unpickled once per worker (new function objects would miss the compilation cache);
    ``payload``: of ``(struct point, points, param_axes, ts, opts, store path, signature, axes)``.
    Double precision is switched on first when the caller used it, before arrays are unpickled."""
    if x64:
        jax.config.update("jax_enable_x64", True)
    import hashlib

    import cloudpickle

    digest = hashlib.sha1(spec_bytes).hexdigest()
    if digest not in _SPECS:
        _SPECS[digest] = cloudpickle.loads(spec_bytes)
    struct, points, param_axes, ts, opts, path, signature, axes = cloudpickle.loads(payload)
    store = SweepStore(path, signature, axes) if path is not None else None
    if store is not None:  # a requeued or resumed task redoes only what the store lacks
        done = store.done_ids()
        points = [p for p in points if SweepStore.point_id(p) not in done]
        if not points:
            return {}
    return _run_group(_SPECS[digest], struct, points, param_axes, ts, opts, store)


def _run_group(spec, struct, points, param_axes, ts, opts, store, on_point=None, built=None):
    try:
        model, initial = built if built is not None else (spec if isinstance(spec, tuple) else _build(spec, struct))
    except Exception as e:  # the builder failed: every point of this shape is a failure
        reason = f"build({', '.join(f'{k}={v!r}' for k, v in struct.items())}) raised {type(e).__name__}: {e}"
        out = {SweepStore.point_id(p): {"failed": reason} for p in points}
        if store is not None:
            for p in points:
                store.write_failure(p, reason)
        return out
    return run_points(model, initial, ts, points, param_axes, opts, store, on_point)


# --------------------------------------------------------------------------- public: sweep
def sweep(
    spec,
    grid,
    ts,
    *,
    n_traj: int,
    key,
    store=None,
    executor=None,
    observables: dict | None = None,
    dt: float | None = None,
    solver="rotation_heun",
    method: str = "twa",
    time_average: dict | None = None,
    chunk_size: int | None = None,
    devices=None,
    random_numbers: str = "common",
    batch_size: int | None = None,
    task_size: int | None = None,
    fail_fraction: float = 0.5,
    retry_failed: bool = False,
    progress: bool | None = None,
    pulses=None,
):
    r"""Run TWA over a grid of points and return an ``xarray.Dataset``.

    Args:
        spec: ``(model, initial)`` when every axis of ``grid`` is a model parameter, or a
            function ``build(**point) -> (model, initial)`` whose arguments are the structural
            axes (those that change shapes: atom number, geometry); the other axes are
            parameters. A builder's arguments that are not axes need defaults.
        grid: ``{axis: 1-D values}`` (outer product), or an explicit list of points
            ``[{axis: value, ...}, ...]`` (no point twice).
        ts: ``(n_times,)`` save times, as in :func:`~twa_jax.simulate`.
        n_traj, key, observables, dt, solver, method, time_average, chunk_size, devices, pulses: as in
            :func:`~twa_jax.simulate`, the same for every point. Without ``dt`` each point runs at
            its own default ``dt`` (that of ``simulate``); points of one shape and one step are
            batched.
        store: a path ``"x.zarr"``: each finished point is written as soon as it is done; the same
            call again skips finished points (a grid grown along an axis reuses them). A store
            of another sweep (other model, ts, n_traj, key, observables, ...) is refused, naming
            what differs; so is one written by other code, parameters or states under the same
            names: the model, the initial state and the observables are evaluated at fixed probe
            points of the store's first point (:func:`fingerprint`) and compared.
        executor: a ``concurrent.futures``-style executor (a spawn ``ProcessPoolExecutor``, a
            ``submitit`` executor, a ``dask.distributed`` client), or ``"processes"`` for a spawn
            process pool made here: each task (points of one shape, at most ``task_size`` of them)
            is submitted to it; with a ``store`` workers write their points themselves. A
            submitit executor gets all tasks as one job array (``map_array``; its
            ``slurm_array_parallelism`` applies); tasks are requeued at a time limit and skip
            points already in the store; a task that ends without a result (``scancel``) leaves
            its points pending. A fork ``ProcessPoolExecutor`` is refused (forking a process that
            runs JAX hangs).
        random_numbers: ``"common"`` (default): every point uses the same trajectory keys (smooth
            curves, low-variance differences between neighbouring points; each point's sem stays
            valid on its own); ``"independent"``: each point folds its own id into ``key``.
            Either way a point's numbers depend only on ``key`` and the point itself.
        batch_size: points per compiled batch (default: as many as memory allows, at most 128).
        task_size: points per executor task (default: for a job array, enough points for about
            a minute of one core's work from a point's cost, at most 128; 128 with another
            executor; all points of one shape without).
        fail_fraction: a point whose share of non-finite trajectories exceeds this is recorded
            as failed (with the reason) and the sweep goes on.
        retry_failed: run points again that a store records as failed.
        progress: a progress bar over points (default: on).

    Returns:
        ``xarray.Dataset`` with dims ``(axes..., "time", observable dims...)`` (an explicit
        list of points: ``("point", "time", ...)`` with the axes as coordinates along
        ``point``), variables ``<obs>``, ``<obs>_sem``, ``<obs>_average`` and
        ``<obs>_average_sem`` (with ``time_average``), ``n_failed`` and ``failed`` (the reason,
        empty where the point succeeded), and attrs recording the sweep (model, n_traj, key,
        dt, solver, method, random numbers, package and JAX versions).

        With a ``store``, the store's root also holds this Dataset (with a ``status`` variable:
        0 pending, 1 done, 2 failed, instead of ``failed``), so ``xr.open_zarr(store)`` reads it
        on its own; it is rewritten when a call ends, also after Ctrl-C.

    Raises:
        TypeError, ValueError: on bad input, before anything runs.
        SystemExit: Ctrl-C in a script, after one line saying how many points are saved.

    Example:
        >>> import numpy as np, twa_jax as tw
        >>> ds = tw.sweep((tw.models.driven_spin(gamma_down=0.3), tw.states.spins_down(1)),
        ...               {"Omega": [0.5, 1.0]}, np.linspace(0, 1, 3), n_traj=16, key=0, dt=0.05,
        ...               progress=False)
        >>> ds["sz"].dims
        ('Omega', 'time')
    """
    t_start = time.perf_counter()
    # === arguments
    axes, values, points = expand_grid(grid)
    builder, pair, structural, param_axes = _split_axes(spec, axes)
    n_traj = check_int(n_traj, "n_traj")
    if random_numbers not in RANDOM_NUMBERS:
        raise ValueError(f"random_numbers must be one of {RANDOM_NUMBERS}, got {random_numbers!r}")
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size")
    if task_size is not None:
        task_size = check_int(task_size, "task_size")
    fail_fraction = check_positive(fail_fraction, "fail_fraction")
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress must be True, False or None, got {progress!r}")
    executor, own_pool = _check_executor(executor)
    ts_np = np.asarray(ts, dtype=float)
    opts = dict(n_traj=n_traj, key=key, observables=observables, dt=dt, solver=solver, method=method,
                chunk_size=chunk_size, devices=devices, time_average=time_average, random_numbers=random_numbers,
                batch_size=batch_size, fail_fraction=fail_fraction, pulses=pulses)
    # validate the options once, on the first point, so bad input fails before any work
    struct0 = {a: points[0][a] for a in structural}
    model0, init0 = pair if pair is not None else _build(builder, struct0)
    probe = make_plan(model0, init0, ts_np, n_traj=n_traj, key=key, params={a: points[0][a] for a in param_axes},
                      observables=observables, dt=dt, solver=solver, method=method, chunk_size=chunk_size,
                      devices=devices, time_average=time_average, progress=False, pulses=pulses)
    _check_variable_names(probe.observables, time_average or {}, axes, probe.shapes)
    signature = dict(
        model=_spec_name(spec), ts=ts_np.tolist(), n_traj=n_traj, key=str(key), observables=sorted(probe.observables),
        dt=None if dt is None else float(dt), solver=probe.solver_name, method=method, random_numbers=random_numbers,
        time_average={k: [float(t) for t in v] for k, v in (time_average or {}).items()},
        structural=list(structural), x64=bool(jax.config.jax_enable_x64),
    )
    if probe.pulses:  # a store written with other pulses is another sweep
        signature["pulses"] = [[p.time, getattr(p.generator, "__qualname__", repr(p.generator)),
                                p.angle_name if p.angle_name is not None else float(p.angle_value)] for p in probe.pulses]
    st = None if store is None else SweepStore(
        store, signature, axes,
        fingerprint=(points[0], lambda p: _fingerprint_at(builder, pair, structural, param_axes, p, observables,
                                                        pulses, built=(struct0, (model0, init0)))))

    # === the work: points not yet done, grouped by shape, split into tasks
    done = set() if st is None else st.done_ids()
    skip = set() if (st is None or retry_failed) else set(st.failures())
    todo = [p for p in points if SweepStore.point_id(p) not in done | skip]
    groups = {}
    for p in todo:
        groups.setdefault(tuple(p[a] for a in structural), []).append(p)
    array = executor is not None and hasattr(executor, "map_array")  # submitit: one job array
    size = task_size or (_block_size(probe) if array else MAX_BATCH if executor is not None else None)
    tasks = []
    for struct_vals, pts in groups.items():
        struct = dict(zip(structural, struct_vals))
        step = size or len(pts)
        tasks += [(struct, pts[i:i + step]) for i in range(0, len(pts), step)]
    results = {}
    bar = _bar(len(points), len(points) - len(todo), progress)
    try:
        if executor is None:
            for struct, pts in tasks:
                results.update(_run_group(builder or pair, struct, pts, param_axes, ts_np, opts, st,
                                          on_point=(lambda pid: bar.update(1)) if bar else None,
                                          built=(model0, init0) if struct == struct0 else None))
        elif tasks:
            import cloudpickle

            x64 = bool(jax.config.jax_enable_x64)
            spec_bytes = cloudpickle.dumps(builder or pair)
            payloads = [cloudpickle.dumps((struct, pts, param_axes, ts_np, opts, None if st is None else str(st.path),
                                           signature, axes)) for struct, pts in tasks]
            if array:
                from ._array_task import SweepArrayTask

                jobs = executor.map_array(SweepArrayTask(), [x64] * len(tasks), [spec_bytes] * len(tasks), payloads)
                outcomes = _wait_array(jobs, bar, [len(pts) for _, pts in tasks])
            else:
                futures = [executor.submit(_run_task, x64, spec_bytes, pl) for pl in payloads]
                outcomes = []
                for fut, (_, pts) in zip(futures, tasks):
                    try:
                        outcomes.append(fut.result())
                    except Exception as e:  # the worker died or raised: its points are failures
                        outcomes.append(e)
                    if bar:
                        bar.update(len(pts))
            unfinished = 0
            for out, (struct, pts) in zip(outcomes, tasks):
                if isinstance(out, dict):
                    results.update(out)
                elif out is None:  # the task ended without a result (cancelled, killed): pending
                    unfinished += len(pts)
                else:
                    reason = f"task raised {type(out).__name__}: {out}"
                    for p in pts:
                        if st is None or not st.is_done(p):
                            results[SweepStore.point_id(p)] = {"failed": reason}
                            if st is not None:
                                st.write_failure(p, reason)
            if unfinished:
                warnings.warn(f"{unfinished} points are in tasks that ended without a result (cancelled or "
                              f"killed); {'the same call resumes them' if st is not None else 'rerun them'}",
                              RuntimeWarning, stacklevel=2)
    except KeyboardInterrupt:
        if bar:
            bar.close()
            bar = None
        if st is not None:  # the view for xr.open_zarr shows what is saved so far
            try:
                ds = _dataset(axes, values, points, _from_store(st, results), probe, signature, ts_np)
                st.write_view(_view(ds))
            except (RuntimeError, KeyboardInterrupt):  # nothing saved yet, or a second Ctrl-C
                pass
        _interrupted(st, len(points))
    finally:
        if bar:
            bar.close()
        if own_pool:
            executor.shutdown(wait=False, cancel_futures=True)

    # === finish: everything from the store (finished earlier or now) and this run
    _from_store(st, results)
    ds = _dataset(axes, values, points, results, probe, signature, ts_np)
    ds.attrs["wall_time"] = time.perf_counter() - t_start
    if st is not None:
        st.write_view(_view(ds))
    failed = [r["failed"] for r in results.values() if isinstance(r, dict) and "failed" in r]
    if failed:
        warnings.warn(f"{len(failed)} of {len(points)} points failed (see ds['failed']); first: {failed[0]}",
                      RuntimeWarning, stacklevel=2)
    return ds



# --------------------------------------------------------------------------- executors
#: trajectory-steps x degrees of freedom one array task should carry at least (about a minute of
#: one CPU core), so a task's fixed costs (start-up, JAX import, one compilation) stay small
TASK_WORK = 1e10


def _check_executor(executor):
    """``(executor, created here)``; ``"processes"`` makes a spawn process pool, a fork pool is refused."""
    if isinstance(executor, str):
        if executor != "processes":
            raise ValueError(f'executor must be an executor object or "processes", got {executor!r}')
        import multiprocessing
        import os
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(max_workers=os.cpu_count(), mp_context=multiprocessing.get_context("spawn")), True
    if executor is not None and not hasattr(executor, "submit"):
        raise TypeError(f"executor must have a submit(fn, *args) method (concurrent.futures style), got {executor!r}")
    from concurrent.futures import ProcessPoolExecutor

    if isinstance(executor, ProcessPoolExecutor):
        ctx = getattr(executor, "_mp_context", None)
        method = ctx.get_start_method() if ctx is not None else None
        if method == "fork":
            raise ValueError(
                "executor is a ProcessPoolExecutor with the 'fork' start method: its workers would fork a "
                "process in which JAX is running, and hang. Use ProcessPoolExecutor(n, mp_context="
                "multiprocessing.get_context('spawn')), or executor=\"processes\" to let sweep make one")
    return executor, False


def _block_size(probe):
    """Points per array task from one point's cost: enough for :data:`TASK_WORK`, at most :data:`MAX_BATCH`."""
    dof = 3 * probe.model.n_spins + 2 * probe.model.n_bosons
    cost = max(1.0, float(probe.n_traj) * float(probe.n_steps) * max(dof, 1))
    return int(min(MAX_BATCH, max(1, -(-TASK_WORK // cost))))


#: seconds a job may be absent from the queue, with no result file, before it counts as ended
GONE_AFTER = 20.0


def _wait_array(jobs, bar, sizes, poll=1.0):
    """Outcome of each submitit job: its return value, an exception, or None (ended without a
    result). submitit learns the end of a job that wrote no result from ``sacct``; on a cluster
    without accounting it would wait forever, so a job that ``squeue`` no longer lists as queued
    or running for :data:`GONE_AFTER` seconds counts as ended (one ``squeue`` call per poll)."""
    import submitit

    outcomes = [Ellipsis] * len(jobs)
    gone_since = {}
    while Ellipsis in outcomes:
        active = None  # job ids squeue lists as queued or running, asked at most once per poll
        for i, job in enumerate(jobs):
            if outcomes[i] is not Ellipsis:
                continue
            if not job.done():
                if active is None:
                    active = _active_ids([j for j, o in zip(jobs, outcomes) if o is Ellipsis])
                if active is False or str(job.job_id) in active:
                    gone_since.pop(i, None)
                    continue
                if time.monotonic() - gone_since.setdefault(i, time.monotonic()) < GONE_AFTER:
                    continue
                if not job.paths.result_pickle.exists():  # gone without a result: job.result() would wait
                    outcomes[i] = None
                    if bar:
                        bar.update(sizes[i])
                    continue
            try:
                outcomes[i] = job.result()
            except submitit.core.utils.UncompletedJobError:
                outcomes[i] = None
            except Exception as e:
                outcomes[i] = e
            if bar:
                bar.update(sizes[i])
        if Ellipsis in outcomes:
            time.sleep(poll)
    return outcomes


def _active_ids(jobs):
    """Ids (``"123_4"``) of the SLURM jobs among ``jobs`` that squeue lists as queued or running;
    False where squeue cannot tell (not a SLURM job, no squeue, an error)."""
    import shutil
    import subprocess

    if shutil.which("squeue") is None or not all("Slurm" in type(j).__name__ for j in jobs):
        return False
    main = sorted({str(j.job_id).split("_")[0] for j in jobs})
    r = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(main), "-t", "PD,R,CG,CF,S,RQ,RS,RH,SI,SO,ST",
                        "-o", "%i"], capture_output=True, text=True)
    if r.returncode != 0 and "Invalid job id" not in r.stderr:
        return False
    return set(r.stdout.split())


def _interrupted(st, total):
    """Ctrl-C: one line saying what is saved and how to resume, instead of a traceback from JAX."""
    import sys

    if st is not None:
        msg = (f"sweep interrupted: {len(st.done_ids())} of {total} points saved in {st.path}; "
               "rerun the same call to resume")
    else:
        msg = "sweep interrupted: no store was given, nothing is saved (pass store='x.zarr' to resume later)"
    if hasattr(sys, "ps1") or "IPython" in sys.modules:  # interactive: keep the session, no long traceback
        raise KeyboardInterrupt(msg) from None
    print(msg, file=sys.stderr)
    raise SystemExit(130)

def _from_store(st, results):
    """``results`` completed by the points the store has (finished earlier or by other workers)."""
    if st is not None:
        for pid, _vals, arrays, attrs in st.iter_points():
            results.setdefault(pid, (arrays, attrs))
        for pid, reason in st.failures().items():
            results.setdefault(pid, {"failed": reason})
    return results


def _view(ds):
    """The store's view: ``ds`` with an int8 ``status`` (CF flags) instead of the reason strings."""
    failed = ds["failed"].values
    status = np.where(failed == "", SweepStore.STATUS["done"],
                      np.where(failed == "not run", SweepStore.STATUS["pending"], SweepStore.STATUS["failed"]))
    view = ds.drop_vars("failed")
    view["status"] = (ds["failed"].dims, status.astype(np.int8), {
        "flag_values": np.array(list(SweepStore.STATUS.values()), np.int8),
        "flag_meanings": " ".join(SweepStore.STATUS), "long_name": "point status (reasons: tw.sweep or twa-sweep status)"})
    return view


def _bar(total, initial, progress):
    if progress is False:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="sweep", unit="point", leave=False, dynamic_ncols=True)


def _dataset(axes, values, points, results, probe, signature, ts_np):
    import xarray as xr

    from . import __version__  # set in __init__ after it imports this module

    ok = [r for r in results.values() if not (isinstance(r, dict) and "failed" in r)]
    if not ok:
        reasons = sorted({r["failed"] for r in results.values()})
        if not reasons:
            raise RuntimeError(f"no point of the sweep finished: all {len(points)} are pending (their tasks ended "
                               "without a result: cancelled or killed); run the same call again to resume")
        raise RuntimeError(f"every point of the sweep failed: {reasons[:3]}")
    arrays0 = ok[0][0]
    if values is not None:
        lead, lead_dims = tuple(len(values[a]) for a in axes), axes
        index = {SweepStore.point_id(p): tuple(values[a].index(p[a]) for a in axes) for p in points}
        coords = {a: np.asarray(values[a]) for a in axes}
    else:
        lead, lead_dims = (len(points),), ("point",)
        index = {SweepStore.point_id(p): (i,) for i, p in enumerate(points)}
        coords = {a: ("point", np.asarray([p[a] for p in points])) for a in axes}
    coords["time"] = ts_np
    data = {}
    modes = mode_dims(probe.observables) or {}
    for key, arr in arrays0.items():
        role, name = key.split("/", 1)
        arr = np.asarray(arr)
        timed = role in ("mean", "sem")
        extra = arr.shape[1:] if timed else arr.shape
        dims = lead_dims + (("time",) if timed else ()) + modes.get(name, default_dims(name, len(extra)))
        fill = np.full(lead + arr.shape, np.nan, dtype=np.result_type(arr.dtype, np.float32))
        for pid, idx in index.items():
            r = results.get(pid)
            if r is not None and not (isinstance(r, dict) and "failed" in r):
                fill[idx] = np.asarray(r[0][key])
        var = {"mean": name, "sem": f"{name}_sem", "average": f"{name}_average", "average_sem": f"{name}_average_sem"}[role]
        data[var] = (dims, fill)
    n_failed = np.full(lead, -1, dtype=np.int64)
    failed = np.full(lead, "", dtype=object)
    for pid, idx in index.items():
        r = results.get(pid)
        if r is None:
            failed[idx] = "not run"
        elif isinstance(r, dict) and "failed" in r:
            failed[idx] = r["failed"]
        else:
            n_failed[idx] = int(r[1].get("n_failed", 0))
    dts = np.full(lead, np.nan)
    for pid, idx in index.items():
        r = results.get(pid)
        if r is not None and not (isinstance(r, dict) and "failed" in r):
            dts[idx] = float(r[1].get("dt", np.nan))
    data["dt"] = (lead_dims, dts)
    data["n_failed"] = (lead_dims, n_failed)
    data["failed"] = (lead_dims, failed.astype(str))
    attrs = dict(
        model=signature["model"], n_traj=signature["n_traj"], key=signature["key"], solver=signature["solver"],
        method=signature["method"], random_numbers=signature["random_numbers"],
        dt_requested="default" if signature["dt"] is None else signature["dt"], twa_jax_version=__version__, jax_version=jax.__version__,
        structural_axes=",".join(signature["structural"]), parameter_axes=",".join(a for a in axes if a not in signature["structural"]),
    )
    return xr.Dataset(data, coords=coords, attrs=attrs)
