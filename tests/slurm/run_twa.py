"""The cluster page's multi-host example, as the SLURM tests run it: ``srun -n 2 python
tests/slurm/run_twa.py out.nc``. Every process runs the same script; JAX reads the coordinator,
the number of processes and this process's id from SLURM's environment."""

import sys

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU-only cluster: cross-process sums
jax.distributed.initialize()  # SLURM detected: no arguments
jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import twa_jax as tw  # noqa: E402

model, init = tw.models.dicke(4), tw.states.spins_up(4)  # four spins decaying collectively
res = tw.simulate(model, init, np.linspace(0, 2, 11), n_traj=2000, key=0, dt=0.01,
                  chunk_size=250)
if jax.process_index() == 0:  # every process holds the same result; write it once
    ds = res.to_xarray()
    ds.attrs.update(process_count=jax.process_count(), n_devices=len(jax.devices()))
    ds.to_netcdf(sys.argv[1])
