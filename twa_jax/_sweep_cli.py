"""Run, resume and watch parameter sweeps (tw.sweep) from the command line.

  python -m twa_jax sweep run SPEC.py [--store X.zarr] [--executor KIND] [options]
  python -m twa_jax sweep resume SPEC.py [same options as run]
  python -m twa_jax sweep status [X.zarr] [--total N | --spec SPEC.py] [--watch SECONDS]

SPEC.py is a Python file (run as a script, its folder on sys.path) that defines

  SWEEP = dict(spec=(model, initial) or build, grid={...}, ts=..., n_traj=..., key=...,
               **other tw.sweep options)      # dt, observables, store, task_size, ...

and may define anything else (a builder function, helpers). Put
jax.config.update("jax_enable_x64", True) at its top for float64 sweeps.

run      calls tw.sweep(**SWEEP) with the store and executor chosen here, prints a summary
         (points done and failed, wall time) and, with --netcdf, writes the dataset.
         --store overrides SWEEP["store"]; relative paths are taken from the current folder.
resume   the same as run (a sweep with a store skips its finished points); first prints how
         many points are already done. Needs a store. Failed points are skipped unless
         --retry-failed.
status   prints a store's progress: points done, failed, in flight, rate and ETA. The store
         records no grid size: give --total N or --spec SPEC.py (its grid is counted, its
         SWEEP["store"] used when no store is named) for pending points and the ETA.
         --watch S prints it again every S seconds until the sweep is complete (or Ctrl-C).

Executors (--executor):
  inprocess  (default) this process; batches of points fill the device. Best on one GPU.
  processes  concurrent.futures.ProcessPoolExecutor, --workers N processes (default: the
             CPU count) started with "spawn" (JAX and fork don't mix). For CPU hosts: on one
             GPU several processes only compete for its memory.
  slurm      submitit.AutoExecutor: one SLURM job array, one array task per block of points
             (default: about 1e10 coordinate x trajectory x step updates a task, at most 128 points;
             --task-size or SWEEP["task_size"] sets it so a task fits --slurm-time).
             --slurm-gpus-per-task G asks for G GPUs per job (one task per job). Without
             SLURM (no sbatch) submitit falls back to a local executor; --slurm-local
             (= --slurm-cluster local) forces that, --slurm-cluster debug runs the jobs in
             this process (for testing). Job logs go to --slurm-folder (default:
             <store>_submitit). This process waits for the jobs; if it is killed, submitted
             jobs keep writing to the store: watch them with status, and resume when they
             are done (a resume submits every unfinished point again).
  dask       a dask.distributed Client of --dask-address tcp://HOST:PORT, or a LocalCluster
             of --workers N worker processes (one thread each) when no address is given.
  slurm and dask need a store: their workers write their points to it themselves (a
  shared filesystem for several nodes). Without --executor, SWEEP["executor"] is used
  if the spec defines one. Workers do not run SPEC.py (its objects are pickled to them);
  when it enabled float64, JAX_ENABLE_X64=1 is set for the processes, jobs and local dask
  workers started here, and a worker plugin enables it on a remote dask cluster.

Exit status: 0 every point done; 1 some (or all) points failed; 2 bad input (spec
without SWEEP, unknown SWEEP keys or options, a missing store, a store of another
sweep, ...). --debug shows the traceback of such errors.

Examples:
  python -m twa_jax sweep run spec.py --store runs/dicke.zarr --netcdf runs/dicke.nc
  python -m twa_jax sweep run spec.py --store /scratch/d.zarr --executor slurm \\
      --slurm-partition gpu --slurm-time 120 --slurm-gpus-per-task 1 --task-size 32
  python -m twa_jax sweep status /scratch/d.zarr --spec spec.py --watch 60
  python -m twa_jax sweep resume spec.py --store /scratch/d.zarr --executor slurm ...
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import difflib
import inspect
import json
import os
import runpy
import sys
import time
import traceback
import warnings
from collections.abc import Mapping
from pathlib import Path

from . import _store
from ._store import SweepStore, format_status
from ._sweep import expand_grid, sweep

PROG = "python -m twa_jax sweep"
EXECUTORS = ("inprocess", "processes", "slurm", "dask")
SLURM_CLUSTERS = ("auto", "slurm", "local", "debug")
_ROOT_KEY = getattr(_store, "_ROOT_KEY", "twa_jax_sweep")
_SPEC_EXAMPLE = ('SWEEP = dict(spec=(model, initial), grid={"Omega": [0.5, 1.0]}, '
                 'ts=np.linspace(0, 1, 11), n_traj=1000, key=0)')


class CLIError(Exception):
    """Bad input to the command line: printed as one message, exit status 2."""


# ------------------------------------------------------------------------------ the spec file


def _sweep_parameters() -> tuple[set[str], set[str]]:
    """``(all keyword names of tw.sweep, the required ones)``."""
    params = inspect.signature(sweep).parameters
    names = {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    required = {n for n in names if params[n].default is inspect.Parameter.empty}
    return names, required


def load_spec(path: str | os.PathLike) -> dict:
    """Run ``SPEC.py`` as a script and return its ``SWEEP`` (checked against ``tw.sweep``)."""
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"spec file {str(path)!r} not found")
    folder = str(p.resolve().parent)
    if folder not in sys.path:  # as `python SPEC.py` would: the spec may import its neighbours
        sys.path.insert(0, folder)
    try:
        # a name that is not importable: cloudpickle sends the spec's own functions by value
        namespace = runpy.run_path(str(p), run_name="__twa_jax_spec__")
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:
        traceback.print_exc()
        raise CLIError(f"running the spec file {str(path)!r} raised {type(e).__name__}: {e}") from e
    if "SWEEP" not in namespace:
        raise CLIError(f"the spec file {str(path)!r} defines no SWEEP; it must define a dict of "
                       f"tw.sweep's arguments, e.g. {_SPEC_EXAMPLE}")
    spec = namespace["SWEEP"]
    if not isinstance(spec, Mapping):
        raise CLIError(f"SWEEP in {str(path)!r} must be a dict of tw.sweep's arguments, got "
                       f"{type(spec).__name__}")
    names, required = _sweep_parameters()
    unknown = [k for k in spec if k not in names]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), sorted(names), n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise CLIError(f"SWEEP in {str(path)!r} has keys that tw.sweep does not take: {', '.join(hints)}; "
                       f"it takes {', '.join(sorted(names))}")
    missing = sorted(required - set(spec))
    if missing:
        raise CLIError(f"SWEEP in {str(path)!r} lacks {', '.join(map(repr, missing))} "
                       f"(tw.sweep needs {', '.join(sorted(required))})")
    return dict(spec)


def _grid_ids(grid) -> list[str]:
    try:
        _, _, points = expand_grid(grid)
    except (TypeError, ValueError) as e:
        raise CLIError(f"SWEEP['grid']: {e}") from e
    return [SweepStore.point_id(p) for p in points]


# ------------------------------------------------------------------------------ an existing store


def read_identity(path: str | os.PathLike) -> dict:
    """The root attribute ``twa_jax_sweep`` of a store: ``{format, axes, signature, created}``."""
    p = Path(path)
    meta_file = p / "zarr.json"
    if not meta_file.is_file():
        raise CLIError(f"no sweep store at {str(path)!r}" + (" (the path exists but holds no zarr.json)"
                                                             if p.exists() else ""))
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CLIError(f"cannot read {meta_file}: {e}") from e
    ident = meta.get("attributes", {}).get(_ROOT_KEY) if isinstance(meta, dict) else None
    if not isinstance(ident, dict) or "signature" not in ident:
        raise CLIError(f"{str(path)!r} is a zarr store but not a sweep store (no {_ROOT_KEY!r} attribute)")
    return ident


def open_store(path: str | os.PathLike) -> SweepStore:
    """Open an existing sweep store without knowing its signature (for status and counts)."""
    opener = getattr(SweepStore, "open_existing", None)
    try:
        if opener is not None:
            return opener(path)
        ident = read_identity(path)
        return SweepStore(path, ident["signature"], ident.get("axes", ()), create=False)
    except FileNotFoundError as e:
        raise CLIError(f"no sweep store at {str(path)!r}") from e
    except (TypeError, ValueError) as e:
        raise CLIError(str(e)) from e


def _recorded_total(path) -> int | None:
    """The number of points of the sweep if the store records it (current stores do not)."""
    try:
        ident = read_identity(path)
    except CLIError:
        return None
    for k in ("total", "n_points"):
        if isinstance(ident.get(k), int):
            return ident[k]
    return None


def _counts(path: str | None, ids: list[str]) -> tuple[int, int] | None:
    """``(done, failed)`` among the points ``ids`` in the store at ``path``; None if none is there."""
    if path is None or not (Path(path) / "zarr.json").is_file():
        return None
    store = open_store(path)
    want = set(ids)
    return len(store.done_ids() & want), len(set(store.failures()) & want)


# ------------------------------------------------------------------------------ executors


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _slurm_executor(args, store: str):
    import submitit

    cluster = "local" if args.slurm_local else args.slurm_cluster
    folder = args.slurm_folder or (str(Path(store).with_suffix("")) + "_submitit")
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=None if cluster in (None, "auto") else cluster)
    except (RuntimeError, ValueError) as e:
        raise CLIError(f"submitit: {e}") from e
    params = dict(name="twa_jax_sweep", nodes=1, tasks_per_node=1, timeout_min=args.slurm_time,
                  gpus_per_node=args.slurm_gpus_per_task, cpus_per_task=args.slurm_cpus_per_task,
                  mem_gb=args.slurm_mem_gb, slurm_partition=args.slurm_partition,
                  slurm_account=args.slurm_account)
    generic = set(getattr(submitit.AutoExecutor, "_typed_parameters", dict)())
    for item in args.slurm_param or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CLIError(f"--slurm-param takes KEY=VALUE, got {item!r}")
        if key not in generic and not key.startswith(("slurm_", "local_", "debug_")):
            key = "slurm_" + key  # --slurm-param constraint=a100 -> slurm_constraint
        params[key] = _literal(value)
    try:
        executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    except (NameError, AssertionError, TypeError, ValueError) as e:
        raise CLIError(f"submitit refused the parameters: {e}") from e
    return executor


@contextlib.contextmanager
def _workers_x64(kind: str):
    """Start workers with float64 when this process has it.

    ``tw.sweep``'s worker function enables x64 only after unpickling its task, so the model's
    arrays would arrive as float32; ``JAX_ENABLE_X64=1`` in the environment that spawned
    processes, local dask workers and submitit/SLURM jobs inherit enables it at their JAX import.
    """
    import jax

    if kind == "inprocess" or not jax.config.jax_enable_x64 or "JAX_ENABLE_X64" in os.environ:
        yield
        return
    os.environ["JAX_ENABLE_X64"] = "1"
    try:
        yield
    finally:
        os.environ.pop("JAX_ENABLE_X64", None)


def _dask_x64(client) -> None:
    """Enable float64 on every worker of a dask cluster, present and future (remote ones too)."""
    import jax
    from distributed.diagnostics.plugin import WorkerPlugin

    if not jax.config.jax_enable_x64:
        return

    class TwaJaxX64(WorkerPlugin):  # defined here: cloudpickle sends it by value
        def setup(self, worker):
            import jax

            jax.config.update("jax_enable_x64", True)

    register = getattr(client, "register_plugin", None) or client.register_worker_plugin
    register(TwaJaxX64(), name="twa_jax_x64")


@contextlib.contextmanager
def make_executor(kind: str, args, store: str | None, from_spec=None):
    """The executor of ``--executor kind`` (None: in this process), closed on exit."""
    if kind == "inprocess":
        yield None
    elif kind == "spec":
        yield from_spec
    elif kind == "processes":
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        n = args.workers or os.cpu_count() or 1
        with ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn")) as ex:
            yield ex
    elif kind == "slurm":
        yield _slurm_executor(args, store)
    elif kind == "dask":
        from distributed import Client, LocalCluster

        if args.dask_address:
            with Client(args.dask_address) as client:
                _dask_x64(client)
                yield client
        else:
            n = args.workers or os.cpu_count() or 1
            with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0") as cl:
                with Client(cl) as client:
                    _dask_x64(client)
                    print(f"dask: a local cluster of {n} worker processes, dashboard {client.dashboard_link}",
                          flush=True)
                    yield client
    else:  # argparse's choices keep this out
        raise CLIError(f"unknown executor {kind!r}")


def _check_options(args, kind: str, store: str | None) -> None:
    slurm_opts = ["slurm_partition", "slurm_time", "slurm_gpus_per_task", "slurm_cpus_per_task", "slurm_mem_gb",
                  "slurm_account", "slurm_folder", "slurm_cluster", "slurm_param"]
    if kind != "slurm":
        given = [o for o in slurm_opts if getattr(args, o) not in (None, [])] + (["slurm_local"] if args.slurm_local else [])
        if given:
            verb = "needs" if len(given) == 1 else "need"
            raise CLIError(f"{', '.join('--' + o.replace('_', '-') for o in given)} {verb} --executor slurm")
    if kind != "dask" and args.dask_address:
        raise CLIError("--dask-address needs --executor dask")
    if kind not in ("processes", "dask") and args.workers is not None:
        raise CLIError("--workers applies to --executor processes and dask only")
    if args.dask_address and args.workers is not None:
        raise CLIError("--workers sets the size of a local dask cluster; with --dask-address the cluster has its own")
    if kind in ("slurm", "dask") and store is None:
        raise CLIError(f"--executor {kind} needs a store (--store X.zarr or SWEEP['store']): its workers "
                       "write their points to it (on a filesystem they all see)")


# ------------------------------------------------------------------------------ commands


def _duration(seconds: float) -> str:
    return _store._duration(seconds) if seconds >= 60 else f"{seconds:.1f} s"


def cmd_run(args, resume: bool = False) -> int:
    name = "resume" if resume else "run"
    kwargs = load_spec(args.spec)
    store = args.store if args.store is not None else kwargs.get("store")
    store = None if store is None else os.path.abspath(os.fspath(store))
    if args.executor is not None:
        kind = args.executor
    else:
        kind = "spec" if kwargs.get("executor") is not None else "inprocess"
    _check_options(args, kind, store)
    if resume and store is None:
        raise CLIError("resume needs a store (--store X.zarr or SWEEP['store']): it is what is resumed")
    ids = _grid_ids(kwargs["grid"])
    n = len(ids)
    retry = bool(args.retry_failed or kwargs.get("retry_failed", False))
    before = _counts(store, ids)
    done0, failed0 = before or (0, 0)
    skipped = 0 if retry else failed0
    todo = n - done0 - skipped
    if before is None:
        if resume:
            print(f"{name}: no store at {store} yet; starting the sweep afresh ({n} points)", flush=True)
    elif done0 or failed0 or resume:
        fail_text = ""
        if failed0:
            fail_text = (f", {failed0} failed (run again: --retry-failed)" if not retry
                         else f", {failed0} failed (run again now)")
        if todo == 0:
            what = "done or failed" if skipped else "done"
            print(f"{name}: all {n} points of the sweep are already {what} in {store}{fail_text}; "
                  "nothing to compute", flush=True)
        else:
            print(f"{name}: {done0} of {n} points already done in {store}{fail_text}; computing {todo}", flush=True)

    kwargs["store"] = store
    kwargs["retry_failed"] = retry
    if args.task_size is not None:
        kwargs["task_size"] = args.task_size
    if args.progress is not None:
        kwargs["progress"] = args.progress
    elif "progress" not in kwargs:
        kwargs["progress"] = sys.stderr.isatty()
    from_spec = kwargs.pop("executor", None)

    t0 = time.perf_counter()
    try:
        with _workers_x64(kind), make_executor(kind, args, store, from_spec) as executor, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*points failed \(see ds\['failed'\]\)", category=RuntimeWarning)
            ds = sweep(**kwargs, executor=executor)
    except (TypeError, ValueError) as e:
        if args.debug:
            raise
        raise CLIError(f"tw.sweep refused the sweep: {e}") from e
    except RuntimeError as e:
        if args.debug or "every point of the sweep failed" not in str(e):
            raise
        print(f"{PROG} {name}: {e}", file=sys.stderr)
        if store is not None:
            print(f"(the reasons are in {store}; python -m twa_jax sweep status {store})", file=sys.stderr)
        return 1
    wall = time.perf_counter() - t0

    n_failed = ds["n_failed"].values
    reasons = ds["failed"].values
    done = int((n_failed >= 0).sum())
    failed = int((reasons != "").sum())
    where = (f"{done - done0} computed now, {done0} from the store" if store is not None
             else f"{done} computed now")
    print(f"{name}: {done} of {n} points done ({where}), {failed} failed; wall time {_duration(wall)}"
          + (f"; store {store}" if store is not None else ""), flush=True)
    failures = failed_points(ds)
    for point, reason in failures[:5]:
        print(f"  failed {_store._point_text(point)}: {_store._clip(reason, 160)}", flush=True)
    if len(failures) > 5:
        print(f"  ... and {len(failures) - 5} more", flush=True)
    if args.netcdf:
        out = Path(args.netcdf)
        out.parent.mkdir(parents=True, exist_ok=True)
        ds.to_netcdf(out)
        print(f"wrote {out}", flush=True)
    return 1 if failed else 0


def failed_points(ds) -> list[tuple[dict, str]]:
    """``[(point, reason)]`` of the failed points of a sweep's dataset (grid or list of points)."""
    import numpy as np

    reasons = ds["failed"]
    out = []
    for i in np.flatnonzero(reasons.values.reshape(-1) != ""):
        row = reasons.isel(dict(zip(reasons.dims, np.unravel_index(int(i), reasons.shape))))
        out.append(({c: row[c].item() for c in row.coords}, str(row.item())))
    return out


def cmd_status(args) -> int:
    total = args.total
    path = args.store
    if args.spec is not None:
        kwargs = load_spec(args.spec)
        if total is None:
            total = len(_grid_ids(kwargs["grid"]))
        if path is None:
            path = kwargs.get("store")
    if path is None:
        raise CLIError("status needs a store: name it (status X.zarr) or give --spec SPEC.py with SWEEP['store']")
    store = open_store(path)
    if total is None:
        total = _recorded_total(path)
    if args.watch is not None and args.watch <= 0:
        raise CLIError(f"--watch takes a positive number of seconds, got {args.watch}")
    tty = sys.stdout.isatty()
    first = True
    try:
        while True:
            st = store.status(total)
            if args.watch is not None:
                if tty:
                    print("\x1b[H\x1b[2J", end="")
                elif not first:
                    print()
                print(time.strftime("%Y-%m-%d %H:%M:%S"))
            if args.json:
                print(json.dumps(st, indent=1, default=str))
            else:
                print(format_status(st))
                if total is None and first:
                    print("(the store does not record the grid size: --total N or --spec SPEC.py give "
                          "pending points and the ETA)")
            sys.stdout.flush()
            first = False
            if args.watch is None:
                break
            if total is not None and st["pending"] == 0 and not st["in_flight"]:
                print("sweep complete" + (f" ({st['failed']} failed)" if st["failed"] else ""))
                break
            time.sleep(args.watch)
    except KeyboardInterrupt:
        print()
    return 0


# ------------------------------------------------------------------------------ the parser


def _int_at_least(minimum: int, what: str):
    """An argparse type: an integer >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v
    return parse


_positive_int = _int_at_least(1, "a positive integer")
_nonneg_int = _int_at_least(0, "an integer >= 0")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=fmt, allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", metavar="{run,resume,status}")
    sub.required = True

    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    common.add_argument("spec", metavar="SPEC.py", help="Python file defining SWEEP = dict(...) of tw.sweep's arguments")
    common.add_argument("--store", metavar="X.zarr", help="the sweep store (overrides SWEEP['store'])")
    common.add_argument("--executor", choices=EXECUTORS, help="where the tasks run (default: SWEEP['executor'] "
                        "if the spec defines one, else inprocess)")
    common.add_argument("--workers", type=_positive_int, metavar="N",
                        help="processes for --executor processes, or a local dask cluster (default: CPU count)")
    common.add_argument("--task-size", type=_positive_int, metavar="N",
                        help="points per executor task (a SLURM job); overrides SWEEP['task_size']")
    common.add_argument("--retry-failed", action="store_true", help="run points again that the store records as failed")
    common.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="a progress bar on stderr (default: SWEEP['progress'], else on when stderr is a terminal)")
    common.add_argument("--netcdf", metavar="OUT.nc", help="write the resulting xarray.Dataset to this netCDF file")
    common.add_argument("--debug", action="store_true", help="show tracebacks of input errors")
    slurm = common.add_argument_group("slurm (--executor slurm, via submitit)")
    slurm.add_argument("--slurm-partition", metavar="P")
    slurm.add_argument("--slurm-account", metavar="A")
    slurm.add_argument("--slurm-time", type=_positive_int, metavar="MIN", help="time limit of each job, minutes")
    slurm.add_argument("--slurm-gpus-per-task", type=_nonneg_int, metavar="G", help="GPUs of each job (one task per job)")
    slurm.add_argument("--slurm-cpus-per-task", type=_positive_int, metavar="C")
    slurm.add_argument("--slurm-mem-gb", type=_positive_int, metavar="GB")
    slurm.add_argument("--slurm-folder", metavar="DIR", help="submitit's folder for job scripts and logs "
                       "(default: <store>_submitit; %%j: the job id)")
    slurm.add_argument("--slurm-param", action="append", metavar="KEY=VALUE",
                       help="any other submitit parameter, repeatable (constraint=a100 -> slurm_constraint)")
    slurm.add_argument("--slurm-cluster", choices=SLURM_CLUSTERS,
                       help="submitit's cluster (default auto: slurm where sbatch exists, else local)")
    slurm.add_argument("--slurm-local", action="store_true", help="= --slurm-cluster local (testing without SLURM)")
    dask = common.add_argument_group("dask (--executor dask)")
    dask.add_argument("--dask-address", metavar="tcp://HOST:PORT",
                      help="scheduler of a running dask cluster (default: a LocalCluster of --workers processes)")

    sub.add_parser("run", parents=[common], formatter_class=fmt, allow_abbrev=False,
                   help="run a sweep", description="Run the sweep of SPEC.py (see python -m twa_jax sweep --help).")
    sub.add_parser("resume", parents=[common], formatter_class=fmt, allow_abbrev=False,
                   help="resume a sweep from its store",
                   description="Resume the sweep of SPEC.py from its store: finished points are skipped.")
    status = sub.add_parser("status", formatter_class=fmt, allow_abbrev=False, help="progress of a store",
                            description="Progress of a sweep store: done, failed, in flight, rate, ETA.")
    status.add_argument("store", nargs="?", metavar="X.zarr", help="the store (default: SWEEP['store'] of --spec)")
    status.add_argument("--total", type=_positive_int, metavar="N", help="number of points of the whole sweep")
    status.add_argument("--spec", metavar="SPEC.py", help="count the points of this spec's grid (for pending and ETA)")
    status.add_argument("--watch", type=float, metavar="SECONDS", help="print again every SECONDS until complete")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m twa_jax sweep ...``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        if args.command == "status":
            return cmd_status(args)
        return cmd_run(args, resume=args.command == "resume")
    except CLIError as e:
        if getattr(args, "debug", False):
            raise
        print(f"{PROG} {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
