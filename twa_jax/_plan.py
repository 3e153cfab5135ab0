"""The run plan: ``(model, initial, ts, options)`` validated once, for every entry point.

``simulate``, ``value_and_grad``, ``fit`` (and sweeps) all build their run with
:func:`make_plan`, so an option means the same thing everywhere and is rejected the same way where
it does not apply. The plan holds

* the model with its default parameters merged (the caller's values win) and validated;
* Gamma validated and factored once (the eigendecomposition that factors it also checks that it
  is positive semidefinite; a constant Gamma was factored when the model was built);
* the fixed time grid that contains every save time, and ``dt``;
* the observables and their shapes, the per-trajectory time averages, the trajectories to keep;
* the devices, and the chunk size from one memory rule (:func:`bytes_per_trajectory`) for forward
  runs, reverse-mode gradients and Jacobians alike.

The checks that know the package's types (the model, its initial state, the solver, the
observables, the model's indexing) are here, with the plan that uses them; the primitive ones
(types, shapes, finiteness, numbers) are in :mod:`twa_jax._checks`, which imports nothing of the
package.

The plan is an ``eqx.Module``: arrays (parameters, grid, key, the factor of Gamma) are leaves, so
new values reuse the compiled program; sizes and options are static.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import math
import os
import warnings
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from . import _checks
from ._cpu_devices import default_devices
from ._brackets import generator, to_internal, to_user
from ._checks import all_concrete, check_finite_tree, default_float
from ._model import Model, check_gamma_size
from ._noise import NoiseBasis, decompose, decompose_like
from ._observables import default_observables
from ._protocol import check_pulses, pulse_label
from ._quantize import warn_same_site_observables
from ._solvers import SOLVERS, RotationHeun, StochasticHeun, batch_last_supported, matrix_products
from ._states import AbstractState

#: default time step is ``DT_SAFETY / (fastest frequency or rate of the model)``
DT_SAFETY = 0.02
#: a ``dt`` this many times the default estimate gets a warning
DT_WARN_FACTOR = 25.0  # half a radian of rotation per step at the fastest rate

# --------------------------------------------------------------------------- the memory rule
#: fraction of a device's free memory one chunk may use (the rest: compiler temporaries, other work)
MEMORY_FRACTION = 0.25
#: live copies of the state per trajectory while stepping (solver stages, brackets, rotations,
#: diffrax's carry); an upper bound: 11.3 measured on CPU (Eq. 56 chain, N = 400), see
#: benchmarks/README.md
STATE_COPIES = 24
#: fallback when a device reports no memory figure
FALLBACK_FREE_BYTES = 2**30


def bytes_per_trajectory(model, noise, n_save, obs_shapes, dtype, *, stored_states=0, rows=1):
    """Bytes one trajectory of a chunk needs, for every kind of pass.

    A forward step holds ``STATE_COPIES`` states, the noise increment and its image in jump
    space (``K'`` and ``K`` complex numbers), and the observables at every save time (kept until
    the chunk is reduced). ``rows`` counts how many such sets are alive together: 1 forward,
    2 for a vector-Jacobian product (primal and cotangent), ``1 + p`` for ``p`` tangents or
    Jacobian rows. ``stored_states``: states kept per trajectory for the reverse pass
    (checkpoints).
    """
    item = jnp.dtype(dtype).itemsize
    state = 3 * model.n_spins + 2 * model.n_bosons
    noise_floats = 0 if noise is None else 2 * (noise.n_channels + noise.n_jumps) * 3
    obs = sum(int(np.prod(sh)) for sh in dict(obs_shapes).values()) * 2  # complex at most
    return item * (stored_states * state + rows * (STATE_COPIES * state + noise_floats + n_save * max(obs, 1)))


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


def chunk_budget(bytes_per_traj: int, devices) -> int:
    """The most trajectories per device one compiled batch may hold: ``MEMORY_FRACTION`` of the
    smallest free memory among ``devices`` over ``bytes_per_traj``, at least 1."""
    free = min(free_memory(d) for d in devices)
    return int(max(1, (MEMORY_FRACTION * free) // max(bytes_per_traj, 1)))


#: chunk sizes are rounded up to ``m * 2**j`` with ``m`` in ``8 .. 15`` (eight sizes per octave),
#: plus 16 from 256 on (below): a new ``n_traj`` within the same size reuses the compiled
#: program, at most about 1/8 of the trajectories computed are padding (results do not change:
#: trajectory ``i`` depends only on ``(key, i)``, padding is masked)
CHUNK_LADDER = 8
#: ... and from 256 on a size is an odd multiple of 16 (``m * 2**j + 16``), never a multiple of a
#: large power of two: with the trajectories on the last axis, rows of ``2**k`` floats start at
#: addresses that share their cache sets (4K aliasing). benchmarks/bench_chunk_sizes.py (2-core
#: AMD EPYC, float32, one device): Rydberg N = 10 forward 15.1 / 19.7 / 16.5 ns per spin-step at
#: 10000 / 10240 / 10256 trajectories (4096 / 4112: 21.9 / 18.0); the N = 100 dense chain's
#: forward-mode gradient 12.8 / 15.9 / 12.0 us per trajectory-step at 500 / 512 / 528 (1024 /
#: 1040: 15.6 / 11.4)
CHUNK_ODD_FROM = 256


def on_chunk_ladder(n: int) -> int:
    """``n`` rounded up to the nearest size of the chunk ladder (:data:`CHUNK_LADDER`,
    :data:`CHUNK_ODD_FROM`)."""
    if n <= 2 * CHUNK_LADDER:
        return max(1, n)
    unit = 1 << (n.bit_length() - CHUNK_LADDER.bit_length())
    if n < CHUNK_ODD_FROM:
        return -(-n // unit) * unit
    return -(-(n - 16) // unit) * unit + 16


def balanced_chunk(n_per_device: int, most: int) -> int:
    """Chunk size for ``n_per_device`` trajectories in chunks of at most ``most``: as few chunks
    as the budget allows, of equal size, so the last one is not mostly padding (10 000 in chunks
    of at most 8376: two of 5000, not 8376 + 1624 padded to 8376), rounded up on the chunk ladder
    (:func:`on_chunk_ladder`: 5136) and never above ``most``."""
    n_chunks = max(1, -(-n_per_device // most))
    return min(most, on_chunk_ladder(-(-n_per_device // n_chunks)))


def auto_chunk_size(bytes_per_traj: int, devices, n_per_device: int) -> int:
    """Trajectories per device per compiled batch: at most :func:`chunk_budget`, at most
    ``n_per_device``, in equal chunks (:func:`balanced_chunk`)."""
    return balanced_chunk(n_per_device, chunk_budget(bytes_per_traj, devices))


def default_checkpoints(n_steps: int) -> int:
    """diffrax's default number of stored states for ``n_steps`` steps (about ``sqrt(2 n)``)."""
    return math.floor(-1.5 + math.sqrt(2 * n_steps + 0.25)) + 1


# --------------------------------------------------------------------------- time grid
def _scale_at(model, noise, params, dtype, s1, a1, t=0.0):
    """The largest spin rotation rate of the drift and relative boson velocity at one point
    (and time ``t``). For a time-dependent model also ``sqrt`` of their rate of change in time,
    so that a pulse's shape is resolved (``sqrt(|d omega/dt|)`` is a rate: about ``1 / width``
    for a pulse of area ~1) and, for a time-dependent Gamma, its largest rate at ``t``."""
    y = to_internal(s1, a1, dtype)

    def rates(t):
        nz = noise
        if nz is not None and model.gamma_depends_on_time:
            nz = decompose_like(model.gamma_of(params, t), noise)
        Phi = None
        if nz is not None:
            L = jnp.asarray(model.L(*to_user(y), params, t))
            Phi = 0.5 * nz.apply_gamma(L)
        om, vb = generator(model, y, Phi, params, 1.0, t)
        top = jnp.zeros((), om.dtype) if nz is None or not model.gamma_depends_on_time else nz.max_rate
        return om, vb, top

    def largest(om, vb):  # spin rotation rates and boson velocities relative to the amplitudes
        spin = jnp.max(jnp.linalg.norm(om, axis=-2), initial=0.0)
        rel = jnp.max(jnp.linalg.norm(vb, axis=-2) / (jnp.linalg.norm(y[1], axis=-2) + 1.0), initial=0.0)
        return jnp.maximum(spin, rel)

    if not model.time_dependent:
        om, vb, _ = rates(t)
        return largest(om, vb)
    t = jnp.asarray(t, dtype)
    (om, vb, top), (dom, dvb, _) = jax.jvp(rates, (t,), (jnp.ones_like(t),))
    return jnp.maximum(jnp.maximum(largest(om, vb), jnp.sqrt(largest(dom, dvb))), top)


def _points(initial, n_samples):
    """The initial mean point and ``n_samples`` samples (fixed key: the choice is deterministic)."""
    return [initial.mean()] + [initial.sample(k) for k in jax.random.split(jax.random.key(0), 4)[:n_samples]]


@eqx.filter_jit
def _rate_scale(model, noise, initial, params, dtype, n_samples, times):
    """:func:`_scale_at` over the mean point and ``n_samples`` samples (and, for a
    time-dependent model, the ``times``), in one compiled call."""
    pts = _points(initial, n_samples)
    s = jnp.stack([jnp.asarray(p[0], dtype) for p in pts])
    a = jnp.stack([jnp.asarray(p[1]) for p in pts])
    one = lambda s1, a1, t: _scale_at(model, noise, params, dtype, s1, a1, t)  # noqa: E731
    if times is None:
        out = jnp.max(jax.vmap(lambda s1, a1: one(s1, a1, 0.0))(s, a))
    else:
        out = jnp.max(jax.vmap(lambda t: jax.vmap(lambda s1, a1: one(s1, a1, t))(s, a))(times))
    return out if noise is None else jnp.maximum(out, noise.max_rate)  # and Gamma's largest rate


#: a time-dependent model's rates are sampled at this many evenly spaced times over the run (and
#: at the save times) for the default step; a feature shorter than the spacing can be missed
N_RATE_TIMES = 512


def rate_times(ts_np, dtype):
    """Times at which a time-dependent model's default step looks at its rates."""
    t = np.union1d(np.linspace(ts_np[0], ts_np[-1], N_RATE_TIMES), ts_np)
    return jnp.asarray(t, dtype)


def estimate_dt(model, noise, initial, params, dtype, *, n_samples=4, ts_np=None):
    """``DT_SAFETY / scale`` (rounded down by :func:`on_dt_ladder`) with ``scale`` the largest of: spin rotation rates of the drift,
    relative boson velocities, and the largest eigenvalue of Gamma, at the initial mean point
    and at ``n_samples`` (at most 4) samples of the initial state (fixed key: the choice is
    deterministic). A time-dependent model (``ts_np``: the save times) is looked at over the whole
    run (:func:`rate_times`), with the rate of change of its drift (see :func:`_scale_at`).

    One compiled call, cached for the model and state (a new parameter value reuses it): op by op,
    the first evaluation of a model compiles every primitive on its own, which cost 4-9 s. Its
    result is kept for the last parameter values and state (:func:`~twa_jax._checks.memo_last`)."""
    times = rate_times(ts_np, dtype) if model.time_dependent else None
    values = _checks.host_values((params, initial, np.asarray(ts_np, float) if model.time_dependent else None))
    scale = _checks.memo_last(  # the same values again (a new seed, more trajectories): no device call
        model, ("rate scale", n_samples, jnp.dtype(dtype)), None if values is None else (type(initial), values),
        lambda: float(_rate_scale(model, noise, initial, params, dtype, n_samples, times)))  # one read from the device
    if not np.isfinite(scale):
        where = "at the initial state" if times is None else \
            f"at the initial state at some time in [{ts_np[0]:g}, {ts_np[-1]:g}] (the model depends on time)"
        raise ValueError(f"the drift (or its rate of change) is not finite {where}; check the model and params")
    return on_dt_ladder(DT_SAFETY / scale) if scale > 0 else math.inf


#: the most time steps a run may take: a default dt from an absurd rate (a drive growing like
#: exp(30 t)) would otherwise allocate the grid until memory runs out
MAX_STEPS = 10**8


def _check_n_steps(ts_np, dt, requested):
    n = (ts_np[-1] - ts_np[0]) / dt if np.isfinite(dt) else 0
    if n > MAX_STEPS:
        how = "the dt given" if requested is not None else \
            "the default dt (from the largest rate of the drift, its rate of change and Gamma over the run)"
        raise ValueError(f"{how}, {dt:.3g}, would take {n:.3g} steps over [{ts_np[0]:g}, {ts_np[-1]:g}], more than "
                         f"MAX_STEPS = {MAX_STEPS:.0e}: check the model's rates over the run (a term growing without "
                         "bound?) or give a larger dt")


#: default steps are rounded down to ``2**(k / DT_LADDER)``: nearby parameter values (a sweep, a
#: fit, a loop over values) get the same step and so the same number of steps, and reuse the
#: compiled program; the step is at most ``2**(1/4)`` (19 %) finer than the estimate
DT_LADDER = 4


def on_dt_ladder(dt):
    """``dt`` rounded down to the nearest ``2**(k / DT_LADDER)``, integer ``k``."""
    return 2.0 ** (math.floor(DT_LADDER * math.log2(dt) + 1e-9) / DT_LADDER)


def time_grid(ts_np, dt, knots=()):
    """Fixed-step grid containing every save time and every time of ``knots`` (pulses); each
    interval between them is split evenly. Returns the grid and the save times' indices in it."""
    points = merge_times(np.concatenate([ts_np, np.asarray(knots, float)])) if len(knots) else np.asarray(ts_np, float)
    pieces, index, pos = [points[:1]], [0], 0
    for t0, t1 in zip(points[:-1], points[1:]):
        n = max(1, int(math.ceil((t1 - t0) / dt - 1e-9))) if np.isfinite(dt) else 1
        pieces.append(t0 + (t1 - t0) * np.arange(1, n + 1) / n)
        pieces[-1][-1] = t1
        pos += n
        index.append(pos)
    index = np.asarray(index)
    nearest = np.argmin(np.abs(points[:, None] - np.asarray(ts_np, float)[None, :]), axis=0)
    return np.concatenate(pieces), index[nearest]


#: times closer than this fraction of the span are one time (a pulse at a save time computed in
#: floating point, a start time plus a lag): as separate grid points they would make a step of
#: zero length once the grid is rounded to float32
MERGE_RTOL = 1e-6


#: the time grid is padded to a length of ``2**k + 1`` points: the points after the end continue
#: at the last step and are never reached (the solve stops at ``Plan.t_end``), so runs whose number
#: of steps falls in the same octave (a new parameter value that moves the default dt by a rung, a
#: longer ``ts`` of the same length) reuse the compiled program. The padding costs no steps; with
#: reverse-mode gradients diffrax's default checkpoints follow the padded length (at most sqrt(2)
#: more stored states)
MIN_GRID_STEPS = 16
#: whether the grid is padded: ``True`` (the default) or ``False`` (tests, benchmarks: the exact
#: grid, stepped by diffrax's ``StepTo``, whose loop has a trip count XLA knows; the padded one
#: stops at ``t_end``, a trip count known only at run time). Measured, the two run alike: on a
#: 2-core CPU (benchmarks/bench_reuse.py, Rydberg N = 10 x 10256 x 100 steps: 0.160 against 0.162
#: s) and on an H200 (benchmarks/profile_gpu.py, Rydberg N = 10 x 1e5 x 100 steps: 39.8 against
#: 40.6 ms a call, device kernels 7.81 against 7.73 ms), so every run pads and reuses its program
PAD_GRID = True


#: how a solve saves at the save times: ``"loop"`` (the default: diffrax's ``SaveAt(ts)``, one
#: solve, whose every step checks in a nested loop of its own whether a save time was reached),
#: ``"intervals"`` (a ``lax.scan`` over the save intervals, one diffrax solve of each, saving its
#: end: no loop inside a step), or ``"auto"``: intervals on accelerators, the loop on CPU. Both
#: give the same numbers. On a GPU every loop trip reads its predicate back to the host, so the
#: nested loop costs about two synchronizations a step (an H200, Rydberg N = 10 x 1e5 x 100 steps:
#: 40.6 against 36.5 ms a call with a single solve saving at its ends only). On a 2-core CPU the
#: two run at the same speed (``benchmarks/bench_save_by.py``: 0.99-1.03x), so the intervals stay
#: an option until a GPU has timed them (``benchmarks/run_gpu.sh`` step p: ``simulate_intervals``). A solve
#: differentiated in reverse mode keeps the loop (:func:`twa_jax._engine.saves_by_intervals`)
SAVE_BY = "loop"


def save_mode(platform) -> str:
    """:data:`SAVE_BY` for devices of ``platform``: ``"intervals"`` or ``"loop"``."""
    if SAVE_BY not in ("auto", "loop", "intervals"):
        raise ValueError(f"twa_jax._plan.SAVE_BY must be 'auto', 'loop' or 'intervals', got {SAVE_BY!r}")
    if SAVE_BY == "auto":
        return "loop" if platform == "cpu" else "intervals"
    return SAVE_BY


def pads_grid(devices=None) -> bool:
    """Whether a run pads its time grid (:data:`PAD_GRID`)."""
    return bool(PAD_GRID)


def padded_grid(grid_np, pad=True):
    """``grid_np`` continued past its end at its last step to ``2**k`` steps (at least
    ``MIN_GRID_STEPS``); unchanged with ``pad=False``."""
    if not pad:
        return np.asarray(grid_np)
    n = len(grid_np) - 1
    total = max(MIN_GRID_STEPS, 1 << (n - 1).bit_length()) if n > 1 else MIN_GRID_STEPS
    step = grid_np[-1] - grid_np[-2] if n >= 1 else 1.0
    return np.concatenate([grid_np, grid_np[-1] + step * np.arange(1, total - n + 1)])


def merge_times(t):
    """Sorted unique times, those within ``MERGE_RTOL`` of the span of each other merged."""
    t = np.unique(np.asarray(t, float))
    if t.size < 2:
        return t
    keep = np.concatenate([[True], np.diff(t) > MERGE_RTOL * (t[-1] - t[0])])
    return t[keep]


def pulses_on_grid(pulses, grid_np, dtype):
    """The pulses with their times as the grid's own numbers (compared exactly in the step)."""
    out = []
    for p in pulses:
        j = int(np.argmin(np.abs(grid_np - p.time)))
        out.append(eqx.tree_at(lambda q: q.at, p, jnp.asarray(grid_np[j], dtype), is_leaf=lambda x: x is None))
    return tuple(out)


def on_host():
    """A context in which eager JAX operations run on the host's CPU device rather than an
    accelerator: for small values the plan reads back at once (on a GPU host each operation
    there costs a dispatch and a synchronization, 0.2-0.3 ms). A no-op on CPU."""
    if jax.default_backend() == "cpu":
        return contextlib.nullcontext()
    try:
        return jax.default_device(jax.local_devices(backend="cpu")[0])
    except RuntimeError:  # no CPU backend (JAX_PLATFORMS without cpu)
        return contextlib.nullcontext()


def noise_of(model, params, ts_np=None, dtype=None, cache=None):
    """The factor of Gamma for a run. A time-dependent Gamma is factored at each stage of the
    solve (:class:`~twa_jax._solvers.TWATerm`) on the channels kept here: those of the mean of
    Gamma over the run (:func:`rate_times`), so a channel switched on later is not dropped.

    ``cache``: a dict that keeps the factors of the Gammas met so far, keyed by a digest of
    Gamma's values (a sweep over parameters that Gamma does not depend on factors it once);
    ``None``: the model's own cache of its last Gamma (repeated runs of one model factor it
    once: validating and factoring cost a dozen device operations and transfers, milliseconds
    on a GPU host)."""
    if not model.is_dissipative:
        return None
    if model.noise_basis is not None:  # a constant Gamma was validated and factored with the model
        return model.noise_basis
    if not model.gamma_depends_on_time:
        if cache is None:  # the same parameter values again (a new seed): not even Gamma's function is called
            return _checks.memo_last(model, "noise", _checks.host_values(params),
                                     lambda: _static_noise(model, params, None))
        return _static_noise(model, params, cache)
    times = rate_times(ts_np, dtype)
    gs = jax.vmap(lambda t: model.gamma_of(params, t))(times)
    for k in range(0, len(times), max(1, len(times) // 8)):  # validate (shape, Hermitian, PSD) at a few times
        decompose(gs[k], name=f"gamma(params, t={float(times[k]):.4g})")
    return decompose(jnp.mean(gs, axis=0), name="gamma averaged over the run")


def _static_noise(model, params, cache):
    """The factor of a Gamma that does not depend on time (see :func:`noise_of`)."""
    with on_host():  # the user's function, eagerly: on the host CPU (it is read back at once)
        g = model.gamma_of(params)
    if not _checks.is_concrete(g):
        return decompose(g)
    g = np.ascontiguousarray(g)
    key = (g.shape, g.dtype.str, hashlib.blake2b(g).hexdigest())  # a digest: Gamma may be large
    if cache is None:  # the model's last Gamma only: a factor of N = 1e4 is 400 MB
        cache = _checks.memo(model, "last Gamma factor", dict)
        if key not in cache:
            cache.clear()
    if key not in cache:
        cache[key] = decompose(g)
    return cache[key]


# --------------------------------------------------------------------------- the state's layout
#: the trajectories go on the last (vector) axis of the state, ``(3, N, n_batch)``, when each
#: device's chunk holds at least this many trajectories ...
LANES_MIN_BATCH = 32
#: ... and at least this many spin-trajectories (spins plus boson modes, times the chunk) per
#: step; below, the per-step overhead wins and the batch-first layout is faster. Measured on a
#: 2-core CPU, float32 (benchmarks/README.md, "The state's layout"): batch last is 0.58-0.90x at
#: 320-1280 spin-trajectories, 1.25-1.3x at 2560-4000, 1.1-2x from there up to N = 10 000 x 100
#: trajectories; no upper crossover in N was found, so there is no cap on N
LANES_MIN_WORK = 2048
#: ... and, on accelerators (GPU), not for models whose generator multiplies by matrices (dense
#: couplings, a dense Gamma: :func:`~twa_jax._solvers.matrix_products`) above this many sites.
#: Measured on an H200, float32 (benchmarks/README.md, "GPU results"): the Eq. 56 chain N = 1000 x
#: 1e5 ran 5.23e9 spin-steps/s batch first against 4.72e9 batch last (0.84x and 0.79x of the
#: hand-written scan in their runs; the plain-jnp chain 0.98x in one process, N = 100 x 1e4
#: 0.97x); local models keep batch last, which ran 1.10-1.21x batch first at Rydberg N = 10-30
#: x 1e5 and gave 1.01x the scan at Rydberg and Tavis-Cummings N = 1e4 x 1e4 (batch first:
#: 0.83-0.85x). On CPU no upper bound was found (above)
LANES_MAX_SITES_ACCELERATOR = 32
#: ``None``: the layout is chosen from the sizes; ``"batch_first"`` or ``"batch_last"``: forced
#: (tests, benchmarks); the environment variable ``TWA_JAX_LAYOUT`` sets it as well
LAYOUT = None
LAYOUTS = ("batch_first", "batch_last")


def choose_layout(model, noise, params, dtype, method, n_per_device, n_points=1, platform="cpu") -> str:
    """The internal layout of a run's state: ``"batch_last"`` (trajectories on the vector lanes,
    the model's generator evaluated by :mod:`twa_jax._lanes`) for chunks of enough trajectories
    (``n_per_device``: a device's forward chunk, of each of ``n_points`` sweep points solved
    together) and, on an accelerator (``platform`` not ``"cpu"``), not for a model with matrix
    products above :data:`LANES_MAX_SITES_ACCELERATOR` sites, when the interpreter has a rule for
    everything the model does; else
    ``"batch_first"`` (the generator ``vmap``-ed, state ``(n_batch, 3, N)``). Both give the same
    trajectories up to rounding."""
    forced = LAYOUT or os.environ.get("TWA_JAX_LAYOUT") or None
    if forced is not None and forced not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {forced!r}")
    if forced == "batch_first":
        return forced
    sites = model.n_spins + model.n_bosons
    if forced is None and (method == "mean_field" or n_per_device < LANES_MIN_BATCH
                           or sites * n_per_device * n_points < LANES_MIN_WORK):
        return "batch_first"
    with_dW = method == "twa" and noise is not None and noise.n_channels > 0
    if forced is None and platform != "cpu" and sites > LANES_MAX_SITES_ACCELERATOR and matrix_products(
            model, noise, params, dtype, with_dW):
        return "batch_first"
    return "batch_last" if batch_last_supported(model, noise, params, dtype, with_dW) else "batch_first"


# --------------------------------------------------------------------------- checks that know the package
def check_model(model):
    if not isinstance(model, Model):
        raise TypeError(f"model must be a tw.Model, got {type(model).__name__}")
    return model


def check_initial(initial, model) -> None:
    if not isinstance(initial, AbstractState):
        raise TypeError(
            "initial must be a state from tw.states (spins_down, product, ...) or a subclass of "
            f"tw.states.AbstractState, got {type(initial).__name__}"
        )
    for attr in ("n_spins", "n_bosons", "spin_S"):
        if not hasattr(initial, attr):
            raise TypeError(f"{type(initial).__name__} must define {attr} (a field or a property)")
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


def check_solver(solver):
    """``(name, instance)`` of a solver given by name or as an instance."""
    if isinstance(solver, str):
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {tuple(SOLVERS)} or a solver instance, got {solver!r}")
        return solver, SOLVERS[solver]()
    if isinstance(solver, RotationHeun):  # subclasses too
        return "rotation_heun", solver
    if isinstance(solver, StochasticHeun):
        return "heun", solver
    raise TypeError(f"solver must be 'rotation_heun', 'heun' or a twa_jax solver, got {solver!r}")


def _abstract_point(model, dtype):
    s = jax.ShapeDtypeStruct((model.n_spins, 3), dtype)
    a = jax.ShapeDtypeStruct((model.n_bosons,), jnp.result_type(dtype, jnp.complex64))
    return s, a


def check_observables(observables, model, dtype, method="twa"):
    """``{name: f}`` checked by abstract evaluation; returns ``(observables, shapes, dtypes)``."""
    if observables is None:
        observables = model.observables or default_observables(model.n_spins, model.n_bosons, method == "mean_field")
    elif not isinstance(observables, dict) or not observables:
        raise TypeError("observables must be a non-empty dict {name: f(spins, bosons)}")
    s, a = _abstract_point(model, dtype)
    shapes, dtypes = {}, {}
    for name, f in observables.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"observable names must be identifiers, got {name!r}")
        if not callable(f):
            raise TypeError(f"observable {name!r} must be a function f(spins, bosons), got {f!r}")
        sig = ("observable", model.n_spins, model.n_bosons, jnp.dtype(dtype))
        shapes[name], dtypes[name] = _checks.memo(f, sig, lambda f=f, name=name: _observable_shape(f, name, model, s, a))
    return dict(observables), shapes, dtypes


def _observable_shape(f, name, model, s, a):
    """``(shape, dtype)`` of observable ``f`` at the abstract point ``(s, a)``."""
    try:
        out = jax.eval_shape(f, s, a)
    except Exception as e:
        raise TypeError(f"observable {name!r} failed on spins[{model.n_spins}, 3], bosons[{model.n_bosons}]: {e}") from e
    if not hasattr(out, "dtype") or not (
        jnp.issubdtype(out.dtype, jnp.floating) or jnp.issubdtype(out.dtype, jnp.complexfloating)
    ):
        raise TypeError(f"observable {name!r} must return a float or complex array, got {out}")
    return tuple(out.shape), out.dtype


def _index_checked(model, params, observables, dtype, pulses=()):
    """``[(name, thunk)]`` of the model's functions (and the pulses' generators) at a concrete
    zero point."""
    s = jnp.zeros((model.n_spins, 3), dtype)
    a = jnp.zeros((model.n_bosons,), jnp.result_type(dtype, jnp.complex64))
    funcs = [("hamiltonian", lambda: model.H(s, a, params))]
    if model.jumps is not None:
        funcs.append(("jumps", lambda: model.L(s, a, params)))
    if callable(model.gamma):
        funcs.append(("gamma", lambda: model.gamma_of(params)))
    funcs += [(f"observable {name!r}", (lambda f=f: f(s, a))) for name, f in observables]
    funcs += [(pulse_label(p.generator, k), (lambda g=p.generator: g(s, a, params))) for k, p in enumerate(pulses)]
    return funcs


def _index_error(model, params, observables, dtype, pulses=()):
    funcs = _index_checked(model, params, observables, dtype, pulses)
    return checkify.checkify(lambda: [fn() for _, fn in funcs], errors=checkify.index_checks)()[0]


#: one compiled check of every function together, cached per model (a new parameter value reuses
#: it); op by op, a model's first check compiled each primitive on its own (seconds)
_index_error_jit = None


def check_indexing(model, params, observables, dtype, pulses=()) -> None:
    """Run the model's functions once on a concrete point with JAX's index checks on.

    JAX clamps out-of-range indices instead of raising (``s[5, 0]`` with three spins reads
    ``s[2, 0]``), so a wrong index in a model would run silently; ``checkify`` finds it. Skipped
    when ``params`` are traced."""
    if not all_concrete(params):
        return
    obs = tuple(observables.items())
    values = None if pulses else _checks.host_values(params)  # same values: checked already
    _checks.memo_last(model, "index check", None if values is None else (values, obs, jnp.dtype(dtype)),
                      lambda: _check_indexing_once(model, params, obs, dtype, tuple(pulses)))


def _check_indexing_once(model, params, obs, dtype, pulses):
    global _index_error_jit
    if _index_error_jit is None:
        _index_error_jit = eqx.filter_jit(_index_error)
    if not _index_error_jit(model, params, obs, dtype, pulses).get():
        return
    for name, fn in _index_checked(model, params, obs, dtype, pulses):  # only on error: name the culprit
        err, _ = checkify.checkify(fn, errors=checkify.index_checks)()
        msg = err.get()
        if msg:
            raise IndexError(
                f"{name} indexes out of range with n_spins={model.n_spins}, n_bosons={model.n_bosons}: "
                f"{msg.strip().splitlines()[0]} (JAX would silently clamp the index)"
            )



# --------------------------------------------------------------------------- the plan
class Plan(eqx.Module):
    """A validated, immutable run: everything a chunk of trajectories needs.

    Leaves: ``model`` (its arrays), ``initial``, ``params`` (merged with the model's defaults),
    ``noise`` (the factor of Gamma, ``None`` for a closed system), ``grid``, ``save_ts``, ``ts``,
    ``key``, ``solver``. Static: sizes, names and options.
    """

    model: Model
    initial: Any
    params: Any
    noise: NoiseBasis | None
    grid: jax.Array  # padded past t_end (:func:`padded_grid`)
    t_end: jax.Array  # the last time step ends here
    save_ts: jax.Array
    ts: jax.Array
    key: jax.Array
    solver: Any
    n_valid: jax.Array  # n_traj as an array: trajectories from here on are padding
    pulses: tuple  # Pulse modules, their times on the grid
    observable_items: tuple = eqx.field(static=True)
    obs_shapes: tuple = eqx.field(static=True)
    obs_dtypes: tuple = eqx.field(static=True)
    n_traj: int = eqx.field(static=True)
    method: str = eqx.field(static=True)
    solver_name: str = eqx.field(static=True)
    key_meta: Any = eqx.field(static=True)
    dt: float = eqx.field(static=True)
    n_steps: int = eqx.field(static=True)
    devices: tuple = eqx.field(static=True)
    chunk_size: int | None = eqx.field(static=True)
    checkpoints: int | None = eqx.field(static=True)
    time_average: tuple = eqx.field(static=True)
    keep_trajectories: int = eqx.field(static=True)
    target_sem: float | None = eqx.field(static=True)
    progress: bool | None = eqx.field(static=True)
    throw: bool = eqx.field(static=True)
    dtype: Any = eqx.field(static=True)
    layout: str = eqx.field(static=True, default="batch_first")
    save_by: str = eqx.field(static=True, default="loop")  # save_mode() when the plan was made

    @property
    def observables(self) -> dict:
        return dict(self.observable_items)

    @property
    def shapes(self) -> dict:
        return dict(self.obs_shapes)

    @property
    def n_devices(self) -> int:
        return len(self.devices)

    def chunk(self, *, stored_states: int = 0, rows: int = 1, n: int | None = None) -> int:
        """Trajectories per device in one compiled batch for a pass of this kind (see
        :func:`bytes_per_trajectory`): the caller's ``chunk_size`` if given, else from free
        memory; never more than each device's share of ``n`` (default ``n_traj``)."""
        n = self.n_traj if n is None else n
        per_device = -(-n // self.n_devices)
        if self.chunk_size is not None:
            return min(self.chunk_size, on_chunk_ladder(per_device))
        per = bytes_per_trajectory(self.model, self.noise, len(self.save_ts), self.obs_shapes, self.dtype,
                                   stored_states=stored_states, rows=rows)
        return auto_chunk_size(per, self.devices, per_device)

    def device_part(self) -> "Plan":
        """The plan without what only the host uses (the key's record, ``dt`` as a number, the
        chunk loop's options, ``n_traj`` and ``n_steps`` as numbers: the device uses ``n_valid`` and
        ``t_end``), so that a new key, a new ``dt`` whose grid pads to the same length, or a new
        ``n_traj`` reuses the compiled program (static fields are part of the compilation key)."""
        part = copy.copy(self)  # every field is valid: dataclasses.replace would check all again (8x slower)
        for name, value in dict(key_meta=None, dt=0.0, target_sem=None, progress=None, throw=False, n_traj=0,
                                n_steps=0).items():
            object.__setattr__(part, name, value)
        return part

    def with_dt(self, ts_np, dt) -> "Plan":
        """The same plan on the time grid of step ``dt`` over the save times ``ts_np``."""
        grid_np, save_idx = time_grid(np.asarray(ts_np, float), float(dt), [p.time for p in self.pulses])
        grid, t_end, save_ts = grid_arrays(padded_grid(grid_np, pads_grid(self.devices)), len(grid_np), save_idx, self.dtype)
        checkpoints = None if self.checkpoints is None else min(self.checkpoints, len(grid_np) - 1)
        return _to_device(dataclasses.replace(self, grid=grid, t_end=t_end, save_ts=save_ts,
                                              dt=float(np.max(np.diff(grid_np))),
                                              n_steps=len(grid_np) - 1, checkpoints=checkpoints,
                                              pulses=pulses_on_grid(self.pulses, grid_np, self.dtype)))

    def values_at(self, params, estimate_step=False, factors=None):
        """``(params, noise, dt estimate or None)`` of the same run at other parameter values (one
        point of a sweep). The model's functions, observables, state and options were validated
        when this plan was made and hold for any parameters of the same structure; what depends
        on the values is checked again: NaN, Gamma (validated and factored) and the default step.
        ``factors``: a dict that keeps the factors of the Gammas met so far (a sweep over
        parameters that Gamma does not depend on factors it once)."""
        new = self.model.with_params(params)
        check_finite_tree(new, "params")
        if jax.tree_util.tree_structure(new) != jax.tree_util.tree_structure(self.params) or any(
            np.shape(a) != np.shape(b) for a, b in zip(jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(self.params))
        ):
            raise ValueError(f"params {params} do not have the structure and shapes of the first point's")
        noise = self.noise
        ts_np = np.asarray(self.ts, float)
        if self.model.is_dissipative and callable(self.model.gamma):
            noise = noise_of(self.model, as_arrays(new), ts_np, self.dtype, cache=factors)
        dt = estimate_dt(self.model, noise, self.initial, as_arrays(new), self.dtype, ts_np=ts_np) if estimate_step else None
        return new, noise, dt

    def reverse_chunk(self, rows: int = 2) -> int:
        """Chunk size for reverse mode: the checkpoints plus ``rows`` working sets."""
        stored = self.checkpoints or default_checkpoints(self.grid.shape[0] - 1)  # diffrax's, from max_steps
        return self.chunk(stored_states=stored, rows=rows)


def _strong(x):
    """``x`` as a strongly typed array, real and complex numbers in the run's precision: a Python
    ``1.3``, a ``float32`` scalar and a default parameter are then the same argument type, and one
    compiled program serves them all."""
    kind = np.result_type(x).kind if not isinstance(x, jax.Array) else x.dtype.kind
    if kind == "c":
        dtype = jax.dtypes.canonicalize_dtype(np.complex128)
    elif kind == "f":
        dtype = jax.dtypes.canonicalize_dtype(np.float64)
    else:
        dtype = jax.dtypes.canonicalize_dtype(np.result_type(x) if not isinstance(x, jax.Array) else x.dtype)
    if isinstance(x, jax.Array):
        return x if (x.dtype == dtype and not x.weak_type) else jnp.asarray(x, dtype=dtype)
    # a NumPy array (strongly typed): the plan's checks read it with no device round trip (on a GPU
    # host each is a synchronization); make_plan moves it to the device at the end (_to_device)
    return np.asarray(x, dtype=dtype)


def _to_device(tree):
    """The NumPy leaves of ``tree`` as JAX arrays, in one transfer call (no synchronization; an
    eager ``jnp.asarray`` per array costs a dispatch each, 0.2-0.3 ms on a GPU host): a plan's
    arrays are JAX arrays whatever the caller gave, so that one compiled program serves floats,
    NumPy and JAX values alike."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    where = [i for i, x in enumerate(leaves) if isinstance(x, np.ndarray)]
    for i, x in zip(where, jax.device_put([leaves[i] for i in where])):
        leaves[i] = x
    return jax.tree_util.tree_unflatten(treedef, leaves)


def as_arrays(params):
    """Numbers become arrays, so new parameter values reuse the compiled program."""
    return jax.tree_util.tree_map(
        lambda x: _strong(x)
        if isinstance(x, (int, float, complex, np.number, np.ndarray, jax.Array)) and not isinstance(x, bool)
        else x,
        params,
    )


def _check_time_average(time_average, ts_np, observables):
    if time_average is None:
        return ()
    if not isinstance(time_average, dict) or not time_average:
        raise TypeError("time_average must be a dict {observable name: (t0, t1)}")
    out = []
    for name, window in time_average.items():
        if name not in observables:
            raise ValueError(f"time_average names {name!r}, which is not an observable; recorded: {sorted(observables)}")
        if not isinstance(window, (tuple, list)) or len(window) != 2:
            raise TypeError(f"time_average[{name!r}] must be a pair (t0, t1), got {window!r}")
        t0, t1 = (float(w) for w in window)
        if not t0 <= t1:
            raise ValueError(f"time_average[{name!r}] = {tuple(window)}: t0 must not exceed t1")
        sel = np.nonzero((ts_np >= t0 - 1e-12 * max(1.0, abs(t0))) & (ts_np <= t1 + 1e-12 * max(1.0, abs(t1))))[0]
        if sel.size == 0:
            raise ValueError(f"time_average[{name!r}] = {tuple(window)} contains no save time (ts from {ts_np[0]} to {ts_np[-1]})")
        out.append((name, int(sel[0]), int(sel[-1]) + 1))
    return tuple(out)


def make_plan(
    model,
    initial,
    ts,
    *,
    n_traj=None,
    key=None,
    params=None,
    observables=None,
    dt=None,
    solver="rotation_heun",
    method="twa",
    chunk_size=None,
    devices=None,
    throw=False,
    target_sem=None,
    time_average=None,
    keep_trajectories=None,
    progress=None,
    checkpoints=None,
    differentiable=False,
    pulses=None,
) -> Plan:
    """Validate the arguments of a run once and build its :class:`Plan`.

    ``differentiable``: the caller (``value_and_grad``, ``fit``) differentiates the run itself;
    its parameters must then be concrete here.

    Raises:
        TypeError, ValueError: on bad input, naming it, before anything is compiled;
        IndexError: a model function indexes out of range.
    """
    # === arguments that do not need the model's functions
    model = check_model(model)
    check_initial(initial, model)
    ts_np = _checks.check_ts(ts)
    _checks.check_method_options(
        method, chunk_size=chunk_size, devices=devices, target_sem=target_sem,
        key=key if method == "mean_field" else None,
    )
    solver_name, solver = check_solver(solver)
    if method == "mean_field":
        if n_traj not in (None, 1):
            raise ValueError(f"method='mean_field' runs one deterministic trajectory; got n_traj={n_traj}")
        n_traj, key_obj, key_meta = 1, jax.random.key(0), None
    else:
        if n_traj is None:
            raise TypeError("n_traj is required (number of trajectories)")
        n_traj = _checks.check_int(n_traj, "n_traj")
        key_obj, key_meta = _checks.as_key(key)
    if chunk_size is not None:
        chunk_size = _checks.check_int(chunk_size, "chunk_size")
    devices = _checks.check_devices(devices, jax.devices()[:1] if method == "mean_field" else
                                    default_devices(jax.devices(), model.n_spins + model.n_bosons, n_traj))
    if dt is not None:
        if isinstance(dt, bool) or not isinstance(dt, (int, float, np.floating, np.integer)) or not (
            np.isfinite(dt) and dt > 0
        ):
            raise ValueError(f"dt must be a positive finite number, got {dt!r}")
    if target_sem is not None:
        target_sem = _checks.check_positive(target_sem, "target_sem")
    keep = 0 if keep_trajectories is None else _checks.check_int(keep_trajectories, "keep_trajectories", minimum=0)
    if keep > n_traj:
        raise ValueError(f"keep_trajectories={keep} exceeds n_traj={n_traj}")
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress must be True, False or None (automatic), got {progress!r}")

    # === parameters and the model's functions
    params = as_arrays(model.with_params(params))
    check_finite_tree(params, "params")
    concrete = all_concrete(params) and all_concrete(model)
    if differentiable and not concrete:
        raise ValueError("this function differentiates internally; call it with concrete params, not under jax.grad/jax.jit")
    dtype = default_float()
    n_jumps = model.check(params, dtype, with_gamma=False)  # Gamma: validated where it is factored
    if observables is not None:  # the model's own were checked when it was built
        warn_same_site_observables(model, observables)
    observables, shapes, dtypes = check_observables(observables, model, dtype, method)
    averages = _check_time_average(time_average, ts_np, observables)
    _check_initial_sample(initial, model, dtype)
    pulses = check_pulses(pulses, model, params, initial, ts_np, dtype)
    check_indexing(model, params, observables, dtype, pulses)

    # === Gamma, factored once (a time-dependent one: its channels, factored again at each stage)
    noise = noise_of(model, params, ts_np, dtype)
    if noise is not None:
        check_gamma_size(noise.gamma, n_jumps)

    # === the time grid
    if dt is None:
        if not concrete:
            raise ValueError("give dt explicitly when simulate is traced (jit/grad): the default dt needs concrete parameters")
        dt = estimate_dt(model, noise, initial, params, dtype, ts_np=ts_np)
        requested = None
    else:
        requested = float(dt)
    _check_n_steps(ts_np, float(dt), requested)
    grid_np, save_idx = time_grid(ts_np, float(dt), [p.time for p in pulses])
    dt_used = float(np.max(np.diff(grid_np)))  # the grid puts a point at every save time
    if requested is not None and concrete:  # a quick estimate (the mean point only) for the warning
        est = estimate_dt(model, noise, initial, params, dtype, n_samples=0, ts_np=ts_np)
        if dt_used > DT_WARN_FACTOR * est:
            if np.isclose(dt_used, requested, rtol=1e-9):
                said = f"dt={requested:g} is"
            else:  # the grid splits every save interval evenly: the step used is smaller
                said = (f"dt={requested:g} was requested; the grid through the save times makes the step "
                        f"used (Result.dt) {dt_used:g}, which is")
            warnings.warn(
                f"{said} {dt_used / est:.3g} times the estimated stable step "
                f"{est:.3g} of this model (0.02 over its fastest rate); results may be inaccurate or blow up",
                RuntimeWarning, stacklevel=3,
            )
    grid_full = padded_grid(grid_np, pads_grid(devices))
    _check_grid_precision(grid_full, ts_np, dtype)
    n_per_device = -(-n_traj // len(devices))
    if chunk_size is None:
        obs_shapes = tuple(shapes.items())
        per = bytes_per_trajectory(model, noise, len(save_idx), obs_shapes, dtype)
        n_chunk = auto_chunk_size(per, devices, n_per_device)
    else:
        n_chunk = min(chunk_size, on_chunk_ladder(n_per_device))
    layout = choose_layout(model, noise, params, dtype, method, min(n_chunk, n_per_device),  # padding is not work
                           platform=devices[0].platform)
    if checkpoints is not None:
        checkpoints = min(_checks.check_int(checkpoints, "checkpoints"), len(grid_np) - 1)

    grid, t_end, save_ts = grid_arrays(grid_full, len(grid_np), save_idx, dtype)
    return _to_device(Plan(  # its NumPy arrays moved to the device in one call
        model=model,
        initial=initial,
        params=params,
        noise=noise,
        grid=grid,
        t_end=t_end,
        save_ts=save_ts,
        ts=np.asarray(ts_np, dtype),
        key=key_obj,
        solver=solver,
        n_valid=np.asarray(n_traj, np.int32),
        pulses=pulses_on_grid(pulses, grid_np, dtype),
        observable_items=tuple(observables.items()),
        obs_shapes=tuple(shapes.items()),
        obs_dtypes=tuple(dtypes.items()),
        n_traj=n_traj,
        method=method,
        solver_name=solver_name,
        key_meta=key_meta,
        dt=dt_used,
        n_steps=len(grid_np) - 1,
        devices=tuple(devices),
        chunk_size=chunk_size,
        checkpoints=checkpoints,
        time_average=averages,
        keep_trajectories=keep,
        target_sem=target_sem,
        progress=progress,
        throw=bool(throw),
        dtype=dtype,
        layout=layout,
        save_by=save_mode(devices[0].platform),
    ))


def grid_arrays(grid_full, n_points, save_idx, dtype):
    """``(grid, t_end, save_ts)`` as NumPy arrays of the run's precision: the padded grid, its
    point ``n_points - 1`` (where the run stops) and the save times (grid points)."""
    grid = np.asarray(grid_full, dtype)
    return grid, grid[n_points - 1], grid[np.asarray(save_idx)]


def _check_grid_precision(grid_np, ts_np, dtype):
    """The time grid must stay strictly increasing in the run's precision: save times (or steps)
    closer than its resolution would collapse into steps of zero length."""
    g = np.asarray(grid_np, np.dtype(dtype))
    bad = np.flatnonzero(np.diff(g) <= 0)
    if not bad.size:
        return
    t = float(grid_np[bad[0]])
    close = np.flatnonzero(np.diff(np.asarray(ts_np, np.dtype(dtype))) <= 0)
    what = (f"save times ts[{close[0]}] = {ts_np[close[0]]:.17g} and ts[{close[0] + 1}] = {ts_np[close[0] + 1]:.17g}"
            if close.size else f"time steps near t = {t:g} (dt = {np.min(np.diff(grid_np)):.3g})")
    raise ValueError(
        f"{what} are equal in {np.dtype(dtype).name}: the time grid needs more resolution than "
        "that. Merge save times closer than the precision, use a larger dt, or enable float64 "
        "(jax.config.update('jax_enable_x64', True))"
    )


def _check_initial_sample(initial, model, dtype):
    """A user-defined state must sample ``(spins (N, 3) real, bosons (M,) complex)`` (traced
    once per kind of state, model size and dtype: :func:`~twa_jax._checks.memo` on the state's
    class with its structure, so that a new ``tw.states.spins_down(n)`` in every call is checked
    once)."""
    sig = ("sample", _checks.abstract_signature(initial), model.n_spins, model.n_bosons, jnp.dtype(dtype))
    _checks.memo(type(initial), sig, lambda: _check_initial_sample_once(initial, model, dtype))


def _check_initial_sample_once(initial, model, dtype):
    try:
        s, a = jax.eval_shape(initial.sample, jax.random.key(0))
    except Exception as e:
        raise TypeError(f"{type(initial).__name__}.sample(key) failed: {type(e).__name__}: {e}") from e
    if tuple(s.shape) != (model.n_spins, 3) or tuple(a.shape) != (model.n_bosons,):
        raise ValueError(
            f"{type(initial).__name__}.sample(key) must return spins of shape ({model.n_spins}, 3) and bosons "
            f"of shape ({model.n_bosons},), got {tuple(s.shape)} and {tuple(a.shape)}"
        )
    if model.n_spins and not jnp.issubdtype(s.dtype, jnp.floating):
        raise TypeError(f"{type(initial).__name__}.sample(key) must return real spins, got dtype {s.dtype}")
