"""``value_and_grad``: chunked pathwise gradients of a loss of trajectory means.

A trajectory is a pure function of its key and the parameters, so with a fixed key (common random
numbers) the trajectory mean of an observable is a smooth function of the parameters and its
``jax.grad`` is the pathwise derivative: an unbiased estimate of ``d<O>/d theta`` that equals the
central finite difference taken with the same key.

Memory. Reverse mode through ``diffrax.diffeqsolve`` uses its ``RecursiveCheckpointAdjoint``: it
differentiates the discrete solver exactly (what matches finite differences with the same key),
keeps about ``sqrt(2 n_steps)`` copies of the state per trajectory (online binomial checkpointing)
and recomputes each step at most about once more.

Chunks. The mean over ``n_traj`` trajectories is ``sum_chunks S_c / n`` with ``S_c`` the sum over
one chunk, linear in the chunks even when the loss is not linear in the mean. So
``dL/dtheta = sum_c (dL/dmean / n) . dS_c/dtheta``: a forward pass gives the mean and the cotangent
``dL/dmean``, then one vector-Jacobian product per chunk accumulates the gradient. Only one chunk's
checkpoints are alive at a time; the chunk is sized by the plan's memory rule. When all
trajectories fit in one chunk, value and gradient come from a single pass. Chunks are sharded
over the plan's devices like ``simulate``'s.

Forward mode. With at most :data:`FORWARD_MODE_MAX_PARAMS` real parameters (and no
``checkpoints``), one pass carries a tangent per parameter next to the state
(``_solvers.TangentSolver``: the step linearized once, its linear map applied to each tangent
with only the parts of the model that move with that parameter): the chunk sums and their
derivatives, then ``dL = Re ct . dmean`` with the loss's cotangent ``ct`` at the mean. No stored
states and no second pass; the same numbers as reverse mode up to rounding.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from . import _engine
from ._model import Model
from ._noise import KEEP_RTOL
from ._plan import make_plan


def check_loss_value(v):
    if not hasattr(v, "shape") or v.shape != () or not jnp.issubdtype(v.dtype, jnp.floating):
        raise TypeError(f"loss must return a real scalar, got {getattr(v, 'shape', type(v))} {getattr(v, 'dtype', '')}")


def mean_struct(plan, names=None):
    """``{name: ShapeDtypeStruct (n_times, ...)}`` of the trajectory means."""
    shapes, dtypes = plan.shapes, dict(plan.obs_dtypes)
    names = shapes if names is None else names
    return {k: jax.ShapeDtypeStruct((len(plan.ts),) + tuple(shapes[k]), dtypes[k]) for k in names}


def zero_rate_tolerance(dtype) -> float:
    """Relative size of the null-null block of ``dGamma`` above which a direction counts as
    switching on a zero rate: ``1e-8`` in float64, ``1e4 eps = 1.2e-3`` in float32, where the
    kept eigenvectors are only accurate to ``eps``. A rank-preserving direction (``Gamma0 * G1``
    for the lambda/5 dipole chain of 20 or 100 atoms) leaves 7e-8-1.3e-7 in float32 and 3e-12 in
    float64; a rate switched on from 0 leaves a block of the order of ``|dGamma|``."""
    return max(1e-8, 1e4 * float(np.finfo(np.dtype(dtype)).eps))


def check_zero_rates(plan, diff, rest):
    """Refuse a derivative with respect to parameters that move a Gamma channel whose rate is
    zero now: the noise amplitude is ``sqrt(rate)``, whose derivative is infinite at 0, so the
    pathwise derivative does not exist there (the mean is smooth; a pathwise estimate would be a
    finite, wrong number)."""
    model, noise = plan.model, plan.noise
    if noise is None or not callable(model.gamma):
        return
    if noise.diagonal:
        g = np.asarray(noise.gamma)
        null = np.nonzero(g <= KEEP_RTOL * max(g.max(initial=0.0), 0.0))[0]
        if not null.size:
            return
        project = lambda dG: jnp.real(dG)[null]  # noqa: E731
    else:
        if noise.n_channels == noise.n_jumps:  # full rank: no null space (no new eigendecomposition)
            return
        F = np.asarray(noise.factor)  # V_r sqrt(w_r): its normalized columns span the range
        Vr = F / np.linalg.norm(F, axis=0)

        def project(dG):  # (1 - P) dG (1 - P), P = V_r V_r^dag: the null-null block
            dG = np.asarray(dG)
            left = dG - Vr @ (np.conj(Vr).T @ dG)
            return left - (left @ Vr) @ np.conj(Vr).T
    leaves, treedef = jax.tree_util.tree_flatten_with_path(diff)
    for i, (path, leaf) in enumerate(leaves):
        if not eqx.is_inexact_array(leaf):
            continue

        def gamma_of_leaf(x, i=i):
            vals = [lf for _, lf in leaves]
            vals[i] = x
            return jnp.asarray(model.gamma_of(_engine.combine_params(jax.tree_util.tree_unflatten(treedef, vals), rest)))

        tangent = jnp.ones_like(leaf)
        _, dG = jax.jvp(gamma_of_leaf, (leaf,), (tangent,))
        scale = float(np.max(np.abs(np.asarray(dG)), initial=0.0))
        # rounding leaves a few eps * |dG| in the null block of a rank-preserving direction (the
        # eigenvectors of the kept channels are only that accurate); a rank-changing one leaves ~|dG|
        if np.max(np.abs(np.asarray(project(dG))), initial=0.0) > zero_rate_tolerance(dG.dtype) * scale:
            name = jax.tree_util.keystr(path) or "params"
            raise ValueError(
                f"the derivative with respect to params{name} does not exist here: it changes a "
                "dissipation rate that is currently 0, and the noise amplitude sqrt(rate) has an "
                "infinite derivative at 0 (the pathwise estimator would return a finite, wrong "
                "number). Evaluate at a small positive rate, or parametrize the rate to stay "
                "positive (fit: bounds=(0, None))"
            )


#: ``value_and_grad`` differentiates in forward mode (one tangent per parameter, no stored
#: states) when there are at most this many real scalar parameters and no ``checkpoints`` were
#: asked for; else in reverse mode. Measured (benchmarks/README.md, bench_grad.py, N = 100 x 1000
#: x 1000 steps, one tangent per parameter next to the state): 2 parameters 3.3-3.6x the forward
#: run, 3 (couplings from the lattice spacing) 5.1x against 7.2x in reverse mode, 4 (two more block
#: fields) 13.2 s against 17.1 s, 5: 15.4 s against 15.2 s (same time, 0.6x the memory); forward
#: mode grows by about 0.3-1.4 forward runs per parameter, reverse mode stays at 7-9 whatever the
#: number, with sqrt(2 n_steps) stored states
FORWARD_MODE_MAX_PARAMS = 4


def uses_forward_mode(plan, diff) -> bool:
    x = jax.flatten_util.ravel_pytree(diff)[0]
    return not jnp.iscomplexobj(x) and 0 < x.size <= FORWARD_MODE_MAX_PARAMS and plan.checkpoints is None


def value_and_grad_forward(loss, plan, diff, rest):
    """:func:`value_and_grad_plan` in forward mode: one pass gives the chunk sums and their
    derivatives along each parameter; the loss's gradient is the contraction of its cotangent at
    the mean with the mean's derivatives (``dL = Re sum ct . dmean``, JAX's convention also for
    complex observables)."""
    x, unravel = jax.flatten_util.ravel_pytree(diff)
    (sums, dsums, n, bad), _ = _engine.run(
        plan, _engine.SumsJVP(), _engine.add, chunk_size=plan.chunk(rows=1 + x.size), params=diff, extra=rest,
        refactor=callable(plan.model.gamma), adjoint="forward", desc="forward mode")
    scale = 1 / jnp.maximum(n, 1)
    mean = {k: v * scale for k, v in sums.items()}
    val, vjp_loss = jax.vjp(loss, mean)
    check_loss_value(val)
    (ct,) = vjp_loss(jnp.ones((), val.dtype))
    g = sum(jnp.real(jnp.tensordot(dsums[k] * scale, ct[k], axes=jnp.ndim(ct[k]))) for k in ct)
    return val, unravel(g), mean, n, bad


def value_and_grad_plan(loss, plan, diff, rest):
    """``(loss, grad, mean, n_good, n_failed)`` at ``combine(diff, rest)``, chunk by chunk."""
    if uses_forward_mode(plan, diff):
        return value_and_grad_forward(loss, plan, diff, rest)
    refactor = callable(plan.model.gamma)
    n_traj = plan.n_traj
    chunk = plan.reverse_chunk()
    if chunk * plan.n_devices >= n_traj:
        core, diff, rest = _engine._onto_mesh((plan.device_part(), diff, rest), plan.devices)
        (val, (mean, n, bad)), g = _engine._chunk(
            core, diff, jnp.asarray(0), chunk, _engine.LossAndGrad(loss), rest, refactor, "reverse")
        return val, g, mean, n, bad
    (sums, n, bad), _ = _engine.run(plan, _engine.Sums(), _engine.add, chunk_size=chunk, params=diff, extra=rest,
                                    refactor=refactor, adjoint="reverse", desc="forward pass")
    mean = {k: v / jnp.maximum(n, 1) for k, v in sums.items()}
    val, vjp_loss = jax.vjp(loss, mean)
    check_loss_value(val)
    (ct,) = vjp_loss(jnp.ones((), val.dtype))
    ct = jax.tree_util.tree_map(lambda c: c / jnp.maximum(n, 1), ct)
    g, _ = _engine.run(plan, _engine.SumsVJP(), _engine.add, chunk_size=chunk, params=diff, extra=(rest, ct),
                       refactor=refactor, adjoint="reverse", desc="reverse pass")
    return val, g, mean, n, bad


def warn_failed(bad, n_traj):
    bad = int(bad)
    if bad == n_traj:
        raise RuntimeError(f"all {n_traj} trajectories became non-finite: {_engine.NONFINITE_ADVICE}")
    if bad:
        warnings.warn(f"{bad} of {n_traj} trajectories became non-finite and were left out ({_engine.NONFINITE_ADVICE})",
                      RuntimeWarning, stacklevel=3)


def value_and_grad(
    loss: Callable,
    model: Model,
    initial,
    ts,
    *,
    params,
    n_traj: int,
    key,
    observables: dict | None = None,
    dt: float | None = None,
    solver="rotation_heun",
    method: str = "twa",
    chunk_size: int | None = None,
    devices=None,
    checkpoints: int | None = None,
    progress: bool | None = None,
    pulses=None,
):
    r"""Value and pathwise gradient of a loss of trajectory means, accumulated chunk by chunk.

    Equivalent to ``jax.value_and_grad(lambda p: loss(tw.simulate(model, initial, ts,
    params=p, ...).mean))(params)`` with the same key (the same trajectories, so the same numbers
    up to rounding), but with memory bounded by one chunk of trajectories: the mean is computed
    first, then each chunk contributes the vector-Jacobian product of its sum with the cotangent
    :math:`\partial L/\partial \bar O / n` (exact, since the mean is linear in the chunk sums).
    Time steps are differentiated by diffrax's checkpointed adjoint (about
    :math:`\sqrt{2 n_\mathrm{steps}}` stored states per trajectory), or, for at most
    :data:`FORWARD_MODE_MAX_PARAMS` (4) real scalar parameters and no ``checkpoints``, in forward
    mode: a tangent per parameter carried next to the trajectories in the same solve, each paying
    only for the parts of the model its parameter moves (3.3-3.6x the time of a forward run and
    1.3-1.4x its memory at two parameters, ``benchmarks/README.md``).

    Args:
        loss: ``loss(mean) -> real scalar`` with ``mean`` the dict ``{name: (n_times, ...)}`` of
            trajectory means (as ``Result.mean``). Pass the same function object again to reuse
            the compiled program.
        model, initial, ts: as in :func:`~twa_jax.simulate`.
        params: the parameters to differentiate with respect to: the gradient is taken with
            respect to every floating leaf of ``params`` (an integer such as ``1`` is held fixed,
            with a warning: write ``1.0``); the model's other default parameters are merged in
            and held fixed, as in ``simulate``. Must be concrete.
        n_traj, key, observables, dt, solver, method, chunk_size, devices, progress, pulses: as in
            :func:`~twa_jax.simulate` (``key`` required; default observables: the model's).
        checkpoints: states stored per trajectory for the reverse pass (default: diffrax's,
            about ``sqrt(2 n_steps)``). Up to ``n_steps``: more memory per trajectory, fewer
            steps recomputed (``benchmarks/README.md`` measures the trade).

    Returns:
        ``(value, grads)``: the loss (a scalar array) and a pytree like ``params`` (``None`` at
        non-differentiated leaves).

    Raises:
        TypeError, ValueError: on bad input (as ``simulate``), on a loss that does not return a
            real scalar, when called with traced params, or for a derivative with respect to a
            parameter that moves a dissipation rate that is currently zero (it does not exist).

    Example:
        >>> import jax.numpy as jnp, numpy as np, twa_jax as tw
        >>> model = tw.Model(lambda s, a, p: p["Omega"] * s[:, 0].sum(),
        ...                  jumps=lambda s, a, p: (s[:, 0] - 1j * s[:, 1]) / 2,
        ...                  gamma=lambda p: jnp.array([p["gamma"]]), n_spins=1)
        >>> loss = lambda mean: jnp.sum(mean["sz"] ** 2)
        >>> val, g = tw.value_and_grad(loss, model, tw.states.spins_down(1), np.linspace(0, 1, 5),
        ...                            params={"Omega": 1.0, "gamma": 0.5}, n_traj=32, key=0, dt=0.05)
        >>> sorted(g)
        ['Omega', 'gamma']
    """
    if not callable(loss):
        raise TypeError(f"loss must be a function loss(mean) -> scalar, got {loss!r}")
    params = {} if params is None else params
    plan = make_plan(model, initial, ts, n_traj=n_traj, key=key, params=params, observables=observables, dt=dt,
                     solver=solver, method=method, chunk_size=chunk_size, devices=devices, checkpoints=checkpoints,
                     progress=progress, differentiable=True, pulses=pulses)
    try:
        out = jax.eval_shape(loss, mean_struct(plan))
    except Exception as e:
        raise TypeError(f"loss(mean) failed on the means of observables {sorted(plan.shapes)}: {e}") from e
    check_loss_value(out)
    warn_integer_params(params)
    diff, rest = _split(plan.params, params)
    check_zero_rates(plan, diff, rest)
    val, g, _, _, bad = value_and_grad_plan(loss, plan, diff, rest)
    warn_failed(bad, plan.n_traj)
    return val, g


def warn_integer_params(params):
    """Warn about integer leaves of ``params``: they get no derivative (``None``), which is right
    for a count or an index and a trap for a rate written ``1`` instead of ``1.0``."""
    def integer(v):
        try:
            return not isinstance(v, bool) and jnp.issubdtype(jnp.result_type(v), jnp.integer)
        except TypeError:  # not a number: the plan's checks name it
            return False

    paths = [jax.tree_util.keystr(k) for k, v in jax.tree_util.tree_flatten_with_path(params)[0] if integer(v)]
    if paths:
        warnings.warn(f"params{', params'.join(paths)} {'is an integer' if len(paths) == 1 else 'are integers'}: "
                      "held fixed, no derivative (None in the gradient). Write a float (1.0, not 1) to "
                      "differentiate with respect to it", UserWarning, stacklevel=3)


def _split(merged, given):
    """``(diff, rest)``: the floating leaves of what the caller gave are differentiated; the
    defaults merged in, and the caller's non-floating leaves, are held fixed
    (``rest = (other parameters, fixed leaves)``, see :func:`~twa_jax._engine.combine_params`)."""
    if isinstance(merged, dict) and isinstance(given, dict):
        others = {k: v for k, v in merged.items() if k not in given}
        diff, fixed = eqx.partition({k: merged[k] for k in given}, eqx.is_inexact_array)
        return diff, (others, fixed)
    diff, fixed = eqx.partition(merged, eqx.is_inexact_array)
    return diff, (None, fixed)
