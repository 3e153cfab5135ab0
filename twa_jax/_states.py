"""Initial states: phase-space distributions of spins and bosons to sample trajectories from.

Every state is a subclass of :class:`AbstractState` (an ``eqx.Module``) with ``n_spins``,
``n_bosons``, ``spin_S`` and two methods: ``sample(key) -> (spins (n_spins, 3), bosons (n_bosons,)
complex)`` draws one phase-space point, ``mean() -> (spins, bosons)`` gives the unsampled
mean-field point. The built-in states are final subclasses; product states combine independent
factors. Users subclass :class:`AbstractState` for distributions of their own.
"""

from __future__ import annotations

from collections.abc import Sequence

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._checks import check_half_integer, check_int, default_float


def _dtype():
    return default_float()


def _cdtype():
    return jnp.result_type(_dtype(), jnp.complex64)


def _frames(n):
    """Orthonormal ``e1, e2`` perpendicular to each unit vector ``n`` (rows)."""
    # pick the axis least aligned with n to build e1
    ax = jnp.eye(3, dtype=n.dtype)[jnp.argmin(jnp.abs(n), axis=-1)]
    e1 = ax - jnp.sum(ax * n, -1, keepdims=True) * n
    e1 = e1 / jnp.linalg.norm(e1, axis=-1, keepdims=True)
    e2 = jnp.cross(n, e1)
    return e1, e2


def _as_vectors(direction, name="direction"):
    """``direction`` as a float array, or a TypeError that names it."""
    try:
        return np.asarray(direction, dtype=float)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a 3-vector of numbers or an (n, 3) array, got {direction!r}") from e


def _directions(direction, n, name="direction"):
    d = _as_vectors(direction, name)
    if d.shape == (3,):
        d = np.broadcast_to(d, (n, 3))
    if d.shape != (n, 3):
        raise ValueError(f"{name} must be one 3-vector or one per spin, shape ({n}, 3); got {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError(f"{name} contains NaN or infinite values")
    norms = np.linalg.norm(d, axis=-1)
    if np.any(norms == 0):
        raise ValueError(f"{name} has a zero vector; give unit vectors (they are normalized)")
    return d / norms[:, None]


class AbstractState(eqx.Module):
    """An initial phase-space distribution; subclass it for your own.

    A subclass provides the sizes ``n_spins``, ``n_bosons`` and the spin normalization ``spin_S``
    (``None`` for spin-1/2 in the Pauli normalization, a number ``S`` for ``Model(spin_S=S)``) as
    fields or properties, and two methods:

    * ``sample(key) -> (spins (n_spins, 3) real, bosons (n_bosons,) complex)``: one phase-space
      point, a pure function of ``key`` (trajectory ``i`` samples with its own key, so results do
      not depend on chunks or devices);
    * ``mean() -> (spins, bosons)``: the point ``method="mean_field"`` starts from.

    Arrays are fields (pytree leaves), sizes are ``eqx.field(static=True)``.

    Example:
        A spin-1/2 squeezed along ``y``: Gaussian transverse noise of variance ``e^{-2r}`` along
        ``y`` and ``e^{2r}`` along ``z`` around ``+x``.

        >>> import equinox as eqx, jax, jax.numpy as jnp, twa_jax as tw
        >>> class Squeezed(tw.states.AbstractState):
        ...     r: float
        ...     n_spins: int = eqx.field(static=True)
        ...     n_bosons: int = eqx.field(static=True, default=0)
        ...     spin_S: None = eqx.field(static=True, default=None)
        ...     def sample(self, key):
        ...         u = jax.random.normal(key, (self.n_spins, 2))
        ...         s = jnp.stack([jnp.ones(self.n_spins), jnp.exp(-self.r) * u[:, 0], jnp.exp(self.r) * u[:, 1]], -1)
        ...         return s, jnp.zeros((0,), complex)
        ...     def mean(self):
        ...         return jnp.tile(jnp.array([1.0, 0.0, 0.0]), (self.n_spins, 1)), jnp.zeros((0,), complex)
        >>> Squeezed(0.3, 4).sample(jax.random.key(0))[0].shape
        (4, 3)
    """

    # n_spins, n_bosons and spin_S are not declared here (as AbstractVar) so that subclasses may
    # order their fields freely (a dataclass keeps inherited fields first); the run plan checks them.

    @abc.abstractmethod
    def sample(self, key):
        """One phase-space point ``(spins (n_spins, 3), bosons (n_bosons,) complex)``."""

    @abc.abstractmethod
    def mean(self):
        """The unsampled point ``(spins, bosons)`` (for ``method="mean_field"``)."""


class SpinHalfState(AbstractState):
    """Product of spin-1/2 coherent states, Pauli normalization.

    ``sampling="discrete"`` (DTWA, Eq. 16): ``s = n + e1 r1 + e2 r2`` with ``r = +-1``, so
    ``|s|^2 = 3`` exactly. ``"gaussian"``: ``r`` standard normal, ``|s|^2 = 3`` on average.
    """

    directions: jax.Array  # (n, 3) unit vectors
    sampling: str = eqx.field(static=True)
    n_spins: int = eqx.field(static=True)
    n_bosons: int = eqx.field(static=True, default=0)
    spin_S: None = eqx.field(static=True, default=None)

    def sample(self, key):
        n = self.directions
        e1, e2 = _frames(n)
        if self.sampling == "discrete":
            r = jax.random.rademacher(key, (self.n_spins, 2), dtype=n.dtype)
        else:
            r = jax.random.normal(key, (self.n_spins, 2), dtype=n.dtype)
        s = n + e1 * r[:, :1] + e2 * r[:, 1:]
        return s, jnp.zeros((0,), _cdtype())

    def mean(self):
        return self.directions, jnp.zeros((0,), _cdtype())


class SpinCoherentState(AbstractState):
    """Spin-S coherent states in the S-normalization: ``S n`` plus transverse Gaussian noise of
    variance ``S/2`` in each of the two perpendicular directions."""

    S: float = eqx.field(static=True)
    directions: jax.Array
    n_spins: int = eqx.field(static=True)
    n_bosons: int = eqx.field(static=True, default=0)

    @property
    def spin_S(self):
        return self.S

    def sample(self, key):
        n = self.directions
        e1, e2 = _frames(n)
        r = jax.random.normal(key, (self.n_spins, 2), dtype=n.dtype) * jnp.sqrt(self.S / 2)
        return self.S * n + e1 * r[:, :1] + e2 * r[:, 1:], jnp.zeros((0,), _cdtype())

    def mean(self):
        return self.S * self.directions, jnp.zeros((0,), _cdtype())


class GaussianBosonState(AbstractState):
    """Gaussian Wigner function of independent modes: mean ``alpha``, quadrature variance
    ``(n_th + 1/2) / 2`` each for Re a and Im a (vacuum: ``1/4``, ``<|a|^2> = 1/2``)."""

    alpha: jax.Array  # (m,) complex
    n_th: jax.Array  # (m,) real
    n_bosons: int = eqx.field(static=True)
    n_spins: int = eqx.field(static=True, default=0)
    spin_S: None = eqx.field(static=True, default=None)

    def sample(self, key):
        z = jax.random.normal(key, (self.n_bosons, 2), dtype=_dtype())
        sd = jnp.sqrt((self.n_th + 0.5) / 2)[:, None]
        z = z * sd
        return jnp.zeros((0, 3), _dtype()), self.alpha + jax.lax.complex(z[:, 0], z[:, 1])

    def mean(self):
        return jnp.zeros((0, 3), _dtype()), self.alpha


class ProductState(AbstractState):
    """Independent product of spin states and boson states (concatenated in order)."""

    spin_parts: tuple
    boson_parts: tuple
    n_spins: int = eqx.field(static=True)
    n_bosons: int = eqx.field(static=True)
    spin_S: float | None = eqx.field(static=True)

    def sample(self, key):
        parts = self.spin_parts + self.boson_parts
        keys = jax.random.split(key, max(len(parts), 1))
        out = [p.sample(k) for p, k in zip(parts, keys)]
        return self._join(out)

    def mean(self):
        return self._join([p.mean() for p in self.spin_parts + self.boson_parts])

    def _join(self, out):
        spins = [o[0] for o in out if o[0].shape[0]]
        bosons = [o[1] for o in out if o[1].shape[0]]
        s = jnp.concatenate(spins, 0) if spins else jnp.zeros((0, 3), _dtype())
        a = jnp.concatenate(bosons, 0) if bosons else jnp.zeros((0,), _cdtype())
        return s, a


# ---------------------------------------------------------------------------- public builders
def _check_n(n, name="n"):
    return check_int(n, name, minimum=1)


def spins(direction, n: int | None = None, sampling: str = "discrete") -> SpinHalfState:
    """Spin-1/2 product state with each spin along a unit vector.

    Args:
        direction: one 3-vector (all spins) or ``(n, 3)`` (one per spin); normalized.
        n: number of spins (inferred from ``direction`` when it is ``(n, 3)``).
        sampling: ``"discrete"`` (DTWA, default) or ``"gaussian"``.
    """
    if sampling not in ("discrete", "gaussian"):
        raise ValueError(f"sampling must be 'discrete' or 'gaussian', got {sampling!r}")
    d = _as_vectors(direction)
    if n is None:
        if d.ndim != 2:
            raise ValueError("give n, or direction of shape (n, 3)")
        n = d.shape[0]
    n = _check_n(n)
    d = _directions(d, n)
    return SpinHalfState(np.asarray(d, _dtype()), sampling, n)


def spins_up(n: int, sampling: str = "discrete") -> SpinHalfState:
    """All ``n`` spins up, ``sigma^z = +1``."""
    return spins([0.0, 0.0, 1.0], n, sampling)


def spins_down(n: int, sampling: str = "discrete") -> SpinHalfState:
    """All ``n`` spins down, ``sigma^z = -1`` (the paper's Eq. 16 for DTWA)."""
    return spins([0.0, 0.0, -1.0], n, sampling)


def spin_coherent(S: float, direction, n: int | None = None) -> SpinCoherentState:
    """Spin-S coherent state(s) in the S-normalization (use with ``Model(spin_S=S)``).

    Each spin's Wigner function is approximated by a Gaussian: the mean ``S n`` along its unit
    vector ``n`` and variance ``S/2`` in each of the two perpendicular directions, so that
    ``<S_n> = S``, ``<S_perp^2> = S/2`` and ``<|S|^2> = S(S+1)`` (the Weyl symbol of the Casimir).

    Args:
        S: the spin length, a positive multiple of 1/2.
        direction: one 3-vector (all spins) or ``(n, 3)`` (one per spin); normalized.
        n: number of spins (default: ``direction``'s first axis if it is ``(n, 3)``, else 1).
    """
    check_half_integer(S, "S")
    d = _as_vectors(direction)
    if n is None:
        n = d.shape[0] if d.ndim == 2 else 1
    n = _check_n(n)
    return SpinCoherentState(float(S), np.asarray(_directions(d, n), _dtype()), n)


def _boson_arrays(alpha, n_th, name):
    alpha = np.atleast_1d(np.asarray(alpha, dtype=complex))
    n_th = np.atleast_1d(np.asarray(n_th, dtype=float))
    alpha, n_th = np.broadcast_arrays(alpha, n_th)
    if alpha.ndim != 1:
        raise ValueError(f"{name}: expected a scalar or a 1-D array per mode, got shape {alpha.shape}")
    if not (np.all(np.isfinite(alpha)) and np.all(np.isfinite(n_th))):
        raise ValueError(f"{name}: NaN or infinite values")
    if np.any(n_th < 0):
        raise ValueError(f"{name}: thermal occupation must be >= 0, got {n_th}")
    return GaussianBosonState(np.asarray(alpha, _cdtype()), np.asarray(n_th, _dtype()), len(alpha))


def vacuum(m: int = 1) -> GaussianBosonState:
    """``m`` modes in the vacuum: Re a, Im a Gaussian with variance 1/4 each."""
    return _boson_arrays(np.zeros(_check_n(m, "m")), 0.0, "vacuum")


def coherent(alpha) -> GaussianBosonState:
    """Coherent state(s) ``|alpha>``: ``alpha`` plus vacuum noise; scalar or one per mode."""
    return _boson_arrays(alpha, 0.0, "coherent")


def thermal(n_th) -> GaussianBosonState:
    """Thermal state(s) with mean occupation ``n_th``: variance ``(n_th + 1/2)/2`` per quadrature."""
    return _boson_arrays(0.0, n_th, "thermal")


def product(spins=None, bosons=None) -> ProductState:
    """Independent product of spin and boson states.

    Args:
        spins: a spin state or a sequence of them (concatenated in order).
        bosons: a boson state or a sequence of them (concatenated in order).
    """
    sp = tuple(spins) if isinstance(spins, Sequence) else ((spins,) if spins is not None else ())
    bo = tuple(bosons) if isinstance(bosons, Sequence) else ((bosons,) if bosons is not None else ())
    for p in sp:
        if not isinstance(p, AbstractState) or p.n_bosons or not p.n_spins:
            raise TypeError(f"spins= takes spin states (tw.states.spins, ...), got {type(p).__name__}")
    for p in bo:
        if not isinstance(p, AbstractState) or p.n_spins or not p.n_bosons:
            raise TypeError(f"bosons= takes boson states (tw.states.vacuum, ...), got {type(p).__name__}")
    Ss = {p.spin_S for p in sp}
    if len(Ss) > 1:
        raise ValueError(f"all spins of one model share one normalization; got spin_S values {Ss}")
    if not sp and not bo:
        raise ValueError("product() needs at least one spin or boson state")
    return ProductState(
        sp, bo, sum(p.n_spins for p in sp), sum(p.n_bosons for p in bo), Ss.pop() if Ss else None
    )

