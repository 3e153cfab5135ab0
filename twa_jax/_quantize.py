"""The exact quantum twin of a model, read off its own JAX functions.

A model's Hamiltonian, jump operators and observables are classical (Weyl) symbols: functions of
the spin components ``s_i^a`` and boson amplitudes ``a_m``. When such a function is a polynomial,
its coefficients are its Taylor coefficients, which automatic differentiation gives exactly
(:func:`polynomial`): the degree is found along a random line, the derivative tensors are taken
at a random point (so that ``jnp.abs(a)**2`` is differentiable there), shifted to the origin, and
the reconstruction is checked against the function at random points.

Each monomial is then mapped to an operator by the symmetric (Weyl) ordering TWA itself uses
(:func:`quantize`):

* spins: ``s_i^a -> sigma_i^a`` (Pauli, spin-1/2) or ``S_i^a`` (spin-S); products over distinct
  sites are tensor products; a product on one site is the fully symmetrized product of that site's
  operators (for spin-1/2, ``s^a s^b -> delta_ab``);
* bosons: ``a^q conj(a)^p`` -> the symmetrized product of ``q`` annihilators and ``p`` creators,
  ``sum_k k! C(p,k) C(q,k) (1/2)^k a^dag^(p-k) a^(q-k)``, built from normal-ordered products,
  which are exact in the truncated Fock space.

The exact side is therefore the quantum model whose Weyl symbol the user wrote, the one TWA
simulates; see ``docs/conventions.md``, "The exact twin of a model".
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import memo

#: highest total degree tried when reading a polynomial off a function
MAX_DEGREE = 6
#: the reconstructed polynomial must equal the function to this relative accuracy (float64)
REL_TOL = 1e-10
#: coefficient tensors larger than this (entries) are refused: pass ``quantum=`` by hand
MAX_ENTRIES = 2**22
#: the same-site check looks at every site up to this many spins, else at a sample of sites
SAME_SITE_ALL = 64

_COMPONENT = "xyz"


class SameSiteWarning(UserWarning):
    """A spin-1/2 symbol is nonlinear on one site: a constant quantum mechanically, not in TWA."""


@dataclass(frozen=True)
class Polynomial:
    """A polynomial symbol in ``z = (s_0^x, s_0^y, s_0^z, ..., a_0, ..., conj(a_0), ...)``.

    Attributes:
        terms: ``{exponents: coefficients}``; ``exponents`` is a tuple of ``len(z)`` ints,
            ``coefficients`` a complex array of shape ``shape`` (one value per output component).
        shape: the function's output shape (``()`` for a scalar).
        degree: the total degree found.
        n_spins, n_bosons: the variables' sizes.
    """

    terms: dict
    shape: tuple
    degree: int
    n_spins: int
    n_bosons: int

    def __call__(self, spins, bosons):
        """Evaluate at one point (NumPy), for checks."""
        z = _complex_vars(np.asarray(spins, float).ravel(), np.asarray(bosons, complex))
        out = np.zeros(self.shape, complex)
        for e, c in self.terms.items():
            out = out + c * np.prod(z ** np.asarray(e))
        return out


def _complex_vars(s_flat, a):
    return np.concatenate([s_flat.astype(complex), a, np.conj(a)])


def _real_function(fns, n_spins, n_bosons):
    """``g(x)``, ``x = (spins.ravel(), Re a, Im a)`` real: every function's output raveled, complex,
    concatenated."""
    def g(x):
        s = x[: 3 * n_spins].reshape(n_spins, 3)
        a = x[3 * n_spins : 3 * n_spins + n_bosons] + 1j * x[3 * n_spins + n_bosons :]
        return jnp.concatenate([jnp.ravel(jnp.asarray(f(s, a))).astype(jnp.complex128) for f in fns])
    return g


def polynomial(f, n_spins: int, n_bosons: int, *, name: str, max_degree: int = MAX_DEGREE) -> Polynomial:
    """The polynomial symbol of one function ``f(spins, bosons)`` (see :func:`polynomials`)."""
    return polynomials({name: f}, n_spins, n_bosons, max_degree=max_degree)[name]


def polynomials(fns: dict, n_spins: int, n_bosons: int, *, max_degree: int = MAX_DEGREE) -> dict:
    """Read the polynomial symbols off functions ``{name: f(spins, bosons)}`` by automatic
    differentiation, all at once (two compiled programs in all).

    The degree is found from Chebyshev coefficients along a random line, the derivative tensors
    are taken at a random point and shifted to the origin, and each reconstruction is checked
    against its function at random points.

    Raises:
        ValueError: a function that is not a polynomial of degree ``<= max_degree`` (relative
            accuracy ``REL_TOL`` at random points), or whose coefficient tensors would be too
            large; the message names it and says to pass ``quantum=`` by hand.
    """
    with jax.enable_x64(True):
        return _polynomials(fns, n_spins, n_bosons, max_degree)


_HINT = "pass quantum= (a hand-written QuTiP twin) to tw.exact.solve instead"


def _polynomials(fns, n_spins, n_bosons, max_degree):
    D = 3 * n_spins + 2 * n_bosons
    names = list(fns)
    g = _real_function([fns[k] for k in names], n_spins, n_bosons)
    rng = np.random.default_rng(20261201)
    x0 = rng.normal(size=D) * 0.7
    s_abs, a_abs = jnp.zeros((n_spins, 3)), jnp.zeros(n_bosons, complex)
    shapes = [tuple(jax.eval_shape(lambda s, a, f=fns[k]: jnp.asarray(f(s, a)), s_abs, a_abs).shape) for k in names]
    sizes = [int(np.prod(sh)) for sh in shapes]
    bounds = np.cumsum([0] + sizes)
    blocks = [slice(bounds[i], bounds[i + 1]) for i in range(len(names))]
    # degree along a random line, per function: Chebyshev coefficients on [-1, 1] above rounding
    order = max_degree + 1
    nodes = np.cos(np.pi * (np.arange(2 * order + 2) + 0.5) / (2 * order + 2))
    v = rng.normal(size=D)
    xs = rng.normal(size=(6, D)) * 1.3  # verification points
    batch = np.concatenate([x0 + nodes[:, None] * v, xs])
    vals_all = np.asarray(jax.jit(jax.vmap(g))(jnp.asarray(batch)))  # one compiled program
    vals, want = vals_all[: len(nodes)], vals_all[len(nodes) :]
    cheb, *_ = np.linalg.lstsq(np.polynomial.chebyshev.chebvander(nodes, order), vals, rcond=None)
    degrees = []
    for name, blk in zip(names, blocks):
        mags = np.max(np.abs(cheb[:, blk]), axis=1, initial=0.0)
        if not np.all(np.isfinite(mags)):
            raise ValueError(f"the {name} is not a polynomial: it is not finite at random points; {_HINT}")
        big = np.flatnonzero(mags > 1e-11 * max(mags.max(), 1e-300))
        deg = int(big.max()) if big.size else 0
        if deg > max_degree:
            raise ValueError(
                f"the {name} is not a polynomial of degree <= {max_degree} in the spin components and boson "
                f"amplitudes (tried up to degree {max_degree}; its Taylor series goes on, e.g. a cos or an "
                f"exp); {_HINT}"
            )
        degrees.append(deg)
    degree = max(degrees, default=0)
    P = int(bounds[-1])
    entries = P * sum(D**k for k in range(degree + 1))
    if entries > MAX_ENTRIES:
        worst = names[int(np.argmax(degrees))]
        raise ValueError(
            f"the {worst} has degree {degree} in {D} variables: {entries} Taylor coefficients in all, more "
            f"than the {MAX_ENTRIES} read off automatically; {_HINT}"
        )
    # derivative tensors at x0, T_k of shape (P, D, ..., D), in one compiled program
    fs = [g]
    for _ in range(degree):
        fs.append(jax.jacfwd(fs[-1]))
    tensors = [np.asarray(t) for t in jax.jit(lambda x: tuple(fk(x) for fk in fs))(jnp.asarray(x0))]
    coeffs = _complex_coefficients(_shift_to_origin(tensors, x0), n_spins, n_bosons)
    out = {}
    for name, shape, blk, deg in zip(names, shapes, blocks, degrees):
        terms = _terms([c[blk] for c in coeffs[: deg + 1]], D, shape)
        poly = Polynomial(terms, shape, deg, n_spins, n_bosons)
        _verify(poly, xs, want[:, blk], name, deg)
        out[name] = poly
    return out


def _shift_to_origin(tensors, x0):
    """Coefficient tensors at the origin, ``C_j = sum_{k >= j} T_k . (-x0)^(k - j) / (k - j)!``."""
    degree = len(tensors) - 1
    coeffs = []
    for j in range(degree + 1):
        c = 0
        for k in range(j, degree + 1):
            t = tensors[k]
            for _ in range(k - j):
                t = t @ (-x0)
            c = c + t / math.factorial(k - j)
        coeffs.append(np.asarray(c, complex))
    return coeffs


def _complex_coefficients(coeffs, n_spins, n_bosons):
    """Change variables from ``x = (spins, Re a, Im a)`` to ``z = (spins, a, conj(a))``, ``x = A z``."""
    D = 3 * n_spins + 2 * n_bosons
    A = np.zeros((D, D), complex)
    ns = 3 * n_spins
    A[:ns, :ns] = np.eye(ns)
    for m in range(n_bosons):
        re, im, za, zc = ns + m, ns + n_bosons + m, ns + m, ns + n_bosons + m
        A[re, za], A[re, zc] = 0.5, 0.5
        A[im, za], A[im, zc] = -0.5j, 0.5j
    out = []
    for j, c in enumerate(coeffs):
        for axis in range(1, j + 1):
            c = np.moveaxis(np.tensordot(c, A, axes=([axis], [0])), -1, axis)
        out.append(c)
    return out


def _terms(coeffs, D, shape):
    """``{exponents: coefficients}`` from symmetric coefficient tensors (rounding-level ones dropped)."""
    P = coeffs[0].shape[0]
    top = max(max((float(np.max(np.abs(c))) for c in coeffs if c.size), default=0.0), 1e-300)
    terms = {}
    for j, c in enumerate(coeffs):
        if j == 0:
            idx = [()] if np.any(np.abs(c) > 1e-14 * top) else []
        else:
            big = np.argwhere(np.max(np.abs(c.reshape(P, -1)), axis=0).reshape((D,) * j) > 1e-14 * top)
            idx = [tuple(i) for i in big if all(i[q] <= i[q + 1] for q in range(j - 1))]
        for i in idx:
            e = np.bincount(np.asarray(i, int), minlength=D) if i else np.zeros(D, int)
            value = c[(slice(None),) + i] / np.prod([math.factorial(k) for k in e])
            terms[tuple(int(k) for k in e)] = value.reshape(shape)
    return terms


def _verify(poly, xs, want, name, degree):
    ns = 3 * poly.n_spins
    got = np.stack([
        np.ravel(poly(x[:ns], x[ns : ns + poly.n_bosons] + 1j * x[ns + poly.n_bosons :])) for x in xs
    ])
    worst = float(np.max(np.abs(got - want), initial=0.0))
    size = float(np.max(np.abs(want), initial=0.0))
    if not worst <= REL_TOL * max(size, 1e-300):
        raise ValueError(
            f"the {name} is not a polynomial in the spin components and boson amplitudes: the degree-"
            f"{degree} Taylor polynomial misses it by {worst:.2g} (relative {worst / max(size, 1e-300):.2g}) "
            f"at random points; {_HINT}"
        )


# ----------------------------------------------------------------------------- quantization
@lru_cache(maxsize=None)
def _site_factor(exps: tuple, spin_S) -> np.ndarray:
    """Fully symmetrized product of one site's spin operators with these exponents (x, y, z)."""
    import qutip as qt

    if spin_S is None:
        ops = [qt.sigmax().full(), qt.sigmay().full(), qt.sigmaz().full()]
    else:
        ops = [qt.jmat(spin_S, c).full() for c in _COMPONENT]
    dim = ops[0].shape[0]
    word = [a for a, k in enumerate(exps) for _ in range(k)]
    if not word:
        return np.eye(dim, dtype=complex)
    perms = set(itertools.permutations(word))
    out = np.zeros((dim, dim), complex)
    for p in perms:
        m = np.eye(dim, dtype=complex)
        for a in p:
            m = m @ ops[a]
        out += m
    return out / len(perms)


@lru_cache(maxsize=None)
def _boson_factor(q: int, p: int, dim: int) -> np.ndarray:
    """Symmetrized product of ``q`` annihilators and ``p`` creators in ``dim`` Fock levels:
    ``sum_k k! C(p,k) C(q,k) (1/2)^k a^dag^(p-k) a^(q-k)`` (normal-ordered, exact when truncated)."""
    a = np.diag(np.sqrt(np.arange(1, dim)), 1).astype(complex)
    ad = a.conj().T
    out = np.zeros((dim, dim), complex)
    for k in range(min(p, q) + 1):
        c = math.factorial(k) * math.comb(p, k) * math.comb(q, k) * 0.5**k
        out += c * np.linalg.matrix_power(ad, p - k) @ np.linalg.matrix_power(a, q - k)
    return out


def space_dims(n_spins, n_bosons, spin_S, cutoff):
    """Local dimensions: spins first, then boson modes (``cutoff + 1`` levels each)."""
    d = 2 if spin_S is None else int(round(2 * spin_S + 1))
    return [d] * n_spins + [cutoff + 1] * n_bosons


def quantize(poly: Polynomial, spin_S, cutoff: int):
    """The operators of a polynomial symbol: a NumPy object array of ``qutip.Qobj`` of the
    polynomial's output shape, on ``spins x bosons`` (spins first)."""
    import qutip as qt
    import scipy.sparse as sp

    N, M = poly.n_spins, poly.n_bosons
    if M and cutoff is None:
        raise ValueError("a model with boson modes needs a cutoff")
    dims = space_dims(N, M, spin_S, cutoff or 0)
    total = int(np.prod(dims))
    P = int(np.prod(poly.shape))
    acc = [sp.csr_matrix((total, total), dtype=complex) for _ in range(P)]
    for e, c in poly.terms.items():
        c = np.ravel(c)
        if not np.any(c):
            continue
        factors = []
        for i in range(N):
            factors.append(_site_factor(tuple(e[3 * i : 3 * i + 3]), spin_S))
        for m in range(M):
            q, p = e[3 * N + m], e[3 * N + M + m]  # powers of a and of conj(a)
            factors.append(_boson_factor(q, p, cutoff + 1))
        op = sp.csr_matrix(np.ones((1, 1), complex))
        for fct in factors:
            op = sp.kron(op, sp.csr_matrix(fct), format="csr")
        for k in range(P):
            if c[k] != 0:
                acc[k] = acc[k] + c[k] * op
    out = np.empty(P, object)
    for k in range(P):
        out[k] = qt.Qobj(acc[k], dims=[dims, dims])
    return out.reshape(poly.shape)


# ----------------------------------------------------------------------------- same-site check
_PROBES = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], float)


def same_site_terms(f, n_spins: int, n_bosons: int, *, sites=None) -> dict:
    """``{site: [(a, b), ...]}``: the spin components ``a <= b`` whose product on one site appears
    in ``f(spins, bosons)``.

    A function without such products is affine in each site's spin vector, so its second
    differences ``f(s + u e_i) + f(s - u e_i) - 2 f(s)`` vanish; six directions ``u`` per site give
    that site's 3x3 block. One batched evaluation of ``f`` (float64), no compilation. Checks every
    site up to :data:`SAME_SITE_ALL` spins, else the first, the last and a sample of the others.
    """
    if n_spins == 0:
        return {}
    if sites is None:
        if n_spins <= SAME_SITE_ALL:
            sites = np.arange(n_spins)
        else:
            pick = np.random.default_rng(0).choice(np.arange(1, n_spins - 1), 14, replace=False)
            sites = np.unique(np.concatenate([[0, n_spins - 1], pick]))
    sites = np.asarray(sites)
    rng = np.random.default_rng(1)
    s0 = rng.normal(size=(n_spins, 3))
    a0 = rng.normal(size=n_bosons) + 1j * rng.normal(size=n_bosons)
    k, n_dir = len(sites), len(_PROBES)
    batch = np.repeat(s0[None], 1 + 2 * k * n_dir, axis=0)
    step = 0.5
    for j, i in enumerate(sites):
        for d, u in enumerate(_PROBES):
            row = 1 + 2 * (j * n_dir + d)
            batch[row, i] += step * u
            batch[row + 1, i] -= step * u
    with jax.enable_x64(True):
        vals = jax.vmap(lambda s: jnp.ravel(jnp.asarray(f(s, jnp.asarray(a0)))))(jnp.asarray(batch))
        vals = np.asarray(vals).astype(complex)
    centre, plus, minus = vals[0], vals[1::2], vals[2::2]
    second = (plus + minus - 2 * centre).reshape(k, n_dir, -1) / step**2  # u^T H u per output
    scale = max(float(np.max(np.abs(vals))), 1.0)
    out = {}
    for j, i in enumerate(sites):
        q = second[j]
        block = np.zeros((3, 3) + q.shape[1:], complex)
        for a in range(3):
            block[a, a] = q[a]
        for d, (a, b) in zip(range(3, 6), ((0, 1), (0, 2), (1, 2))):
            block[a, b] = (q[d] - q[a] - q[b]) / 2
        big = np.max(np.abs(block.reshape(3, 3, -1)), axis=-1) > 1e-9 * scale / step**2
        pairs = [(x, y) for x in range(3) for y in range(x, 3) if big[x, y]]
        if pairs:
            out[int(i)] = pairs
    return out


def _user_stacklevel() -> int:
    """The stack level of the first frame outside twa_jax and equinox (where a warning points)."""
    import inspect

    level = 1
    for frame in inspect.stack()[1:]:
        level += 1
        name = frame.filename.replace("\\", "/")
        if "/twa_jax/" not in name and "/equinox/" not in name and "<frozen" not in name:
            return level - 1
    return level


_OBSERVABLE_FIX = (
    "reduce it first (on one site sigma^+ sigma^- = (1 + sigma^z)/2, i.e. write "
    "(1 + s[i, 2])/2 instead of |s_i^-|^2), or use tw.observables' helpers; if the classical "
    "product is meant (a diagnostic such as the spin length), name it in Model(allow_same_site=)"
)

def _observable_same_site(fn, n_spins, n_bosons):
    """:func:`same_site_terms` of an observable, kept per function and sizes
    (:func:`~twa_jax._checks.memo`: an observable passed to every call of simulate/sweep/
    exact.solve is checked once; ``None``: it did not run on these inputs; the run plan will say
    why)."""
    def check():
        try:
            return same_site_terms(fn, n_spins, n_bosons)
        except Exception:
            return None

    return memo(fn, ("same site", n_spins, n_bosons), check)


def warn_same_site(model, params, observables, allow=()):
    """Warn (:class:`SameSiteWarning`) for spin-1/2 symbols nonlinear on one site.

    Quantum mechanically such a product is a constant (``sigma^a sigma^b + sigma^b sigma^a =
    2 delta_ab``), but TWA trajectories see it: in ``H`` or a jump operator it drives a spurious
    dynamics, in an observable it is estimated with an error that grows in time. The model's
    functions are checked with ``params``; the observables by :func:`warn_same_site_observables`
    (once per function)."""
    if model.spin_S is not None or model.n_spins == 0:
        return
    fns = [("Hamiltonian", lambda s, a: model.H(s, a, params),
            "write the quantum operator's symbol with the same-site products reduced "
            "(e.g. sigma^z sigma^z = 1 on one site, so drop s_z**2)")]
    if model.jumps is not None:
        fns.append(("jump operators", lambda s, a: model.L(s, a, params),
                    "use a jump operator linear in each site's spin"))
    for what, fn, fix in fns:
        try:
            found = same_site_terms(fn, model.n_spins, model.n_bosons)
        except Exception:  # the function does not run on these inputs; the run plan will say why
            continue
        _warn_found(what, found, fix)
    warn_same_site_observables(model, observables, allow)


def warn_same_site_observables(model, observables, allow=()):
    """The same-site check of ``observables`` ``{name: f(spins, bosons)}`` of a spin-1/2
    ``model`` (:class:`SameSiteWarning`), for the model's own observables and for those passed
    to ``simulate``, ``sweep``, ``value_and_grad``, ``fit`` and ``exact.solve`` alike. Skips the
    names in ``allow`` (and the model's ``allow_same_site``) and the package's own linear
    observables; each function is evaluated once per model size (cached)."""
    if model.spin_S is not None or model.n_spins == 0 or not isinstance(observables, dict):
        return
    allow = set(allow) | set(getattr(model, "allow_same_site", ()) or ())
    for name, fo in observables.items():
        if name in allow or not callable(fo) or getattr(fo, "linear_per_site", False):
            continue
        found = _observable_same_site(fo, model.n_spins, model.n_bosons)
        _warn_found(f"observable {name!r}", found, _OBSERVABLE_FIX)


def _warn_found(what, found, fix):
    if not found:
        return
    first = list(found.items())[:3]
    where = "; ".join(
        f"site {i}: " + ", ".join(f"s^{_COMPONENT[x]} s^{_COMPONENT[y]}" for x, y in p) for i, p in first
    )
    more = f" (and {len(found) - 3} more sites)" if len(found) > 3 else ""
    warnings.warn(
        f"the {what} of this spin-1/2 model contain(s) products of one site's spin components "
        f"({where}{more}). Quantum mechanically a same-site product is a constant "
        f"(s^a s^b -> delta_ab), so the exact twin drops it, but TWA trajectories do not: {fix}.",
        SameSiteWarning, stacklevel=_user_stacklevel(),
    )
