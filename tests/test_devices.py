"""Several devices and several processes give the statistics of one device (same key), the
``devices`` argument is validated, and the automatic chunk size follows the free memory.

Multi-device runs need XLA flags set before JAX starts, so they run in subprocesses: one with
four forced CPU devices, and two processes joined by ``jax.distributed.initialize`` (two CPU
devices each, gloo collectives), as on a cluster.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import twa_jax as tw
from twa_jax import _plan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# one model with spins, a boson, collective and local decay (both noise kinds), and a save grid
MODEL_SRC = """
import jax, jax.numpy as jnp, numpy as np
import twa_jax as tw
N = 3
model = tw.Model(
    lambda s, a, p: p["Omega"] * jnp.sum(s[:, 0]) + 0.3 * s[:, 2] @ jnp.roll(s[:, 2], 1)
    + p["g"] * jnp.real(jnp.conj(a[0]) * jnp.sum(s[:, 0] - 1j * s[:, 1])),
    jumps=lambda s, a, p: jnp.concatenate([(s[:, 0] - 1j * s[:, 1]) / 2, a]),
    gamma=lambda p: jnp.concatenate([jnp.full(N, p["gamma"]), jnp.array([p["kappa"]])]),
    n_spins=N, n_bosons=1)
init = tw.states.product(spins=tw.states.spins_down(N), bosons=tw.states.coherent(0.5))
ts = np.linspace(0, 1, 4)
KW = dict(n_traj=103, params={"Omega": 1.0, "g": 0.4, "gamma": 0.5, "kappa": 0.7}, dt=0.02)
def run(key=5, **kw):
    r = tw.simulate(model, init, ts, key=key, **KW, **kw)
    return {k: [np.asarray(r.mean[k]).tolist(), np.asarray(r.sem[k]).tolist()] for k in r.mean}
"""


def _env(n_devices):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n_devices}"
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return env


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(np.asarray(a[k][i]) - np.asarray(b[k][i])))) for k in a for i in (0, 1))


def _run_model_locally(**kw):
    ns = {}
    exec(MODEL_SRC, ns)
    return ns["run"](**kw)


@pytest.mark.slow  # 31 s; test_cpu_devices compares device counts in the default run
def test_four_devices_give_the_statistics_of_one():
    """Same key on 1, 2 and 4 CPU devices (chunk sizes that leave padding on the last chunk):
    means and standard errors agree to 1e-12 in float64; another key does not. The compiled
    chunk really is split: each device's program holds chunk_size trajectories, not all of them."""
    code = MODEL_SRC + textwrap.dedent("""
        import json, re, sys
        jax.config.update("jax_enable_x64", True)
        assert len(jax.devices()) == 4, jax.devices()
        out = {"one": run(devices=jax.devices()[:1]), "two": run(devices=jax.devices()[:2], chunk_size=7),
               "four": run(chunk_size=5), "four_default": run(), "other_key": run(key=6)}
        # the per-device program: batch 8 per device, not 32
        from jax.sharding import Mesh
        from twa_jax import _engine, _plan
        plan = _plan.make_plan(model, init, np.array([0.0, 1.0]), n_traj=32, key=0, dt=0.02,
                               params=KW["params"]).device_part()
        low = _engine._chunk.lower(plan, plan.params, jnp.asarray(0), 8, _engine.Moments(()), None,
                                   False, "reverse")
        hlo = low.compile().compiled.as_text()
        out["per_device_batch"] = sorted(set(int(b) for b in re.findall(r"f64\\[(\\d+),3,3\\]", hlo)))
        json.dump(out, sys.stdout)
    """)
    p = subprocess.run([sys.executable, "-c", code], env=_env(4), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    for name in ("two", "four", "four_default"):
        assert _max_diff(out[name], out["one"]) < 1e-12, name
    assert _max_diff(out["other_key"], out["one"]) > 1e-3
    assert out["per_device_batch"] == [8], out["per_device_batch"]


@pytest.mark.slow
def test_gradients_are_the_same_on_one_two_and_four_devices():
    """value_and_grad shards its chunks over the devices like simulate: the same value and
    gradient (float64, 1e-12) on 1, 2 and 4 CPU devices, in one chunk and in several, in forward
    mode and in reverse mode (which broke on several devices inside shard_map)."""
    code = MODEL_SRC + textwrap.dedent("""
        import json, sys
        jax.config.update("jax_enable_x64", True)
        loss = lambda m: jnp.sum(m["sz"] ** 2) + jnp.sum(m["n"])
        def grad(**kw):
            v, g = tw.value_and_grad(loss, model, init, ts, params=KW["params"], n_traj=40, key=2, dt=0.05, **kw)
            return [float(v)] + [float(g[k]) for k in sorted(g)]
        out = {"one": grad(devices=jax.devices()[:1]), "two": grad(devices=jax.devices()[:2], chunk_size=7),
               "four": grad(),
               # reverse mode (checkpoints given): diffrax's checkpointed backward pass on 2 and 4 devices
               "rev_one": grad(devices=jax.devices()[:1], checkpoints=8),
               "rev_two": grad(devices=jax.devices()[:2], chunk_size=7, checkpoints=8),
               "rev_four": grad(checkpoints=8)}
        json.dump(out, sys.stdout)
    """)
    p = subprocess.run([sys.executable, "-c", code], env=_env(4), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    for name in ("two", "four", "rev_one", "rev_two", "rev_four"):  # two: several chunks; four: one pass
        np.testing.assert_allclose(out[name], out["one"], rtol=1e-12, atol=1e-12, err_msg=name)


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_give_the_statistics_of_one(tmp_path):
    """Two processes joined by jax.distributed.initialize (coordinator on localhost, two CPU
    devices each, as two hosts of a cluster) return, on each process, the result of a
    single-process run with the same key."""
    port = _free_port()
    # initialize before anything touches a JAX backend (the model code creates arrays)
    code = textwrap.dedent("""
        import json, sys
        import jax
        pid, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
        jax.config.update("jax_enable_x64", True)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=pid)
    """) + MODEL_SRC + textwrap.dedent("""
        assert jax.process_count() == 2 and len(jax.devices()) == 4 and len(jax.local_devices()) == 2
        json.dump(run(chunk_size=10), open(out, "w"))
    """)
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(i), str(port), str(tmp_path / f"out{i}.json")],
                         env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    errs = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        errs.append((p.returncode, err[-3000:]))
    assert all(rc == 0 for rc, _ in errs), errs
    ref = _run_model_locally()
    for i in range(2):
        got = json.load(open(tmp_path / f"out{i}.json"))
        assert _max_diff(got, ref) < 1e-12, i


# --------------------------------------------------------------------------- devices argument
def _small():
    model = tw.Model(lambda s, a, p: jnp.sum(s[:, 0]), jumps=lambda s, a, p: (s[:, 0] - 1j * s[:, 1]) / 2,
                     gamma=jnp.array([0.5]), n_spins=1)
    return model, tw.states.spins_down(1), np.linspace(0, 0.2, 3)


@pytest.mark.parametrize(
    "devices, exc, match",
    [([], ValueError, "empty"), ("cpu", TypeError, "jax devices"), (3, TypeError, "sequence of jax devices"),
     ("dup", ValueError, "twice")],
)
def test_bad_devices_are_rejected(devices, exc, match):
    model, init, ts = _small()
    if devices == "dup":
        devices = [jax.devices()[0]] * 2
    with pytest.raises(exc, match=match):
        tw.simulate(model, init, ts, n_traj=4, key=0, dt=0.1, devices=devices)


def test_mean_field_rejects_devices():
    model, init, ts = _small()
    with pytest.raises(ValueError, match="mean_field.*devices"):
        tw.simulate(model, init, ts, method="mean_field", dt=0.1, devices=jax.devices())


def test_one_device_given_explicitly_equals_default():
    model, init, ts = _small()
    a = tw.simulate(model, init, ts, n_traj=16, key=0, dt=0.05)
    b = tw.simulate(model, init, ts, n_traj=16, key=0, dt=0.05, devices=jax.devices()[0])
    np.testing.assert_allclose(a.mean["sz"], b.mean["sz"], rtol=0, atol=1e-14)


# --------------------------------------------------------------------------- automatic chunk size
class _FakeGPU:
    platform = "gpu"

    def __init__(self, limit, in_use):
        self.stats = {"bytes_limit": limit, "bytes_in_use": in_use}

    def memory_stats(self):
        return self.stats


class _NoStats:
    platform = "tpu"

    def memory_stats(self):
        raise RuntimeError("not supported")


def test_free_memory_from_device_stats_host_ram_or_fallback():
    assert _plan.free_memory(_FakeGPU(80 * 2**30, 30 * 2**30)) == 50 * 2**30
    assert _plan.free_memory(_FakeGPU(2**30, 2**31)) == 0
    assert _plan.free_memory(_NoStats()) == _plan.FALLBACK_FREE_BYTES
    cpu = jax.devices("cpu")[0]
    avail = _plan._host_available_bytes()
    assert avail is not None and avail > 0
    assert _plan.free_memory(cpu) == avail // len(jax.local_devices(backend="cpu"))


def test_auto_chunk_size_follows_the_smallest_free_memory():
    frac = _plan.MEMORY_FRACTION
    per = 1000
    big, small = _FakeGPU(80 * 2**30, 0), _FakeGPU(8 * 2**30, 4 * 2**30)
    assert _plan.chunk_budget(per, [big]) == int(frac * 80 * 2**30 // per)
    assert _plan.chunk_budget(per, [big, small]) == int(frac * 4 * 2**30 // per)
    for devices in ([big], [big, small]):
        most, n = _plan.chunk_budget(per, devices), 10**9
        chunk = _plan.auto_chunk_size(per, devices, n)
        k = -(-n // chunk)
        assert chunk <= most and k == -(-n // most)  # as few chunks as the budget allows ...
        assert k * chunk - n <= n / 8 + k  # ... of equal size, on the chunk ladder: at most 1/8 padding
    assert _plan.auto_chunk_size(per, [big], 500) == 528  # each device's share, rounded up on the ladder
    assert _plan.auto_chunk_size(10**12, [small], 500) == 1  # at least one trajectory


def test_balanced_chunks_leave_no_mostly_padded_last_chunk():
    # the H200 run: two chunks of 5000 rounded up on the chunk ladder, not 8376 + 1624 padded to 8376
    assert _plan.balanced_chunk(10_000, 8376) == 5136
    assert _plan.balanced_chunk(10_000, 10_000) == 10_000  # the ladder's 10 256 is over the budget
    assert _plan.balanced_chunk(10_001, 10_000) == 5136
    assert _plan.balanced_chunk(7, 3) == 3 and _plan.balanced_chunk(1, 5) == 1
    ladder = {_plan.on_chunk_ladder(n) for n in range(1, 20_000)}
    assert sorted(ladder)[15:24] == [16, 18, 20, 22, 24, 26, 28, 30, 32]  # eight sizes per octave
    big = sorted(c for c in ladder if c > _plan.CHUNK_ODD_FROM)  # odd multiples of 16: no 4K aliasing
    assert big[:9] == [272, 304, 336, 368, 400, 432, 464, 496, 528] and all(c % 32 == 16 for c in big)
    assert _plan.on_chunk_ladder(1000) == _plan.on_chunk_ladder(1040) == 1040 and _plan.on_chunk_ladder(10_000) == 10_256
    for n in range(1, 200):
        for most in range(1, 60):
            c = _plan.balanced_chunk(n, most)
            k = -(-n // c)
            assert 1 <= c <= most and k == -(-n // most) and (c in ladder or c == most)
            assert k * c - n <= max(k - 1, n / 8 + k)  # equal chunks: padding from the ladder only


def test_bytes_per_trajectory_scales_with_state_noise_and_saves():
    """The estimate grows with N (state copies), the number of noise channels and save times;
    1e4 spins with a dense rank-1e4 Gamma in float32 fit about 1e4-1e5 trajectories in a quarter
    of 80 GB (the issue's target size: chunks of that order, 1e5 trajectories in a few chunks)."""
    model, _, _ = _small()
    nb = tw._noise.decompose(jnp.array([0.5]))
    b1 = _plan.bytes_per_trajectory(model, nb, 3, {"sz": ()}, jnp.float64)
    b2 = _plan.bytes_per_trajectory(model, nb, 30, {"sz": ()}, jnp.float64)
    assert b2 > b1 and b1 % 8 == 0

    class Big:
        n_spins, n_bosons = 10_000, 0

    class BigNoise:
        n_channels = n_jumps = 10_000

    per = _plan.bytes_per_trajectory(Big, BigNoise, 11, {"sz": ()}, jnp.float32)
    n = _plan.auto_chunk_size(per, [_FakeGPU(80 * 10**9, 0)], 10**5)
    assert 1e3 < n < 1e5
