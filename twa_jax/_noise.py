"""Correlated dissipative noise: Gamma = V diag(gamma) V^dag (paper Eqs. 58-60, PHYSICS.md 5).

The Langevin noise of the TWA has ``<xi xi^dag> = 2 Gamma dt``, ``<xi xi^T> = 0`` per step. We
factor ``Gamma = B B^dag`` with ``B = V_r sqrt(gamma_r)`` keeping only the ``K'`` eigen-channels
with a significant rate, and draw ``K'`` independent circular complex increments ``dW`` with
``<dW dW^*> = 2 dt``; then ``xi = B dW``. A rank-one (fully collective) Gamma costs one channel.
A diagonal Gamma needs no eigendecomposition: ``B`` is ``sqrt(rates)`` on the non-zero channels.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._checks import is_concrete

#: channels with rate below ``KEEP_RTOL * max(rate)`` carry no noise and are dropped.
KEEP_RTOL = 1e-10


def _matvec(M, v):
    """``M @ v`` without promoting a real ``M`` to complex (two real matvecs instead)."""
    if jnp.iscomplexobj(M) or not jnp.iscomplexobj(v):
        return M @ v
    return jax.lax.complex(M @ v.real, M @ v.imag)


class NoiseBasis(eqx.Module):
    """The factor ``B`` of ``Gamma = B B^dag`` and how to apply Gamma.

    Attributes:
        gamma: the rates ``(K,)`` (diagonal) or the matrix ``(K, K)``.
        factor: ``(K',)`` square-root rates of the kept channels (diagonal) or ``(K, K')``.
        channels: indices of the kept channels (diagonal case only), static.
        diagonal: whether Gamma is diagonal.
        low_rank: apply Gamma as ``B (B^dag L)`` instead of ``Gamma @ L`` (when ``K' <= K/2``).
    """

    gamma: jax.Array
    factor: jax.Array
    channels: tuple[int, ...] | None = eqx.field(static=True)
    diagonal: bool = eqx.field(static=True)
    low_rank: bool = eqx.field(static=True)

    @property
    def n_jumps(self) -> int:
        return self.gamma.shape[0]

    @property
    def n_channels(self) -> int:
        """Number of independent complex noise channels ``K'``."""
        return self.factor.shape[-1]

    @property
    def max_rate(self):
        """Largest eigenvalue of Gamma."""
        if self.diagonal:
            return jnp.max(self.gamma, initial=0.0)
        return jnp.max(jnp.sum(jnp.abs(self.factor) ** 2, axis=0), initial=0.0)

    def apply_gamma(self, L):
        """``Gamma @ L`` for a ``(K,)`` complex vector."""
        if self.diagonal:
            return self.gamma * L
        if self.low_rank:
            return _matvec(self.factor, _matvec(jnp.conj(self.factor).T, L))
        return _matvec(self.gamma, L)

    def xi(self, dW):
        """Noise in jump space: ``xi = B dW`` for ``(K',)`` complex increments ``dW``."""
        if self.diagonal:
            if self.channels is None:
                return self.factor * dW
            return jnp.zeros(self.n_jumps, dW.dtype).at[np.asarray(self.channels, int)].set(
                self.factor * dW
            )
        return _matvec(self.factor, dW)

    def sample_dW(self, key, dt, dtype):
        """``(K',)`` circular complex increments with ``<dW dW^*> = 2 dt`` (Re, Im of variance dt)."""
        z = jax.random.normal(key, (self.n_channels, 2), dtype) * jnp.sqrt(dt).astype(dtype)
        return jax.lax.complex(z[:, 0], z[:, 1])


def decompose(gamma, rtol: float = KEEP_RTOL) -> NoiseBasis:
    """Factor a rate vector or a Hermitian PSD matrix into independent noise channels.

    With concrete values, channels with rate ``<= rtol * max rate`` are dropped (a rank-one
    Gamma gives one channel). Under tracing (differentiating with respect to Gamma) all ``K``
    channels are kept, since their number must be static.

    Args:
        gamma: ``(K,)`` rates or ``(K, K)`` Hermitian PSD matrix (validated by the caller).

    Returns:
        A :class:`NoiseBasis`.
    """
    g = jnp.asarray(gamma)
    if not (jnp.issubdtype(g.dtype, jnp.floating) or jnp.issubdtype(g.dtype, jnp.complexfloating)):
        g = g.astype(jnp.zeros(()).dtype)
    if g.ndim == 1:
        g = jnp.real(g)
        if is_concrete(gamma):
            gn = np.asarray(g)
            keep = np.nonzero(gn > rtol * max(gn.max(initial=0.0), 0.0))[0]
            if len(keep) == len(gn):
                return NoiseBasis(g, jnp.sqrt(g), None, True, False)
            return NoiseBasis(g, jnp.sqrt(g[keep]), tuple(int(i) for i in keep), True, False)
        return NoiseBasis(g, jnp.sqrt(jnp.clip(g, 0.0)), None, True, False)
    g = 0.5 * (g + jnp.conj(g).T)
    if not jnp.iscomplexobj(g) or (is_concrete(gamma) and not np.any(np.imag(np.asarray(g)))):
        g = jnp.real(g)
    w, V = jnp.linalg.eigh(g)
    K = g.shape[0]
    if is_concrete(gamma):
        wn = np.asarray(w)
        keep = np.nonzero(wn > rtol * max(np.abs(wn).max(initial=0.0), 0.0))[0]
        factor = V[:, keep] * jnp.sqrt(w[keep])
        return NoiseBasis(g, factor, None, False, 2 * len(keep) <= K)
    factor = V * jnp.sqrt(jnp.clip(w, 0.0))
    return NoiseBasis(g, factor, None, False, False)
