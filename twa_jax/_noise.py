"""Correlated dissipative noise: Gamma = V diag(gamma) V^dag (paper Eqs. 58-60;
``docs/conventions.md``, "Noise").

The Langevin noise of the TWA has ``<xi xi^dag> = 2 Gamma dt``, ``<xi xi^T> = 0`` per step. We
factor ``Gamma = B B^dag`` with ``B = V_r sqrt(gamma_r)`` keeping only the ``K'`` eigen-channels
with a significant rate, and draw ``K'`` independent circular complex increments ``dW`` with
``<dW dW^*> = 2 dt``; then ``xi = B dW``. A rank-one (fully collective) Gamma costs one channel.
A diagonal Gamma needs no eigendecomposition: ``B`` is ``sqrt(rates)`` on the non-zero channels.

Derivatives with respect to Gamma (pathwise, common random numbers). Only ``B B^dag = Gamma`` fixes
the law of the noise, so any factor gives the same statistics; but a pathwise derivative is the
derivative of one particular *function* ``theta -> B(theta)`` evaluated with the increments ``dW``
held fixed. It is correct (its mean is ``d<O>/d theta``, and it equals the central finite
difference with the same key) when ``B(theta) B(theta)^dag = Gamma(theta)`` for every ``theta``
near the point and ``B`` is differentiable there. The eigenvector factor ``V sqrt(gamma)`` fails
both: eigenvectors carry an arbitrary sign/phase and are not differentiable at degenerate
eigenvalues (every rank-deficient Gamma has a degenerate null space), and ``sqrt`` is singular at
the zero eigenvalues. When every channel is kept (full rank, or under tracing) we therefore use the
principal square root ``B = Gamma^{1/2} = V sqrt(gamma) V^dag``: it is unique (no gauge), and its
derivative is the Daleckii-Krein formula ``(V^dag dB V)_ij = (V^dag dGamma V)_ij / (s_i + s_j)``,
``s = sqrt(gamma)``, finite also at degenerate eigenvalues (:func:`psd_sqrt`). For a
rank-deficient Gamma whose rank does not change with ``theta`` (collective decay ``gamma0 * ones``,
any ``Gamma = A A^dag`` with fixed column count) the null-null block of ``V^dag dGamma V``
vanishes and the formula is the exact derivative. A direction that switches a channel on from zero
rate has no pathwise derivative (``d sqrt(r)/dr`` is infinite at ``r = 0``, for any factor); it
comes out huge rather than silently small (parametrize such rates to stay positive).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._checks import check_gamma_matrix, check_psd, default_float, is_concrete
from ._forms import matvec

#: channels with rate below ``KEEP_RTOL * max(rate)`` carry no noise and are dropped.
KEEP_RTOL = 1e-10


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
    top_rate: jax.Array | None = None  # the largest eigenvalue, when the factorization found it

    @property
    def n_jumps(self) -> int:
        return self.gamma.shape[0]

    @property
    def n_channels(self) -> int:
        """Number of independent complex noise channels ``K'``."""
        return self.factor.shape[-1]

    @property
    def max_rate(self):
        """Largest eigenvalue of Gamma (the squared largest singular value of any factor ``B``)."""
        if self.diagonal:
            return jnp.max(self.gamma, initial=0.0)
        if self.top_rate is not None:
            return self.top_rate
        if self.factor.shape[-1] == 0:
            return jnp.zeros((), jnp.real(self.factor).dtype)
        return jnp.linalg.norm(self.factor, 2) ** 2

    def apply_gamma(self, L):
        """``Gamma @ L`` for a ``(K,)`` complex vector."""
        if self.diagonal:
            return self.gamma * L
        if self.low_rank:
            return matvec(self.factor, matvec(jnp.conj(self.factor).T, L))
        return matvec(self.gamma, L)

    def xi(self, dW):
        """Noise in jump space: ``xi = B dW`` for ``(K',)`` complex increments ``dW``."""
        if self.diagonal:
            if self.channels is None:
                return self.factor * dW
            return jnp.zeros(self.n_jumps, dW.dtype).at[np.asarray(self.channels, int)].set(
                self.factor * dW
            )
        return matvec(self.factor, dW)

    def sample_dW(self, key, dt, dtype):
        """``(K',)`` circular complex increments with ``<dW dW^*> = 2 dt`` (Re, Im of variance dt)."""
        z = jax.random.normal(key, (self.n_channels, 2), dtype) * jnp.sqrt(dt).astype(dtype)
        return jax.lax.complex(z[:, 0], z[:, 1])


def _sqrt_eigh(G):
    w, V = jnp.linalg.eigh(G)
    return jnp.sqrt(jnp.clip(w, 0.0)), V


@jax.custom_jvp
def psd_sqrt(G):
    r"""Principal square root ``G^{1/2} = V diag(sqrt(w)) V^dag`` of a Hermitian PSD matrix.

    Differentiable with the Daleckii-Krein derivative
    :math:`(V^\dagger\, dB\, V)_{ij} = (V^\dagger\, dG\, V)_{ij} / (s_i + s_j)`, :math:`s = \sqrt{w}`,
    which stays finite at degenerate and zero eigenvalues as long as ``dG`` does not reach into the
    null space of ``G`` (``(V^dag dG V)_ij = 0`` for ``s_i = s_j = 0``; true whenever the rank of
    ``G`` is locally constant). A tangent that changes the rank (a channel switched on from zero
    rate) has no finite pathwise derivative; it comes out huge (``~|dG| / (2e-5 sqrt(max w))``),
    not silently small. Eigenvalues below ``1e-10 * max w`` (and negative rounding) count as zero.

    Args:
        G: ``(K, K)`` Hermitian positive-semidefinite matrix (real symmetric or complex).

    Returns:
        ``(K, K)`` Hermitian ``B`` with ``B B^dag = B^2 = G``.
    """
    s, V = _sqrt_eigh(G)
    return (V * s.astype(V.dtype)) @ jnp.conj(V).T


@psd_sqrt.defjvp
def _psd_sqrt_jvp(primals, tangents):
    (G,), (dG,) = primals, tangents
    s, V = _sqrt_eigh(G)
    Vh = jnp.conj(V).T
    B = (V * s.astype(V.dtype)) @ Vh
    dGt = Vh @ dG @ V
    # s_i + s_j is floored at 2 sqrt(KEEP_RTOL) max(s): eigenvalues below KEEP_RTOL * max rate
    # (the channels decompose drops when Gamma is concrete) count as zero. On a constant-rank
    # family the null-null block of dGt is rounding noise and this floor leaves it negligible; a
    # rank-changing tangent (no finite pathwise derivative) comes out huge, ~|dG| / (2e-5 max s).
    # (The rule must be linear in dG for reverse mode, so it cannot test dG and return NaN.)
    floor = 2.0 * jnp.sqrt(KEEP_RTOL) * jnp.max(s, initial=0.0)
    den = jnp.maximum(s[:, None] + s[None, :], jnp.maximum(floor, jnp.finfo(s.dtype).tiny))
    dBt = dGt / den
    dB = V @ dBt.astype(V.dtype) @ Vh
    return B, dB.astype(B.dtype)


def decompose(gamma, rtol: float = KEEP_RTOL, *, name: str = "gamma") -> NoiseBasis:
    """Validate and factor a rate vector or a Hermitian PSD matrix into independent noise channels.

    With concrete values, Gamma is validated (shape, finiteness, Hermiticity, signs, and positive
    semidefiniteness from the same eigendecomposition that factors it: one ``eigh`` in all) and
    channels with rate ``<= rtol * max rate`` are dropped (a rank-one Gamma gives one channel;
    factor ``V_r sqrt(gamma_r)``). When no channel is dropped, and always under tracing
    (differentiating with respect to Gamma: the number of channels must be static), a dense Gamma
    is factored by its principal square root :func:`psd_sqrt`, whose derivative is correct also at
    degenerate and zero eigenvalues (see the module docstring). Concrete and traced calls therefore
    give the same numbers for a full-rank Gamma; for a rank-deficient one the traced call draws
    ``K`` instead of ``K'`` increments per step (same statistics, other numbers).

    Args:
        gamma: ``(K,)`` rates or ``(K, K)`` Hermitian PSD matrix.
        name: how error messages call it.

    Returns:
        A :class:`NoiseBasis`.

    Raises:
        ValueError, TypeError: for a bad Gamma (concrete values only).
    """
    check_gamma_matrix(gamma, name)
    g = jnp.asarray(gamma)
    if not (jnp.issubdtype(g.dtype, jnp.floating) or jnp.issubdtype(g.dtype, jnp.complexfloating)):
        g = g.astype(default_float())
    if g.ndim == 1:
        g = jnp.real(g)
        if is_concrete(gamma):
            gn = np.asarray(g)
            keep = np.nonzero(gn > rtol * max(gn.max(initial=0.0), 0.0))[0]
            if len(keep) == len(gn):
                return NoiseBasis(g, jnp.sqrt(g), None, True, False)
            return NoiseBasis(g, jnp.sqrt(g[keep]), tuple(int(i) for i in keep), True, False)
        return NoiseBasis(g, jnp.sqrt(jnp.clip(g, 0.0)), None, True, False)
    in_dtype = np.asarray(gamma).dtype if is_concrete(gamma) else g.dtype
    g = 0.5 * (g + jnp.conj(g).T)
    if not jnp.iscomplexobj(g) or (is_concrete(gamma) and not np.any(np.imag(np.asarray(g)))):
        g = jnp.real(g)
    K = g.shape[0]
    if not is_concrete(gamma):
        return NoiseBasis(g, psd_sqrt(g), None, False, False)
    w, V = jnp.linalg.eigh(g)
    wn = np.asarray(w)
    # the bound follows the coarser of the input's and the arithmetic's precision
    coarse = in_dtype if in_dtype.kind in "fc" and np.finfo(in_dtype).bits < np.finfo(w.dtype).bits else w.dtype
    check_psd(wn, coarse, name)
    keep = np.nonzero(wn > rtol * max(np.abs(wn).max(initial=0.0), 0.0))[0]
    top = jnp.max(jnp.clip(w, 0.0), initial=0.0)
    if len(keep) < K:
        factor = V[:, keep] * jnp.sqrt(w[keep])
        return NoiseBasis(g, factor, None, False, 2 * len(keep) <= K, top)
    # the principal square root from the same eigendecomposition (what psd_sqrt computes)
    s = jnp.sqrt(jnp.clip(w, 0.0))
    return NoiseBasis(g, (V * s.astype(V.dtype)) @ jnp.conj(V).T, None, False, False, top)


def _sqrt0(g):
    """``sqrt(max(g, 0))`` with derivative 0 (not NaN) where a rate is 0 (a time-dependent rate
    that is off part of the time)."""
    pos = g > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, g, 1.0)), 0.0)


def decompose_like(gamma, reference: NoiseBasis) -> NoiseBasis:
    """Factor a (possibly traced) ``gamma`` with the channels of a concrete ``reference``.

    ``reference`` is :func:`decompose` of the same Gamma at concrete parameter values. The result
    has the same channels (so a differentiated run draws the same increments as an eager
    ``simulate`` with the same key and gives the same numbers), and a derivative that is correct
    at the reference point:

    * diagonal: ``sqrt(rates)`` on the reference's kept channels;
    * dense, every channel kept: the principal square root :func:`psd_sqrt`;
    * dense, rank ``K' < K``: ``B = Gamma^{1/2} V_r`` with ``V_r`` the reference's kept eigenvectors
      (held constant). At the reference ``B = V_r sqrt(gamma_r)`` (the eager factor) and
      ``d(B B^dag) = dGamma^{1/2} Gamma^{1/2} + Gamma^{1/2} dGamma^{1/2} = dGamma``, so the pathwise
      derivative has the right mean. (Away from the reference point ``B B^dag = Gamma`` only to first
      order; callers re-take the reference at each new parameter value.)
    """
    g = jnp.asarray(gamma)
    if reference.diagonal:
        g = jnp.real(g)
        if reference.channels is None:
            return NoiseBasis(g, _sqrt0(g), None, True, False)
        keep = np.asarray(reference.channels, int)
        return NoiseBasis(g, _sqrt0(g[keep]), reference.channels, True, False)
    g = 0.5 * (g + jnp.conj(g).T)
    if not jnp.iscomplexobj(reference.gamma):
        g = jnp.real(g)
    if reference.n_channels == reference.n_jumps:
        return NoiseBasis(g, psd_sqrt(g), None, False, False)
    F = jax.lax.stop_gradient(reference.factor)
    V_r = F / jnp.linalg.norm(F, axis=0)
    return NoiseBasis(g, psd_sqrt(g) @ V_r.astype(jnp.result_type(g, V_r)), None, False, reference.low_rank)
