"""``Model``: a Lindblad problem written as classical JAX functions.

The user supplies the Weyl symbols of the Hamiltonian and of the jump operators as functions of
the classical variables, and the dissipation matrix Gamma of

    d rho/dt = -i[H, rho] + sum_ij Gamma_ji (L_i rho L_j^dag - 1/2 {L_j^dag L_i, rho})

Spins are ``(n_spins, 3)`` real arrays (Pauli normalization, ``s -> sigma``, unless ``spin_S`` is
set, in which case ``S -> S`` operators of length ``S``); bosons are ``(n_bosons,)`` complex
amplitudes ``a``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._checks import abstract_signature, check_finite_tree, check_gamma_matrix, check_half_integer, default_float, memo
from ._noise import decompose
from ._quantize import warn_same_site


class Model(eqx.Module):
    """A driven-dissipative spin/boson model for the truncated Wigner approximation.

    Args:
        hamiltonian: ``H(spins, bosons, params) -> real scalar``; ``spins`` is ``(n_spins, 3)``
            real, ``bosons`` is ``(n_bosons,)`` complex. Write the classical (Weyl) symbol,
            e.g. ``Omega * spins[:, 0].sum()`` for ``Omega sum_i sigma_i^x``.
        jumps: ``L(spins, bosons, params) -> (n_jumps,)`` complex jump-operator symbols, e.g.
            ``(spins[:, 0] - 1j * spins[:, 1]) / 2`` for ``sigma^-`` on every site. ``None`` for
            a closed system.
        gamma: the dissipation matrix: ``(n_jumps,)`` non-negative rates (diagonal Gamma, fast
            path), a ``(n_jumps, n_jumps)`` Hermitian positive-semidefinite matrix, or a
            function ``gamma(params)`` returning either.
        n_spins: number of spins ``N``.
        n_bosons: number of boson modes ``M``.
        spin_S: ``None`` (default) for spin-1/2 in the Pauli normalization
            (``{s^a, s^b} = 2 eps_abc s^c``); a number ``S`` for spins of length ``S`` in the
            ``S``-operator normalization (``{S^a, S^b} = eps_abc S^c``).
        params: default parameter values (a dict); :func:`~twa_jax.simulate` uses them for every
            key the caller's ``params`` does not give. The built-in models set them.
        observables: the model's own observables ``{name: f(spins, bosons)}``, recorded by
            :func:`~twa_jax.simulate` when it is called without ``observables``.
        quantum: a hand-written exact twin, ``quantum(params, basis, cutoff) ->
            twa_jax.exact.QuantumModel`` (QuTiP operators built from the same parameters), or
            ``None`` for a ``basis`` (``"full"`` or ``"piqs"``) it does not build. Not needed
            for polynomial models: :func:`twa_jax.exact.twin` reads their twin off these functions.
        allow_same_site: names of observables whose products of one site's spin components are
            intended (no :class:`~twa_jax.SameSiteWarning` for them).
        time_dependent: ``True`` declares that the Hamiltonian, the jump operators and a callable
            ``gamma`` take the time as a last argument: ``H(spins, bosons, params, t)``,
            ``L(spins, bosons, params, t)``, ``gamma(params, t)`` (a constant Gamma array stays
            constant). The solver evaluates them at the stage times of its scheme (both ends of
            each step); see ``docs/conventions.md``, "Protocols in time". Checks that need one
            time (the same-site warning, the index check) use ``t = 0``.

    Warns:
        SameSiteWarning: for a spin-1/2 model (checked when the default ``params`` suffice to
            call the functions) whose Hamiltonian, jump operators or observables multiply
            components of one site's spin: quantum mechanically such a product is a constant
            (``s^a s^b -> delta_ab``), in TWA it is not. The warning names the site and the fix.

    Raises:
        TypeError, ValueError: on inconsistent sizes, non-callable functions, or a Gamma that is
            not square / Hermitian / positive semidefinite, or has negative or NaN rates.

    Example:
        >>> import jax.numpy as jnp, twa_jax as tw
        >>> model = tw.Model(
        ...     lambda s, a, p: p["Omega"] * s[:, 0].sum(),
        ...     jumps=lambda s, a, p: (s[:, 0] - 1j * s[:, 1]) / 2,
        ...     gamma=lambda p: jnp.full(1, p["gamma"]),
        ...     n_spins=1,
        ... )
    """

    hamiltonian: Callable = eqx.field(static=True)
    jumps: Callable | None = eqx.field(static=True, default=None)
    gamma: Any = None
    n_spins: int = eqx.field(static=True, default=0)
    n_bosons: int = eqx.field(static=True, default=0)
    spin_S: float | None = eqx.field(static=True, default=None)
    params: dict | None = None
    observable_items: tuple | None = eqx.field(static=True, default=None)
    quantum: Callable | None = eqx.field(static=True, default=None)
    allow_same_site: tuple = eqx.field(static=True, default=())
    noise_basis: Any = None  # the factor of a constant Gamma (see __init__)
    time_dependent: bool = eqx.field(static=True, default=False)

    def __init__(
        self, hamiltonian, jumps=None, gamma=None, n_spins=0, n_bosons=0, spin_S=None,
        *, params=None, observables=None, quantum=None, allow_same_site=(), time_dependent=False,
    ):
        if not isinstance(time_dependent, bool):
            raise TypeError(f"time_dependent must be True or False, got {time_dependent!r}")
        self.time_dependent = time_dependent
        self.hamiltonian = hamiltonian
        self.jumps = jumps
        self.gamma = gamma
        self.n_spins = n_spins
        self.n_bosons = n_bosons
        self.spin_S = spin_S
        if params is not None and not isinstance(params, dict):
            raise TypeError(f"params must be a dict of default parameter values, got {type(params).__name__}")
        self.params = params
        if observables is not None:
            if not isinstance(observables, dict) or not all(callable(f) for f in observables.values()):
                raise TypeError("observables must be a dict {name: f(spins, bosons)}")
            observables = tuple(observables.items())  # hashable: part of the compiled program
        self.observable_items = observables
        if quantum is not None and not callable(quantum):
            raise TypeError(f"quantum must be a function quantum(params, basis, cutoff), got {quantum!r}")
        self.quantum = quantum
        self.allow_same_site = tuple(allow_same_site)
        # a constant Gamma is validated and factored once, here; the run plan reuses the factor
        self.noise_basis = decompose(gamma) if gamma is not None and not callable(gamma) else None

    def __check_init__(self):
        if not callable(self.hamiltonian):
            raise TypeError(f"hamiltonian must be a function H(spins, bosons, params), got {self.hamiltonian!r}")
        for name in ("n_spins", "n_bosons"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{name} must be an int, got {type(v).__name__} {v!r}")
            if v < 0:
                raise ValueError(f"{name} must be >= 0, got {v}")
        if self.n_spins == 0 and self.n_bosons == 0:
            raise ValueError("the model has no degrees of freedom: set n_spins and/or n_bosons")
        if self.spin_S is not None:
            check_half_integer(self.spin_S, "spin_S")
        if (self.jumps is None) != (self.gamma is None):
            raise ValueError(
                "jumps and gamma go together: give both (dissipative model) or neither (closed)"
            )
        if self.jumps is not None and not callable(self.jumps):
            raise TypeError(f"jumps must be a function L(spins, bosons, params), got {self.jumps!r}")
        self._check_signatures()
        self._warn_same_site()

    def _check_signatures(self):
        """``time_dependent`` says how many arguments the functions take; check it up front."""
        funcs = [("hamiltonian", self.hamiltonian, "H(spins, bosons, params", 3)]
        if self.jumps is not None:
            funcs.append(("jumps", self.jumps, "L(spins, bosons, params", 3))
        if callable(self.gamma):
            funcs.append(("gamma", self.gamma, "gamma(params", 1))
        for name, f, call, n in funcs:
            try:
                sig = inspect.signature(f)
            except (TypeError, ValueError):  # no signature to read (some builtins): calls will tell
                continue
            if self.time_dependent:
                try:
                    sig.bind(*range(n + 1))
                except TypeError:
                    raise TypeError(
                        f"time_dependent=True: {name} must take the time as its last argument, "
                        f"{call}, t); {name}{sig} does not"
                    ) from None
            else:
                try:
                    sig.bind(*range(n))
                except TypeError:
                    hint = " (if it depends on time, pass time_dependent=True)" if _binds(sig, n + 1) else ""
                    raise TypeError(f"{name} must be callable as {call}); {name}{sig} is not{hint}") from None

    def _warn_same_site(self):
        """The same-site check (see the class's Warns), with the default parameters if they suffice."""
        if self.spin_S is not None or self.n_spins == 0:
            return
        params = self.with_params()
        try:
            self.check(params)
        except Exception:  # the defaults do not suffice (or are bad): the run plan checks later
            return
        warn_same_site(self, params, self.observables, allow=self.allow_same_site)

    # ------------------------------------------------------------------ helpers
    @property
    def observables(self) -> dict | None:
        """The model's own observables ``{name: f(spins, bosons)}``, or ``None``."""
        return None if self.observable_items is None else dict(self.observable_items)

    def with_params(self, params=None) -> dict:
        """The model's default parameters updated by ``params`` (the caller's values win)."""
        if params is None:
            return dict(self.params) if self.params is not None else {}
        if self.params is None:
            return params
        if not isinstance(params, dict):
            raise TypeError(
                f"this model has default parameters {sorted(self.params)}; pass params as a dict "
                f"that overrides some of them, got {type(params).__name__}"
            )
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            public = sorted(k for k in self.params if not k.startswith("__"))  # not a correlation's kicks
            raise ValueError(f"unknown parameter(s) {unknown}; this model's parameters are {public}")
        return {**self.params, **params}

    def H(self, spins, bosons, params, t=0.0):
        """The Hamiltonian's symbol at one point (and time ``t``, for a time-dependent model)."""
        if self.time_dependent:
            return self.hamiltonian(spins, bosons, params, t)
        return self.hamiltonian(spins, bosons, params)

    def L(self, spins, bosons, params, t=0.0):
        """The jump operators' symbols ``(K,)`` at one point (and time ``t``)."""
        if self.time_dependent:
            return self.jumps(spins, bosons, params, t)
        return self.jumps(spins, bosons, params)

    @property
    def gamma_depends_on_time(self) -> bool:
        """Whether Gamma is a function of the time (factored again at every stage)."""
        return self.time_dependent and callable(self.gamma)

    @property
    def spin_factor(self) -> float:
        """Factor ``c`` in ``ds/dt = c (grad_s H~) x s``: 2 for Pauli, 1 for S-normalization."""
        return 2.0 if self.spin_S is None else 1.0

    @property
    def is_dissipative(self) -> bool:
        return self.jumps is not None

    def gamma_of(self, params, t=0.0):
        """Gamma for these parameters (at time ``t``), as a ``(K,)`` rate vector or a ``(K, K)`` matrix."""
        if self.gamma is None:
            return None
        if callable(self.gamma):
            g = self.gamma(params, t) if self.time_dependent else self.gamma(params)
        else:
            g = self.gamma
        return jnp.asarray(g)

    def check(self, params, dtype=None, t=0.0, with_gamma=True) -> int:
        """Validate the model's functions against ``params`` by abstract evaluation.

        Nothing is compiled: shapes and dtypes come from ``jax.eval_shape``. ``with_gamma=False``
        leaves out Gamma (its values and its size against the jump operators), for a caller
        that validates it itself when it factors it (the run plan: :func:`check_gamma_size`).

        Returns:
            The number of jump operators ``K`` (0 for a closed system).
        """
        check_finite_tree(params, "params")
        dtype = dtype or default_float()
        K = memo(self, ("check", abstract_signature(params), jnp.dtype(dtype)), lambda: self._check_abstract(params, dtype))
        if self.jumps is None or not with_gamma:
            return K
        g = self.gamma_of(params, t)
        check_gamma_matrix(g, "gamma")
        check_gamma_size(g, K)
        return K

    def _check_abstract(self, params, dtype) -> int:
        """The part of :meth:`check` that traces the model's functions abstractly (remembered per
        model, parameter shapes and dtype: :func:`~twa_jax._checks.memo`); returns ``K``."""
        cdtype = jnp.result_type(dtype, jnp.complex64)
        s = jax.ShapeDtypeStruct((self.n_spins, 3), dtype)
        a = jax.ShapeDtypeStruct((self.n_bosons,), cdtype)
        t = jax.ShapeDtypeStruct((), dtype)
        try:
            h = jax.eval_shape(self.H, s, a, params, t)
        except Exception as e:  # user code failed on abstract inputs: say where
            raise TypeError(
                f"calling hamiltonian(spins[{self.n_spins}, 3], bosons[{self.n_bosons}], params) "
                f"failed: {type(e).__name__}: {e}"
            ) from e
        if not hasattr(h, "shape") or h.shape != ():
            raise TypeError(f"hamiltonian must return a real scalar, got shape {getattr(h, 'shape', h)}")
        if not jnp.issubdtype(h.dtype, jnp.floating):
            raise TypeError(
                f"hamiltonian must return a real floating scalar, got dtype {h.dtype} "
                "(take the real part of a Hermitian expression, e.g. 2*Re(a s^+))"
            )
        if self.jumps is None:
            return 0
        try:
            L = jax.eval_shape(self.L, s, a, params, t)
        except Exception as e:
            raise TypeError(
                f"calling jumps(spins[{self.n_spins}, 3], bosons[{self.n_bosons}], params) "
                f"failed: {type(e).__name__}: {e}"
            ) from e
        if not hasattr(L, "shape") or len(L.shape) != 1:
            raise ValueError(
                f"jumps must return a 1-D (n_jumps,) array, got shape {getattr(L, 'shape', L)}"
            )
        if not (jnp.issubdtype(L.dtype, jnp.complexfloating) or jnp.issubdtype(L.dtype, jnp.floating)):
            raise TypeError(f"jumps must return a complex (or real) floating array, got dtype {L.dtype}")
        return L.shape[0]


def check_gamma_size(gamma, K) -> None:
    """Gamma is ``(K,)`` or ``(K, K)`` for ``K`` jump operators."""
    if gamma.shape[0] != K:
        raise ValueError(
            f"gamma has shape {tuple(gamma.shape)} but jumps returns {K} jump operators; "
            f"expected ({K},) or ({K}, {K})"
        )


def _binds(sig, n) -> bool:
    try:
        sig.bind(*range(n))
        return True
    except TypeError:
        return False
