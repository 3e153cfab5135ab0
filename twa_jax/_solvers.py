"""The TWA stochastic differential equation as a diffrax term, and two Stratonovich solvers.

``TWATerm`` is one diffrax term whose control over a step ``[t0, t1]`` is ``(dt, dW)``: the time
step and ``K'`` circular complex Brownian increments. Its increment is one evaluation of the
bracket of ``H~ = dt H + 2 Im(conj(L) . Phi)`` with ``Phi = (Gamma L dt + B dW) / 2``
(``docs/conventions.md``, "Effective Hamiltonian and brackets" and "Noise"), so drift and noise
cost a single gradient.

Solvers (both Stratonovich, strong order 1/2, one bracket evaluation per stage, two stages):

* :class:`RotationHeun` (default): the Heun predictor/corrector applied to the rotation
  generator ``omega`` (``ds = omega x s``): ``s' = R(omega(s)) s``,
  ``s1 = R((omega(s) + omega(s')) / 2) s``, with ``R`` the exact rotation. ``|s_k|`` is conserved
  to rounding (``docs/conventions.md``, "Integrators"). Bosons take the ordinary Heun average.
* :class:`StochasticHeun`: the plain Cartesian stochastic Heun scheme, for comparison. It does
  not conserve ``|s_k|`` and can blow up for strong dissipation.

Time-dependent models are evaluated at the stage times of the scheme: the first stage at the
step's start ``t0``, the corrector at its end ``t1`` (the trapezoidal rule of Heun's method, so
the Stratonovich scheme keeps its order). Pulses at a grid point ``t1`` act on the state at the
end of the step that reaches it.

Noise increments come from a counter-based generator inside the loop (:class:`GridNoise`): step
``j`` of the time grid draws the numbers of trajectory ``i`` from ``(key, j, i)`` in one call for
the whole chunk, so a trajectory is a pure function of the key and its index. A chunk of
trajectories is one solve of the stacked state, trajectories on the last axis (see
:class:`TWATerm`).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jax.extend import core as jcore

from ._brackets import apply_cartesian, generator_and_jumps, rotate
from ._checks import abstract_signature, memo
from ._lanes import Unsupported, _Interpreter, batch_last_call, supported
from ._model import Model
from ._noise import NoiseBasis, decompose_like
from ._random import complex_normals, step_key


log = logging.getLogger(__name__)


def one_trajectory(model: Model):
    """``one(y1, dW1, params, noise, t, dt) -> (omega (3, N), vb (2, M))``: the generator of one
    trajectory's increment over a step of length ``dt`` from ``t`` (internal state ``y1``, noise
    increments ``dW1 (K',)`` or ``None``, the factor of Gamma ``noise`` or ``None``). A
    time-dependent Gamma is factored at ``t`` on the channels of ``noise``. The one function both
    layouts evaluate (``vmap``-ed, or its jaxpr batch last)."""

    def one(y1, dW1, params, noise, t, dt):
        if noise is not None and model.gamma_depends_on_time:
            noise = decompose_like(model.gamma_of(params, t), noise)

        def phi(L):
            out = noise.apply_gamma(L) * dt
            if dW1 is not None:
                out = out + noise.xi(dW1)
            return 0.5 * out

        return generator_and_jumps(model, y1, phi if noise is not None else None, params, dt, t)

    return one


def batch_last_supported(model: Model, noise: NoiseBasis | None, params, dtype, with_dW: bool) -> bool:
    """Whether the batch-last interpreter has a rule for every primitive of the model's one-trajectory
    generator (traced abstractly; nothing runs). The reason for a no goes to the debug log. The
    answer depends on the model and the structure, shapes and dtypes of the rest, so it is kept
    per model object for those (:func:`~twa_jax._checks.memo`; tracing the generator was most of
    ``make_plan``'s time on later calls: 41 of 60 ms)."""
    sig = ("batch last", abstract_signature(noise), abstract_signature(params), jnp.dtype(dtype), with_dW)
    return memo(model, sig, lambda: _batch_last_supported(model, noise, params, dtype, with_dW))


def matrix_products(model: Model, noise: NoiseBasis | None, params, dtype, with_dW: bool) -> bool:
    """Whether one trajectory's generator multiplies by a matrix (a ``dot_general`` with an operand
    of at least two axes of length >= 2: dense couplings ``J @ s``, a dense factor of Gamma), the
    work that matrix units do. Traced abstractly once per model and signature."""
    sig = ("matrix products", abstract_signature(noise), abstract_signature(params), jnp.dtype(dtype), with_dW)
    return memo(model, sig, lambda: _matrix_products(model, noise, params, dtype, with_dW))


def _matrix_products(model, noise, params, dtype, with_dW):
    y = (jax.ShapeDtypeStruct((3, model.n_spins), dtype), jax.ShapeDtypeStruct((2, model.n_bosons), dtype))
    cdtype = jnp.result_type(dtype, jnp.complex64)
    dW = jax.ShapeDtypeStruct((noise.n_channels,), cdtype) if with_dW and noise is not None else None
    t = jax.ShapeDtypeStruct((), dtype)
    jaxpr = jax.make_jaxpr(one_trajectory(model))(y, dW, params, noise, t, t)

    def walk(jx):
        for eqn in jx.eqns:
            if eqn.primitive.name == "dot_general" and any(
                    sum(d >= 2 for d in getattr(v.aval, "shape", ())) >= 2 for v in eqn.invars):
                return True
            for sub in _subjaxprs(eqn):
                if walk(sub):
                    return True
        return False

    return walk(jaxpr.jaxpr)


def _subjaxprs(eqn):
    for v in eqn.params.values():
        for x in v if isinstance(v, (tuple, list)) else (v,):
            if hasattr(x, "eqns"):
                yield x
            elif hasattr(x, "jaxpr") and hasattr(x.jaxpr, "eqns"):
                yield x.jaxpr


def _batch_last_supported(model, noise, params, dtype, with_dW):
    n = 2
    y = (jax.ShapeDtypeStruct((3, model.n_spins, n), dtype), jax.ShapeDtypeStruct((2, model.n_bosons, n), dtype))
    cdtype = jnp.result_type(dtype, jnp.complex64)
    dW = jax.ShapeDtypeStruct((noise.n_channels, n), cdtype) if with_dW and noise is not None else None
    t = jax.ShapeDtypeStruct((), dtype)
    return supported(one_trajectory(model), (y, dW, params, noise, t, t), (True, True, False, False, False, False), n)


#: how the noise increments of a step are kept from being fused into (and recomputed by) every
#: consumer: ``"cond"`` (the result of an always-true conditional, written out once) or
#: ``"barrier"`` (an optimization barrier); ``None`` picks ``"cond"`` on CPU, where XLA fuses
#: across the barrier, and ``"barrier"`` elsewhere. Read when a program is traced (benchmarks set it)
MATERIALIZE_NOISE = None


class GridNoise(dfx.AbstractPath):
    """Brownian increments on a fixed time grid for a chunk of trajectories, one generator call
    per step for the whole chunk.

    The increment of grid step ``j`` (``[grid[j], grid[j+1]]``) for trajectory ``idx[b]`` and
    channel ``c`` is a pure function of ``(key, j, idx[b], c)`` (:mod:`twa_jax._random`), so a
    trajectory's noise never depends on the chunk it is solved in. Only increments over one grid
    step are meaningful (fixed-step solvers). Returns ``(n_batch, K')`` circular complex
    increments with ``<dW dW^*> = 2 dt``; with a batch of keys (``key`` of shape ``(P,)``: sweep
    points with independent random numbers) ``(P, n_batch, K')``. With ``batch_last`` the last two
    axes are ``(K', n_batch)`` (the generator's own layout: no transpose).
    """

    key: jax.Array  # the run's noise key, or (P,) keys
    idx: jax.Array  # (n_batch,) global trajectory indices
    grid: jax.Array
    n_channels: int = eqx.field(static=True)
    batch_last: bool = eqx.field(static=True, default=False)  # (K', n_batch) increments

    @property
    def t0(self):
        return self.grid[0]

    @property
    def t1(self):
        return self.grid[-1]

    def evaluate(self, t0, t1=None, left=True):
        del left
        if t1 is None:
            raise ValueError("GridNoise only provides increments over one grid step")
        # one scalar search per step for the whole batch (t0 is a grid point: StepTo). Unrolled:
        # the default method is a while loop of log2(len(grid)) trips, on a GPU a synchronization
        # and four kernels per trip (measured: 28 of the step's ~60 kernel launches on an H200)
        j = jnp.searchsorted(self.grid, t0, side="right", method="scan_unrolled") - 1
        dt = jax.lax.stop_gradient(t1 - t0)
        dtype = self.grid.dtype

        def draw(key):
            return complex_normals(step_key(key, j), self.idx, self.n_channels, dtype, self.batch_last)

        def scaled():
            z = jax.vmap(draw)(self.key) if self.key.ndim else draw(self.key)
            return z * jnp.sqrt(dt).astype(dtype)

        # materialized once per step: otherwise XLA duplicates the generator (cheap-looking
        # elementwise work) into every consumer fusion of the bracket, several times its cost.
        # XLA:CPU fuses across an optimization barrier; a conditional's result is always
        # materialized (j >= 0 always holds: t0 is a grid point). Elsewhere (GPU: a conditional
        # may cost a synchronization per step) the barrier stays; MATERIALIZE_NOISE forces either
        how = MATERIALIZE_NOISE or ("cond" if jax.default_backend() == "cpu" else "barrier")
        if how == "barrier":
            return jax.lax.optimization_barrier(scaled())
        shape = jax.eval_shape(scaled)
        return jax.lax.cond(j >= 0, scaled, lambda: jnp.zeros(shape.shape, shape.dtype))


class TWATerm(dfx.AbstractTerm):
    """The whole TWA right-hand side as one diffrax term, for a batch of trajectories.

    The state is a batch solved as one diffrax solve: one loop over the time grid for all
    trajectories. Every trajectory still evolves independently of the others. Two layouts
    (``layout``, chosen by the plan, :func:`twa_jax._plan.choose_layout`):

    * ``"batch_first"``: ``(spins (n_batch, 3, N), bosons (n_batch, 2, M))`` (the internal layout
      of :mod:`twa_jax._brackets` with a leading batch), the bracket ``vmap``-ed over the batch;
    * ``"batch_last"``: ``(spins (3, N, n_batch), bosons (2, M, n_batch))``, the trajectories on
      the vector lanes: the one-trajectory bracket's jaxpr evaluated with the batch as the last
      axis (:mod:`twa_jax._lanes`), the noise drawn ``(K', n_batch)``, the rotation over the
      component axis ``-3``; no transpose inside the step.

    With ``points=True`` (a sweep) the state has a leading points axis, ``(P, n_batch, 3, N)`` or
    ``(P, 3, N, n_batch)``: ``P`` parameter points,
    their parameters and factors of Gamma stacked on a leading axis, all solved in the same loop.

    Attributes:
        model: the :class:`~twa_jax.Model`.
        noise: the factorized Gamma, or ``None`` for a closed system.
        path: the noise increments, or ``None`` for noise-free dynamics (``method="no_noise"``).
        points: whether a points axis is present.
    The model parameters travel as diffrax ``args``.
    """

    model: Model
    noise: NoiseBasis | None
    path: GridNoise | None
    points: bool = eqx.field(static=True, default=False)
    pulses: tuple = ()
    layout: str = eqx.field(static=True, default="batch_first")

    @property
    def axis(self) -> int:
        """The component axis of the spins: ``(..., n_batch, 3, N)`` batch first, ``(..., 3, N,
        n_batch)`` batch last."""
        return -3 if self.layout == "batch_last" else -2

    def contr(self, t0, t1, **kwargs):
        dW = None if self.path is None else self.path.evaluate(t0, t1)
        return t1 - t0, dW

    def generator(self, t, y, args, control):
        """Rotation generator ``(omega (..., 3, N), vb (..., 2, M))`` of the increment, with the
        model's functions at the stage time ``t`` (time-dependent models; a time-dependent Gamma
        is factored there, on the channels of the plan's factor)."""
        dt, dW = control
        one = one_trajectory(self.model)
        if self.layout == "batch_last":
            return self._generator_batch_last(one, t, y, args, dt, dW)
        f = jax.vmap(one, in_axes=(0, None if dW is None else 0, None, None, None, None))
        if self.points:  # dW (n_batch, K'): common to the points; (P, n_batch, K'): per point
            f = jax.vmap(f, in_axes=(0, None if dW is None or dW.ndim == 2 else 0, 0, 0, None, None))
        return f(y, dW, args, self.noise, t, dt)

    def _generator_batch_last(self, one, t, y, args, dt, dW):
        """The generator with the trajectories on the last axis: ``one``'s jaxpr evaluated batch
        last (:mod:`twa_jax._lanes`); the points of a sweep (leading axis) ``vmap``-ed."""
        n = y[0].shape[-1]

        def f(y, dW, params, noise):
            try:
                return batch_last_call(one, (y, dW, params, noise, t, dt), (True, True, False, False, False, False), n)
            except Unsupported as e:  # the plan checked the model; a safety net, never a wrong answer
                log.debug("batch-last generator: no rule for %s; vmap over the last axis instead", e)
                return jax.vmap(one, in_axes=(-1, None if dW is None else -1, None, None, None, None), out_axes=-1)(
                    y, dW, params, noise, t, dt)

        if self.points:  # dW (K', n_batch): common to the points; (P, K', n_batch): per point
            f = jax.vmap(f, in_axes=(0, None if dW is None or dW.ndim == 2 else 0, 0, 0))
        return f(y, dW, args, self.noise)

    def vf(self, t, y, args):
        """Deterministic drift ``dy/dt`` (no noise)."""
        one = jnp.ones((), y[0].dtype)
        return apply_cartesian(y, self.generator(t, y, args, (one, None)), self.axis)

    def vf_prod(self, t, y, args, control):
        return apply_cartesian(y, self.generator(t, y, args, control), self.axis)

    def apply_pulses(self, t, y, args):
        """The state after the pulses at time ``t`` (a grid point; none: ``y`` unchanged)."""
        last = self.layout == "batch_last"
        for pulse in self.pulses:
            def kick(y, pulse=pulse):  # in the state's layout: no transpose (see Pulse.apply)
                if not self.points:
                    return pulse.apply(self.model, y, args, batch_last=last)
                return jax.vmap(lambda y1, p1: pulse.apply(self.model, y1, p1, batch_last=last))(y, args)

            y = jax.lax.cond(t == pulse.at, kick, lambda y: y, y)
        return y

    def prod(self, vf, control):
        raise NotImplementedError("TWATerm increments come from vf_prod (drift and noise together)")

    def is_vf_expensive(self, t0, t1, y, args):
        return True


class PackedTerm(dfx.AbstractTerm):
    """A :class:`TWATerm` (with its parameters) whose complex arrays are stored as real pairs.

    diffrax warns about any complex array among its terms, state and args ("complex dtype
    support is a work in progress"). The TWA state is real; only a complex Gamma (or complex
    parameters) would show up there. Packing them keeps every leaf diffrax sees real; the
    solvers unpack the term (:func:`_unwrap`) before using it, so nothing else changes.
    """

    leaves: list
    treedef: Any = eqx.field(static=True)
    complex_mask: tuple = eqx.field(static=True)

    @classmethod
    def pack(cls, term: TWATerm, params) -> "PackedTerm":
        leaves, treedef = jax.tree_util.tree_flatten((term, params))
        mask = tuple(bool(eqx.is_array(x) and jnp.iscomplexobj(x)) for x in leaves)
        leaves = [jnp.stack([jnp.real(x), jnp.imag(x)], -1) if c else x for x, c in zip(leaves, mask)]
        return cls(leaves, treedef, mask)

    def unpack(self):
        leaves = [jax.lax.complex(x[..., 0], x[..., 1]) if c else x for x, c in zip(self.leaves, self.complex_mask)]
        return jax.tree_util.tree_unflatten(self.treedef, leaves)

    @property
    def term(self):
        term, params = self.unpack()
        return _BoundTerm(term, params)

    def vf(self, t, y, args):
        return self.term.vf(t, y, None)

    def contr(self, t0, t1, **kwargs):
        return self.term.contr(t0, t1, **kwargs)

    def prod(self, vf, control):
        raise NotImplementedError("TWATerm increments come from vf_prod (drift and noise together)")

    def vf_prod(self, t, y, args, control):
        return self.term.vf_prod(t, y, None, control)


class _BoundTerm(TWATerm):
    """A :class:`TWATerm` that carries its parameters (diffrax's ``args`` are left empty)."""

    params: Any = None

    def __init__(self, term, params):
        self.model, self.noise, self.path, self.points, self.params = term.model, term.noise, term.path, term.points, params
        self.pulses, self.layout = term.pulses, term.layout

    def generator(self, t, y, args, control):
        return super().generator(t, y, self.params, control)

    def vf(self, t, y, args):
        return super().vf(t, y, self.params)

    def vf_prod(self, t, y, args, control):
        return super().vf_prod(t, y, self.params, control)

    def apply_pulses(self, t, y, args):
        return super().apply_pulses(t, y, self.params)


def _unwrap(terms) -> TWATerm:
    """diffrax wraps terms (``WrapTerm``, for the integration direction); we integrate forward
    only, so the inner ``TWATerm`` is used as it is."""
    while not isinstance(terms, TWATerm):
        terms = terms.term
    return terms


class GridInterpolation(dfx.AbstractLocalInterpolation):
    """The state at the two ends of a step, nothing in between.

    ``simulate`` puts every save time on the time grid (``StepTo``), so a save never needs a
    value inside a step: the save at ``t`` uses the step ending at ``t`` (or the initial state at
    ``t0``). Unlike ``LocalLinearInterpolation``, nothing is computed unless a save happens
    (diffrax hoists the linear interpolation's ``y1 - y0``, a pass over the whole state, into
    every step)."""

    t0: jax.Array
    t1: jax.Array
    y0: tuple
    y1: tuple

    def evaluate(self, t0, t1=None, left=True):
        del left
        if t1 is not None:
            return jax.tree_util.tree_map(jnp.subtract, self.evaluate(t1), self.evaluate(t0))
        at_end = t0 > self.t0
        return jax.tree_util.tree_map(lambda a, b: jnp.where(at_end, b, a), self.y0, self.y1)


def _half_sum(a, b):
    return jax.tree_util.tree_map(lambda u, v: 0.5 * (u + v), a, b)


class GridSteps(dfx.AbstractStepSizeController):
    """Steps from one point of a time grid to the next, up to the solve's ``t1``.

    diffrax's ``StepTo`` needs ``ts[-1] == t1`` and loops over every point of ``ts``; here the
    grid may go on past ``t1`` (:func:`twa_jax._plan.padded_grid`: runs of different lengths share
    one compiled program) and the loop stops at ``t1``, a grid point (diffrax's ``tprev < t1``)."""

    ts: jax.Array
    start: Any = 0  # the index of the solve's t0 in ``ts`` (a solve over one save interval)

    def wrap(self, direction):
        return self  # forward in time only

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        del terms, t0, t1, y0, dt0, args, func, error_order
        return self.ts[self.start + 1], self.start + 2

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, controller_state):
        del t0, y0, y1_candidate, args, y_error, error_order
        return True, t1, self.ts[controller_state], False, controller_state + 1, dfx.RESULTS.successful


class _AbstractTWAHeun(dfx.AbstractStratonovichSolver):
    term_structure: ClassVar = dfx.AbstractTerm  # a TWATerm, or a PackedTerm of one
    interpolation_cls: ClassVar = GridInterpolation

    def order(self, terms):
        return 2

    def strong_order(self, terms):
        return 0.5

    def init(self, terms, t0, t1, y0, args):
        return None

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)


class RotationHeun(_AbstractTWAHeun):
    """Norm-preserving Heun scheme: Heun on the rotation generator, exact rotations of spins."""

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del solver_state, made_jump
        terms = _unwrap(terms)
        control = terms.contr(t0, t1)
        s0, b0 = y0
        ax = terms.axis
        g0 = terms.generator(t0, y0, args, control)
        y_pred = (rotate(s0, g0[0], ax), b0 + g0[1])
        g1 = terms.generator(t1, y_pred, args, control)
        om, vb = _half_sum(g0, g1)
        y1 = terms.apply_pulses(t1, (rotate(s0, om, ax), b0 + vb), args)
        return y1, None, dict(y0=y0, y1=y1), None, dfx.RESULTS.successful


class StochasticHeun(_AbstractTWAHeun):
    """Plain Cartesian stochastic Heun (Stratonovich); does not conserve ``|s_k|``."""

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del solver_state, made_jump
        terms = _unwrap(terms)
        control = terms.contr(t0, t1)
        k0 = apply_cartesian(y0, terms.generator(t0, y0, args, control), terms.axis)
        y_pred = jax.tree_util.tree_map(jnp.add, y0, k0)
        k1 = apply_cartesian(y_pred, terms.generator(t1, y_pred, args, control), terms.axis)
        y1 = terms.apply_pulses(t1, jax.tree_util.tree_map(lambda y, a, b: y + 0.5 * (a + b), y0, k0, k1), args)
        return y1, None, dict(y0=y0, y1=y1), None, dfx.RESULTS.successful


SOLVERS = {"rotation_heun": RotationHeun, "heun": StochasticHeun}


# --------------------------------------------------------------------------- forward-mode sensitivities
def apply_linear(closed, ins):
    """Evaluate the linear map ``closed`` (the jaxpr of a ``jax.linearize`` function) at the flat
    inputs ``ins``, where ``None`` is a symbolic zero: an equation whose linear inputs are all
    zero gives zero without being computed, so a tangent that reaches only some inputs costs only
    what depends on them. Returns the flat outputs (zeros where symbolically zero)."""
    jaxpr = closed.jaxpr
    env = {}  # var -> (value, kind): "res" (residual: no tangent), "tan", or "zero" (value None)

    def read(v):
        return (v.val, "res") if isinstance(v, jcore.Literal) else env[v]

    for v, c in zip(jaxpr.constvars, closed.consts):
        env[v] = (c, "res")
    for v, x in zip(jaxpr.invars, ins):
        env[v] = (None, "zero") if x is None else (x, "tan")
    for eqn in jaxpr.eqns:
        vals = [read(v) for v in eqn.invars]
        kinds = {k for _, k in vals}
        if "tan" not in kinds and "zero" in kinds:  # linear in its zero inputs: zero
            for v in eqn.outvars:
                env[v] = (None, "zero")
            continue
        args = [jnp.zeros(v.aval.shape, v.aval.dtype) if k == "zero" else x for (x, k), v in zip(vals, eqn.invars)]
        kind = "tan" if "tan" in kinds else "res"
        for v, x in zip(eqn.outvars, _Interpreter.bind(eqn, args)):
            env[v] = (x, kind)
    out = []
    for v in jaxpr.outvars:
        x, k = read(v)
        out.append(jnp.zeros(v.aval.shape, v.aval.dtype) if k == "zero" else x)
    return out


class _Drawn(dfx.AbstractPath):
    """The noise increments of one step, drawn once: :class:`TangentSolver` hands the same
    numbers to the primal step and to every tangent's."""

    dW: Any
    t0: Any = None
    t1: Any = None

    def evaluate(self, t0, t1=None, left=True):
        del t0, t1, left
        return self.dW


class TangentTerm(dfx.AbstractTerm):
    """A :class:`PackedTerm` and, for each group of tangents (the entries of one differentiated
    array), the term's leaves that move with it (``which[g]``, indices into ``term.leaves``) and
    their tangents ``dleaves[g]`` (one per entry, on a leading axis).

    A leaf that does not move with a group's array gets no tangent at all (a symbolic zero), so
    each parameter's tangent pays only for its own paths: the drive's tangent does not carry
    ``dGamma L`` or ``dB dW`` (a ``vmap`` over one-hot tangents of every parameter would, with
    zeros). The state's tangents are one array per group, entries on a leading axis."""

    term: PackedTerm
    dleaves: tuple
    which: tuple = eqx.field(static=True)

    def vf(self, t, y, args):
        """The deterministic drift of the trajectories and of their tangents."""
        y, tangents = y
        out = []
        for T, which, dleaves in zip(tangents, self.which, self.dleaves):
            primal = [self.term.leaves[j] for j in which]

            def one(T1, d1, which=which, primal=primal):
                drift = lambda y_, leaves: self.bound(leaves, which).vf(t, y_, None)  # noqa: E731
                return jax.jvp(drift, (y, primal), (T1, list(d1)))[1]

            out.append(jax.vmap(one)(T, dleaves))
        return self.term.vf(t, y, None), tuple(out)

    def contr(self, t0, t1, **kwargs):
        return self.term.contr(t0, t1, **kwargs)

    def prod(self, vf, control):
        raise NotImplementedError("TangentTerm is stepped by TangentSolver only")

    def bound(self, leaves=(), which=()):
        """The unpacked term, with ``leaves`` in place of the packed leaves ``which``."""
        new = list(self.term.leaves)
        for j, v in zip(which, leaves):
            new[j] = v
        return PackedTerm(new, self.term.treedef, self.term.complex_mask).term


class TangentSolver(_AbstractTWAHeun):
    """Forward-mode sensitivities in one solve: the state is ``(y, (T_1, ..., T_G))``, the
    trajectories and their tangents along the scalar parameters, one group ``T_g`` (entries on a
    leading axis) per differentiated array. A step is the ``inner`` solver's step (the same
    scheme, so the tangents are the exact derivatives of the discrete trajectories) with its
    Jacobian-vector product per parameter.

    The noise of the step is drawn once. The step is linearized once (``jax.linearize``, in the
    state and every leaf of the term that moves with some parameter), and its linear map is
    applied to each tangent (``vmap``-ed within a group) with the leaves that do not move with
    its array as symbolic zeros (:func:`apply_linear`): each tangent pays only for its own
    paths, the primal once.
    (Separate ``jax.jvp``s per parameter would compute the primal once per parameter: XLA does not
    merge computations that pass through conditionals fed with different tangents.)"""

    inner: _AbstractTWAHeun

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del args, solver_state
        while not isinstance(terms, TangentTerm):
            terms = terms.term
        y, tangents = y0
        path = terms.bound().path
        drawn = None if path is None else _Drawn(path.evaluate(t0, t1), t0, t1)

        def stepped(y, leaves=(), which=()):
            term = terms.bound(leaves, which)
            if drawn is not None:
                term = eqx.tree_at(lambda b: b.path, term, drawn)
            return self.inner.step(term, t0, t1, y, None, None, made_jump)[0]

        moved = sorted(set().union(*terms.which))
        y1, lin = jax.linearize(lambda y_, leaves: stepped(y_, leaves, moved), y, [terms.term.leaves[j] for j in moved])
        linear = jax.make_jaxpr(lin)(y, [terms.term.leaves[j] for j in moved])
        structure = jax.tree_util.tree_structure(y)

        def along(which, T1, d1):  # one tangent: the leaves outside `which` are symbolic zeros
            given = dict(zip(which, d1))
            ins = jax.tree_util.tree_leaves(T1) + [given.get(j) for j in moved]
            return jax.tree_util.tree_unflatten(structure, apply_linear(linear, ins))

        out = tuple(jax.vmap(lambda T1, d1, which=which: along(which, T1, d1))(T, dleaves)
                    for T, which, dleaves in zip(tangents, terms.which, terms.dleaves))
        y1 = (y1, out)
        return y1, None, dict(y0=y0, y1=y1), None, dfx.RESULTS.successful
