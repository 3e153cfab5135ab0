"""``SweepStore``: a crash-safe zarr store of parameter-sweep points, shared by many workers.

The store is what ``tw.sweep(..., store="path.zarr")`` writes to: every finished point is written
as soon as it is done, so an interrupted sweep resumes where it stopped, and workers in several
processes or on several nodes (shared filesystem) fill one store with disjoint points.

Layout of ``path.zarr`` (a zarr v3 hierarchy; only the standard library, numpy and zarr are used,
so worker processes need not import JAX to write)::

    zarr.json              root group; attrs["twa_jax_sweep"] = {format, axes, signature, created}
    points/zarr.json       group of the finished points
    points/<id>/           one zarr group per finished point: one array per data entry,
                           attrs = the caller's attrs + "_twa_point" (values, array names, times)
    _sweep/tmp/            points being written: <id>.tmp-<host>-<pid>-<random>
    _sweep/failed/<id>.json    points that failed, with their reason
    _sweep/started/<id>.json   points in flight (start time, host, pid)
    _sweep/log/*.jsonl     one append-only log per writing process: start and end time of each
                           finished (or failed) point, for the rate and ETA of :meth:`status`
    <variable>/            the view (:meth:`SweepStore.write_view`): the whole grid as root arrays
                           written by xarray, so ``xr.open_zarr(path)`` reads the sweep on its own
                           (NaN where a point is pending or failed, ``status`` says which)

Guarantees:

* A point is *done* iff ``points/<id>`` exists. It gets there by one ``os.rename`` of a fully
  written (and, with ``durable=True``, fsynced) temporary group, so a writer killed at any moment
  (SIGKILL included) leaves either no point or a complete one, never a partial one; what it leaves
  behind is a temporary directory that :meth:`SweepStore.cleanup` removes.
* The first writer of a point wins: renaming onto an existing (non-empty) ``points/<id>`` fails,
  and the later writer discards its copy.
* Points are identified by their own values (:meth:`SweepStore.point_id`), not by their grid
  position: growing a grid along an axis reuses the finished points.
* A store records the sweep's ``signature`` (model, save times, ``n_traj``, key, observables,
  ``dt``, method, ...) and ``axes``; opening it for a different sweep raises ``ValueError`` naming
  the fields that differ. With a ``fingerprint`` it also records numbers the sweep's functions
  give at one point (``tw.sweep``: the model, the initial state and the observables at fixed
  probe states), so a store written by other code under the same names is refused too.

The layout relies on POSIX rename semantics (atomic, and failing onto a non-empty directory),
which local filesystems, NFS, Lustre and GPFS provide.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import secrets
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

__all__ = ["SweepStore", "IncompletePointError", "format_status"]

_ROOT_KEY = "twa_jax_sweep"  # root group attribute holding the sweep's identity
_POINT_KEY = "_twa_point"  # point group attribute holding our bookkeeping
_FORMAT = 1
_TMP = ".tmp-"  # marks temporary files and directories: <name>.tmp-<host>-<pid>-<random>
_ONE_CHUNK_BYTES = 128 * 2**20  # arrays up to this size are stored as a single chunk
_SHORT = 60  # characters of a value shown in messages


class IncompletePointError(RuntimeError):
    """A point directory lacks data its own manifest lists (the store was damaged from outside)."""


# ------------------------------------------------------------------------------ value helpers


def _jsonable(value: Any, where: str = "value") -> Any:
    """``value`` as plain JSON types (numpy/JAX scalars and arrays become Python numbers/lists)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)  # bool is handled above
    if isinstance(value, float):
        return float(value)  # np.float64 is a float subclass
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: dict keys must be strings, got {k!r}")
            out[k] = _jsonable(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, complex):
        raise TypeError(f"{where}: complex values are not JSON-able ({value!r}); store real and imaginary parts")
    if hasattr(value, "__array__"):
        arr = np.asarray(value)
        if arr.dtype.kind in "biufUS":
            return arr.tolist()
    raise TypeError(f"{where}: {type(value).__name__} {value!r} is not JSON-able")


def _canon(value: Any, where: str = "value") -> Any:
    """A canonical, type-tagged JSON form: values that compare equal (``==``) get the same form.

    Floats are written exactly (``float.hex``); an integral float is written as the integer it
    equals (``1.0`` and ``1``, ``-0.0`` and ``0`` are one value), a complex with zero imaginary part
    as its real part. Booleans stay distinct from integers; NaN is one value.
    """
    if value is None:
        return "n:"
    if isinstance(value, (bool, np.bool_)):
        return "b:1" if value else "b:0"
    if isinstance(value, (int, np.integer)):
        return f"i:{int(value)}"
    if isinstance(value, (float, np.floating)):
        x = float(value)
        if math.isnan(x):
            return "f:nan"
        if math.isfinite(x) and x == math.floor(x) and abs(x) < 2.0**63:
            return f"i:{int(x)}"
        return "f:" + x.hex()
    if isinstance(value, (complex, np.complexfloating)):
        z = complex(value)
        if z.imag == 0:
            return _canon(z.real, where)
        return ["c:", _canon(z.real, where), _canon(z.imag, where)]
    if isinstance(value, str):
        return "s:" + value
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: dict keys must be strings, got {k!r}")
            out[k] = _canon(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_canon(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "__array__"):
        arr = np.asarray(value)
        if arr.dtype.kind in "biufcUS":
            return _canon(arr.tolist(), where)
    raise TypeError(f"{where}: {type(value).__name__} {value!r} cannot identify a sweep point")


def _canon_json(value: Any) -> str:
    return json.dumps(_canon(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _short(value: Any, n: int = _SHORT) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= n else text[: n - 1] + "…"


def _clip(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


#: relative tolerance, of a quantity's largest value, of a store's fingerprint on reopening (a
#: resumed sweep may run on another machine, whose arithmetic differs in the last digits)
FINGERPRINT_RTOL = 1e-4


#: the suffix of a fingerprint's quantities at other parameter values than the point's (the
#: sweep's ``_other_values``); stores written before they were recorded lack them and are
#: compared without them
OTHER_VALUES = " at other parameter values"


def _fingerprint_diffs(old: dict, new: dict) -> list[str]:
    """The quantities of two fingerprints ``{quantity: [floats]}`` that differ (or are missing)."""
    out = []
    # quantities at other parameter values: a store written before they were recorded lacks them
    newer = [k for k in new if k not in old and not (k.endswith(OTHER_VALUES) and not any(
        j.endswith(OTHER_VALUES) for j in old))]
    for k in list(old) + newer:
        a, b = old.get(k), new.get(k)
        if a is None or b is None or len(a) != len(b):
            out.append(k)
            continue
        a, b = np.asarray(a, float), np.asarray(b, float)
        scale = max(float(np.max(np.abs(a), initial=0.0)), float(np.max(np.abs(b), initial=0.0)), 1e-30)
        if not np.allclose(a, b, rtol=0.0, atol=FINGERPRINT_RTOL * scale, equal_nan=True):
            out.append(k)
    return out


def _diff(old: Any, new: Any, name: str, out: list[str]) -> None:
    """Append to ``out`` one line per difference of two JSON-able values (``name``: where)."""
    if _canon_json(old) == _canon_json(new):
        return
    label = name or "signature"
    if isinstance(old, dict) and isinstance(new, dict):
        for k in list(old) + [k for k in new if k not in old]:
            key = f"{name}.{k}" if name else k
            if k not in new:
                out.append(f"{key}: {_short(old[k])} (stored) vs missing (now)")
            elif k not in old:
                out.append(f"{key}: missing (stored) vs {_short(new[k])} (now)")
            else:
                _diff(old[k], new[k], key, out)
        return
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            out.append(
                f"{label}: {len(old)} values {_short(old, 40)} (stored) vs "
                f"{len(new)} values {_short(new, 40)} (now)"
            )
            return
        bad = [i for i in range(len(old)) if _canon_json(old[i]) != _canon_json(new[i])]
        i = bad[0]
        more = f" (and {len(bad) - 1} more of {len(old)} entries)" if len(bad) > 1 else ""
        if isinstance(old[i], (dict, list)) and isinstance(new[i], (dict, list)):
            sub: list[str] = []
            _diff(old[i], new[i], f"{label}[{i}]", sub)
            out.append(sub[0] + more)
        else:
            out.append(f"{label}[{i}]: {_short(old[i])} (stored) vs {_short(new[i])} (now){more}")
        return
    out.append(f"{label}: {_short(old)} (stored) vs {_short(new)} (now)")


# ------------------------------------------------------------------------------ file helpers

def _host_tag() -> str:
    """8 hex digits naming this host *and* PID namespace: where a pid identifies a process."""
    try:
        ns = str(os.stat("/proc/self/ns/pid").st_ino)  # containers sharing a hostname differ here
    except OSError:
        ns = ""
    return hashlib.sha1(f"{_HOST}/{ns}".encode()).hexdigest()[:8]


_HOST = socket.gethostname()
_HOST_TAG = _host_tag()


def _tmp_suffix() -> str:
    return f"{_TMP}{_HOST_TAG}-{os.getpid()}-{secrets.token_hex(4)}"


def _tmp_owner(name: str) -> tuple[str, int] | None:
    """``(host tag, pid)`` of the writer of a temporary name, or None if it is not one of ours."""
    if _TMP not in name:
        return None
    parts = name.rsplit(_TMP, 1)[1].split("-")
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return True
    return True


def _writer_dead(host_tag: str, pid: int) -> bool:
    """True if the writer is known to be gone: it ran on this host and its process is no more."""
    return host_tag == _HOST_TAG and pid != os.getpid() and not _pid_alive(pid)


def _fsync_path(path: Path, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for f in files:
            _fsync_path(Path(dirpath) / f)
        _fsync_path(Path(dirpath), directory=True)


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


def _newest_mtime(path: Path) -> float:
    try:
        newest = path.stat().st_mtime
    except FileNotFoundError:
        return time.time()
    if path.is_dir():
        for dirpath, dirs, files in os.walk(path):
            for f in dirs + files:
                try:
                    newest = max(newest, os.stat(os.path.join(dirpath, f)).st_mtime)
                except FileNotFoundError:
                    pass
    return newest


def _read_json(path: Path) -> Any | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return None


def _write_json_atomic(path: Path, value: Any, durable: bool) -> None:
    tmp = path.with_name(path.name + _tmp_suffix())
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"data names must be non-empty strings, got {name!r}")
    for part in name.split("/"):
        if part in ("", ".", "..") or part.startswith("__") or part == "zarr.json" or "\\" in part:
            raise ValueError(f"data name {name!r} is not a valid zarr node name")
    return name


# ------------------------------------------------------------------------------ the store


class SweepStore:
    """A persistent store of finished sweep points (see the module docstring for the layout).

    Args:
        path: directory of the store, e.g. ``"sweep.zarr"``.
        signature: JSON-able dict describing the sweep (model name and parameters that are not
            swept, save times, ``n_traj``, key, observable names, ``dt``, method, ...; not the grid
            values, not the package version). Stored on creation; on reopening it must match
            (numbers compare by value: ``1000`` equals ``1000.0``).
        axes: names of the swept parameters, in order; must match the stored ones exactly.
        create: create the store if it does not exist (else ``FileNotFoundError``).
        durable: fsync each point before it is marked done, so a crash of the node (not only of
            the process) cannot leave a point marked done whose data never reached the disk.
        fingerprint: ``(point, values_at)``, with ``values_at(point) -> {quantity: [floats]}``:
            stored on creation (evaluated at ``point``); on reopening, ``values_at`` is evaluated
            at the stored point and each quantity must agree with the stored numbers to a
            relative :data:`FINGERPRINT_RTOL` of its largest value (else ``ValueError`` naming the
            quantities). A store without one (or a worker that passes none) is not checked.

    Raises:
        ValueError: the store belongs to another sweep (the message names the differing fields),
            or ``path`` holds something that is not a sweep store.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        signature: dict,
        axes: tuple[str, ...] | list[str],
        *,
        create: bool = True,
        durable: bool = True,
        fingerprint: tuple | None = None,
    ):
        self.path = Path(path)
        if not isinstance(signature, dict):
            raise TypeError(f"signature must be a dict, got {type(signature).__name__}")
        self.signature = _jsonable(signature, "signature")
        axes = tuple(axes)
        if not all(isinstance(a, str) and a for a in axes) or len(set(axes)) != len(axes):
            raise ValueError(f"axes must be distinct non-empty strings, got {axes!r}")
        self.axes = axes
        self.durable = durable
        self._starts: dict[str, float] = {}  # point id -> start time, for points started here
        self._log_name: tuple[int, str] | None = None  # (pid, file name) of this process's log
        self._fingerprint = fingerprint

        if not (self.path / "zarr.json").exists():
            if not create:
                raise FileNotFoundError(f"no sweep store at {self.path}")
            self._create()
        self._check_identity()
        for sub in ("tmp", "failed", "started", "log"):  # in case they were removed by hand
            try:
                (self._meta / sub).mkdir(parents=True, exist_ok=True)
            except OSError:
                pass  # a read-only store still reads

    # -------------------------------------------------------------- creation and identity

    @property
    def _points(self) -> Path:
        return self.path / "points"

    @property
    def _meta(self) -> Path:
        return self.path / "_sweep"

    def _create(self) -> None:
        """Create the store atomically: build it beside ``path``, then rename it into place."""
        import zarr

        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name("." + self.path.name + _tmp_suffix())
        try:
            ident = {
                "format": _FORMAT,
                "axes": list(self.axes),
                "signature": self.signature,
                "created": time.time(),
            }
            if self._fingerprint is not None:
                point, values_at = self._fingerprint
                ident["fingerprint"] = {"point": _jsonable(point, "fingerprint point"),
                                        "values": _jsonable(values_at(point), "fingerprint")}
            root = zarr.open_group(str(tmp), mode="w-", attributes={_ROOT_KEY: ident})
            root.create_group("points")
            for sub in ("tmp", "failed", "started", "log"):
                (tmp / "_sweep" / sub).mkdir(parents=True)
            if self.durable:
                _fsync_tree(tmp)
            try:
                os.rename(tmp, self.path)  # fails if another worker created it meanwhile
            except OSError as e:
                if not (self.path / "zarr.json").exists():
                    raise ValueError(
                        f"{self.path} exists and is not a sweep store (a file, or a non-empty "
                        "directory without zarr.json); choose another path"
                    ) from e
            else:
                if self.durable:
                    _fsync_path(self.path.parent, directory=True)
        finally:
            _remove(tmp)

    def _check_identity(self) -> None:
        meta = _read_json(self.path / "zarr.json")
        ident = (meta or {}).get("attributes", {}).get(_ROOT_KEY) if isinstance(meta, dict) else None
        if not isinstance(ident, dict) or "signature" not in ident:
            raise ValueError(f"{self.path} is a zarr store but not a sweep store (no {_ROOT_KEY!r} attribute)")
        if ident.get("format", _FORMAT) > _FORMAT:
            raise ValueError(
                f"store {self.path} has format {ident['format']}, newer than this twa_jax reads ({_FORMAT})"
            )
        stored_axes = tuple(ident.get("axes", ()))
        if stored_axes != self.axes:
            raise ValueError(
                f"store {self.path} belongs to another sweep: axes {list(stored_axes)} (stored) vs "
                f"{list(self.axes)} (now); the swept parameters and their order must match"
            )
        diffs: list[str] = []
        _diff(ident["signature"], self.signature, "", diffs)
        if diffs:
            shown = diffs[:8] + ([f"and {len(diffs) - 8} more"] if len(diffs) > 8 else [])
            raise ValueError(
                f"store {self.path} belongs to another sweep: " + "; ".join(shown)
                + ". Use another store path, or delete this one to start afresh."
            )
        stored = ident.get("fingerprint")
        if self._fingerprint is not None and isinstance(stored, dict):
            now = _jsonable(self._fingerprint[1](stored["point"]), "fingerprint")
            bad = _fingerprint_diffs(stored["values"], now)
            if bad:
                raise ValueError(
                    f"store {self.path} belongs to another sweep: at its point {stored['point']}, "
                    + ", ".join(bad) + " give other values than the stored sweep's (the same names, other "
                    "code, parameters or state). Use another store path, or delete this one to start afresh."
                )

    # -------------------------------------------------------------- points

    @staticmethod
    def point_id(point: dict) -> str:
        """A short id (16 hex digits) of a point ``{axis: value}``, the same in every process.

        sha1 of a canonical JSON of the point: keys sorted, floats written exactly with
        ``float.hex`` (so ``0.1`` and ``0.1 + 1e-12`` differ), values equal under ``==`` identical
        (``2`` and ``2.0``), booleans distinct from integers.
        """
        if not isinstance(point, dict):
            raise TypeError(f"a point is a dict {{axis: value}}, got {type(point).__name__}")
        return hashlib.sha1(_canon_json(point).encode("ascii")).hexdigest()[:16]

    def _id(self, point: dict) -> str:
        if not isinstance(point, dict) or set(point) != set(self.axes):
            got = sorted(point) if isinstance(point, dict) else type(point).__name__
            raise ValueError(f"a point of this sweep has the axes {list(self.axes)}, got {got}")
        return self.point_id(point)

    def _values(self, point: dict) -> dict:
        return {a: _jsonable(point[a], f"point[{a!r}]") for a in self.axes}

    def done_ids(self) -> set[str]:
        """Ids of the finished points (complete by construction)."""
        try:
            return {n for n in os.listdir(self._points) if n != "zarr.json" and _TMP not in n}
        except FileNotFoundError:
            return set()

    def is_done(self, point: dict) -> bool:
        return (self._points / self._id(point)).is_dir()

    def started(self, point: dict) -> None:
        """Mark ``point`` as in flight (start time, host, pid), for :meth:`status`."""
        pid = self._id(point)
        now = time.time()
        self._starts[pid] = now
        record = {"point": self._values(point), "time": now, "host": _HOST, "host_tag": _HOST_TAG,
                  "pid": os.getpid()}
        _write_json_atomic(self._meta / "started" / f"{pid}.json", record, durable=False)

    def write_point(self, point: dict, data: dict, attrs: dict | None = None) -> bool:
        """Store a finished point and mark it done, atomically.

        Args:
            point: ``{axis: value}`` for every axis of the sweep.
            data: ``{name: array}``, any shape and numeric dtype (complex included); a name may
                contain ``/`` to nest groups (``"mean/sz"``).
            attrs: JSON-able attributes of the point (e.g. ``n_failed``, wall time).

        Returns:
            True if this call stored the point, False if it was already done (by another worker:
            the first writer wins, this copy is discarded).
        """
        import zarr

        pid = self._id(point)
        values = self._values(point)
        attrs = _jsonable(dict(attrs or {}), "attrs")
        if _POINT_KEY in attrs:
            raise ValueError(f"attribute name {_POINT_KEY!r} is reserved")
        arrays = {_check_name(k): np.asarray(v) for k, v in data.items()}
        names = sorted(arrays)
        for a in names:
            if arrays[a].dtype.kind in "OV":
                raise TypeError(f"data {a!r}: dtype {arrays[a].dtype} cannot be stored; use numeric arrays")
            for b in names:
                if b.startswith(a + "/"):
                    raise ValueError(f"data names {a!r} and {b!r} clash (one would be a group of the other)")
        final = self._points / pid
        if final.is_dir():
            self._finish(pid, ok=True)
            return False

        t0 = self._starts.get(pid)
        record = {
            "point": values,
            "arrays": list(arrays),
            "started": t0,
            "finished": time.time(),  # the computation's end; the commit follows
            "host": _HOST,
            "pid": os.getpid(),
        }
        tmp = self._meta / "tmp" / (pid + _tmp_suffix())
        try:
            group = zarr.open_group(str(tmp), mode="w-", attributes={**attrs, _POINT_KEY: record})
            for name, arr in arrays.items():
                chunks = tuple(max(1, s) for s in arr.shape) if arr.nbytes <= _ONE_CHUNK_BYTES else "auto"
                group.create_array(name, data=arr, chunks=chunks)
            if self.durable:
                _fsync_tree(tmp)
            try:
                os.rename(tmp, final)  # the commit: atomic; fails onto an existing point
            except OSError as e:
                if e.errno in (errno.EEXIST, errno.ENOTEMPTY) or final.is_dir():
                    self._finish(pid, ok=True)
                    return False
                raise
            if self.durable:
                _fsync_path(self._points, directory=True)
        finally:
            _remove(tmp)  # no-op after a successful rename
        self._finish(pid, ok=True, t0=t0, t1=time.time())
        return True

    def write_failure(self, point: dict, reason: str) -> None:
        """Record that ``point`` failed (``reason``: e.g. the exception); a later success clears it."""
        pid = self._id(point)
        now = time.time()
        t0 = self._starts.get(pid)
        record = {"point": self._values(point), "reason": str(reason), "time": now, "started": t0,
                  "host": _HOST, "pid": os.getpid()}
        _write_json_atomic(self._meta / "failed" / f"{pid}.json", record, durable=self.durable)
        self._finish(pid, ok=False, t0=t0, t1=now)

    def _finish(self, pid: str, ok: bool, t0: float | None = None, t1: float | None = None) -> None:
        """After a point's outcome is stored: clear its in-flight mark (and failure), log it."""
        if ok:
            _remove(self._meta / "failed" / f"{pid}.json")
        _remove(self._meta / "started" / f"{pid}.json")
        self._starts.pop(pid, None)
        if t1 is not None:
            self._log({"id": pid, "ok": ok, "t0": t0, "t1": t1})

    def _log(self, entry: dict) -> None:
        if self._log_name is None or self._log_name[0] != os.getpid():  # one log per process
            self._log_name = (os.getpid(), f"{_HOST_TAG}-{os.getpid()}-{secrets.token_hex(4)}.jsonl")
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        try:
            with open(self._meta / "log" / self._log_name[1], "a", encoding="utf-8") as f:
                f.write(line)
        except OSError:
            pass  # the log only feeds the ETA

    def failures(self) -> dict[str, str]:
        """``{id: reason}`` of the points that failed and have not succeeded since."""
        return {pid: rec["reason"] for pid, rec in self._failure_records().items()}

    def _failure_records(self) -> dict[str, dict]:
        done = self.done_ids()
        out = {}
        for f in sorted((self._meta / "failed").glob("*.json")):
            pid = f.name[: -len(".json")]
            rec = _read_json(f)
            if pid not in done and isinstance(rec, dict):
                out[pid] = rec
        return out

    def read_point(self, pid: str) -> tuple[dict, dict, dict]:
        """``(point values, {name: numpy array}, attrs)`` of the finished point ``pid``.

        Raises:
            KeyError: ``pid`` is not done.
            IncompletePointError: the point lacks arrays its manifest lists (damaged from outside).
        """
        import zarr

        path = self._points / pid
        if _TMP in pid or pid == "zarr.json" or not (path / "zarr.json").is_file():
            raise KeyError(f"point {pid} is not in store {self.path}")
        group = zarr.open_group(str(path), mode="r")
        attrs = dict(group.attrs)
        record = attrs.pop(_POINT_KEY, None)
        if not isinstance(record, dict) or "arrays" not in record:
            raise IncompletePointError(f"point {pid} in {self.path} has no {_POINT_KEY!r} manifest")
        data = {}
        for name in record["arrays"]:
            try:
                data[name] = np.asarray(group[name][...])
            except (KeyError, FileNotFoundError) as e:
                raise IncompletePointError(f"point {pid} in {self.path} lacks its array {name!r}") from e
        return record["point"], data, attrs

    def iter_points(self) -> Iterator[tuple[str, dict, dict, dict]]:
        """``(id, point values, data, attrs)`` of every finished point, in id order."""
        for pid in sorted(self.done_ids()):
            yield (pid, *self.read_point(pid))

    # -------------------------------------------------------------- maintenance and status

    def cleanup(self, older_than: float | None = 3600.0) -> dict[str, int]:
        """Remove what killed writers left: temporary point directories and files, stale marks.

        A temporary entry is removed if its writer ran on this host and is gone, or if nothing in
        it changed for ``older_than`` seconds (writers on other hosts; ``None``: never, ``0``: all
        now -- only when no other worker is writing). In-flight marks are removed for points that
        are done and for writers known to be gone. Returns counts ``{"tmp": n, "started": n}``.
        """
        now = time.time()
        removed = {"tmp": 0, "started": 0}

        def stale(entry: Path) -> bool:
            owner = _tmp_owner(entry.name)
            if owner is None:
                return False
            if _writer_dead(*owner):
                return True
            return older_than is not None and now - _newest_mtime(entry) >= older_than

        candidates: list[Path] = []
        for sub in ("tmp", "failed", "started"):
            d = self._meta / sub
            if d.is_dir():
                candidates += [e for e in d.iterdir() if _TMP in e.name]
        if self._points.is_dir():  # not used by this layout, but never leave one marked as a point
            candidates += [e for e in self._points.iterdir() if _TMP in e.name]
        candidates += [e for e in self.path.parent.glob("." + self.path.name + _TMP + "*")]
        for entry in candidates:
            if stale(entry):
                _remove(entry)
                removed["tmp"] += 1

        done = self.done_ids()
        for f in (self._meta / "started").glob("*.json"):
            rec = _read_json(f) or {}
            pid = f.name[: -len(".json")]
            gone = isinstance(rec.get("pid"), int) and _writer_dead(rec.get("host_tag", ""), rec["pid"])
            if pid in done or gone:
                _remove(f)
                removed["started"] += 1
        return removed

    def status(self, total: int | None = None) -> dict:
        """A summary of the sweep's progress.

        Args:
            total: number of points of the whole sweep (for ``pending`` and the ETA).

        Returns:
            ``{"path", "done", "failed", "in_flight", "total", "pending", "rate_points_per_s",
            "eta_s", "failed_points"}``. ``in_flight`` lists the started, unfinished points
            (``id``, ``point``, ``started`` (epoch s), ``age_s``, ``host``, ``pid``, ``alive``: False
            if its writer is known to be gone, None if unknown (another host)). ``pending`` is
            ``total - done - failed``. The rate is the number of points finished (or failed) per
            second, all workers together, over the latest stretch of activity (gaps of more than
            max(60 s, 5 typical point durations) start a new stretch); ``eta_s`` is ``pending /
            rate`` (None without a total or a rate).
        """
        now = time.time()
        done = self.done_ids()
        failed = self._failure_records()
        in_flight = []
        for f in sorted((self._meta / "started").glob("*.json")):
            pid = f.name[: -len(".json")]
            rec = _read_json(f)
            if pid in done or not isinstance(rec, dict):
                continue
            t = float(rec.get("time", now))
            if pid in failed and float(failed[pid].get("time", 0)) >= t:
                continue  # failed after it started: not in flight any more
            host_tag, wpid = rec.get("host_tag", ""), rec.get("pid")
            alive = None
            if host_tag == _HOST_TAG and isinstance(wpid, int):
                alive = wpid == os.getpid() or _pid_alive(wpid)
            in_flight.append({"id": pid, "point": rec.get("point"), "started": t, "age_s": now - t,
                              "host": rec.get("host"), "pid": wpid, "alive": alive})
        in_flight.sort(key=lambda r: r["started"])

        rate = self._rate()
        # a writer on this host is alive iff its pid is; on another host, iff its point started
        # less than STALE_AFTER ago (or 10 typical point durations, if longer)
        stale = max(self.STALE_AFTER, 10.0 * (self._median_duration or 0.0))
        live = {(r["host"], r["pid"]) for r in in_flight
                if r["alive"] is True or (r["alive"] is None and r["age_s"] < stale)}
        pending = None if total is None else max(int(total) - len(done) - len(failed), 0)
        if pending is None:
            eta = None
        elif pending == 0:
            eta = 0.0
        else:  # no ETA for a sweep nobody is running (a killed or interrupted writer)
            eta = pending / rate if (rate and live) else None
        return {
            "path": str(self.path),
            "done": len(done),
            "failed": len(failed),
            "in_flight": in_flight,
            "total": None if total is None else int(total),
            "pending": pending,
            "rate_points_per_s": rate,
            "eta_s": eta,
            "live_writers": len(live),
            "failed_points": [{"id": pid, "point": r.get("point"), "reason": r.get("reason"), "time": r.get("time")}
                              for pid, r in failed.items()],
        }

    #: seconds after which a point in flight on another host counts as abandoned
    STALE_AFTER = 600.0
    _median_duration: float | None = None

    def _rate(self) -> float | None:
        self._median_duration = None
        events = []
        log_dir = self._meta / "log"
        for f in log_dir.glob("*.jsonl") if log_dir.is_dir() else ():
            try:
                lines = f.read_text(encoding="utf-8").splitlines()
            except OSError:
                continue
            for line in lines:
                try:
                    e = json.loads(line)
                    t1 = float(e["t1"])
                    t0 = float(e["t0"]) if e.get("t0") is not None else t1
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a kill
                events.append((min(t0, t1), t1))
        if not events:
            return None
        events.sort()
        durations = sorted(t1 - t0 for t0, t1 in events)
        self._median_duration = durations[len(durations) // 2]
        tol = max(60.0, 5.0 * durations[len(durations) // 2])
        start = 0
        reach = events[0][1]
        for i in range(1, len(events)):
            if events[i][0] > reach + tol:
                start = i  # a gap: a new stretch of activity begins
            reach = max(reach, events[i][1])
        latest = events[start:]
        span = max(t1 for _, t1 in latest) - min(t0 for t0, _ in latest)
        return len(latest) / span if span > 0 else None

    # -------------------------------------------------------------- the view for xr.open_zarr

    #: ``status`` values of the view (CF flags: ``flag_values`` / ``flag_meanings``)
    STATUS = {"pending": 0, "done": 1, "failed": 2}

    def write_view(self, ds) -> None:
        """Write ``ds`` (the sweep's Dataset over its whole grid) as the store's root arrays.

        ``xr.open_zarr(path)`` then returns it on its own. xarray writes the arrays; the root's
        ``zarr.json`` keeps the store's identity attribute next to the Dataset's attrs, and its
        consolidated metadata lists only these arrays (not the ``points`` groups, which would
        make it grow with every point). A previous view is replaced (a grown grid changes shapes).
        """
        import warnings

        meta_file = self.path / "zarr.json"
        meta = _read_json(meta_file)
        ident = meta["attributes"][_ROOT_KEY]
        for name in ident.get("view", []):
            _remove(self.path / name)
        ds = ds.copy()
        for name in ds.variables:  # no encodings carried over from a Dataset read elsewhere
            ds[name].encoding = {}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
            warnings.filterwarnings("ignore", message=".*is not recognized as a component of a Zarr hierarchy.*")
            ds.to_zarr(str(self.path), mode="a", consolidated=False)
        names = sorted(set(ds.variables))
        meta = _read_json(meta_file)  # xarray replaced the attributes: put the identity back
        meta["attributes"] = {**meta.get("attributes", {}), _ROOT_KEY: {**ident, "view": names}}
        meta["consolidated_metadata"] = {
            "kind": "inline", "must_understand": False,
            "metadata": {n: _read_json(self.path / n / "zarr.json") for n in names},
        }
        _write_json_atomic(meta_file, meta, self.durable)

    def __repr__(self) -> str:
        return f"SweepStore({str(self.path)!r}, axes={self.axes!r}, done={len(self.done_ids())})"


# ------------------------------------------------------------------------------ status text


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600:02d} h"


def _point_text(point: Any) -> str:
    if not isinstance(point, dict):
        return _short(point)
    return "{" + ", ".join(f"{k}={_short(v, 24)}" for k, v in point.items()) + "}"


def format_status(status: dict, max_lines: int = 10) -> str:
    """:meth:`SweepStore.status` as text for a command line."""
    total = status.get("total")
    head = f"{status.get('path', 'sweep')}: {status['done']}"
    head += f" of {total} points done" if total is not None else " points done"
    head += f", {status['failed']} failed, {len(status['in_flight'])} in flight"
    if status.get("pending") is not None:
        head += f", {status['pending']} pending"
    lines = [head]
    rate = status.get("rate_points_per_s")
    if rate:
        per = f"{rate:.3g} points/s" if rate >= 1 else f"{1 / rate:.3g} s per point"
        eta = status.get("eta_s")
        lines.append(f"rate {per}" + (f", ETA {_duration(eta)}" if eta is not None else ""))
    if status.get("pending") and not status.get("live_writers", 1):
        lines.append("no live writer: nothing is running this sweep now (no ETA); run it again to resume")
    if status["in_flight"]:
        lines.append("in flight:")
        for r in status["in_flight"][:max_lines]:
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["started"]))
            state = {False: ", writer gone", None: "", True: ""}[r.get("alive")]
            lines.append(f"  {r['id']} {_point_text(r['point'])} since {since} ({_duration(r['age_s'])}), "
                         f"{r.get('host')} pid {r.get('pid')}{state}")
        if len(status["in_flight"]) > max_lines:
            lines.append(f"  ... and {len(status['in_flight']) - max_lines} more")
    if status.get("failed_points"):
        lines.append("failed:")
        for r in status["failed_points"][:max_lines]:
            lines.append(f"  {r['id']} {_point_text(r['point'])}: {_clip(r.get('reason'), 120)}")
        if len(status["failed_points"]) > max_lines:
            lines.append(f"  ... and {len(status['failed_points']) - max_lines} more")
    return "\n".join(lines)
