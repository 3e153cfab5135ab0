"""The opt-in persistent compilation cache (docs/install.md): with ``EQX_ON_ERROR=nan`` a second
process compiles nothing (every program of the run comes from the cache) and gets the same
numbers to the last bit as the first; without it, the solve (which holds equinox's host
callbacks) is compiled again in every process."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys, jax
    jax.config.update("jax_compilation_cache_dir", sys.argv[1])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    compiled, hits = [], []  # every compilation request (from the cache or not), and the cache's hits
    jax.monitoring.register_event_duration_secs_listener(
        lambda name, secs, **kw: compiled.append(name) if name == "/jax/core/compile/backend_compile_duration" else None)
    jax.monitoring.register_event_listener(
        lambda name, **kw: hits.append(name) if name == "/jax/compilation_cache/cache_hits" else None)
    import numpy as np, twa_jax as tw
    model = tw.models.driven_spin(Omega=1.0, gamma_down=0.3)
    r = tw.simulate(model, tw.states.spins_down(1), np.linspace(0, 1, 5), n_traj=64, key=0, dt=0.05, progress=False)
    print(repr(float(r.mean["sz"][-1])), len(compiled) - len(hits))
""")


import pytest


@pytest.mark.parametrize("on_error, recompiled", [("nan", False), pytest.param("raise", True, marks=pytest.mark.slow)])
def test_second_process_compiles_nothing_with_eqx_on_error_nan(tmp_path, on_error, recompiled):
    script, cache = tmp_path / "run.py", tmp_path / "cache"
    script.write_text(SCRIPT)
    env = {**os.environ, "EQX_ON_ERROR": on_error, "JAX_PLATFORMS": "cpu"}

    def run():
        out = subprocess.run([sys.executable, str(script), str(cache)], env=env, capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        value, n_compiled = out.stdout.strip().splitlines()[-1].split()
        return value, int(n_compiled)

    first, n_first = run()
    second, n_second = run()
    assert second == first and n_first > 0
    assert (n_second > 0) == recompiled, (n_first, n_second)
