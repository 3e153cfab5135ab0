"""Batch-last evaluation of a one-trajectory function: the trajectories on the vector lanes.

``jax.vmap`` puts the batch on the leading axis (its batching rules move it there), so for a
small system XLA vectorizes along a handful of spins and materializes the pads of the gradient of
the user's column slices. Here the one-trajectory function is traced once to a jaxpr
(:func:`jax.make_jaxpr`) and the jaxpr is evaluated by a small interpreter in which every value
that depends on the trajectory carries the batch as its **last** axis, while values that do not
(parameters, factors of Gamma, constants, the time) stay as they are. Each primitive has a rule
that keeps the batch last without a transpose of the minor axis:

* elementwise primitives: the operands broadcast to the output shape plus the batch axis;
* structural ones (``broadcast_in_dim``, ``reshape``, ``squeeze``, ``slice``, ``pad``,
  ``concatenate``, ``stack``/``unstack``, ``transpose``, reductions, ``dynamic_slice`` with
  indices that do not depend on the trajectory, ...): the same operation on the leading axes;
* ``dot_general``: one operand batched becomes a matrix product with the batch as a free
  dimension (the other operand first, so the batch stays last); both batched, a product and a sum;
* ``gather``/``scatter-add`` with indices that do not depend on the trajectory: the batch as one
  more window dimension;
* calls (``jit``, ``closed_call``, ``checkpoint``): the inner jaxpr, by the same rules;
  ``custom_jvp_call``/``custom_vjp_call``: ``vmap`` of that one equation over the last axis, so
  the user's derivative rule is kept.

* ``pad`` with zeros of a batched value, ``add_any`` of such pads, their scaling and the
  ``unstack``/``slice`` that cut them into rows again (the transpose of the user's column slices
  in the gradient): kept as blocks (:class:`_Padded`) and written out by concatenation, so XLA
  does not write a padded ``(N, 3, n)`` array per column.
* complex values that depend on the trajectory (bosons, ``s^x - i s^y``): kept as their real
  and imaginary parts (:class:`_Complex`) through elementwise arithmetic, sums and the structural
  primitives, so the arithmetic runs on the vector lanes; written out as complex arrays for
  any other use.

A primitive without a rule (or a trajectory-dependent index, a batched loop) raises
:class:`Unsupported`; the caller then uses the ``vmap`` path for the whole run. The evaluation is
ordinary JAX code, so it differentiates (forward and reverse) like the ``vmap`` path.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jcore

log = logging.getLogger(__name__)


class Unsupported(Exception):
    """A primitive (or a use of one) that the batch-last interpreter has no rule for."""


ELEMENTWISE = frozenset("""
abs acos acosh add add_any and asin asinh atan atan2 atanh bessel_i0e bessel_i1e cbrt ceil clamp
complex conj convert_element_type copy copy_p cos cosh digamma div eq erf erf_inv erfc exp exp2
expm1 floor ge gt igamma igammac imag integer_pow is_finite le lgamma log log1p logistic lt max
min mul ne neg nextafter not or polygamma population_count pow real reduce_precision rem round
rsqrt select_n shift_left shift_right_arithmetic shift_right_logical sign sin sinh sqrt square
sub tan tanh xor zeta random_gamma_grad
""".split())

#: reductions and scans along leading axes named by their parameters (the batch axis, last, is
#: never among them)
LEADING_AXIS_OPS = frozenset("""
reduce_sum reduce_max reduce_min reduce_prod reduce_and reduce_or reduce_xor argmax argmin
cumsum cumprod cummax cummin cumlogsumexp rev squeeze split unstack
""".split())

CALLS = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
         "checkpoint": "jaxpr", "remat": "jaxpr", "remat2": "jaxpr"}
PER_EQUATION_VMAP = frozenset({"custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr"})


def _shape(aval):
    return tuple(aval.shape)


def _to_batched(x, b, shape, n):
    """``x`` as ``shape + (n,)``: batched (``p + (n,)``) or not (``p``), with ``p`` broadcastable
    to ``shape`` (elementwise primitives take scalars and size-1 axes next to arrays)."""
    shape = tuple(shape)
    x = jnp.asarray(x)
    p = tuple(x.shape[:-1]) if b else tuple(x.shape)
    if b and p == shape:
        return x
    dims = tuple(range(len(shape) - len(p), len(shape))) + ((len(shape),) if b else ())
    return lax.broadcast_in_dim(x, shape + (n,), dims)


#: keep sums of padded blocks as blocks (:class:`_Padded`); ``False`` writes every ``pad`` out
#: as it comes (the measurement's baseline, ``benchmarks/bench_small.py --padded``)
KEEP_PADDED = True

#: keep batched complex values as their real and imaginary parts (:class:`_Complex`); ``False``
#: leaves complex arithmetic to XLA (the measurement's baseline, ``bench_small.py --no-complex-parts``)
KEEP_COMPLEX_PARTS = True


def _real_dtype(dtype):
    return jnp.finfo(dtype).dtype


class _Padded:
    """A sum of batched blocks placed in zeros: ``shape`` (without the batch axis), ``dtype`` and
    ``pieces`` ``[(x, offsets)]`` with ``x`` of shape ``block + (n,)`` placed at ``offsets`` on the
    leading axes.

    The transpose of the user's slices ``s[:, k]`` is a ``pad`` of each cotangent into the whole
    ``(N, 3)``, summed by ``add_any`` and then cut into rows again (``unstack``, ``slice``): XLA
    writes out each padded ``(N, 3, n)`` array (eight of them per step for the Rydberg chain)
    rather than folding the slices of the sum of pads. The interpreter keeps such sums as their
    blocks through ``add_any``, scaling, ``unstack`` and ``slice`` (which pick the blocks they
    cover), and writes them out only for any other use: by concatenation when the blocks tile one
    axis, else as the pads and sums they stand for. The numbers are the same (sums of the same
    terms, in the same order per element up to the reassociation of ``add_any``).

    A pad of a value shared by every trajectory (the constant cotangent of a linear term, such as
    ``Omega * sum(s[:, 0])``) is kept the same way, unbatched (``batched=False``); added to a
    batched sum it becomes its ``shared`` part, broadcast along the batch only where the sum is
    written out."""

    def __init__(self, shape, dtype, pieces, batched=True, shared=None):
        self.shape, self.dtype, self.pieces, self.batched = tuple(shape), dtype, list(pieces), batched
        self.shared = shared  # (batched only) an unbatched _Padded added to every trajectory

    def _block(self, x):
        """A piece's block shape (without the batch axis)."""
        return tuple(x.shape[:-1]) if self.batched else tuple(x.shape)

    def cut(self, starts, limits):
        """The sub-box ``[starts, limits)`` as a :class:`_Padded` of shape ``limits - starts``."""
        pieces = []
        tail = ((0,), (self.pieces[0][0].shape[-1],)) if self.batched and self.pieces else ((), ())
        for x, off in self.pieces:
            lo = [max(s, o) for s, o in zip(starts, off)]
            hi = [min(lm, o + d) for lm, o, d in zip(limits, off, self._block(x))]
            if any(a >= b for a, b in zip(lo, hi)):
                continue
            sub = lax.slice(x, tuple(a - o for a, o in zip(lo, off)) + tail[0],
                            tuple(b - o for b, o in zip(hi, off)) + tail[1])
            pieces.append((sub, tuple(a - s for a, s in zip(lo, starts))))
        shared = None if self.shared is None else self.shared.cut(starts, limits)
        return _Padded(tuple(b - a for a, b in zip(starts, limits)), self.dtype, pieces, self.batched, shared)

    def squeezed(self, axis):
        """The same with the size-1 leading ``axis`` dropped."""
        shared = None if self.shared is None else self.shared.squeezed(axis)
        return _Padded(self.shape[:axis] + self.shape[axis + 1:], self.dtype,
                       [(lax.squeeze(x, (axis,)), off[:axis] + off[axis + 1:]) for x, off in self.pieces],
                       self.batched, shared)

    def scaled(self, c):
        shared = None if self.shared is None else self.shared.scaled(c)
        return _Padded(self.shape, self.dtype, [(x * c, off) for x, off in self.pieces], self.batched, shared)

    @staticmethod
    def added(p, q):
        """``p + q``; an unbatched one joins the batched one's ``shared`` part."""
        if p.batched and not q.batched:
            shared = q if p.shared is None else _Padded.added(p.shared, q)
            return _Padded(p.shape, p.dtype, p.pieces, True, shared)
        if q.batched and not p.batched:
            return _Padded.added(q, p)
        shared = p.shared if q.shared is None else q.shared if p.shared is None else _Padded.added(p.shared, q.shared)
        return _Padded(p.shape, p.dtype, p.pieces + q.pieces, p.batched, shared)

    def _with_shared(self, out, shared_out):
        """``out`` (batched) plus the unbatched ``shared_out`` broadcast along the batch."""
        if shared_out is None:
            return out
        return out + lax.broadcast_in_dim(shared_out, tuple(out.shape), tuple(range(out.ndim - 1)))

    def full(self):
        """The blocks that cover the whole shape, summed, if all do (else ``None``)."""
        if self.pieces and all(self._block(x) == self.shape for x, _ in self.pieces):
            shared_full = None
            if self.shared is not None and self.shared.pieces:
                shared_full = self.shared.full()
                if shared_full is None:
                    return None
            out = self.pieces[0][0]
            for x, _ in self.pieces[1:]:
                out = out + x
            return self._with_shared(out, shared_full)
        return None

    def write(self, n):
        """The array ``shape + (n,)`` (``shape`` when not batched)."""
        full = self.full()
        if full is not None:
            return full
        shared = None if self.shared is None or not self.shared.pieces else self.shared.write(n)
        if not self.pieces:
            out = jnp.zeros(self.shape + ((n,) if self.batched else ()), self.dtype)
            return self._with_shared(out, shared)
        return self._with_shared(self._write_pieces(), shared)

    def _write_pieces(self):
        merged = {}  # blocks at the same place summed first
        for x, off in self.pieces:
            key = (off, self._block(x) + (None,))  # (None: the batch axis, or its place)
            merged[key] = x if key not in merged else merged[key] + x
        tiles = _tiling(self.shape, list(merged))
        if tiles is not None:
            axis, order = tiles
            return lax.concatenate([merged[k] for k in order], axis)
        out = None
        for (off, shape), x in merged.items():
            cfg = tuple((o, d - o - w, 0) for o, d, w in zip(off, self.shape, shape[:-1])) + ((0, 0, 0),) * self.batched
            y = lax.pad(x, jnp.zeros((), x.dtype), cfg)
            out = y if out is None else out + y
        return out


def _tiling(shape, keys):
    """``(axis, keys in order)`` when the blocks ``keys = [(offsets, block shape + (n,))]`` are
    disjoint slabs along one axis that together cover ``shape``; else ``None``."""
    for axis in range(len(shape)):
        if any(tuple(sh[:-1])[:axis] + tuple(sh[:-1])[axis + 1:] != shape[:axis] + shape[axis + 1:]
               or any(o != 0 for i, o in enumerate(off) if i != axis) for off, sh in keys):
            continue
        order = sorted(keys, key=lambda k: k[0][axis])
        pos = 0
        for off, sh in order:
            if off[axis] != pos:
                break
            pos += sh[axis]
        else:
            if pos == shape[axis]:
                return axis, order
    return None


def _is_zero(x):
    try:
        return bool(np.all(np.asarray(x) == 0))
    except Exception:  # a traced value
        return False


class _Complex:
    """A batched complex value kept as its real and imaginary parts (``im`` ``None``: zero), both
    ``shape + (n,)`` real arrays.

    XLA:CPU computes complex arithmetic element by element on (real, imaginary) pairs instead of
    on vector lanes of each; a model written with complex bosons or ``s^x - i s^y`` pays for that
    in every step (Tavis-Cummings N = 15: the step was 1.2x slower written with complex numbers
    than with real ones, measured). The interpreter keeps elementwise complex arithmetic, sums
    and the structural primitives on the two real parts, and writes a complex array out
    (``lax.complex``) only for any other use. The numbers are those of the same real formulas."""

    def __init__(self, re, im):
        self.re, self.im = re, im

    def write(self, n):
        return lax.complex(self.re, jnp.zeros_like(self.re) if self.im is None else self.im)


#: primitives applied to a :class:`_Complex`'s two parts alike
COMPLEX_STRUCTURAL = frozenset("""
broadcast_in_dim reshape squeeze slice transpose reduce_sum rev unstack split copy copy_p
""".split())


def _complex_constant(x, b):
    """``(re, im)`` as Python floats when ``x`` is a scalar known at trace time, else ``None``."""
    if b or isinstance(x, (jax.core.Tracer, _Complex, _Padded)) or np.ndim(x) != 0:
        return None
    try:
        c = complex(np.asarray(x))
    except Exception:  # noqa: BLE001 (not a concrete number)
        return None
    return c.real, c.imag


def _scaled(x, c):
    """``x * c`` without the product when ``c`` is 0 (``None``: zero) or +-1."""
    if x is None or c == 0:
        return None
    return x if c == 1 else -x if c == -1 else x * c


def _sum_terms(terms):
    terms = [t for t in terms if t is not None]
    if not terms:
        return None
    out = terms[0]
    for t in terms[1:]:
        out = out + t
    return out


def _times(a, b):
    return None if a is None or b is None else a * b


class _Interpreter:
    def __init__(self, n):
        self.n = n

    # ------------------------------------------------------------------ sums of padded blocks
    def _padded_rule(self, eqn, ins):
        """``(outs, batched)`` for an equation that keeps or makes a :class:`_Padded`; ``None``
        when the ordinary rules apply (then its :class:`_Padded` inputs are written out)."""
        if not KEEP_PADDED:
            return None
        name = eqn.primitive.name
        if any(isinstance(x, _Complex) for x, _ in ins):
            return None
        lazy = [isinstance(x, _Padded) for x, _ in ins]
        aval = eqn.outvars[0].aval
        if name == "pad" and not lazy[0] and not ins[1][1] and _is_zero(ins[1][0]):
            cfg = eqn.params["padding_config"]
            if all(i == 0 and lo >= 0 and hi >= 0 for lo, hi, i in cfg):
                b = ins[0][1]  # a pad of a value shared by every trajectory (a constant cotangent) too
                return [_Padded(_shape(aval), aval.dtype, [(ins[0][0], tuple(int(lo) for lo, _, _ in cfg))], b)], [b]
            return None
        if not any(lazy):
            return None
        if name == "add_any" and all(lazy):
            out = _Padded.added(ins[0][0], ins[1][0])
            return [out], [out.batched]
        if name == "mul" and sum(lazy) == 1:
            (p, _), (c, cb) = ins if lazy[0] else ins[::-1]
            if not cb and jnp.ndim(c) == 0:
                return [p.scaled(c)], [p.batched]
            return None
        if name == "unstack" and lazy[0]:
            p, axis = ins[0][0], eqn.params["axis"]
            outs = []
            for i in range(p.shape[axis]):
                starts = [0] * len(p.shape)
                limits = list(p.shape)
                starts[axis], limits[axis] = i, i + 1
                outs.append(self._settle(p.cut(starts, limits).squeezed(axis)))
            return outs, [p.batched] * len(outs)
        if name == "slice" and lazy[0] and eqn.params["strides"] is None:
            p = ins[0][0]
            part = p.cut(tuple(eqn.params["start_indices"]), tuple(eqn.params["limit_indices"]))
            return [self._settle(part)], [p.batched]
        return None

    def _complex_rule(self, eqn, ins):
        """``(outs, batched)`` for an equation that keeps or makes a :class:`_Complex`; ``None``
        when the ordinary rules apply (then its :class:`_Complex` inputs are written out)."""
        name = eqn.primitive.name
        aval = eqn.outvars[0].aval
        kept = [isinstance(x, _Complex) for x, _ in ins]
        if not any(kept):
            if name == "complex" and any(b for _, b in ins):
                re, im = (self._part(x, b, aval) for x, b in ins)
                return [_Complex(re, im)], [True]
            if (name == "convert_element_type" and ins[0][1] and jnp.issubdtype(aval.dtype, jnp.complexfloating)
                    and not jnp.issubdtype(jnp.asarray(ins[0][0]).dtype, jnp.complexfloating)):
                return [_Complex(ins[0][0].astype(_real_dtype(aval.dtype)), None)], [True]
            return None
        if name in COMPLEX_STRUCTURAL and len(ins) == 1:
            z = ins[0][0]
            res = self.rule(eqn, [z.re], [True])[0]
            ims = [None] * len(res) if z.im is None else self.rule(eqn, [z.im], [True])[0]
            return [_Complex(r, i) for r, i in zip(res, ims)], [True] * len(res)
        if name == "convert_element_type":
            z = ins[0][0]
            if not jnp.issubdtype(aval.dtype, jnp.complexfloating):  # to a real dtype: the real part
                return [z.re.astype(aval.dtype)], [True]
            rdt = _real_dtype(aval.dtype)
            return [_Complex(z.re.astype(rdt), None if z.im is None else z.im.astype(rdt))], [True]
        if name == "concatenate":
            parts = [self._parts(x, b, v.aval) for (x, b), v in zip(ins, eqn.invars)]
            re = lax.concatenate([r for r, _ in parts], eqn.params["dimension"])
            if all(i is None for _, i in parts):
                return [_Complex(re, None)], [True]
            ims = [jnp.zeros_like(r) if i is None else i for r, i in parts]
            return [_Complex(re, lax.concatenate(ims, eqn.params["dimension"]))], [True]
        if name in ("real", "imag", "conj", "neg"):
            z = ins[0][0]
            if name == "real":
                return [z.re], [True]
            if name == "imag":
                return [jnp.zeros_like(z.re) if z.im is None else z.im], [True]
            if name == "conj":
                return [_Complex(z.re, None if z.im is None else -z.im)], [True]
            return [_Complex(-z.re, None if z.im is None else -z.im)], [True]
        if name in ("add", "add_any", "sub", "mul", "div"):
            (ar, ai), (br, bi) = (self._parts(x, b, aval) for x, b in ins)
            if name == "sub":
                br, bi = -br, (None if bi is None else -bi)
            if name in ("add", "add_any", "sub"):
                return [_Complex(ar + br, _sum_terms([ai, bi]))], [True]
            if name == "mul":
                const = [_complex_constant(x, b) for x, b in ins]
                if const[0] is not None or const[1] is not None:  # skip the products with 0, +-1
                    (cr, ci), (zr, zi) = (const[1], (ar, ai)) if const[1] is not None else (const[0], (br, bi))
                    re = _sum_terms([_scaled(zr, cr), _scaled(zi, -ci)])
                    im = _sum_terms([_scaled(zr, ci), _scaled(zi, cr)])
                    return [_Complex(jnp.zeros_like(zr) if re is None else re, im)], [True]
                re = ar * br if ai is None or bi is None else ar * br - ai * bi
                return [_Complex(re, _sum_terms([_times(ar, bi), _times(ai, br)]))], [True]
            if bi is None:  # division by a real number
                return [_Complex(ar / br, None if ai is None else ai / br)], [True]
            return None
        if name == "abs":  # sqrt(re^2 + im^2), its derivative finite at 0 (where-guarded)
            z = ins[0][0]
            if z.im is None:
                return [jnp.abs(z.re)], [True]
            r2 = z.re * z.re + z.im * z.im
            pos = r2 > 0
            return [jnp.where(pos, jnp.sqrt(jnp.where(pos, r2, 1)), 0).astype(z.re.dtype)], [True]
        if name in ("eq", "ne"):
            (ar, ai), (br, bi) = (self._parts(x, b, v.aval) for (x, b), v in zip(ins, eqn.invars))
            same = ar == br
            if ai is not None or bi is not None:
                same = same & ((jnp.zeros_like(ar) if ai is None else ai) == (jnp.zeros_like(br) if bi is None else bi))
            return [same if name == "eq" else ~same], [True]
        if name == "select_n" and not kept[0]:
            pred = _to_batched(ins[0][0], ins[0][1], _shape(aval), self.n)
            parts = [self._parts(x, b, aval) for x, b in ins[1:]]
            re = lax.select_n(pred, *[r for r, _ in parts])
            if all(i is None for _, i in parts):
                return [_Complex(re, None)], [True]
            return [_Complex(re, lax.select_n(pred, *[jnp.zeros_like(r) if i is None else i for r, i in parts]))], [True]
        return None

    def _part(self, x, b, aval):
        """A real operand as ``aval``'s shape plus the batch, in the real dtype of ``aval``."""
        if isinstance(x, _Padded):
            x = x.write(self.n)
        rdt = _real_dtype(aval.dtype)
        return _to_batched(jnp.asarray(x).astype(rdt), b, _shape(aval), self.n)

    def _parts(self, x, b, aval):
        """``(re, im)`` of an operand broadcast to ``aval``'s shape plus the batch (``im`` ``None``
        when it is real)."""
        if isinstance(x, _Complex):
            shape = _shape(aval)
            return (_to_batched(x.re, True, shape, self.n),
                    None if x.im is None else _to_batched(x.im, True, shape, self.n))
        if isinstance(x, _Padded):
            x = x.write(self.n)
        if jnp.issubdtype(jnp.result_type(x), jnp.complexfloating):
            real_const = not b and not isinstance(x, jax.core.Tracer) and _is_zero(np.imag(x))
            return self._part(lax.real(x), b, aval), None if real_const else self._part(lax.imag(x), b, aval)
        return self._part(x, b, aval), None

    def _settle(self, p):
        """A :class:`_Padded` as a plain array when one block, or a sum of whole ones, covers it."""
        full = p.full()
        return p if full is None else full

    # ------------------------------------------------------------------ the evaluation loop
    def eval(self, jaxpr, consts, args, batched):
        env = {}

        def read(v):
            if isinstance(v, jcore.Literal):
                return v.val, False
            return env[v]

        for v, c in zip(jaxpr.constvars, consts):
            env[v] = (c, False)
        for v, a, b in zip(jaxpr.invars, args, batched):
            env[v] = (a, b)
        for eqn in jaxpr.eqns:
            ins = [read(v) for v in eqn.invars]
            kept = self._padded_rule(eqn, ins)
            if kept is None and KEEP_COMPLEX_PARTS:
                kept = self._complex_rule(eqn, ins)
            if kept is not None:
                for v, x, b in zip(eqn.outvars, *kept):
                    env[v] = (x, b)
                continue
            ins = [(x.write(self.n), b) if isinstance(x, (_Padded, _Complex)) else (x, b) for x, b in ins]
            vals = [x for x, _ in ins]
            bs = [b for _, b in ins]
            if not any(bs):
                outs = self.bind(eqn, vals)
                obs = [False] * len(outs)
            else:
                outs, obs = self.rule(eqn, vals, bs)
            for v, x, b in zip(eqn.outvars, outs, obs):
                env[v] = (x, b)
        return [(x.write(self.n), b) if isinstance(x, (_Padded, _Complex)) else (x, b) for x, b in map(read, jaxpr.outvars)]

    @staticmethod
    def bind(eqn, vals, **override):
        params = {**eqn.primitive.get_bind_params(eqn.params), **override}
        out = eqn.primitive.bind(*vals, **params)
        return list(out) if eqn.primitive.multiple_results else [out]

    # ------------------------------------------------------------------ rules
    def rule(self, eqn, vals, bs):
        name = eqn.primitive.name
        n = self.n
        out_avals = [v.aval for v in eqn.outvars]
        if name in ELEMENTWISE:
            shape = _shape(out_avals[0])
            args = [_to_batched(x, b, shape, n) for x, b in zip(vals, bs)]
            return self.bind(eqn, args), [True]
        if name in LEADING_AXIS_OPS:
            if len(vals) != 1:
                raise Unsupported(name)
            outs = self.bind(eqn, vals)
            return outs, [True] * len(outs)
        method = getattr(self, "_" + name.replace("-", "_"), None)
        if method is not None:
            return method(eqn, vals, bs, out_avals)
        if name in CALLS:
            return self._call(eqn, vals, bs, CALLS[name])
        if name in PER_EQUATION_VMAP:
            return self._vmapped(eqn, vals, bs)
        raise Unsupported(name)

    def _batched_all(self, eqn, vals, bs):
        return [_to_batched(x, b, _shape(v.aval), self.n) for x, b, v in zip(vals, bs, eqn.invars)]

    def _broadcast_in_dim(self, eqn, vals, bs, out_avals):
        if any(bs[1:]):
            raise Unsupported("broadcast_in_dim with a batched dynamic shape")
        p = eqn.params
        shape = tuple(p["shape"]) + (self.n,)
        dims = tuple(p["broadcast_dimensions"]) + (len(p["shape"]),)
        return self.bind(eqn, vals, shape=shape, broadcast_dimensions=dims), [True]

    def _reshape(self, eqn, vals, bs, out_avals):
        p = eqn.params
        if p.get("dimensions") is not None or len(vals) != 1:
            raise Unsupported("reshape with dimensions")
        return self.bind(eqn, vals, new_sizes=tuple(p["new_sizes"]) + (self.n,)), [True]

    def _slice(self, eqn, vals, bs, out_avals):
        p = eqn.params
        strides = None if p["strides"] is None else tuple(p["strides"]) + (1,)
        return self.bind(eqn, vals, start_indices=tuple(p["start_indices"]) + (0,),
                         limit_indices=tuple(p["limit_indices"]) + (self.n,), strides=strides), [True]

    def _dynamic_slice(self, eqn, vals, bs, out_avals):
        if any(bs[1:]):
            raise Unsupported("dynamic_slice at trajectory-dependent indices")
        idx = vals[1:]
        zero = jnp.zeros((), jnp.asarray(idx[0]).dtype) if idx else jnp.zeros((), jnp.int32)
        return self.bind(eqn, [vals[0], *idx, zero],
                         slice_sizes=tuple(eqn.params["slice_sizes"]) + (self.n,)), [True]

    def _dynamic_update_slice(self, eqn, vals, bs, out_avals):
        if any(bs[2:]):
            raise Unsupported("dynamic_update_slice at trajectory-dependent indices")
        op, up = self._batched_all(eqn, vals[:2], bs[:2])
        idx = vals[2:]
        zero = jnp.zeros((), jnp.asarray(idx[0]).dtype) if idx else jnp.zeros((), jnp.int32)
        return self.bind(eqn, [op, up, *idx, zero]), [True]

    def _concatenate(self, eqn, vals, bs, out_avals):
        return self.bind(eqn, self._batched_all(eqn, vals, bs)), [True]

    def _stack(self, eqn, vals, bs, out_avals):
        return self.bind(eqn, self._batched_all(eqn, vals, bs)), [True]

    def _pad(self, eqn, vals, bs, out_avals):
        if bs[1]:
            raise Unsupported("pad with a trajectory-dependent padding value")
        cfg = tuple(eqn.params["padding_config"]) + ((0, 0, 0),)
        return self.bind(eqn, vals, padding_config=cfg), [True]

    def _transpose(self, eqn, vals, bs, out_avals):
        perm = tuple(eqn.params["permutation"])
        return self.bind(eqn, vals, permutation=perm + (len(perm),)), [True]

    def _dot_general(self, eqn, vals, bs, out_avals):
        (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
        lhs, rhs = vals
        la, ra = eqn.invars[0].aval, eqn.invars[1].aval
        nl, nr = len(la.shape), len(ra.shape)
        pref = eqn.params.get("preferred_element_type")
        if bs[0] and bs[1]:
            # per trajectory: a product and a sum over the contracted axes, batch kept last
            lf = [d for d in range(nl) if d not in lc and d not in lb]
            rf = [d for d in range(nr) if d not in rc and d not in rb]
            lhs_t = lax.transpose(lhs, tuple(lb) + tuple(lf) + tuple(lc) + (nl,))
            rhs_t = lax.transpose(rhs, tuple(rb) + tuple(rf) + tuple(rc) + (nr,))
            nb, nlf, nrf, ncon = len(lb), len(lf), len(rf), len(lc)
            full = (tuple(la.shape[d] for d in lb) + tuple(la.shape[d] for d in lf)
                    + tuple(ra.shape[d] for d in rf) + tuple(la.shape[d] for d in lc) + (self.n,))
            ldims = tuple(range(nb + nlf)) + tuple(range(nb + nlf + nrf, nb + nlf + nrf + ncon + 1))
            rdims = tuple(range(nb)) + tuple(range(nb + nlf, nb + nlf + nrf + ncon + 1))
            dtype = out_avals[0].dtype
            prod = (lax.broadcast_in_dim(lhs_t.astype(dtype), full, ldims)
                    * lax.broadcast_in_dim(rhs_t.astype(dtype), full, rdims))
            axes = tuple(range(nb + nlf + nrf, nb + nlf + nrf + ncon))
            return [jnp.sum(prod, axis=axes, dtype=dtype) if axes else prod], [True]
        if bs[0]:  # lhs batched: swap so the batch (a free dimension of the lhs) comes out last
            dn = ((tuple(rc), tuple(lc)), (tuple(rb), tuple(lb)))
            out = self.bind(eqn, [rhs, lhs], dimension_numbers=dn)[0]
            nb = len(lb)
            nrf = nr - len(rc) - len(rb)
            nlf = nl - len(lc) - len(lb)  # the lhs's own free dimensions (without the batch)
            perm = (tuple(range(nb)) + tuple(range(nb + nrf, nb + nrf + nlf))
                    + tuple(range(nb, nb + nrf)) + (nb + nrf + nlf,))
            if perm != tuple(range(len(perm))):
                out = lax.transpose(out, perm)
            return [out], [True]
        # rhs batched: its free dimensions come last in the output, the batch last of them
        return self.bind(eqn, [lhs, rhs]), [True]

    def _gather(self, eqn, vals, bs, out_avals):
        if bs[1]:
            raise Unsupported("gather at trajectory-dependent indices")
        p = eqn.params
        dn = p["dimension_numbers"]
        out_rank = len(out_avals[0].shape)
        new_dn = dn._replace(offset_dims=tuple(dn.offset_dims) + (out_rank,))
        return self.bind(eqn, vals, dimension_numbers=new_dn,
                         slice_sizes=tuple(p["slice_sizes"]) + (self.n,)), [True]

    def _scatter_add(self, eqn, vals, bs, out_avals):
        if bs[1]:
            raise Unsupported(f"{eqn.primitive.name} at trajectory-dependent indices")
        op = _to_batched(vals[0], bs[0], _shape(eqn.invars[0].aval), self.n)
        up = _to_batched(vals[2], bs[2], _shape(eqn.invars[2].aval), self.n)
        dn = eqn.params["dimension_numbers"]
        new_dn = dn._replace(update_window_dims=tuple(dn.update_window_dims) + (len(eqn.invars[2].aval.shape),))
        return self.bind(eqn, [op, vals[1], up], dimension_numbers=new_dn), [True]

    _scatter = _scatter_add

    def _call(self, eqn, vals, bs, key):
        inner = eqn.params[key]
        if isinstance(inner, jcore.ClosedJaxpr):
            jaxpr, consts = inner.jaxpr, inner.consts
        else:
            jaxpr, consts = inner, ()
        outs = self.eval(jaxpr, consts, vals, bs)
        return [x for x, _ in outs], [b for _, b in outs]

    def _vmapped(self, eqn, vals, bs):
        """One equation ``vmap``-ed over the last axis (keeps a custom derivative rule)."""
        def f(*xs):
            return self.bind(eqn, list(xs))

        outs = jax.vmap(f, in_axes=[-1 if b else None for b in bs], out_axes=-1, axis_size=self.n)(*vals)
        return outs, [True] * len(outs)


def _aval_of(x, batched):
    a = jax.typeof(x) if hasattr(jax, "typeof") else jcore.get_aval(x)
    shape = tuple(a.shape[:-1]) if batched else tuple(a.shape)
    return jax.ShapeDtypeStruct(shape, a.dtype, weak_type=getattr(a, "weak_type", False))


def batch_last_call(f, args, batched, n):
    """``f`` (a one-trajectory function of the pytree ``args``) on a batch of ``n`` trajectories,
    batch last.

    Args:
        f: ``f(*args) -> pytree of arrays``, for one trajectory.
        args: a tuple of pytrees; leaves marked batched carry the ``n`` trajectories on their last
            axis, the others are shared by every trajectory.
        batched: a tuple with one ``bool`` per entry of ``args`` (every leaf of that argument
            batched or none).
        n: the number of trajectories.

    Returns:
        ``f``'s outputs with the trajectories on the last axis of every leaf.

    Raises:
        Unsupported: ``f`` uses a primitive (or a trajectory-dependent index) without a rule.
    """
    flat, tree = jax.tree_util.tree_flatten(args)
    flags = []
    for a, b in zip(args, batched):
        flags += [bool(b)] * len(jax.tree_util.tree_leaves(a))
    is_arr = [isinstance(x, (jax.Array, np.ndarray, np.generic)) or hasattr(x, "aval") for x in flat]
    arr_vals = [x for x, a in zip(flat, is_arr) if a]
    arr_flags = [b for b, a in zip(flags, is_arr) if a]
    others = [x for x, a in zip(flat, is_arr) if not a]

    def flat_f(*xs):
        it, ot = iter(xs), iter(others)
        leaves = [next(it) if a else next(ot) for a in is_arr]
        return f(*jax.tree_util.tree_unflatten(tree, leaves))

    avals = [_aval_of(x, b) for x, b in zip(arr_vals, arr_flags)]
    closed, out_shape = jax.make_jaxpr(flat_f, return_shape=True)(*avals)
    interp = _Interpreter(n)
    outs = interp.eval(closed.jaxpr, closed.consts, arr_vals, arr_flags)
    leaves = [x if b else _to_batched(x, False, _shape(s), n)
              for (x, b), s in zip(outs, jax.tree_util.tree_leaves(out_shape))]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), leaves)


def supported(f, args, batched, n=2):
    """Whether :func:`batch_last_call` has a rule for everything ``f`` does (traced abstractly,
    nothing runs); the reason goes to the debug log when not."""
    try:
        jax.eval_shape(lambda *a: batch_last_call(f, a, batched, n), *args)
    except Unsupported as e:
        log.debug("batch-last layout not used: no rule for %s; the vmap path runs", e)
        return False
    return True
