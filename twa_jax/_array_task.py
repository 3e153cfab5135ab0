"""The callable a job-array task runs (imported only when a sweep goes to a submitit executor).

It is a :class:`submitit.helpers.Checkpointable`: when SLURM preempts the task or its time limit
comes, submitit calls :meth:`checkpoint`, which requeues the same call. Nothing else needs
saving: every finished point is already in the store, and a task skips the points the store has.
"""

from submitit.helpers import Checkpointable

from ._sweep import _run_task


class SweepArrayTask(Checkpointable):
    """One array task: a block of points of one shape, compiled once, written point by point."""

    def __call__(self, x64, spec_bytes, payload):
        return _run_task(x64, spec_bytes, payload)
