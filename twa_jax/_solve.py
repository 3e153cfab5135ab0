"""``simulate``: from a model and an initial state to trajectory-averaged observables.

A thin shell over the run plan (:mod:`twa_jax._plan`: validation, Gamma factored once, the time
grid, chunk sizes) and the engine (:mod:`twa_jax._engine`: chunks of trajectories over all
devices, reduced to streaming moments inside the compiled function). Memory is bounded by the
chunk, never by ``n_traj``.
"""

from __future__ import annotations

import math
import time
import warnings

import jax.numpy as jnp
import numpy as np

from . import _engine, _xla_workaround
from ._checks import all_concrete, is_concrete
from ._model import Model
from ._observables import finalize, finalize_all
from ._plan import make_plan
from ._result import Result, mode_dims


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
    target_sem: float | None = None,
    time_average: dict | None = None,
    keep_trajectories: int | None = None,
    progress: bool | None = None,
    pulses=None,
) -> Result:
    r"""Simulate a driven-dissipative model with the truncated Wigner approximation.

    Solves the Stratonovich SDE :math:`d\psi = \{\psi, \tilde H\}` with
    :math:`\tilde H = H + 2\sum_i \mathrm{Im}(\bar L_i \Phi_i)`,
    :math:`\Phi = (\Gamma L + \xi)/2`, :math:`\langle \xi \xi^\dagger\rangle = 2\Gamma\,\delta(t-t')`
    (paper Eqs. 7-12) for ``n_traj`` trajectories sampled from ``initial``, and returns the mean
    and standard error of each observable at each save time.

    Args:
        model: the :class:`~twa_jax.Model`.
        initial: an initial state from :mod:`twa_jax.states` (or your own
            :class:`~twa_jax.states.AbstractState`).
        ts: ``(n_times,)`` strictly increasing save times; the initial state is at ``ts[0]``.
        n_traj: number of trajectories (with ``target_sem``: the most it may use;
            ``method="mean_field"``: leave out or 1).
        key: int seed or ``jax.random.key``. Trajectory ``i`` uses ``fold_in(key, i)``, so results
            do not depend on ``chunk_size`` or ``devices``.
        params: pytree of parameters passed to the model's functions. For a model with default
            parameters (the built-in models), a dict that overrides some of them.
        observables: ``{name: f(spins, bosons)}``; default: the model's own observables if it has
            them, else site-averaged ``sx, sy, sz`` and the per-mode occupation ``n = <a^dag a>``.
        dt: time step; default ``0.02 / (fastest rate of the model)`` (reported as ``Result.dt``).
            Each interval between save times is split into equal steps no longer than ``dt``. A
            ``dt`` more than 25 times the default gets a warning. New parameter values reuse the
            compiled program when the number of steps stays the same, so fix ``dt`` to scan a
            parameter cheaply.
        solver: ``"rotation_heun"`` (default; norm-preserving) or ``"heun"`` (plain stochastic
            Heun), or an instance of :class:`~twa_jax.RotationHeun` / :class:`~twa_jax.StochasticHeun`.
        method: ``"twa"`` (sampled initial states and dissipative noise), ``"no_noise"`` (sampled
            initial states, no noise), ``"mean_field"`` (one unsampled noise-free trajectory;
            observables are evaluated on it, so the default boson number is ``|a|^2``, and a
            Weyl symbol of your own with a vacuum term, such as ``|a|^2 - 1/2``, keeps that term).
        chunk_size: trajectories per device in one compiled batch (default: from the device's
            free memory; at most ``n_traj / len(devices)`` rounded up to a size that nearby
            ``n_traj`` share, so they reuse the compiled program; padding is masked). Prefer an
            odd multiple of 16 (528, 1040): ``2**k`` trajectories run 20-37 % slower on a CPU.
        devices: the devices the trajectories are spread over (default: ``jax.devices()``, all
            devices of the default backend, of every process after ``jax.distributed.initialize()``;
            on a CPU, where ``import twa_jax`` makes one device per core, as many as give each
            device at least 2048 spin-trajectories). Results do not depend on the devices
            (trajectory ``i`` always uses ``fold_in(key, i)``; only the order of the sums changes).
        throw: raise ``RuntimeError`` if any trajectory turns non-finite (default: warn, count
            them in ``Result.n_failed`` and leave them out of the statistics).
        target_sem: keep adding chunks of trajectories until the largest standard error of the
            recorded observables (over all times and components) is at most this; ``n_traj`` is
            the most it may use, ``Result.n_traj`` the number used. A pilot chunk of about 1000
            trajectories measures the spread; later chunks are sized from it, so the run stops
            within about 1.3x of the count the target needs. Trajectories are the same as in a
            fixed run: a run stopped at ``n`` trajectories equals a run with ``n_traj=n``. If
            ``n_traj`` runs out first, a ``RuntimeWarning`` says so, with the count needed.
        time_average: ``{name: (t0, t1)}``: each trajectory's average of observable ``name`` over
            the save times in ``[t0, t1]``, returned as ``Result.average[name]`` with
            ``Result.average_sem[name]``, the standard error from the spread between trajectories
            (successive times of one trajectory are correlated, so per-time errors do not combine).
        keep_trajectories: ``k``: also return the observables of the first ``k`` trajectories,
            ``Result.trajectories[name]`` of shape ``(k, n_times, ...)``; statistics unchanged.
        progress: a progress bar over chunks (``tqdm``, terminals and notebooks); default: shown
            when the run has more than one chunk.
        pulses: a list of :class:`~twa_jax.Pulse`: instantaneous unitaries applied to every
            trajectory at their times (within ``ts``'s span); a save time equal to a pulse's time
            records the state just after it.

    Returns:
        A :class:`~twa_jax.Result`.

    Raises:
        TypeError, ValueError: on bad input, before anything is compiled.
        IndexError: a model function indexes out of range (JAX would clamp the index silently).
        RuntimeError: every trajectory (or, with ``throw=True``, any) turned non-finite.

    Example:
        >>> import jax.numpy as jnp, twa_jax as tw
        >>> model = tw.Model(lambda s, a, p: s[:, 0].sum(), jumps=lambda s, a, p: (s[:, 0] - 1j * s[:, 1]) / 2,
        ...                  gamma=jnp.array([0.5]), n_spins=1)
        >>> res = tw.simulate(model, tw.states.spins_down(1), jnp.linspace(0, 2, 5), n_traj=64, key=0)
        >>> res.mean["sz"].shape
        (5,)
    """
    t_start = time.perf_counter()
    # === the run plan: every argument checked, Gamma factored, the grid and the chunk size
    plan = make_plan(
        model, initial, ts, n_traj=n_traj, key=key, params=params, observables=observables, dt=dt,
        solver=solver, method=method, chunk_size=chunk_size, devices=devices, throw=throw,
        target_sem=target_sem, time_average=time_average, keep_trajectories=keep_trajectories,
        progress=progress, pulses=pulses,
    )
    if plan.n_traj == 1 and plan.method != "mean_field":
        warnings.warn("n_traj=1: the standard errors are NaN (they need at least 2 trajectories)", RuntimeWarning,
                      stacklevel=2)
    if target_sem is not None and not all_concrete(plan.params):
        raise ValueError("target_sem decides on concrete standard errors; it cannot be used under jax.grad/jax.jit")
    chunk = plan.chunk()

    # === the engine: every chunk through the moments reduction
    plain = _engine.Moments(plan.time_average)
    keeping = _engine.Moments(plan.time_average, plan.keep_trajectories)

    acc, n_used = _engine.run(
        plan, lambda start: keeping if start < plan.keep_trajectories else plain, _engine.combine_moments,
        chunk_size=chunk, next_size=None if plan.target_sem is None else _target_sem_sizes(plan, chunk),
    )

    # === finish: statistics, failures, the Result
    deterministic = plan.method == "mean_field"
    stats = finalize_all(acc["moments"], deterministic)
    if plan.target_sem is not None:
        warn_if_target_missed(plan.target_sem, _largest_sem(acc), n_used, "simulate")
    mean, sem = {k: v[0] for k, v in stats.items()}, {k: v[1] for k, v in stats.items()}
    average = average_sem = None
    if plan.time_average:
        stats = finalize_all(acc["averages"], deterministic)
        average, average_sem = {k: v[0] for k, v in stats.items()}, {k: v[1] for k, v in stats.items()}
    kept = None
    if plan.keep_trajectories:
        kept = {k: v[: plan.keep_trajectories] for k, v in acc["kept"].items()}
    n_failed = acc["n_bad"]
    if is_concrete(n_failed):
        n_failed = int(n_failed)
        if n_failed:
            _report_failures(plan, acc, n_failed, n_used)
    return Result(
        ts=plan.ts,
        mean=mean,
        sem=sem,
        n_traj=n_used,
        n_failed=n_failed,
        method=plan.method,
        solver=plan.solver_name,
        dt=plan.dt,
        n_steps=plan.n_steps,
        chunk_size=chunk,
        key=plan.key_meta,
        params=plan.params,
        wall_time=time.perf_counter() - t_start,
        average=average,
        average_sem=average_sem,
        trajectories=kept,
        dims=mode_dims(plan.observables),
        xla_workaround=getattr(_xla_workaround, "STATUS", None),
    )


PILOT_TRAJECTORIES = 1000  # target_sem: the first chunk, enough for a spread good to ~5 %


def _largest_sem(acc):
    """The largest standard error of ``simulate``'s moments (over observables, times, components)."""
    return max(float(jnp.max(finalize(m)[1])) for m in acc["moments"].values())


def warn_if_target_missed(target, largest, n_used, where):
    """Warn when a ``target_sem`` run used its whole ``n_traj`` without reaching the target,
    with the count the target needs (the standard error falls as ``n**-1/2``)."""
    if np.isfinite(largest) and largest <= target:
        return
    need = "" if not np.isfinite(largest) else f"; about {math.ceil(n_used * (largest / target) ** 2):,} are needed"
    warnings.warn(f"{where}: target_sem={target:g} not reached: the largest standard error is {largest:.3g} after "
                  f"all n_traj={n_used:,} trajectories{need}. Raise n_traj (or the target)", RuntimeWarning, stacklevel=3)


def _target_sem_sizes(plan, chunk, largest_sem=_largest_sem):
    """``target_sem``'s chunk sizes (per device): a pilot chunk of about
    :data:`PILOT_TRAJECTORIES`, then what the measured spread says is still needed (the
    standard error falls as ``n**-1/2``) plus 5 %, in whole pilots (sizes recur, so their
    programs are reused) and at most ``chunk``; 0 once the largest standard error is at most
    the target. Which trajectories run does not depend on the sizes (trajectory ``i`` is always
    the same), so the result equals a fixed run of the count used."""
    n_dev = plan.n_devices
    pilot = min(chunk, -(-PILOT_TRAJECTORIES // n_dev))

    def next_size(acc, used):
        if acc is None:
            return pilot
        largest = largest_sem(acc)
        if largest <= plan.target_sem:
            return 0
        if not np.isfinite(largest):
            return chunk
        more = used * (largest / plan.target_sem) ** 2 * 1.05 - used
        return min(chunk, pilot * max(1, math.ceil(more / n_dev / pilot)))

    return next_size


def _report_failures(plan, acc, n_failed, n_used):
    """Warn (or raise, with ``throw`` or when every trajectory failed) with what is true: how
    many, which trajectory first, the earliest save time, and what to change. A trajectory whose
    state stayed finite but an observable did not is the observable's doing (a log or a square
    root of a negative number, a division by zero), not the step's: the message names it."""
    t_bad = float(np.asarray(plan.ts)[int(acc["first_bad_time"])])
    first = int(acc["first_bad_traj"])
    n_state = int(acc["n_state_bad"])
    obs_only = {k: int(v) for k, v in acc["obs_only_bad"].items() if int(v)}
    where = f"the first is trajectory {first}; the earliest failure is by the save time t = {t_bad:.4g}"
    named = ("observable " if len(obs_only) == 1 else "observables ") + ", ".join(
        f"{k!r} (in {v} trajectories)" for k, v in obs_only.items())
    if n_state == 0:
        msg = (
            f"{n_failed} of {n_used} trajectories were left out of the statistics: the state stayed finite, "
            f"but the {named} {'is' if len(obs_only) == 1 else 'are'} non-finite (NaN or inf) ({where}). "
            "The dynamics are fine; the observable function produces the NaN (e.g. jnp.log or jnp.sqrt of "
            "a negative value, a division by zero): change that observable, not dt"
        )
    else:
        advice = (
            "reduce dt" if plan.solver_name == "rotation_heun"
            else "reduce dt or use the norm-preserving solver='rotation_heun'"
        )
        msg = (
            f"{n_state} of {n_used} trajectories became non-finite and were left out of the statistics "
            f"({where}; dt={plan.dt:.3g}, solver={plan.solver_name!r})"
        )
        if n_failed > n_state:
            msg += (
                f"; {n_failed - n_state} more were left out because, on a finite state, the {named} "
                f"{'is' if len(obs_only) == 1 else 'are'} non-finite (the observable's doing, not the step's)"
            )
        msg += f"; {advice}"
    if plan.throw or n_failed == n_used:
        raise RuntimeError(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=3)
