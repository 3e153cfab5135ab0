"""``simulate``: from a model and an initial state to trajectory-averaged observables.

One trajectory is a pure function ``(key, params) -> observables at ts``: sample the initial
point from ``fold_in(key, i)``, integrate the Stratonovich SDE with diffrax on a fixed grid that
contains every save time, evaluate the observables at the save times. A chunk of trajectories is
a ``vmap`` of it, reduced to streaming moments inside the compiled function; chunks are merged on
the fly. Memory is bounded by the chunk, never by ``n_traj``.
"""

from __future__ import annotations

import math
import os
import time
import warnings

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ._brackets import generator, to_internal, to_user
from ._checks import all_concrete, check_finite_tree, is_concrete
from ._model import Model
from ._noise import decompose
from ._observables import all_finite_per_row, chunk_moments, default_observables, finalize, merge_moments
from ._result import Result
from ._solvers import SOLVERS, GridNoise, RotationHeun, StochasticHeun, TWATerm
from ._states import STATE_TYPES

METHODS = ("twa", "no_noise", "mean_field")
#: default time step is ``DT_SAFETY / (fastest frequency or rate of the model)``
DT_SAFETY = 0.02


# --------------------------------------------------------------------------- validation
def _as_key(key):
    if key is None:
        raise TypeError("key is required: an int seed or a jax.random.key (results are reproducible from it)")
    if isinstance(key, bool):
        raise TypeError(f"key must be an int seed or a jax.random.key, got {key!r}")
    if isinstance(key, (int, np.integer)):
        return jax.random.key(int(key)), int(key)
    if hasattr(key, "dtype") and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"key must be a single key, got a batch of shape {key.shape}")
        return key, "key"
    if hasattr(key, "dtype") and key.dtype == jnp.uint32 and key.shape == (2,):
        return jax.random.wrap_key_data(key), "raw key"
    raise TypeError(f"key must be an int seed or a jax.random.key, got {type(key).__name__}")


def _check_ts(ts):
    ts_np = np.asarray(ts, dtype=float)
    if ts_np.ndim != 1 or ts_np.size < 2:
        raise ValueError(f"ts must be a 1-D array of at least two save times, got shape {ts_np.shape}")
    if not np.all(np.isfinite(ts_np)):
        raise ValueError("ts contains NaN or infinite values")
    if np.any(np.diff(ts_np) <= 0):
        i = int(np.argmax(np.diff(ts_np) <= 0))
        raise ValueError(f"ts must be strictly increasing; ts[{i}] = {ts_np[i]} >= ts[{i + 1}] = {ts_np[i + 1]}")
    return ts_np


def _check_int(v, name, minimum=1):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(v).__name__} {v!r}")
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return int(v)


def _check_observables(observables, model, dtype):
    if observables is None:
        return model.observables or default_observables(model.n_spins, model.n_bosons)
    if not isinstance(observables, dict) or not observables:
        raise TypeError("observables must be a non-empty dict {name: f(spins, bosons)}")
    s = jax.ShapeDtypeStruct((model.n_spins, 3), dtype)
    a = jax.ShapeDtypeStruct((model.n_bosons,), jnp.result_type(dtype, jnp.complex64))
    for name, f in observables.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"observable names must be identifiers, got {name!r}")
        if not callable(f):
            raise TypeError(f"observable {name!r} must be a function f(spins, bosons), got {f!r}")
        try:
            out = jax.eval_shape(f, s, a)
        except Exception as e:
            raise TypeError(f"observable {name!r} failed on spins[{model.n_spins}, 3], bosons[{model.n_bosons}]: {e}") from e
        if not hasattr(out, "dtype") or not (
            jnp.issubdtype(out.dtype, jnp.floating) or jnp.issubdtype(out.dtype, jnp.complexfloating)
        ):
            raise TypeError(f"observable {name!r} must return a float or complex array, got {out}")
    return dict(observables)


def _observable_shapes(observables, model, dtype):
    s = jax.ShapeDtypeStruct((model.n_spins, 3), dtype)
    a = jax.ShapeDtypeStruct((model.n_bosons,), jnp.result_type(dtype, jnp.complex64))
    return {name: jax.eval_shape(f, s, a).shape for name, f in observables.items()}


def _check_initial(initial, model):
    if not isinstance(initial, STATE_TYPES):
        raise TypeError(
            f"initial must be a state from tw.states (spins_down, product, ...), got {type(initial).__name__}"
        )
    if initial.n_spins != model.n_spins or initial.n_bosons != model.n_bosons:
        raise ValueError(
            f"initial state has {initial.n_spins} spins and {initial.n_bosons} bosons but the model "
            f"has n_spins={model.n_spins}, n_bosons={model.n_bosons}"
        )
    if model.n_spins and initial.spin_S != model.spin_S:
        raise ValueError(
            f"spin normalization mismatch: the model has spin_S={model.spin_S} but the initial "
            f"state has spin_S={initial.spin_S} (None means spin-1/2, Pauli normalization)"
        )


def _check_devices(devices, method):
    if devices is None:
        return jax.devices()[:1] if method == "mean_field" else jax.devices()
    if isinstance(devices, jax.Device):
        devices = [devices]
    try:
        devices = list(devices)
    except TypeError:
        raise TypeError(f"devices must be a sequence of jax devices (e.g. jax.devices()), got {devices!r}") from None
    if not devices:
        raise ValueError("devices is empty; leave it out to use jax.devices()")
    bad = [d for d in devices if not isinstance(d, jax.Device)]
    if bad:
        raise TypeError(f"devices must be jax devices (e.g. jax.devices()), got {bad[0]!r}")
    if len(set(devices)) != len(devices):
        raise ValueError(f"devices contains a device twice: {devices}")
    return devices


# --------------------------------------------------------------------------- chunk size
#: fraction of a device's free memory one chunk may use (the rest: compiler temporaries, other work)
MEMORY_FRACTION = 0.25
#: live copies of the state per trajectory while stepping (solver stages, brackets, rotations,
#: diffrax's carry); an upper bound: 11.3 measured on CPU (Eq. 56 chain, N = 400), see
#: benchmarks/README.md
STATE_COPIES = 24
#: fallback when a device reports no memory figure
FALLBACK_FREE_BYTES = 2**30


def _bytes_per_trajectory(model, noise, n_save, obs_shapes, dtype):
    """Bytes one trajectory of a chunk needs: ``STATE_COPIES`` states, the noise increment and
    its image in jump space (``K'`` and ``K`` complex numbers), and the observables at every save
    time (kept until the chunk is reduced)."""
    item = jnp.dtype(dtype).itemsize
    state = 3 * model.n_spins + 2 * model.n_bosons
    noise_floats = 0 if noise is None else 2 * (noise.n_channels + noise.n_jumps) * 3
    obs = sum(int(np.prod(sh)) for sh in obs_shapes.values()) * 2  # complex at most
    return item * (STATE_COPIES * state + noise_floats + n_save * max(obs, 1))


def free_memory(device) -> int:
    """Free memory of ``device`` in bytes: ``bytes_limit - bytes_in_use`` from
    ``device.memory_stats()`` (GPU, TPU); for CPU devices, which report nothing, the host's
    available memory (``MemAvailable`` of ``/proc/meminfo``) divided by the number of CPU devices
    sharing it; ``FALLBACK_FREE_BYTES`` when neither is known."""
    try:
        stats = device.memory_stats()
    except Exception:
        stats = None
    if stats and "bytes_limit" in stats:
        return max(0, int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)))
    if getattr(device, "platform", None) == "cpu":
        avail = _host_available_bytes()
        if avail is not None:
            n_cpu = max(1, len(jax.local_devices(backend="cpu")))
            return avail // n_cpu
    return FALLBACK_FREE_BYTES


def _host_available_bytes():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def auto_chunk_size(bytes_per_trajectory: int, devices, n_per_device: int) -> int:
    """Trajectories per device per compiled batch: ``MEMORY_FRACTION`` of the smallest free
    memory among ``devices`` over ``bytes_per_trajectory``, at least 1, at most ``n_per_device``."""
    free = min(free_memory(d) for d in devices)
    return int(max(1, min(n_per_device, (MEMORY_FRACTION * free) // max(bytes_per_trajectory, 1))))


# --------------------------------------------------------------------------- time grid
def _default_dt(model, noise, initial, params, dtype):
    """``DT_SAFETY / scale`` with ``scale`` the largest of: spin rotation rates of the drift,
    relative boson velocities, and the largest eigenvalue of Gamma, at the initial mean point
    and at a few samples of the initial state (fixed key: the choice is deterministic)."""
    pts = [initial.mean()] + [initial.sample(k) for k in jax.random.split(jax.random.key(0), 4)]
    scale = 0.0
    for s, a in pts:
        y = to_internal(s, a, dtype)
        Phi = None
        if noise is not None:
            L = jnp.asarray(model.jumps(*to_user(y), params))
            Phi = 0.5 * noise.apply_gamma(L)
        om, vb = generator(model, y, Phi, params, 1.0)
        if om.size:
            scale = max(scale, float(jnp.max(jnp.linalg.norm(om, axis=-2))))
        if vb.size:
            rel = jnp.linalg.norm(vb, axis=-2) / (jnp.linalg.norm(y[1], axis=-2) + 1.0)
            scale = max(scale, float(jnp.max(rel)))
    if noise is not None:
        scale = max(scale, float(noise.max_rate))
    if not np.isfinite(scale):
        raise ValueError("the drift is not finite at the initial state; check the model and params")
    return DT_SAFETY / scale if scale > 0 else math.inf


def _time_grid(ts_np, dt):
    """Fixed-step grid containing every save time; each interval is split evenly."""
    pieces, save_idx, pos = [ts_np[:1]], [0], 0
    for t0, t1 in zip(ts_np[:-1], ts_np[1:]):
        n = max(1, int(math.ceil((t1 - t0) / dt - 1e-9))) if np.isfinite(dt) else 1
        pieces.append(t0 + (t1 - t0) * np.arange(1, n + 1) / n)
        pieces[-1][-1] = t1
        pos += n
        save_idx.append(pos)
    return np.concatenate(pieces), np.asarray(save_idx)


# --------------------------------------------------------------------------- a batch of trajectories
def _solve_batch(model, noise, params, initial, observables, grid, save_ts, solver, method, keys, checkpoints=None):
    """Observables at the save times for the trajectories with keys ``keys (n_batch,)``.

    Trajectory ``b`` is a pure function of ``keys[b]``: its initial point comes from the first
    half of ``split(keys[b])``, its noise from the second (:class:`GridNoise`). The batch is
    solved as one diffrax solve of the stacked state (one loop, the bracket ``vmap``-ed inside the
    term), not as a ``vmap`` of per-trajectory solves: a vmapped while loop turns every step's
    bookkeeping into per-trajectory selects, and its matrix-vector products stay separate.

    ``checkpoints``: states stored per trajectory for reverse-mode differentiation (diffrax's
    ``RecursiveCheckpointAdjoint``; ``None``: its default, about ``sqrt(2 n_steps)``).

    Returns:
        ``{name: (n_batch, n_save, ...)}``.
    """
    dtype = grid.dtype
    k_init, k_noise = jax.vmap(jax.random.split, out_axes=1)(keys)
    if method == "mean_field":
        s, a = jax.vmap(lambda _: initial.mean())(keys)
    else:
        s, a = jax.vmap(initial.sample)(k_init)
    y0 = to_internal(s, a, dtype)  # (n_batch, 3, N), (n_batch, 2, M)
    path = None
    if method == "twa" and noise is not None and noise.n_channels > 0:
        path = GridNoise(k_noise, grid, noise.n_channels)
    term = TWATerm(model, noise, path)

    def fn(t, y, args):
        s_, a_ = to_user(y)
        return {name: jax.vmap(f)(s_, a_) for name, f in observables.items()}

    sol = dfx.diffeqsolve(
        term,
        solver,
        t0=grid[0],
        t1=grid[-1],
        dt0=None,
        y0=y0,
        args=params,
        saveat=dfx.SaveAt(ts=save_ts, fn=fn),
        stepsize_controller=dfx.StepTo(grid),
        max_steps=grid.shape[0] - 1,
        adjoint=dfx.RecursiveCheckpointAdjoint(checkpoints=checkpoints),
        throw=False,
    )
    return {name: jnp.moveaxis(v, 0, 1) for name, v in sol.ys.items()}


@eqx.filter_jit
def _chunk(model, noise, params, initial, observables, grid, save_ts, solver, method, key, start, n_traj,
           chunk_size, mesh):
    """Moments of every observable over trajectories ``start .. start + n_dev * chunk_size - 1``.

    The batch axis is sharded over ``mesh`` (one axis, ``"traj"``): device ``d`` holds
    trajectories ``start + d * chunk_size + (0 .. chunk_size - 1)``. The solve has one loop for
    the whole batch with a scalar trip count, so XLA partitions it without communication inside
    the loop (unlike a ``vmap`` of while loops, jax issue 20968); only the final reduction to
    moments crosses devices. Which device runs a trajectory does not change it: trajectory ``i``
    always uses ``fold_in(key, i)``. (``shard_map`` was tried and rejected: diffrax's checkpointed
    while loop fails to differentiate under it with ``check_vma=False``, diffrax issue 735.)
    """
    batch = NamedSharding(mesh, P("traj"))
    idx = jax.lax.with_sharding_constraint(start + jnp.arange(mesh.size * chunk_size), batch)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(idx)
    ys = _solve_batch(model, noise, params, initial, observables, grid, save_ts, solver, method, keys)
    ys = jax.lax.with_sharding_constraint(ys, batch)
    valid = idx < n_traj
    finite = all_finite_per_row(ys)
    weight = valid & finite
    moments = {name: chunk_moments(v, weight) for name, v in ys.items()}
    out = moments, jnp.sum(valid & ~finite)
    return jax.lax.with_sharding_constraint(out, NamedSharding(mesh, P()))


def _local_copy(x):
    if isinstance(x, jax.Array) and is_concrete(x) and len(x.sharding.device_set) > 1:
        return x.addressable_data(0)
    return x


# --------------------------------------------------------------------------- public entry point
def simulate(
    model: Model,
    initial,
    ts,
    *,
    n_traj: int | None = None,
    key=None,
    params=None,
    observables: dict | None = None,
    dt: float | None = None,
    solver="rotation_heun",
    method: str = "twa",
    chunk_size: int | None = None,
    devices=None,
    throw: bool = False,
) -> Result:
    r"""Simulate a driven-dissipative model with the truncated Wigner approximation.

    Solves the Stratonovich SDE :math:`d\psi = \{\psi, \tilde H\}` with
    :math:`\tilde H = H + 2\sum_i \mathrm{Im}(\bar L_i \Phi_i)`,
    :math:`\Phi = (\Gamma L + \xi)/2`, :math:`\langle \xi \xi^\dagger\rangle = 2\Gamma\,\delta(t-t')`
    (paper Eqs. 7-12) for ``n_traj`` trajectories sampled from ``initial``, and returns the mean
    and standard error of each observable at each save time.

    Args:
        model: the :class:`~twa_jax.Model`.
        initial: an initial state from :mod:`twa_jax.states`.
        ts: ``(n_times,)`` strictly increasing save times; the initial state is at ``ts[0]``.
        n_traj: number of trajectories (``method="mean_field"``: leave out or 1).
        key: int seed or ``jax.random.key``. Trajectory ``i`` uses ``fold_in(key, i)``, so results
            do not depend on ``chunk_size`` or ``devices``.
        params: pytree of parameters passed to the model's functions. For a model with default
            parameters (the built-in models), a dict that overrides some of them.
        observables: ``{name: f(spins, bosons)}``; default: the model's own observables if it has
            them, else site-averaged ``sx, sy, sz`` and the per-mode occupation ``n = <a^dag a>``.
        dt: time step; default ``0.02 / (fastest rate of the model)`` (reported as ``Result.dt``).
            Each interval between save times is split into equal steps no longer than ``dt``.
        solver: ``"rotation_heun"`` (default; norm-preserving) or ``"heun"`` (plain stochastic
            Heun), or an instance of :class:`~twa_jax.RotationHeun` / :class:`~twa_jax.StochasticHeun`.
        method: ``"twa"`` (sampled initial states and dissipative noise), ``"no_noise"`` (sampled
            initial states, no noise), ``"mean_field"`` (one unsampled noise-free trajectory).
        chunk_size: trajectories per device in one compiled batch (default: from the device's
            free memory, see :func:`auto_chunk_size`; at most ``n_traj / len(devices)``).
        devices: the devices the trajectories are spread over (default: ``jax.devices()``, all
            devices of the default backend, of every process after ``jax.distributed.initialize()``).
            Results do not depend on the devices (trajectory ``i`` always uses ``fold_in(key, i)``).
        throw: raise ``RuntimeError`` if any trajectory turns non-finite (default: warn, count
            them in ``Result.n_failed`` and leave them out of the statistics).

    Returns:
        A :class:`~twa_jax.Result`.

    Raises:
        TypeError, ValueError: on bad input, before anything is compiled.

    Example:
        >>> import jax.numpy as jnp, twa_jax as tw
        >>> model = tw.Model(lambda s, a, p: s[:, 0].sum(), jumps=lambda s, a, p: (s[:, 0] - 1j * s[:, 1]) / 2,
        ...                  gamma=jnp.array([0.5]), n_spins=1)
        >>> res = tw.simulate(model, tw.states.spins_down(1), jnp.linspace(0, 2, 5), n_traj=64, key=0)
        >>> res.mean["sz"].shape
        (5,)
    """
    t_start = time.perf_counter()
    if not isinstance(model, Model):
        raise TypeError(f"model must be a tw.Model, got {type(model).__name__}")
    _check_initial(initial, model)
    ts_np = _check_ts(ts)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if isinstance(solver, str):
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {tuple(SOLVERS)} or a solver instance, got {solver!r}")
        solver_name, solver = solver, SOLVERS[solver]()
    elif isinstance(solver, (RotationHeun, StochasticHeun)):
        solver_name = "rotation_heun" if isinstance(solver, RotationHeun) else "heun"  # subclasses too
    else:
        raise TypeError(f"solver must be 'rotation_heun', 'heun' or a twa_jax solver, got {solver!r}")
    if method == "mean_field":
        if n_traj not in (None, 1):
            raise ValueError(f"method='mean_field' runs one deterministic trajectory; got n_traj={n_traj}")
        if chunk_size is not None:
            raise ValueError("method='mean_field' ignores chunk_size; leave it out")
        if key is not None:
            raise ValueError("method='mean_field' is deterministic and takes no key")
        if devices is not None:
            raise ValueError("method='mean_field' runs one trajectory on one device; leave devices out")
        n_traj, key_obj, key_meta = 1, jax.random.key(0), None
    else:
        if n_traj is None:
            raise TypeError("n_traj is required (number of trajectories)")
        n_traj = _check_int(n_traj, "n_traj")
        key_obj, key_meta = _as_key(key)
    if chunk_size is not None:
        chunk_size = _check_int(chunk_size, "chunk_size")
    devices = _check_devices(devices, method)
    params = model.with_params(params)
    check_finite_tree(params, "params")
    # numbers become arrays, so new parameter values reuse the compiled program
    params = jax.tree_util.tree_map(
        lambda x: jnp.asarray(x) if isinstance(x, (int, float, complex, np.number, np.ndarray)) and not isinstance(x, bool) else x,
        params,
    )
    if dt is not None:
        if isinstance(dt, bool) or not isinstance(dt, (int, float, np.floating, np.integer)) or not (
            np.isfinite(dt) and dt > 0
        ):
            raise ValueError(f"dt must be a positive finite number, got {dt!r}")

    dtype = jnp.zeros(()).dtype
    model.check(params, dtype)
    observables = _check_observables(observables, model, dtype)

    noise = None
    if model.is_dissipative:
        noise = decompose(model.gamma_of(params))
    if dt is None:
        if not (all_concrete(params) and all_concrete(model)):
            raise ValueError("give dt explicitly when simulate is traced (jit/grad): the default dt needs concrete parameters")
        dt = _default_dt(model, noise, initial, params, dtype)
    grid_np, save_idx = _time_grid(ts_np, float(dt))
    grid = jnp.asarray(grid_np, dtype)
    save_ts = grid[jnp.asarray(save_idx)]
    n_steps = len(grid_np) - 1
    dt_used = float(np.max(np.diff(grid_np)))

    mesh = Mesh(np.asarray(devices), ("traj",))
    n_dev = len(devices)
    per_device = -(-n_traj // n_dev)
    if chunk_size is None:
        obs_shapes = _observable_shapes(observables, model, dtype)
        chunk_size = auto_chunk_size(
            _bytes_per_trajectory(model, noise, len(ts_np), obs_shapes, dtype), devices, per_device
        )
    chunk_size = min(chunk_size, per_device)

    moments, n_failed = None, 0
    for start in range(0, n_traj, n_dev * chunk_size):
        m, bad = _chunk(
            model, noise, params, initial, observables, grid, save_ts, solver, method,
            key_obj, jnp.asarray(start), jnp.asarray(n_traj), chunk_size, mesh,
        )
        moments = m if moments is None else {k: merge_moments(moments[k], m[k]) for k in m}
        n_failed = n_failed + bad
    # the merged moments are replicated over the mesh; keep one local copy, so results of runs on
    # different devices (or processes) combine freely
    moments, n_failed = jax.tree_util.tree_map(_local_copy, (moments, n_failed))

    mean, sem = {}, {}
    for name, mom in moments.items():
        mean[name], sem[name] = finalize(mom)
    if is_concrete(n_failed):
        n_failed = int(n_failed)
        if n_failed:
            msg = (
                f"{n_failed} of {n_traj} trajectories became non-finite and were left out of the "
                f"statistics (dt={dt_used:.3g}, solver={solver_name!r}); reduce dt or use the "
                "norm-preserving 'rotation_heun' solver"
            )
            if throw or n_failed == n_traj:
                raise RuntimeError(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
    return Result(
        ts=jnp.asarray(ts_np, dtype),
        mean=mean,
        sem=sem,
        n_traj=n_traj,
        n_failed=n_failed,
        method=method,
        solver=solver_name,
        dt=dt_used,
        n_steps=n_steps,
        chunk_size=chunk_size,
        key=key_meta,
        params=params,
        wall_time=time.perf_counter() - t_start,
    )
