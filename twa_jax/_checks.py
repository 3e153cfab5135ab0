"""Every argument check of the package, with one exception policy.

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

import jax
import jax.numpy as jnp
import numpy as np


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


def check_ts(ts) -> np.ndarray:
    """Strictly increasing, finite, 1-D save times (at least two)."""
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


# --------------------------------------------------------------------------- the run's arguments
def check_model(model):
    from ._model import Model

    if not isinstance(model, Model):
        raise TypeError(f"model must be a tw.Model, got {type(model).__name__}")
    return model


def check_initial(initial, model) -> None:
    from ._states import AbstractState

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
    from ._solvers import SOLVERS, RotationHeun, StochasticHeun

    if isinstance(solver, str):
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {tuple(SOLVERS)} or a solver instance, got {solver!r}")
        return solver, SOLVERS[solver]()
    if isinstance(solver, RotationHeun):  # subclasses too
        return "rotation_heun", solver
    if isinstance(solver, StochasticHeun):
        return "heun", solver
    raise TypeError(f"solver must be 'rotation_heun', 'heun' or a twa_jax solver, got {solver!r}")


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


def _abstract_point(model, dtype):
    s = jax.ShapeDtypeStruct((model.n_spins, 3), dtype)
    a = jax.ShapeDtypeStruct((model.n_bosons,), jnp.result_type(dtype, jnp.complex64))
    return s, a


def check_observables(observables, model, dtype):
    """``{name: f}`` checked by abstract evaluation; returns ``(observables, shapes, dtypes)``."""
    if observables is None:
        from ._observables import default_observables

        observables = model.observables or default_observables(model.n_spins, model.n_bosons)
    elif not isinstance(observables, dict) or not observables:
        raise TypeError("observables must be a non-empty dict {name: f(spins, bosons)}")
    s, a = _abstract_point(model, dtype)
    shapes, dtypes = {}, {}
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
        shapes[name], dtypes[name] = tuple(out.shape), out.dtype
    return dict(observables), shapes, dtypes


def _index_checked(model, params, observables, dtype):
    """``[(name, thunk)]`` of the model's functions at a concrete zero point."""
    s = jnp.zeros((model.n_spins, 3), dtype)
    a = jnp.zeros((model.n_bosons,), jnp.result_type(dtype, jnp.complex64))
    funcs = [("hamiltonian", lambda: model.H(s, a, params))]
    if model.jumps is not None:
        funcs.append(("jumps", lambda: model.L(s, a, params)))
    if callable(model.gamma):
        funcs.append(("gamma", lambda: model.gamma_of(params)))
    funcs += [(f"observable {name!r}", (lambda f=f: f(s, a))) for name, f in observables]
    return funcs


def _index_error(model, params, observables, dtype):
    from jax.experimental import checkify

    funcs = _index_checked(model, params, observables, dtype)
    return checkify.checkify(lambda: [fn() for _, fn in funcs], errors=checkify.index_checks)()[0]


#: one compiled check of every function together, cached per model (a new parameter value reuses
#: it); op by op, a model's first check compiled each primitive on its own (seconds)
_index_error_jit = None


def check_indexing(model, params, observables, dtype) -> None:
    """Run the model's functions once on a concrete point with JAX's index checks on.

    JAX clamps out-of-range indices instead of raising (``s[5, 0]`` with three spins reads
    ``s[2, 0]``), so a wrong index in a model would run silently; ``checkify`` finds it. Skipped
    when ``params`` are traced."""
    global _index_error_jit
    from jax.experimental import checkify

    if not all_concrete(params):
        return
    import equinox as eqx

    if _index_error_jit is None:
        _index_error_jit = eqx.filter_jit(_index_error)
    obs = tuple(observables.items())
    if not _index_error_jit(model, params, obs, dtype).get():
        return
    for name, fn in _index_checked(model, params, obs, dtype):  # only on error: name the culprit
        err, _ = checkify.checkify(fn, errors=checkify.index_checks)()
        msg = err.get()
        if msg:
            raise IndexError(
                f"{name} indexes out of range with n_spins={model.n_spins}, n_bosons={model.n_bosons}: "
                f"{msg.strip().splitlines()[0]} (JAX would silently clamp the index)"
            )


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
