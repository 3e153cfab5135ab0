"""SweepStore: the crash-safe, shared zarr store of parameter-sweep points (twa_jax/_store.py).

Worker subprocesses load ``_store.py`` by file path (it needs only numpy and zarr), so they start
in well under a second instead of importing JAX through ``twa_jax/__init__``.
"""

import inspect
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from twa_jax._store import _HOST_TAG, IncompletePointError, SweepStore, format_status

MODULE = str(Path(__file__).resolve().parents[1] / "twa_jax" / "_store.py")
SIG = {"model": "dicke", "params": {"omega": 1.0, "kappa": 0.5}, "ts": [0.0, 0.5, 1.0],
       "n_traj": 1000, "key": 1234, "observables": ["sx", "sz"], "dt": 0.01, "method": "dtwa"}
AXES = ("g", "N")


# the points and their (deterministic) data; the worker subprocesses get the same source
def point(i):
    return {"g": 0.1 * i, "N": 4 + i % 3}


def data(i, big=200_000):
    return {
        "re": np.arange(big, dtype=np.float64) * (i + 0.5),
        "z": (np.arange(4096) + 1j * i).reshape(64, 64),
        "modes": np.full((3, 7), i, dtype=np.int32),
    }


COMMON = "import numpy as np\n" + inspect.getsource(point) + inspect.getsource(data)

WORKER = textwrap.dedent("""
    import importlib.util, json, os, sys, time
    spec = importlib.util.spec_from_file_location("twa_store_under_test", {module!r})
    st = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(st)
    {common}
    path, indices, tag = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    go = sys.argv[4] if len(sys.argv) > 4 else None
    store = st.SweepStore(path, {sig!r}, {axes!r})
    print("ready", flush=True)
    while go and not os.path.exists(go):
        time.sleep(0.002)
    done = store.done_ids()
    stored = []
    for i in indices:
        p = point(i)
        if store.point_id(p) in done:
            continue
        store.started(p)
        if store.write_point(p, data(i), {{"i": i, "writer": tag}}):
            stored.append(i)
    print(json.dumps(stored), flush=True)
""")


def _worker_script(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(module=MODULE, common=COMMON, sig=SIG, axes=AXES))
    return script


def _spawn(script, store, indices, tag, go=None):
    args = [sys.executable, str(script), str(store), json.dumps(list(indices)), tag] + ([str(go)] if go else [])
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _tmp_entries(root):
    return [os.path.join(d, n) for d, dirs, files in os.walk(root) for n in dirs + files if ".tmp-" in n]


def _check_point(store, pid, expected_index=None):
    """The point reads back complete and exactly equal to what a writer writes for it."""
    values, arrays, attrs = store.read_point(pid)
    i = attrs["i"]
    if expected_index is not None:
        assert i == expected_index
    assert values == point(i) and store.point_id(values) == pid
    want = data(i)
    assert sorted(arrays) == sorted(want)
    for name, arr in want.items():
        assert arrays[name].dtype == arr.dtype and arrays[name].shape == arr.shape
        np.testing.assert_array_equal(arrays[name], arr)
    return attrs


# ------------------------------------------------------------------------------ round trip, ids


def test_round_trip(tmp_path):
    store = SweepStore(tmp_path / "s.zarr", SIG, AXES)
    rng = np.random.default_rng(0)
    points = [{"g": 0.1, "N": 4}, {"g": 0.2, "N": 4}, {"g": -1.5e-7, "N": 8}]
    written = {}
    for k, p in enumerate(points):
        d = {
            "mean/sz": rng.normal(size=(5, 3)),  # (n_times, n_modes), nested name
            "sem/sz": rng.normal(size=(5, 3)).astype(np.float32),
            "corr": rng.normal(size=(5, 3, 3)) + 1j * rng.normal(size=(5, 3, 3)),
            "c64": (np.arange(4) * (1 - 1j)).astype(np.complex64),
            "n_failed": np.int64(k),  # scalar
            "ok": np.array([True, False, True]),
            "empty": np.zeros((0, 3)),
        }
        attrs = {"wall_time": 1.25 * k, "solver": "RotationHeun", "nested": {"a": [1, 2.5, None]}}
        store.started(p)
        assert store.write_point(p, d, attrs) is True
        written[store.point_id(p)] = (p, d, attrs)
    assert store.done_ids() == set(written)
    reopened = SweepStore(tmp_path / "s.zarr", SIG, AXES, create=False)
    for pid, (p, d, attrs) in written.items():
        values, arrays, got_attrs = reopened.read_point(pid)
        assert values == p and got_attrs == attrs
        assert sorted(arrays) == sorted(d)
        for name, arr in d.items():
            assert arrays[name].dtype == np.asarray(arr).dtype and arrays[name].shape == np.shape(arr), name
            np.testing.assert_array_equal(arrays[name], arr)
    assert [pid for pid, *_ in reopened.iter_points()] == sorted(written)
    # a point written again is not overwritten: the first writer wins
    assert store.write_point(points[0], {"x": np.zeros(2)}) is False
    assert "x" not in store.read_point(store.point_id(points[0]))[1]
    assert store.status()["in_flight"] == [] and _tmp_entries(tmp_path) == []
    with pytest.raises(KeyError):
        store.read_point("0123456789abcdef")
    with pytest.raises(ValueError, match="axes"):
        store.write_point({"g": 0.3}, {"x": np.zeros(2)})  # N missing
    with pytest.raises(ValueError, match="clash"):
        store.write_point({"g": 0.3, "N": 4}, {"a": np.zeros(2), "a/b": np.zeros(2)})
    with pytest.raises(ValueError, match="not a valid zarr node name"):
        store.write_point({"g": 0.3, "N": 4}, {"__x": np.zeros(2)})
    # damaged from outside: an array directory removed by hand
    import shutil

    pid = store.point_id(points[1])
    shutil.rmtree(tmp_path / "s.zarr" / "points" / pid / "corr")
    with pytest.raises(IncompletePointError, match="corr"):
        store.read_point(pid)


def test_point_id(tmp_path):
    pid = SweepStore.point_id
    assert len(pid({"g": 0.1})) == 16 and int(pid({"g": 0.1}), 16) >= 0
    assert pid({"g": 0.1}) != pid({"g": 0.1 + 1e-12})
    assert pid({"g": 0.1, "N": 4}) == pid({"N": 4, "g": 0.1})  # key order is irrelevant
    assert pid({"N": 4}) == pid({"N": 4.0}) == pid({"N": np.int32(4)})  # values equal under ==
    assert pid({"g": np.float64(0.1)}) == pid({"g": 0.1}) != pid({"g": np.float32(0.1)})
    assert pid({"f": True}) != pid({"f": 1}) and pid({"s": "4"}) != pid({"s": 4})
    assert pid({"g": 0.1, "N": 4}) != pid({"g": 0.1, "M": 4})
    points = [{"g": 0.1, "N": 4}, {"g": -2.5e-300, "N": 10**20}, {"name": "ring", "x": [1.5, 2]},
              {"g": 1 / 3, "flag": False, "z": 1 + 2j}, {"g": float("inf")}]
    code = (
        "import importlib.util, json, sys\ninf = float('inf')\n"
        f"spec = importlib.util.spec_from_file_location('m', {MODULE!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        f"print(json.dumps([m.SweepStore.point_id(p) for p in {points!r}]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "123"})
    assert json.loads(out.stdout) == [pid(p) for p in points]


# ------------------------------------------------------------------------------ identity


def test_signature_and_axes(tmp_path):
    path = tmp_path / "s.zarr"
    SweepStore(path, SIG, AXES).write_point({"g": 0.1, "N": 4}, {"x": np.ones(3)})
    again = SweepStore(path, json.loads(json.dumps(SIG)) | {"n_traj": 1000.0}, list(AXES))  # same sweep
    assert len(again.done_ids()) == 1

    with pytest.raises(ValueError, match=r"n_traj: 1000 \(stored\) vs 2000 \(now\)") as e:
        SweepStore(path, SIG | {"n_traj": 2000}, AXES)
    assert "belongs to another sweep" in str(e.value) and "ts" not in str(e.value)
    with pytest.raises(ValueError) as e:
        SweepStore(path, SIG | {"params": {"omega": 1.0, "kappa": 0.25}, "method": "cl",
                                "ts": [0.0, 0.5, 1.5]}, AXES)
    msg = str(e.value)
    assert "params.kappa: 0.5 (stored) vs 0.25 (now)" in msg
    assert '"dtwa" (stored) vs "cl" (now)' in msg and "ts[2]: 1.0 (stored) vs 1.5 (now)" in msg
    with pytest.raises(ValueError, match=r"ts: 3 values .* vs 1001 values"):
        SweepStore(path, SIG | {"ts": list(np.linspace(0, 1, 1001))}, AXES)
    with pytest.raises(ValueError, match=r"observables: missing \(stored\)|observables: .* vs missing"):
        SweepStore(path, {k: v for k, v in SIG.items() if k != "observables"}, AXES)
    with pytest.raises(ValueError, match=r"axes \['g', 'N'\] \(stored\) vs \['N', 'g'\] \(now\)"):
        SweepStore(path, SIG, ("N", "g"))
    with pytest.raises(ValueError, match="axes"):
        SweepStore(path, SIG, ("g",))
    with pytest.raises(FileNotFoundError):
        SweepStore(tmp_path / "missing.zarr", SIG, AXES, create=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a sweep store"):
        SweepStore(other, SIG, AXES)
    assert (other / "notes.txt").read_text() == "mine"
    (tmp_path / "file.zarr").write_text("")
    with pytest.raises(ValueError, match="not a sweep store"):
        SweepStore(tmp_path / "file.zarr", SIG, AXES)
    assert _tmp_entries(tmp_path) == []


def test_grid_growth_reuses_points(tmp_path):
    path = tmp_path / "s.zarr"
    store = SweepStore(path, SIG, AXES)
    for g in np.linspace(0.0, 1.0, 3):  # 0, 0.5, 1
        store.write_point({"g": g, "N": 4}, {"x": np.full(2, g)})
    grown = [{"g": g, "N": 4} for g in np.linspace(0.0, 1.0, 5)]  # 0, .25, .5, .75, 1
    store = SweepStore(path, SIG, AXES)
    todo = [p for p in grown if store.point_id(p) not in store.done_ids()]
    assert [p["g"] for p in todo] == [0.25, 0.75]


# ------------------------------------------------------------------------------ failures, status


def test_failures_and_status(tmp_path):
    store = SweepStore(tmp_path / "s.zarr", SIG, AXES)
    pts = [point(i) for i in range(6)]
    for p in pts[:3]:
        store.started(p)
        store.write_point(p, {"x": np.zeros(3)})
    store.started(pts[3])
    store.write_failure(pts[3], "FloatingPointError: all trajectories diverged\n  at t=3.5")
    store.write_failure(pts[4], "MemoryError")
    store.started(pts[5])
    pid = SweepStore.point_id
    assert store.failures() == {pid(pts[3]): "FloatingPointError: all trajectories diverged\n  at t=3.5",
                                pid(pts[4]): "MemoryError"}
    s = store.status(total=10)
    assert (s["done"], s["failed"], s["total"], s["pending"]) == (3, 2, 10, 5)
    assert [r["id"] for r in s["in_flight"]] == [pid(pts[5])]
    flight = s["in_flight"][0]
    assert flight["point"] == pts[5] and flight["alive"] is True and flight["pid"] == os.getpid()
    assert 0 <= flight["age_s"] < 60 and abs(flight["started"] - time.time()) < 60
    assert s["rate_points_per_s"] > 0 and s["eta_s"] == pytest.approx(5 / s["rate_points_per_s"])
    text = format_status(s)
    assert "3 of 10 points done, 2 failed, 1 in flight, 5 pending" in text
    assert "ETA" in text and "FloatingPointError: all trajectories diverged at t=3.5" in text
    assert pid(pts[5]) in text and "MemoryError" in text

    store.started(pts[3])  # a retry: in flight again, still failed until it succeeds
    s = store.status(total=10)
    assert s["failed"] == 2 and {r["id"] for r in s["in_flight"]} == {pid(pts[3]), pid(pts[5])}
    store.write_point(pts[3], {"x": np.ones(3)})  # the success clears the failure
    assert store.failures() == {pid(pts[4]): "MemoryError"}
    s = SweepStore(tmp_path / "s.zarr", SIG, AXES).status(total=6)  # seen from another opener
    assert (s["done"], s["failed"], s["pending"]) == (4, 1, 1)
    assert [r["id"] for r in s["in_flight"]] == [pid(pts[5])]
    store.write_point(pts[4], {"x": np.ones(3)})
    store.write_point(pts[5], {"x": np.ones(3)})
    s = store.status(total=6)
    assert (s["done"], s["failed"], s["in_flight"], s["pending"], s["eta_s"]) == (6, 0, [], 0, 0.0)
    assert "6 of 6 points done, 0 failed, 0 in flight, 0 pending" in format_status(s)
    assert store.status()["eta_s"] is None


def test_rate_uses_latest_stretch(tmp_path):
    store = SweepStore(tmp_path / "s.zarr", SIG, AXES)
    assert store.status(total=10)["rate_points_per_s"] is None and store.status(total=10)["eta_s"] is None
    t = 1.0e9
    day_one = [{"id": f"a{i}", "ok": True, "t0": t + 10 * i, "t1": t + 10 * i + 10} for i in range(10)]
    # a day later, two workers, 2 s per point each: 8 points in 8 s
    day_two = [{"id": f"b{w}{i}", "ok": True, "t0": t + 86400 + 2 * i, "t1": t + 86400 + 2 * i + 2}
               for w in range(2) for i in range(4)]
    lines = [json.dumps(e) for e in day_one + day_two] + ['{"id": "cut', ""]  # last line cut by a kill
    (tmp_path / "s.zarr" / "_sweep" / "log" / "old.jsonl").write_text("\n".join(lines))
    s = store.status(total=20)
    assert s["rate_points_per_s"] == pytest.approx(1.0)
    assert s["eta_s"] is None and s["live_writers"] == 0  # nothing in flight: nobody runs the sweep
    assert "no live writer" in format_status(s)
    store.started(point(0))  # this process works on a point: a live writer
    s = store.status(total=20)
    assert s["eta_s"] == pytest.approx(20.0) and s["live_writers"] == 1  # nothing is done here: 20 pending
    assert "no live writer" not in format_status(s)


# ------------------------------------------------------------------------------ processes


def test_sigkill_never_leaves_partial_points(tmp_path):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    path = tmp_path / "s.zarr"
    script = _worker_script(tmp_path)
    # about 40-100 points/s are written here: n is large enough that the kills never let a writer
    # finish, and the killing stops once a quarter is done, so the resume below always has work
    n = 200
    kills, killed_mid_write, n_done = 0, 0, 0
    while (kills < 4 and n_done < n // 4) or (killed_mid_write == 0 and kills < 10):
        proc = _spawn(script, path, range(n), f"run{kills}")
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        time.sleep(rng.uniform(0.05, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL, f"writer finished before the kill (seed {seed})"
        kills += 1
        killed_mid_write += bool(_tmp_entries(path / "_sweep" / "tmp"))
        store = SweepStore(path, SIG, AXES)
        for pid in store.done_ids():
            _check_point(store, pid)
        n_done = len(store.done_ids())
    assert killed_mid_write, f"no kill hit a write in {kills} tries (seed {seed})"
    done_before = store.done_ids()
    assert 0 < len(done_before) < n, f"seed {seed}"

    s = store.status(total=n)
    assert s["done"] == len(done_before) and s["pending"] == n - len(done_before)
    assert all(r["alive"] is False for r in s["in_flight"])  # the killed writers' marks
    assert s["eta_s"] is None and s["live_writers"] == 0 and "no live writer" in format_status(s)
    assert "writer gone" in format_status(s) or not s["in_flight"]
    removed = store.cleanup()
    assert removed["tmp"] >= 1
    assert _tmp_entries(path) == [] and store.status()["in_flight"] == []
    assert store.done_ids() == done_before

    proc = _spawn(script, path, range(n), "resume")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    resumed = json.loads(out.splitlines()[-1])
    assert len(resumed) == n - len(done_before)  # only the missing points were computed
    assert store.done_ids() == {store.point_id(point(i)) for i in range(n)}
    for i in range(n):
        _check_point(store, store.point_id(point(i)), expected_index=i)
    assert _tmp_entries(path) == [] and store.status(total=n)["pending"] == 0


def test_concurrent_writers(tmp_path):
    path = tmp_path / "s.zarr"  # created by both workers at once
    script = _worker_script(tmp_path)
    go = tmp_path / "go"
    shared = 0
    jobs = {"A": [shared] + list(range(1, 7)), "B": [shared] + list(range(7, 13))}
    procs = {tag: _spawn(script, path, idx, tag, go=go) for tag, idx in jobs.items()}
    for tag, proc in procs.items():
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    go.write_text("")  # both race for the shared point first
    stored = {}
    for tag, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        stored[tag] = json.loads(out.splitlines()[-1])
    assert sorted(stored["A"] + stored["B"]) == list(range(13))  # the shared point stored once
    store = SweepStore(path, SIG, AXES, create=False)
    assert store.done_ids() == {store.point_id(point(i)) for i in range(13)}
    for i in range(13):
        attrs = _check_point(store, store.point_id(point(i)), expected_index=i)
        assert attrs["writer"] == ("A" if i in stored["A"] else "B")
    assert _tmp_entries(tmp_path) == []
    s = store.status(total=13)
    assert (s["done"], s["failed"], s["in_flight"], s["eta_s"]) == (13, 0, [], 0.0)
    assert s["rate_points_per_s"] > 0


def test_cleanup_keeps_live_writers(tmp_path):
    store = SweepStore(tmp_path / "s.zarr", SIG, AXES)
    tmp = tmp_path / "s.zarr" / "_sweep" / "tmp"
    mine = tmp / f"0123456789abcdef.tmp-{_HOST_TAG}-{os.getpid()}-00000000"  # this process: alive
    foreign = tmp / "0123456789abcdef.tmp-deadbeef-1-00000000"  # another host: kept while fresh
    mine.mkdir()
    foreign.mkdir()
    assert store.cleanup() == {"tmp": 0, "started": 0}
    assert mine.is_dir() and foreign.is_dir()
    old = time.time() - 7200
    os.utime(foreign, (old, old))
    assert store.cleanup()["tmp"] == 1 and not foreign.exists() and mine.is_dir()
    assert store.cleanup(older_than=0)["tmp"] == 1 and not mine.exists()


def test_fingerprint_refuses_other_numbers_and_tolerates_rounding(tmp_path):
    """A fingerprint is evaluated at the stored point on reopening; numbers within the tolerance
    (another machine's last digits) pass, others are refused with the quantities named."""
    from twa_jax._store import FINGERPRINT_RTOL

    calls = []

    def values(scale, shift=0.0):
        def at(point):
            calls.append(point)
            return {"hamiltonian": [point["g"] * scale, 2.0 + shift], "initial mean": [1.0, -1.0]}
        return at

    path = tmp_path / "f.zarr"
    SweepStore(path, SIG, AXES, fingerprint=({"g": 0.1, "N": 4}, values(1.0)))
    SweepStore(path, SIG, AXES, fingerprint=({"g": 0.7, "N": 4}, values(1.0 + 0.1 * FINGERPRINT_RTOL)))
    assert calls[-1] == {"g": 0.1, "N": 4}  # evaluated at the stored point, not at the new first point
    with pytest.raises(ValueError, match=r"at its point \{'g': 0.1, 'N': 4\}, hamiltonian give other values"):
        SweepStore(path, SIG, AXES, fingerprint=({"g": 0.1, "N": 4}, values(1.0, shift=10 * FINGERPRINT_RTOL)))
    SweepStore(path, SIG, AXES)  # a worker that passes none is not checked


def test_fingerprint_at_other_parameter_values_is_optional_in_an_older_store(tmp_path):
    """Stores written before the fingerprint recorded the functions at other parameter values
    reopen (those quantities are compared only when the store has them); a store that has them
    is refused when they differ."""
    from twa_jax._store import OTHER_VALUES

    def values(other=None):
        def at(point):
            out = {"hamiltonian": [point["g"]]}
            if other is not None:
                out["hamiltonian" + OTHER_VALUES] = [other]
            return out
        return at

    old, new = tmp_path / "old.zarr", tmp_path / "new.zarr"
    SweepStore(old, SIG, AXES, fingerprint=({"g": 0.0, "N": 4}, values()))
    SweepStore(old, SIG, AXES, fingerprint=({"g": 0.0, "N": 4}, values(0.29)))
    SweepStore(new, SIG, AXES, fingerprint=({"g": 0.0, "N": 4}, values(0.29)))
    with pytest.raises(ValueError, match="hamiltonian at other parameter values give other values"):
        SweepStore(new, SIG, AXES, fingerprint=({"g": 0.0, "N": 4}, values(0.145)))
