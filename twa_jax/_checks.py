"""The primitive argument checks: types, shapes, finiteness, numbers, keys, Gamma, devices.

This module imports nothing of ``twa_jax`` (only the standard library, NumPy and JAX), so every
module of the package can use it without an import circle; ``tests/test_imports.py`` keeps it so.
The checks that know a :class:`~twa_jax.Model`, a solver, a state or the observables live with
the run plan (:mod:`twa_jax._plan`), where they are used.

One exception policy for both:

* ``TypeError``: the argument is of the wrong kind (a string where a number goes, a list where a
  dict goes, a function that fails on abstract inputs).
* ``ValueError``: the kind is right but the value is not (a negative count, NaN, a non-increasing
  time grid, a Gamma that is not positive semidefinite, an option the chosen method ignores).

Shape, dtype and structure problems are raised before anything is traced or compiled, naming the
argument, what was expected and what was given. Value checks (NaN, Hermiticity, positivity) need
concrete numbers; when a value is a tracer (the caller differentiates or jits through the package)
they are skipped.
"""

from __future__ import annotations

import math
import numbers
import weakref

import jax
import jax.numpy as jnp
import numpy as np


# --------------------------------------------------------------------------- the default precision
def default_float():
    """The default real dtype (float32, or float64 with ``jax_enable_x64``), without creating an
    array: ``jnp.zeros(()).dtype`` is an operation on the default device (0.2-0.3 ms on a GPU
    host)."""
    return np.dtype(jax.dtypes.canonicalize_dtype(np.float64))


# --------------------------------------------------------------------------- concreteness, NaN
def is_concrete(x) -> bool:
    """True when ``x`` holds numbers we can inspect (not a JAX tracer)."""
    return not isinstance(x, jax.core.Tracer)


def all_concrete(tree) -> bool:
    return all(is_concrete(leaf) for leaf in jax.tree_util.tree_leaves(tree))


def check_finite_tree(tree, name: str) -> None:
    """Raise ``ValueError`` if any concrete numeric leaf of ``tree`` is NaN or infinite."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    for path, leaf in leaves:
        if not is_concrete(leaf) or callable(leaf):
            continue
        try:
            arr = np.asarray(leaf)
        except Exception:  # non-numeric leaf (string, object): not ours to judge
            continue
        if arr.dtype.kind not in "biufc":
            continue
        if not np.all(np.isfinite(arr)):
            where = jax.tree_util.keystr(path) or "(root)"
            raise ValueError(f"{name}{where} contains NaN or infinite values: {arr!r}")


# --------------------------------------------------------------------------- memo of abstract checks
#: ``id(obj) -> (weakref to obj, {signature: result})``: results of checks that depend only on an
#: immutable object and a signature (shapes and dtypes), see :func:`memo`
_MEMO: dict = {}


def abstract_signature(tree):
    """What an abstract evaluation of ``tree`` depends on: its structure, each array's shape and
    dtype (their values, concrete or traced, do not matter) and the values of its Python scalars
    (which Python code may branch on)."""
    def leaf(x):
        if isinstance(x, (bool, int, float, complex, str)):
            return type(x), x
        try:
            return np.shape(x), jnp.result_type(x)
        except Exception:  # not an array or a number: the object itself (unhashable: no memo)
            return x

    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple(leaf(x) for x in leaves)


def memo(obj, signature, compute):
    """``compute()``, once per immutable ``obj`` (a model, a state) and hashable ``signature``.

    The checks that trace a user's functions abstractly (``jax.eval_shape``) cost a few
    milliseconds each: on a GPU host they were most of a repeated small ``simulate`` call. Their
    result depends only on the object and the shapes and dtypes of what it is called with, so it
    is kept while ``obj`` lives (a weak reference: nothing is kept alive). A check that raises is
    not kept: the next call raises again.
    """
    entry = _MEMO.get(id(obj))
    if entry is None or entry[0]() is not obj:
        try:
            ref = weakref.ref(obj, lambda _, k=id(obj): _MEMO.pop(k, None))
        except TypeError:  # not weakly referable: no memo
            return compute()
        entry = _MEMO[id(obj)] = (ref, {})
    try:
        return entry[1][signature]
    except KeyError:
        pass
    except TypeError:  # an unhashable signature: no memo
        return compute()
    out = entry[1][signature] = compute()
    return out


def host_values(tree):
    """A hashable record of ``tree``'s values (structure, and each leaf's shape, dtype and bytes),
    or ``None`` when a leaf lives on a device or is traced (reading it would be a transfer, or
    impossible). The plan keeps its parameters as NumPy arrays, so this costs no device work."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    out = []
    for x in leaves:
        if isinstance(x, (bool, int, float, complex)):
            out.append((type(x), x))
        elif isinstance(x, (np.ndarray, np.generic)):
            a = np.ascontiguousarray(x)
            out.append((a.shape, a.dtype.str, a.tobytes()))
        else:
            return None
    return treedef, tuple(out)


def memo_last(obj, kind, values, compute):
    """``compute()``, kept for the last ``values`` (see :func:`host_values`; ``None``: not kept)
    of its ``kind`` on ``obj``: a repeated run with the same values (a new seed, more
    trajectories) skips a value check's device call and read back (a synchronization on a GPU),
    and a loop over many values keeps one entry, not one per value."""
    if values is None:
        return compute()
    last = memo(obj, ("last", kind), dict)
    if values not in last:
        result = compute()  # a check that raises is not kept
        last.clear()
        last[values] = result
    return last[values]


# --------------------------------------------------------------------------- numbers
def check_int(v, name: str, minimum: int = 1) -> int:
    """An int ``>= minimum`` (``TypeError`` for a non-int, ``ValueError`` below the minimum)."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(v).__name__} {v!r}")
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return int(v)


def check_positive(v, name: str) -> float:
    """A positive finite real number."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a positive number, got {type(v).__name__} {v!r}")
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a positive finite number, got {v!r}")
    return float(v)


def check_half_integer(S, name="S") -> float:
    """A spin length: a positive multiple of 1/2."""
    number = not isinstance(S, bool) and isinstance(S, (int, float, np.floating, np.integer))
    if not number or not (S > 0 and np.isfinite(S)):
        raise ValueError(f"{name} must be a positive number, got {S!r}")
    if abs(2 * S - round(2 * S)) > 1e-9:
        raise ValueError(f"{name} must be a multiple of 1/2 (a spin length: 1/2, 1, 3/2, ...), got {S!r}")
    return float(S)


def check_ts(ts) -> np.ndarray:
    """Strictly increasing, finite, 1-D save times (at least two)."""
    if np.iscomplexobj(ts) or (isinstance(ts, (list, tuple)) and any(isinstance(t, complex) for t in ts)):
        raise TypeError("ts must be real save times, got complex values")
    try:
        ts_np = np.asarray(ts, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"ts must be a 1-D array of save times, got {type(ts).__name__}") from None
    if ts_np.ndim != 1 or ts_np.size < 2:
        raise ValueError(f"ts must be a 1-D array of at least two save times, got shape {ts_np.shape}")
    if not np.all(np.isfinite(ts_np)):
        raise ValueError("ts contains NaN or infinite values")
    if np.any(np.diff(ts_np) <= 0):
        i = int(np.argmax(np.diff(ts_np) <= 0))
        raise ValueError(f"ts must be strictly increasing; ts[{i}] = {ts_np[i]} >= ts[{i + 1}] = {ts_np[i + 1]}")
    return ts_np


def as_key(key):
    """``(jax key, how to record it)`` from an int seed, a typed key or a raw ``uint32[2]`` key."""
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


# --------------------------------------------------------------------------- Gamma
def check_gamma_matrix(gamma, name: str = "gamma") -> None:
    """Validate shape, dtype, finiteness, Hermiticity and signs of a dissipation matrix or rate
    vector. Positive semidefiniteness of a dense matrix needs its eigenvalues; it is checked by
    :func:`check_psd` on the eigendecomposition that also factors it (``_noise.factor_gamma``)."""
    g = jnp.asarray(gamma)
    if g.ndim not in (1, 2):
        raise ValueError(
            f"{name} must be a (K,) vector of rates or a (K, K) matrix, got shape {g.shape}"
        )
    if g.ndim == 2 and g.shape[0] != g.shape[1]:
        raise ValueError(f"{name} must be a square (K, K) matrix, got shape {g.shape}")
    if not (jnp.issubdtype(g.dtype, jnp.floating) or jnp.issubdtype(g.dtype, jnp.complexfloating)
            or jnp.issubdtype(g.dtype, jnp.integer)):
        raise TypeError(f"{name} must be numeric, got dtype {g.dtype}")
    if not is_concrete(gamma):
        return
    a = np.asarray(gamma)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if a.ndim == 1:
        if np.iscomplexobj(a) and np.any(a.imag != 0):
            raise ValueError(f"{name}: rates must be real, got complex values {a}")
        if np.any(a.real < 0):
            raise ValueError(f"{name}: rates must be non-negative, got {a.real}")
        return
    scale = max(np.max(np.abs(a)), np.finfo(float).tiny)
    asym = np.max(np.abs(a - a.conj().T))
    if asym > 1e-8 * scale:
        raise ValueError(
            f"{name} must be Hermitian: max |Gamma - Gamma^dag| = {asym:.3g} "
            f"(max |Gamma| = {scale:.3g})"
        )


def check_psd(eigenvalues, dtype, name: str = "gamma", rtol: float = 1e-10) -> None:
    """Raise ``ValueError`` when the smallest eigenvalue of a Hermitian Gamma is below
    ``-rtol * max|eigenvalue|``. For single-precision input or arithmetic the bound is at least
    ``100 eps`` of that precision: rounding the entries alone moves eigenvalues by about
    ``eps * max|eigenvalue|``."""
    w = np.asarray(eigenvalues, dtype=float)
    if np.dtype(dtype).kind in "fc" and np.finfo(dtype).bits <= 32:
        rtol = max(rtol, 100 * float(np.finfo(dtype).eps))
    wmax = max(np.max(np.abs(w), initial=0.0), np.finfo(float).tiny)
    if w.size and w.min() < -rtol * wmax:
        raise ValueError(
            f"{name} must be positive semidefinite: smallest eigenvalue {w.min():.3g} "
            f"< -{rtol:g} * max|eigenvalue| ({wmax:.3g})"
        )


# --------------------------------------------------------------------------- devices
def check_devices(devices, default):
    """A list of distinct ``jax.Device`` (``default`` when ``devices`` is None)."""
    if devices is None:
        return list(default)
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


# --------------------------------------------------------------------------- which option applies where
#: options that only make sense for some methods: ``option -> methods that use it``
METHOD_OPTIONS = {
    "n_traj": ("twa", "no_noise"),
    "key": ("twa", "no_noise"),
    "chunk_size": ("twa", "no_noise"),
    "devices": ("twa", "no_noise"),
    "target_sem": ("twa", "no_noise"),
    "keep_trajectories": ("twa", "no_noise", "mean_field"),
    "time_average": ("twa", "no_noise", "mean_field"),
}
METHODS = ("twa", "no_noise", "mean_field")


def check_method_options(method, **given) -> None:
    """Reject options that ``method`` ignores (``given``: the options the caller set)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    for option, value in given.items():
        if value is not None and method not in METHOD_OPTIONS.get(option, METHODS):
            raise ValueError(
                f"method={method!r} runs one deterministic trajectory and does not use {option}; leave it out"
            )
