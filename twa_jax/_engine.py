"""The engine: a plan's trajectories, chunk by chunk over its devices, reduced inside the
compiled function by a reduction the caller chooses.

One trajectory is a pure function ``(key, params) -> observables at the save times``: trajectory
``i`` samples its initial point and its noise from ``fold_in(key, i)``, so it is the same whatever
the chunk size, the number of devices, or the entry point. A chunk stacks ``n_devices *
chunk_size`` trajectories into one diffrax solve, sharded over the plan's devices, and a
*reduction* turns the chunk into what the caller needs:

* :class:`Moments` (``simulate``): streaming moments of the observables, per-trajectory time
  averages, the first trajectories kept whole, failures counted;
* :class:`Sums`, :class:`SumsVJP`, :class:`LossAndGrad` (``value_and_grad``): chunk sums and
  their vector-Jacobian product with a cotangent;
* :class:`Jacobian` (``fit``): sums, their Jacobian, and the trajectory covariance.

:func:`run` is the one chunk loop of the package (progress bar, early stop); :func:`run_traced`
is the same loop for callers that trace through the whole run (optimistix's fit).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ._brackets import to_internal, to_user
from ._noise import decompose_like
from ._plan import pads_grid
from ._observables import chunk_moments, merge_moments
from ._solvers import GridNoise, GridSteps, PackedTerm, TangentSolver, TangentTerm, TWATerm


# --------------------------------------------------------------------------- one batch
class Batch(NamedTuple):
    """A chunk of trajectories: indices ``(n,)``, observables ``{name: (n, n_save, ...)}``,
    ``valid`` (index below ``n_traj``: not padding) and ``finite`` (no NaN/inf anywhere)."""

    idx: jax.Array
    ys: dict
    valid: jax.Array
    finite: jax.Array
    finite_t: jax.Array  # (n, n_save): every observable finite at that save time
    state_finite_t: jax.Array | None = None  # (n, n_save): the state itself finite at that save time
    tangents: dict | None = None  # {name: (P, n, n_save, ...)}: derivatives along P parameters (``along``)

    @property
    def weight(self):
        return self.valid & self.finite


#: the noise of a run with key ``k`` comes from ``fold_in(k, NOISE_STREAM)``; trajectory ``i``'s
#: initial point from ``fold_in(k, i)`` (indices stay below 2**31, so the streams never meet)
NOISE_STREAM = 2**32 - 1


def noise_key(key):
    """The key of a run's noise (:class:`~twa_jax._solvers.GridNoise`), for one key or ``(P,)``."""
    if key.ndim:
        return jax.vmap(noise_key)(key)
    return jax.random.fold_in(key, NOISE_STREAM)


def initial_points(plan, key, idx):
    """Internal ``(spins (n, 3, N), bosons (n, 2, M))`` of the trajectories ``idx``: trajectory
    ``i`` samples from the first half of ``split(fold_in(key, i))``."""
    if plan.method == "mean_field":
        s, a = jax.vmap(lambda _: plan.initial.mean())(idx)
    else:
        keys = jax.vmap(lambda i: jax.random.split(jax.random.fold_in(key, i))[0])(idx)
        s, a = jax.vmap(plan.initial.sample)(keys)
    return to_internal(s, a, plan.grid.dtype)


def solve_batch(plan, params, noise, key, idx, adjoint="none", n_points=None, along=None):
    """Observables at the save times for the trajectories with global indices ``idx (n,)``.

    Trajectory ``i`` is a pure function of ``(key, i)``: its initial point comes from
    ``fold_in(key, i)`` (:func:`initial_points`), its noise from the run's noise key, the step and
    ``i`` (:class:`GridNoise`, one generator call per step for the whole batch). The batch is
    solved as one diffrax solve of the stacked state (one loop, the bracket ``vmap``-ed inside the
    term), not as a ``vmap`` of per-trajectory solves: a vmapped while loop turns every step's
    bookkeeping into per-trajectory selects. The state's layout is the plan's (``plan.layout``:
    trajectories first, or last, on the vector lanes); it is transposed once before the loop, and
    the observables come out ``(n, ...)`` either way.

    ``n_points``: ``params`` and ``noise`` are stacked over ``P = n_points`` sweep points (leading
    axis), solved in the same loop; ``key`` is one key (common random numbers: the points share
    initial points and noise, drawn once) or ``(P,)`` keys.

    ``adjoint``: ``"none"`` (not differentiated in reverse mode: saves as ``plan.save_by``
    says), ``"reverse"`` (diffrax's ``RecursiveCheckpointAdjoint`` with the plan's
    ``checkpoints``; reverse-mode differentiable), ``"forward"`` (``ForwardMode``: forward-mode
    differentiable, nothing stored).

    ``along = (inputs_of, xs)``: also the derivatives of the observables along each entry of the
    real arrays ``xs`` (a list; entries in the order of ``ravel_pytree``), with ``inputs_of(xs) ->
    (params, noise)`` (and ``params, noise = inputs_of(xs)``). They come from one solve of the
    trajectories and a tangent per entry (:class:`~twa_jax._solvers.TangentSolver`: forward mode,
    each tangent paying only for the parts of the model that move with its entry's array, the
    primal and the noise shared).

    Returns:
        ``({name: (n, n_save, ...)}, state_finite (n, n_save))``: the observables and whether the
        state itself is finite at each save time (to tell a blown-up trajectory from an
        observable that is NaN on a finite state); with ``points`` both carry a leading ``P`` axis.
        With ``along``, a third item: the derivatives ``{name: (P, n, n_save, ...)}``.
    """
    points = n_points is not None
    last = plan.layout == "batch_last"
    if points and key.ndim:
        y0 = jax.vmap(lambda k: initial_points(plan, k, idx))(key)
    else:
        y0 = initial_points(plan, key, idx)
        if points:  # common random numbers: one draw for every point
            y0 = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n_points,) + x.shape), y0)
    if last:  # (..., n, 3, N) -> (..., 3, N, n): once, before the loop
        y0 = jax.tree_util.tree_map(lambda x: jnp.moveaxis(x, -3, -1), y0)
    path = None
    if plan.method == "twa" and noise is not None and noise.n_channels > 0:
        path = GridNoise(noise_key(key), idx, plan.grid, noise.n_channels, last)

    def packed(params, noise):
        return PackedTerm.pack(TWATerm(plan.model, noise, path, points, plan.pulses, plan.layout), params)

    term = packed(params, noise)
    solver = plan.solver
    if along is not None:
        term, tangents0 = _tangent_term(term, lambda x: packed(*along[0](x)).leaves, along[1], y0, plan.grid[0])
        solver = TangentSolver(solver)
    if plan.pulses:  # pulses at the first grid point act on the initial state
        y0 = term.bound().apply_pulses(plan.grid[0], y0, None) if along is not None \
            else term.term.apply_pulses(plan.grid[0], y0, None)
    if along is not None:
        y0 = (y0, tangents0)
    observables = plan.observables

    def one(y1):
        s_, a_ = to_user(y1)
        return {name: f(s_, a_) for name, f in observables.items()}

    per_traj = jax.vmap(one, in_axes=-1 if last else 0)  # saves only: (n, ...) either way
    batched = jax.vmap(per_traj) if points else per_traj

    lead = 2 if points else 1

    def fn(t, y, args):
        if along is not None:
            y, tangents = y
            obs, lin = jax.linearize(batched, y)
            return obs, tuple(jax.vmap(lin)(T) for T in tangents), finite(y)
        return batched(y), finite(y)

    def finite(y):
        ok = None
        for leaf in jax.tree_util.tree_leaves(y):
            if last:  # (..., 3, N, n) -> (..., n)
                f = jnp.all(jnp.isfinite(leaf), axis=(-3, -2))
            else:
                f = jnp.all(jnp.isfinite(leaf.reshape(leaf.shape[:lead] + (-1,))), axis=-1)
            ok = f if ok is None else ok & f
        return ok

    solve = dict(
        dt0=None,
        args=None,
        max_steps=plan.grid.shape[0] - 1,
        adjoint=dfx.ForwardMode() if adjoint == "forward" or along is not None
        else dfx.RecursiveCheckpointAdjoint(checkpoints=plan.checkpoints),
        throw=False,
    )
    if saves_by_intervals(plan, adjoint):
        saved = _solve_by_intervals(plan, term, solver, y0, fn, solve)
    else:
        saved = dfx.diffeqsolve(
            term, solver, t0=plan.grid[0], t1=plan.t_end, y0=y0,
            saveat=dfx.SaveAt(ts=plan.save_ts, fn=fn),
            # a padded grid (_plan.PAD_GRID, the default) stops at t_end; an exact one is diffrax's StepTo
            stepsize_controller=GridSteps(plan.grid) if pads_grid(plan.devices) else dfx.StepTo(plan.grid),
            **solve,
        ).ys
    state_ok = saved[-1]
    ys = {name: jnp.moveaxis(v, 0, lead) for name, v in saved[0].items()}
    if along is None:
        return ys, jnp.moveaxis(state_ok, 0, -1)
    dys = {name: jnp.concatenate([jnp.moveaxis(d[name], 0, lead + 1) for d in saved[1]]) for name in ys}
    return ys, jnp.moveaxis(state_ok, 0, -1), dys


def saves_by_intervals(plan, adjoint="none") -> bool:
    """Whether a solve of ``plan`` with this ``adjoint`` saves by intervals (``plan.save_by``,
    :data:`twa_jax._plan.SAVE_BY`); one differentiated in reverse mode keeps diffrax's save loop:
    a scan of checkpointed solves would store every interval's checkpoints."""
    return plan.save_by == "intervals" and adjoint != "reverse"


def _solve_by_intervals(plan, term, solver, y0, fn, solve):
    """``fn`` of the state at every save time: a ``lax.scan`` over the intervals from the grid's
    first point to each save time, one diffrax solve of each (its end saved, no save loop in its
    steps). An interval of zero length (the first save time at the grid's start, save times merged
    on the grid) takes no step. Returns what ``SaveAt(ts=plan.save_ts, fn=fn)`` gives."""
    ends = plan.save_ts
    starts = jnp.concatenate([plan.grid[:1], ends[:-1]])
    first = jnp.searchsorted(plan.grid, starts, method="scan_unrolled")  # save times are grid points

    def interval(y, xs):
        t0, t1, j = xs
        y1 = dfx.diffeqsolve(term, solver, t0=t0, t1=t1, y0=y, saveat=dfx.SaveAt(t1=True),
                             stepsize_controller=GridSteps(plan.grid, j), **solve).ys
        y1 = jax.tree_util.tree_map(lambda v: v[0], y1)
        return y1, fn(t1, y1, None)

    return jax.lax.scan(interval, y0, (starts, ends, first))[1]


def moved_by(fn, xs):
    """For each array of the list ``xs``, the indices of the leaves of ``fn(xs)`` that depend on
    it (a forward walk of the jaxpr; an equation with a sub-program counts every output as
    depending on every input it reads)."""
    positions = []

    def arrays(*xs):
        leaves = jax.tree_util.tree_leaves(fn(list(xs)))
        positions[:] = [j for j, x in enumerate(leaves) if eqx.is_array(x)]
        return [leaves[j] for j in positions]

    jaxpr = jax.make_jaxpr(arrays)(*xs).jaxpr
    dep = {v: frozenset([i]) for i, v in enumerate(jaxpr.invars)}

    def of(v):
        return frozenset() if isinstance(v, jcore.Literal) else dep.get(v, frozenset())

    for eqn in jaxpr.eqns:
        d = frozenset().union(*(of(v) for v in eqn.invars))
        if d:
            dep.update((v, d) for v in eqn.outvars)
    outs = [of(v) for v in jaxpr.outvars]
    return tuple(tuple(j for j, d in zip(positions, outs) if i in d) for i in range(len(xs)))


def _tangent_term(term, leaves_of, xs, y0, t0):
    """The :class:`~twa_jax._solvers.TangentTerm` of ``term = PackedTerm(leaves_of(xs))`` along
    each entry of the arrays ``xs``, one group of tangents per array (its entries on a leading
    axis, in the order of ``ravel_pytree``), and the tangents of the initial state (zero, or moved
    by pulses at ``t0`` whose angles depend on the parameters). A group reaches only the term's
    leaves that depend on its array."""
    moved = [tuple(j for j in w if eqx.is_inexact_array(term.leaves[j])) for w in moved_by(leaves_of, xs)]
    dleaves = []
    for i, (x, w) in enumerate(zip(xs, moved)):
        def part(xi, i=i, w=w):
            leaves = leaves_of(xs[:i] + [xi] + xs[i + 1:])
            return [leaves[j] for j in w]

        _, lin = jax.linearize(part, x)
        dleaves.append(tuple(jax.vmap(lin)(jnp.eye(x.size, dtype=x.dtype).reshape((x.size,) + x.shape))))
    tterm = TangentTerm(term, tuple(dleaves), tuple(moved))
    tangents0 = []
    for x, w, dl in zip(xs, moved, dleaves):
        if tterm.term.term.pulses:
            def kick(d, w=w):
                return jax.jvp(lambda leaves: tterm.bound(leaves, w).apply_pulses(t0, y0, None),
                               ([term.leaves[j] for j in w],), (list(d),))[1]

            tangents0.append(jax.vmap(kick)(dl))
        else:
            tangents0.append(jax.tree_util.tree_map(lambda v, k=x.size: jnp.zeros((k,) + v.shape, v.dtype), y0))
    return tterm, tuple(tangents0)


#: what to change when trajectories are left out as non-finite and the entry point does not tell
#: a blown-up state from an observable that is NaN on a finite state (``simulate`` does, and says which)
NONFINITE_ADVICE = ("either the state blew up (reduce dt) or an observable is NaN or inf on a finite state "
                    "(e.g. jnp.log or jnp.sqrt of a negative value; tw.simulate names such an observable)")


def _finite_per_time(ys, lead=0):
    """``(..., n, n_save)``: every observable finite at that save time (``lead`` leading axes
    before the trajectories)."""
    ok = None
    for v in ys.values():
        f = jnp.all(jnp.isfinite(v.reshape(v.shape[: lead + 2] + (-1,))), axis=-1)
        ok = f if ok is None else ok & f
    return ok


def trajectories(plan, params, start, chunk_size, refactor=False, adjoint="none", *, noise=None, key=None,
                 n_points=None, along=None) -> Batch:
    """Trajectories ``start .. start + n_devices * chunk_size - 1``, sharded over the devices
    (device ``d`` holds ``start + d * chunk_size + (0 .. chunk_size - 1)``); call under jit.

    The solve has one loop for the whole batch with a scalar trip count, so XLA partitions it
    without communication inside the loop (unlike a ``vmap`` of while loops, jax issue 20968).
    ``refactor``: factor Gamma again from ``params`` (with the plan's channels) because the caller
    differentiates with respect to parameters Gamma depends on; else the plan's factor is used.
    ``noise``, ``key``, ``n_points``: other factors of Gamma and keys than the plan's, for
    ``n_points`` sweep points solved together (see :class:`PointMoments`); the batch's
    observables and finiteness then carry a leading points axis. ``along = (params_of, xs)``: the
    parameters are ``params_of(xs)`` and the batch also carries the observables' derivatives
    along each entry of the arrays ``xs`` (``Batch.tangents``, see :func:`solve_batch`).
    """
    mesh = Mesh(np.asarray(plan.devices), ("traj",))
    lead = 0 if n_points is None else 1
    idx = jax.lax.with_sharding_constraint(start + jnp.arange(len(plan.devices) * chunk_size), NamedSharding(mesh, P("traj")))
    key = plan.key if key is None else key
    noise = plan.noise if noise is None else noise
    reference = noise

    def inputs_of(params):
        if refactor and reference is not None and not plan.model.gamma_depends_on_time:  # else: at every stage
            return params, decompose_like(plan.model.gamma_of(params), reference)
        return params, reference

    spec = P(*([None] * lead), "traj")
    if along is None:
        def solve(idx):
            return solve_batch(plan, *inputs_of(params), key, idx, adjoint, n_points)

        ys, state_ok = per_device(solve, mesh, (spec, spec), adjoint)(idx)
        dys = None
    else:
        params_of, xs = along

        def solve(idx):
            return solve_batch(plan, *inputs_of(params_of(xs)), key, idx, adjoint, n_points,
                               along=(lambda x: inputs_of(params_of(x)), xs))

        ys, state_ok, dys = per_device(solve, mesh, (spec, spec, P(None, *spec)), adjoint)(idx)
    finite_t = _finite_per_time(ys, lead)
    return Batch(idx, ys, idx < plan.n_valid, jnp.all(finite_t, axis=-1), finite_t, state_ok, dys)


def per_device(solve, mesh, out_specs, adjoint="none"):
    """``solve(idx)`` of the trajectories ``idx`` (sharded over ``mesh``), each device solving its
    own share with a loop of its own (``shard_map``): partitioned by XLA instead, the loop is one
    loop over all devices, and whatever the step computes over the whole batch (the rotation's
    choice between its series and ``sin``/``cos``, a maximum over the batch) becomes an
    all-reduce in every step: a rendezvous of the devices per step. Measured on two CPU devices,
    Rydberg N = 10, float32: 1000 trajectories x 400 steps 80.2 -> 39.7 ms (one device: 80 ms),
    1e4 x 100 steps 104 -> 94 ms. A trajectory's numbers depend on the split only in rounding:
    each device makes that choice for its own share, and the series' error is below the
    precision where it is chosen.

    A solve differentiated in reverse mode (``adjoint="reverse"``) stays partitioned by XLA:
    the backward pass of diffrax's checkpointed loop (equinox's closure conversion) fails inside
    ``shard_map`` (jax 0.10.2)."""
    if mesh.size == 1:
        return solve
    if adjoint == "reverse":
        def partitioned(idx):
            return jax.lax.with_sharding_constraint(solve(idx), jax.tree_util.tree_map(
                lambda s: NamedSharding(mesh, s), out_specs, is_leaf=lambda x: isinstance(x, P)))

        return partitioned
    return jax.shard_map(solve, mesh=mesh, in_specs=P("traj"), out_specs=out_specs, check_vma=False)


@eqx.filter_jit
def _chunk(plan, params, start, chunk_size, reduction, extra, refactor, adjoint):
    """One compiled chunk: ``reduction(batch_of(params), params, extra)``, replicated."""
    out = reduction(lambda p, **over: trajectories(plan, p, start, chunk_size, refactor, adjoint, **over), params, extra)
    mesh = Mesh(np.asarray(plan.devices), ("traj",))
    return jax.lax.with_sharding_constraint(out, NamedSharding(mesh, P()))


def _onto_mesh(tree, devices):
    """Arrays committed to other devices (a result of an earlier run on fewer devices, e.g. a
    cotangent) are replicated onto ``devices``; uncommitted ones are left for jit to place."""
    mesh = Mesh(np.asarray(devices), ("traj",))
    rep = NamedSharding(mesh, P())
    want = set(devices)

    def move(x):
        if isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer) and getattr(x, "committed", False) \
                and set(x.sharding.device_set) != want:
            return jax.device_put(x, rep)
        return x

    return jax.tree_util.tree_map(move, tree)


def _local_copy(x):
    """One local copy of an array replicated over several devices (or processes), so results of
    runs on different devices combine freely."""
    if isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer) and len(x.sharding.device_set) > 1:
        return x.addressable_data(0)
    return x


# --------------------------------------------------------------------------- the chunk loop
def _progress_bar(plan, total, desc):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="traj", leave=False, dynamic_ncols=True)


def run(plan, reduction, combine, *, chunk_size, params=None, extra=None, refactor=False, adjoint="none",
        next_size=None, desc="trajectories"):
    """The chunk loop: every chunk of ``plan``'s trajectories through ``reduction``, combined.

    Args:
        reduction: ``reduction_for(start) -> reduction`` (a reduction may depend on whether the
            chunk holds trajectories to keep) or a reduction.
        combine: ``combine(acc, out) -> acc`` (host side, pure jnp).
        chunk_size: trajectories per device per chunk.
        params: parameters (default ``plan.params``); extra: more traced input of the reduction.
        next_size: ``next_size(acc, used) -> int``: trajectories per device of the next chunk
            (``acc`` is None before the first), 0 to stop (``target_sem``); default
            ``chunk_size`` throughout. Each distinct size compiles its own program.

    Returns:
        ``(acc, n_used)``: the combined reduction and the number of trajectories covered.
    """
    params = plan.params if params is None else params
    core, params, extra = _onto_mesh((plan.device_part(), params, extra), plan.devices)
    n_chunks = -(-plan.n_traj // (plan.n_devices * chunk_size))
    show = plan.progress if plan.progress is not None else (n_chunks > 1 or next_size is not None)
    bar = _progress_bar(plan, plan.n_traj, desc) if show else None
    acc, used = None, 0
    try:
        while used < plan.n_traj:
            size = chunk_size if next_size is None else next_size(acc, used)
            if size <= 0:
                break
            red = reduction(used) if not isinstance(reduction, eqx.Module) else reduction
            out = _chunk(core, params, jnp.asarray(used), size, red, extra, refactor, adjoint)
            out = jax.tree_util.tree_map(_local_copy, out)
            acc = out if acc is None else combine(acc, out)
            new = min(plan.n_traj, used + plan.n_devices * size)
            if bar is not None:
                bar.update(new - used)
            used = new
    finally:
        if bar is not None:
            bar.close()
    return acc, used


def run_traced(plan, reduction, combine, *, chunk_size, params, extra=None, refactor=True, adjoint="forward"):
    """The chunk loop for callers that trace through the whole run: the chunks become a
    ``lax.scan`` (one compiled chunk, however many), combined with ``combine`` inside."""
    step = plan.n_devices * chunk_size
    n_chunks = -(-plan.n_traj // step)

    def one(start):
        return reduction(lambda p, **over: trajectories(plan, p, start, chunk_size, refactor, adjoint, **over),
                         params, extra)

    first = one(jnp.asarray(0))
    if n_chunks == 1:
        return first

    def body(acc, start):
        return combine(acc, one(start)), None

    acc, _ = jax.lax.scan(body, first, jnp.arange(1, n_chunks) * step)
    return acc


# --------------------------------------------------------------------------- reductions
def _masked(y, w):
    return jnp.where(w.reshape((-1,) + (1,) * (y.ndim - 1)), y, 0)


def masked_sums(batch: Batch) -> dict:
    w = batch.weight
    return {k: jnp.sum(_masked(y, w), axis=0) for k, y in batch.ys.items()}


class Moments(eqx.Module):
    """``simulate``'s reduction: moments ``(n, mean, M2)`` of every observable at every save
    time, of the per-trajectory time averages ``time_average``, the failures (count, the first
    failing trajectory and the first save index at which any trajectory failed), and the
    observables of the first ``keep`` trajectories."""

    time_average: tuple = eqx.field(static=True)
    keep: int = eqx.field(static=True, default=0)

    def __call__(self, batch_of, params, extra):
        return self.reduce(batch_of(params))

    def reduce(self, b: Batch):
        w = b.weight
        out: dict[str, Any] = {"moments": {k: chunk_moments(v, w) for k, v in b.ys.items()}}
        out["averages"] = {
            name: chunk_moments(jnp.mean(b.ys[name][:, i0:i1], axis=1), w) for name, i0, i1 in self.time_average
        }
        bad = b.valid & ~b.finite
        n_save = b.finite_t.shape[1]
        first_t = jnp.argmin(b.finite_t, axis=1)
        big = jnp.iinfo(b.idx.dtype).max
        out["n_bad"] = jnp.sum(bad)
        out["first_bad_time"] = jnp.min(jnp.where(bad, first_t, n_save))
        out["first_bad_traj"] = jnp.min(jnp.where(bad, b.idx, big))
        # which failures are the dynamics (the state non-finite) and which only an observable's
        state_ok = jnp.ones_like(b.finite) if b.state_finite_t is None else jnp.all(b.state_finite_t, axis=1)
        out["n_state_bad"] = jnp.sum(b.valid & ~state_ok)
        out["obs_only_bad"] = {
            k: jnp.sum(b.valid & state_ok & ~jnp.all(jnp.isfinite(v.reshape(v.shape[0], -1)), axis=1))
            for k, v in b.ys.items()
        }
        if self.keep:
            out["kept"] = {k: v[: self.keep] for k, v in b.ys.items()}
        return out


def combine_moments(a, b):
    out = {
        "moments": {k: merge_moments(a["moments"][k], b["moments"][k]) for k in a["moments"]},
        "averages": {k: merge_moments(a["averages"][k], b["averages"][k]) for k in a["averages"]},
        "n_bad": a["n_bad"] + b["n_bad"],
        "first_bad_time": jnp.minimum(a["first_bad_time"], b["first_bad_time"]),
        "first_bad_traj": jnp.minimum(a["first_bad_traj"], b["first_bad_traj"]),
        "n_state_bad": a["n_state_bad"] + b["n_state_bad"],
        "obs_only_bad": {k: a["obs_only_bad"][k] + b["obs_only_bad"][k] for k in a["obs_only_bad"]},
    }
    if "kept" in a and "kept" in b:
        out["kept"] = {k: jnp.concatenate([a["kept"][k], b["kept"][k]]) for k in a["kept"]}
    elif "kept" in a or "kept" in b:
        out["kept"] = a.get("kept", b.get("kept"))
    return out


class PointMoments(eqx.Module):
    """A sweep's reduction: :class:`Moments` of a batch of points solved together. ``params`` are
    the points' parameters stacked on a leading axis, ``extra = (noise, keys)`` their factors of
    Gamma (``None`` for a closed model) and their keys, stacked the same way: the points become an
    axis of the state next to the trajectories, all in one loop. ``common``: every point uses
    ``keys[0]`` (common random numbers: the initial points and the noise are drawn once)."""

    time_average: tuple = eqx.field(static=True)
    common: bool = eqx.field(static=True, default=True)

    def __call__(self, batch_of, params, extra):
        noise, keys = extra
        b = batch_of(params, noise=noise, key=keys[0] if self.common else keys, n_points=keys.shape[0])
        moments = Moments(self.time_average)
        return jax.vmap(lambda ys, fin, fin_t, st_t: moments.reduce(
            b._replace(ys=ys, finite=fin, finite_t=fin_t, state_finite_t=st_t)))(b.ys, b.finite, b.finite_t, b.state_finite_t)


def combine_params(diff, rest):
    """The full parameters from the differentiated part ``diff`` and ``rest = (others, fixed)``:
    ``fixed`` the non-differentiated leaves of the same tree as ``diff`` (``eqx.partition``, or
    ``None``), ``others`` a dict of further parameters (the model's defaults, a fit's fixed
    parameters; or ``None``)."""
    others, fixed = rest
    full = diff if fixed is None else eqx.combine(diff, fixed)
    return full if not others else {**others, **full}


class Sums(eqx.Module):
    """Sums of the observables over the chunk's good trajectories, their count, the failures.
    ``params`` is the differentiated part, ``extra`` the rest (see :func:`combine_params`)."""

    def __call__(self, batch_of, diff, rest):
        b = batch_of(combine_params(diff, rest))
        return masked_sums(b), jnp.sum(b.weight), jnp.sum(b.valid & ~b.finite)


class SumsVJP(eqx.Module):
    """Vector-Jacobian product of the chunk sums with a cotangent: ``extra = (rest, ct)``."""

    def __call__(self, batch_of, diff, extra):
        rest, ct = extra
        _, vjp = jax.vjp(lambda d: masked_sums(batch_of(combine_params(d, rest))), diff)
        return vjp(ct)[0]


class SumsJVP(eqx.Module):
    """:class:`Sums` and their derivatives along each of the ``P`` scalar entries of the
    differentiated parameters (``(P, ...)`` per observable): forward mode, one tangent per
    entry, each propagated next to the trajectories in the same solve (``along``)."""

    def __call__(self, batch_of, diff, rest):
        b = batch_of(None, along=along_params(diff, rest))
        return masked_sums(b), masked_tangent_sums(b), jnp.sum(b.weight), jnp.sum(b.valid & ~b.finite)


def along_params(diff, rest):
    """``along`` (:func:`trajectories`) for the derivatives with respect to every entry of the
    differentiated parameters ``diff`` (``rest`` as in :func:`combine_params`)."""
    leaves, treedef = jax.tree_util.tree_flatten(diff)
    return (lambda xs: combine_params(jax.tree_util.tree_unflatten(treedef, xs), rest)), leaves


def masked_tangent_sums(batch: Batch) -> dict:
    """Sums of the observables' derivatives ``(P, ...)`` over the chunk's good trajectories."""
    w = batch.weight
    return {k: jnp.sum(jnp.where(w.reshape((1, -1) + (1,) * (d.ndim - 2)), d, 0), axis=1)
            for k, d in batch.tangents.items()}


class LossAndGrad(eqx.Module):
    """Loss of the chunk means and its gradient, in one pass (all trajectories in one chunk)."""

    loss: Callable = eqx.field(static=True)

    def __call__(self, batch_of, diff, rest):
        def L(d):
            b = batch_of(combine_params(d, rest))
            n = jnp.sum(b.weight)
            mean = {k: v / jnp.maximum(n, 1) for k, v in masked_sums(b).items()}
            return self.loss(mean), (mean, n, jnp.sum(b.valid & ~b.finite))

        return jax.value_and_grad(L, has_aux=True)(diff)


def flatten_obs(d, names):
    """Real vector of the entries ``names`` of a dict of arrays (complex: real parts, then imaginary)."""
    parts = []
    for k in names:
        v = d[k]
        parts.append(jnp.ravel(jnp.real(v)))
        if jnp.iscomplexobj(v):
            parts.append(jnp.ravel(jnp.imag(v)))
    return jnp.concatenate(parts)


class Jacobian(eqx.Module):
    """Sums of the flattened observables ``names``, their Jacobian with respect to the flattened
    differentiated parameters (forward mode, a tangent per parameter next to the trajectories, as
    :class:`SumsJVP`), and the trajectory moments ``(n, mean, M2 matrix)`` of the flattened
    observables."""

    names: tuple = eqx.field(static=True)

    def __call__(self, batch_of, diff, rest):
        b = batch_of(None, along=along_params(diff, rest))
        jac = jax.vmap(lambda d: flatten_obs(d, self.names), out_axes=1)(masked_tangent_sums(b))
        return flatten_obs(masked_sums(b), self.names), jac, flat_moments(b, self.names)


def combine_jacobian(a, b):
    return a[0] + b[0], a[1] + b[1], merge_flat_moments(a[2], b[2])


def flat_moments(b: Batch, names):
    """``(n, mean, M2 matrix)`` of the flattened observables over the good trajectories."""
    w = b.weight
    Y = jax.vmap(lambda y: flatten_obs(y, names))(b.ys)
    n = jnp.sum(w)
    mean = jnp.sum(jnp.where(w[:, None], Y, 0), axis=0) / jnp.maximum(n, 1)
    dev = jnp.where(w[:, None], Y - mean, 0)
    return n.astype(mean.dtype), mean, dev.T @ dev


def merge_flat_moments(a, b):
    na, ma, Ma = a
    nb, mb, Mb = b
    n = na + nb
    d = mb - ma
    return n, ma + d * (nb / jnp.maximum(n, 1)), Ma + Mb + jnp.outer(d, d) * (na * nb / jnp.maximum(n, 1))


def add(a, b):
    return jax.tree_util.tree_map(jnp.add, a, b)
