"""What importing the package changes globally, each checked in a fresh interpreter (subprocess).

* ``import twa_jax`` adds the jaxlib 0.10 compiler workaround to ``XLA_FLAGS``
  (``twa_jax/_xla_workaround.py``) unless ``TWA_JAX_NO_XLA_WORKAROUND=1`` is set, and records
  what it did in ``twa_jax._xla_workaround.STATUS``.
* ``import twa_jax.paper`` changes neither JAX's precision (``jax_enable_x64``) nor matplotlib's
  backend; float64 is switched on only while the figures run, and restored.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from twa_jax import _xla_workaround as wa

ROOT = Path(__file__).resolve().parents[1]

# prints the outcome of the import-time call and the resulting XLA_FLAGS (None when unset)
REPORT = (
    "import json, os, twa_jax; "
    "print(json.dumps({'status': twa_jax._xla_workaround.STATUS, 'flags': os.environ.get('XLA_FLAGS')}))"
)


def _run(code, **env_changes):
    """Run ``code`` in a fresh interpreter from the repository root; ``None`` values unset a
    variable. Returns ``(last stdout line parsed as JSON, stderr)``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("XLA_FLAGS", wa.OPT_OUT_ENV, "JAX_ENABLE_X64", "MPLBACKEND")}
    env["OPENBLAS_NUM_THREADS"] = "1"
    for k, v in env_changes.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


affected = pytest.mark.skipif(not wa._affected(), reason="jaxlib version not affected by the compiler bug")


@affected
def test_workaround_applied_by_default_and_status_recorded():
    rep, err = _run(REPORT)
    assert rep["status"] == "applied"
    assert rep["flags"] == wa.FLAG
    assert "RuntimeWarning" not in err


@affected
def test_workaround_keeps_the_users_other_flags():
    rep, _ = _run(REPORT, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    assert rep["status"] == "applied"
    assert rep["flags"] == f"--xla_force_host_platform_device_count=2 {wa.FLAG}"


@pytest.mark.parametrize("flags", [None, "--xla_force_host_platform_device_count=2"])
def test_opt_out_leaves_xla_flags_untouched(flags):
    """TWA_JAX_NO_XLA_WORKAROUND=1: XLA_FLAGS stays exactly as it was (unset stays unset), no
    warning, and STATUS says why."""
    rep, err = _run(REPORT, XLA_FLAGS=flags, TWA_JAX_NO_XLA_WORKAROUND="1")
    assert rep["status"] == "disabled by TWA_JAX_NO_XLA_WORKAROUND"
    assert rep["flags"] == flags
    assert "RuntimeWarning" not in err


@affected
def test_opt_out_value_zero_does_not_opt_out():
    rep, _ = _run(REPORT, TWA_JAX_NO_XLA_WORKAROUND="0")
    assert rep["status"] == "applied"


@affected
def test_status_when_the_user_set_the_option_or_jax_started_first():
    user = f"--{wa.FLAG_NAME}=+reduce"
    rep, _ = _run(REPORT, XLA_FLAGS=user)
    assert rep == {"status": "set by the user", "flags": user}
    late = "import jax.numpy as jnp; jnp.ones(2).sum(); " + REPORT  # JAX's backends start first
    rep, err = _run(late)
    assert rep == {"status": "too late", "flags": None}
    assert "RuntimeWarning" in err and wa.OPT_OUT_ENV in err


def test_a_second_apply_does_not_overwrite_status():
    """STATUS is the outcome of the call made at import; later calls report their own."""
    code = ("import json, twa_jax; from twa_jax import _xla_workaround as wa; first = wa.STATUS; "
            "again = wa.apply(); print(json.dumps({'first': first, 'again': again, 'status': wa.STATUS}))")
    rep, _ = _run(code)
    assert rep["status"] == rep["first"]
    assert rep["again"] == rep["first"]  # "applied" stays "applied", not "set by the user"


def test_importing_paper_changes_no_global_setting():
    """``import twa_jax.paper`` leaves jax_enable_x64 and the matplotlib backend as they were
    (MPLBACKEND=svg, so a switch to Agg would show), and ``paper.run`` restores x64 afterwards."""
    code = (
        "import json, argparse, jax, matplotlib; "
        "before = [bool(jax.config.jax_enable_x64), matplotlib.get_backend()]; "
        "import twa_jax.paper as paper; "
        "after = [bool(jax.config.jax_enable_x64), matplotlib.get_backend()]; "
        "paper.run([], argparse.Namespace(progress=False)); "
        "after_run = bool(jax.config.jax_enable_x64); "
        "print(json.dumps({'before': before, 'after': after, 'after_run': after_run}))"
    )
    rep, _ = _run(code, MPLBACKEND="svg")
    assert rep["before"] == [False, "svg"]
    assert rep["after"] == rep["before"]
    assert rep["after_run"] is False
