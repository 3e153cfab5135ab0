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
"""

from __future__ import annotations

import os
import warnings

FLAG_NAME = "xla_cpu_experimental_ynn_fusion_type"
FLAG = f"--{FLAG_NAME}=-reduce"


def _affected() -> bool:
    import jaxlib

    try:
        major, minor = (int(p) for p in jaxlib.__version__.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) == (0, 10)


def apply() -> str:
    """Add :data:`FLAG` to ``XLA_FLAGS`` when needed; returns what was done (for tests)."""
    if not _affected():
        return "not affected"
    flags = os.environ.get("XLA_FLAGS", "")
    if FLAG_NAME in flags:
        return "set by the user"
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        warnings.warn(
            "twa_jax: JAX was started before twa_jax was imported, so a workaround for a CPU compiler "
            "bug of jaxlib 0.10 (wrong values of x . (M x) for uniform M in large batches) is not "
            f"active. Import twa_jax first, or set XLA_FLAGS={FLAG} before starting Python.",
            RuntimeWarning,
            stacklevel=3,
        )
        return "too late"
    os.environ["XLA_FLAGS"] = f"{flags} {FLAG}".strip()
    return "applied"
