"""Every core of a CPU: one JAX CPU device per core, set when ``twa_jax`` is imported.

XLA:CPU runs most of one program's work on one thread, so a second core idles unless the
trajectories are split over several CPU devices, which the engine does by itself (a chunk is
sharded over the plan's devices). JAX makes one CPU device unless told otherwise before its
backends start, so ``import twa_jax`` sets ``jax_num_cpu_devices`` to the number of cores this
process may use, if JAX has not started yet and the user has not chosen a count. A run then uses
as many of these devices as its size justifies (:func:`default_devices`): each device gets at
least :data:`MIN_WORK_PER_DEVICE` spin-trajectories, below which splitting was measured to gain
nothing (``benchmarks/bench_cores.py``). Results do not depend on it: trajectory ``i`` depends
only on ``(key, i)``, and only the order of the sums changes.

The environment variable ``TWA_JAX_CPU_DEVICES`` chooses the count (``1``: JAX's default single
device, nothing is changed). On a machine with a GPU the CPU devices are not used by default.

What the call made at import did is recorded in :data:`STATUS`: ``"<n> CPU devices"``,
``"set by the user"`` (``jax_num_cpu_devices`` or ``--xla_force_host_platform_device_count``
already given), ``"too late"`` (JAX's backends started before ``twa_jax`` was imported; nothing
is changed and nothing is warned: runs use the devices JAX has) or ``"one core"``.
"""

from __future__ import annotations

import os

import jax

#: the variable that sets the number of CPU devices (``1``: leave JAX's single device)
ENV = "TWA_JAX_CPU_DEVICES"
#: a default run puts at least this many spin-trajectories (trajectories x (spins + modes)) on
#: each CPU device: 2 devices of a 2-core CPU gave 0.79-1.02x one device at 256-1024 in all and
#: 1.10-1.54x from 4096 (``benchmarks/README.md``, "Both cores")
MIN_WORK_PER_DEVICE = 2048
#: outcome of the call made at import (see the module docstring)
STATUS: str | None = None


def available_cores() -> int:
    """The number of cores this process may run on (its CPU affinity where the OS says)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def requested() -> int:
    """The count asked for by :data:`ENV`, else :func:`available_cores`."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return available_cores()
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{ENV} must be a positive integer (the number of CPU devices), got {value!r}")
    return n


def apply() -> str:
    """Set ``jax_num_cpu_devices`` when it can and should be; returns what was done (the first
    call, made by ``import twa_jax``, also stores it in :data:`STATUS`)."""
    global STATUS
    status = _apply()
    if STATUS is None:
        STATUS = status
    return status


def _apply() -> str:
    n = requested()
    if jax.config.jax_num_cpu_devices != -1 or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return "set by the user"
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        return "too late"
    if n == 1:
        return "one core"
    jax.config.update("jax_num_cpu_devices", n)
    return f"{n} CPU devices"


def default_devices(devices, sites: int, n_traj: int) -> list:
    """The devices a run uses when the caller named none: all of ``devices`` off the CPU or over
    several processes; on the CPU of one process, as many as give each at least :data:`MIN_WORK_PER_DEVICE` spin-trajectories (at least
    one)."""
    devices = list(devices)
    if not devices or devices[0].platform != "cpu" or jax.process_count() > 1:  # every process takes part
        return devices
    return devices[: max(1, min(len(devices), (max(sites, 1) * n_traj) // MIN_WORK_PER_DEVICE))]
