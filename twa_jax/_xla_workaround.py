"""Work around a silent wrong-result bug of the CPU compiler in jaxlib 0.10.

jaxlib 0.10's CPU backend fuses ``x . (M x)`` (a dot, a multiply and a reduction) into one YNN
kernel, and that kernel returns wrong numbers when ``M`` is a broadcast, i.e. a uniform matrix
such as ``ones((n, n))`` or ``g * ones((n, n))`` (all-to-all couplings, collective decay), once
the batch reaches about 1000 rows (reproducer: ``tests/test_forms.py``). It hit the collective
emission rate of ``tw.models.dicke`` with 8000 trajectories (R(0) = 0.63 instead of 1). Removing
the reduction from the YNN fusion types (``--xla_cpu_experimental_ynn_fusion_type=-reduce``)
gives correct results at unchanged speed (``benchmarks/README.md``).

XLA reads ``XLA_FLAGS`` once, when JAX starts its backends, so the flag is added at import of
``twa_jax`` if that has not happened yet and the user has not set the option; otherwise a
warning says what to do. Only jaxlib 0.10.x is touched (the version the bug was found in).

Opting out: set the environment variable ``TWA_JAX_NO_XLA_WORKAROUND=1`` before importing
``twa_jax`` (any value other than empty, ``0``, ``false``, ``no`` or ``off`` counts). Then
``XLA_FLAGS`` is left exactly as it is and nothing is warned; the wrong results described above
become possible again on jaxlib 0.10.

What the call made at import did is recorded in :data:`STATUS`, one of:

* ``"applied"``: the flag was added to ``XLA_FLAGS``;
* ``"set by the user"``: ``XLA_FLAGS`` already named the option (whatever its value);
* ``"too late"``: JAX's backends had started before ``twa_jax`` was imported (warned);
* ``"not affected"``: the installed jaxlib is not 0.10.x;
* ``"disabled by TWA_JAX_NO_XLA_WORKAROUND"``: the opt-out above.
"""

from __future__ import annotations

import os
import warnings

FLAG_NAME = "xla_cpu_experimental_ynn_fusion_type"
FLAG = f"--{FLAG_NAME}=-reduce"
#: environment variable that turns the workaround off (see the module docstring)
OPT_OUT_ENV = "TWA_JAX_NO_XLA_WORKAROUND"
#: outcome of the first call of :func:`apply`, the one made when ``twa_jax`` is imported
#: (``None`` until then); one of the strings listed in the module docstring
STATUS: str | None = None


def _opted_out() -> bool:
    return os.environ.get(OPT_OUT_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def _affected() -> bool:
    import jaxlib

    try:
        major, minor = (int(p) for p in jaxlib.__version__.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) == (0, 10)


def apply() -> str:
    """Add :data:`FLAG` to ``XLA_FLAGS`` when needed; returns what was done.

    The first call (made by ``import twa_jax``) also stores its outcome in :data:`STATUS`; later
    calls return their own outcome and leave :data:`STATUS` as it is.
    """
    global STATUS
    status = _apply()
    if STATUS is None:
        STATUS = status
    return status


def _apply() -> str:
    if _opted_out():
        return f"disabled by {OPT_OUT_ENV}"
    if not _affected():
        return "not affected"
    flags = os.environ.get("XLA_FLAGS", "")
    if FLAG_NAME in flags:
        return "applied" if STATUS == "applied" else "set by the user"
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        warnings.warn(
            "twa_jax: JAX was started before twa_jax was imported, so a workaround for a CPU compiler "
            "bug of jaxlib 0.10 (wrong values of x . (M x) for uniform M in large batches) is not "
            f"active. Import twa_jax first, or set XLA_FLAGS={FLAG} before starting Python "
            f"({OPT_OUT_ENV}=1 turns the workaround and this warning off).",
            RuntimeWarning,
            stacklevel=4,  # _apply <- apply <- twa_jax/__init__ <- the import
        )
        return "too late"
    os.environ["XLA_FLAGS"] = f"{flags} {FLAG}".strip()
    return "applied"
