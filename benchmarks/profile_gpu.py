"""Where a run's time goes on an accelerator: a profiled call of `tw.simulate` and of the
hand-written kernels of `bench_small.py`, kernel by kernel.

    python benchmarks/profile_gpu.py [--model rydberg] [--n-spins 10] [--n-traj 100000]
                                     [--n-steps 100] [--contenders simulate,simulate_intervals,lanes] [--pad-grid] [--loop-ops]
                                     [--out FILE]

Each contender is called once (compilation), timed ``--repeats`` times (wall, minimum), then
called once under ``jax.profiler.trace``; the trace is read back with ``jax.profiler.ProfileData``
and summarised: the number of device kernels and copies, their summed time, the span from the
first to the last, and the kernels that take the most time (name, count, total). Wall time minus
summed kernel time is what the host, launches and synchronizations cost. On CPU the same script
runs (the device lines are then XLA's thunk threads), useful only to check the script.

``--loop-ops``: also the nested loops, conditionals, copies and custom calls inside
``simulate``'s step loop, read from the program this backend compiled (:func:`loop_ops`), each
with the JAX operation that made it. On a GPU each nested loop or conditional reads a predicate
back to the host on every step (a synchronization); this names them.

``simulate_loop`` and ``simulate_intervals``: ``simulate`` with each way of saving at the save
times (``twa_jax._plan.SAVE_BY``; ``simulate`` itself saves by the default, diffrax's save loop).
``--loop-ops`` reads ``simulate``'s program.

``--pad-grid``: the padded time grid with its run-time stop (``twa_jax._plan.PAD_GRID = True``,
the CPU default) instead of diffrax's ``StepTo`` (the default on accelerators). XLA flags to try
(command buffers, loop unrolling) are given through ``XLA_FLAGS``; the JSON records them.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time

import twa_jax  # noqa: F401  (first, as users do)

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_small  # noqa: E402
from bench_chain import machine_name, write_json  # noqa: E402

#: names of device events that are copies or synchronizations rather than kernels
COPY_WORDS = ("memcpy", "memset", "Memcpy", "Memset")


def summarize(path, top=25):
    """Device activity of one trace file: per device plane, kernels and copies."""
    from jax.profiler import ProfileData

    pd = ProfileData.from_file(path)
    out = []
    for plane in pd.planes:
        if not plane.name.startswith("/device:"):
            continue
        by_name = collections.defaultdict(lambda: [0, 0.0])
        n_kernels = n_copies = 0
        busy = copies_ns = 0.0
        first, last = None, None
        per_line = {}
        for line in plane.lines:
            evs = list(line.events)
            per_line[line.name] = [len(evs), sum(e.duration_ns for e in evs) * 1e-9]
            if "XLA Ops" in line.name or "XLA Modules" in line.name or "Steps" in line.name:
                continue  # summaries of the stream lines, not activity of their own
            for e in evs:
                start, dur = e.start_ns, e.duration_ns
                first = start if first is None else min(first, start)
                last = start + dur if last is None else max(last, start + dur)
                if any(w in e.name for w in COPY_WORDS):
                    n_copies += 1
                    copies_ns += dur
                    continue
                n_kernels += 1
                busy += dur
                rec = by_name[e.name]
                rec[0] += 1
                rec[1] += dur
        if first is None:
            continue
        ranked = sorted(by_name.items(), key=lambda kv: -kv[1][1])[:top]
        out.append({"plane": plane.name, "lines": per_line, "n_kernels": n_kernels,
                    "kernel_s": busy * 1e-9, "n_copies": n_copies, "copy_s": copies_ns * 1e-9,
                    "span_s": (last - first) * 1e-9,
                    "top": [{"name": k[:160], "count": c, "total_s": t * 1e-9} for k, (c, t) in ranked]})
    return out


#: the kinds of instruction in the solve's loop body that can cost a step more than their work on
#: an accelerator: a nested loop or a conditional reads a predicate back to the host on every trip
#: (a synchronization), a copy moves a buffer, a custom call may leave the device
LOOP_OPCODES = ("while", "conditional", "copy", "copy-start", "custom-call", "send", "recv", "outfeed")


def _computations(hlo):
    """``{name: [instruction lines]}`` of an HLO module's text."""
    comps, name = {}, None
    for line in hlo.splitlines():
        head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if head and not line.startswith(" "):
            name = head.group(1)
            comps[name] = []
        elif name is not None and line.startswith("  "):
            comps[name].append(line)
    return comps


def loop_ops(hlo, loop="outer-loop/checkpointed-no-vjp/while"):
    """The instructions of kinds :data:`LOOP_OPCODES` run on every trip of the solve's loop (the
    ``while`` whose op name ends with ``loop``: diffrax's step loop when nothing is differentiated;
    and every computation it calls),
    each with the op name of the JAX code that made it: which nested loops, conditionals and
    copies a step of ``simulate`` pays for, on the backend that compiled ``hlo``."""
    comps = _computations(hlo)
    body = None
    for lines in comps.values():
        for line in lines:
            m = re.search(r" while\(.*body=%?([\w.\-]+)", line)
            op = re.search(r'op_name="([^"]*)"', line)
            if m and op and op.group(1).endswith(loop):  # the loop itself, not one nested in it
                body = body or m.group(1)
    if body is None:
        return []
    seen, todo, out = set(), [body], []
    while todo:
        c = todo.pop()
        if c in seen or c not in comps:
            continue
        seen.add(c)
        for line in comps[c]:
            todo += re.findall(r"(?:body|condition|calls|to_apply|true_computation|false_computation|branch_computations)=\{?%?([\w.\-]+)", line)
            todo += re.findall(r"branch_computations=\{([^}]*)\}", line) and [
                x.strip().lstrip("%") for x in re.search(r"branch_computations=\{([^}]*)\}", line).group(1).split(",")]
            m = re.match(r"\s+(?:ROOT )?%?[\w.\-]+ = (.*?) ([\w\-]+)\(", line)
            if m and m.group(2) in LOOP_OPCODES:
                op = re.search(r'op_name="([^"]*)"', line)
                out.append({"opcode": m.group(2), "shape": m.group(1)[:80], "computation": c,
                            "op_name": op.group(1) if op else ""})
    return out


def simulate_loop_ops(call):
    """:func:`loop_ops` of the chunk program that ``call()`` (a ``simulate``) runs, compiled again
    by this backend from the arguments of its last chunk."""
    from twa_jax import _engine

    seen = {}
    chunk = _engine._chunk

    def spy(*a):
        seen["args"] = a
        return chunk(*a)

    _engine._chunk = spy
    try:
        jax.block_until_ready(call())
    finally:
        _engine._chunk = chunk
    return loop_ops(chunk.lower(*seen["args"]).lowered.compile().as_text())


def with_save_by(how, call):
    """``call`` with ``twa_jax._plan.SAVE_BY = how`` while it runs (each ``simulate`` makes its
    plan, so it compiles and runs that way of saving)."""
    from twa_jax import _plan

    def f():
        old, _plan.SAVE_BY = _plan.SAVE_BY, how
        try:
            return call()
        finally:
            _plan.SAVE_BY = old

    return f


def host_profile(f, top, calls=5):
    """The ``top`` functions by cumulative time over ``calls`` calls of ``f`` (seconds per call)."""
    import cProfile
    import pstats

    pr = cProfile.Profile()
    pr.enable()
    for _ in range(calls):
        jax.block_until_ready(f())
    pr.disable()
    st = pstats.Stats(pr)
    rows = sorted(st.stats.items(), key=lambda kv: -kv[1][3])[:top]
    return [{"function": f"{os.path.basename(fn)}:{line}({name})", "calls": nc / calls, "cum_s": ct / calls,
             "own_s": tt / calls} for (fn, line, name), (_, nc, tt, ct, _) in rows]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="rydberg", choices=("rydberg", "tavis_cummings", "chain"))
    ap.add_argument("--n-spins", type=int, default=10)
    ap.add_argument("--n-traj", type=int, default=100_000)
    ap.add_argument("--n-steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--contenders", default="simulate,simulate_intervals,lanes",
                    help="simulate (saving as the package does by default), simulate_loop (diffrax's save loop), "
                    "simulate_intervals (a solve per save interval), lanes (the hand-written kernel)")
    ap.add_argument("--pad-grid", action="store_true")
    ap.add_argument("--host-profile", action="store_true",
                    help="also run each contender under cProfile (5 calls) and keep the functions with the most "
                    "cumulative time: where the host's share of the wall time goes")
    ap.add_argument("--loop-ops", action="store_true",
                    help="also list the nested loops, conditionals, copies and custom calls inside simulate's "
                         "solve loop, from the program this backend compiled (loop_ops)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    from twa_jax import _plan

    if args.pad_grid:
        _plan.PAD_GRID = True
    names = args.contenders.split(",")
    n, nt, ns, dt = args.n_spins, args.n_traj, args.n_steps, 0.01
    cont = bench_small.contenders_for(args.model, n, nt, ns, dt, np.float32, True, names + ["simulate"])
    for how in ("loop", "intervals"):
        if f"simulate_{how}" in names:
            cont[f"simulate_{how}"] = (with_save_by(how, cont["simulate"][0]), cont["simulate"][1])
    cont = {k: cont[k] for k in names if k in cont}
    machine = machine_name()
    print(f"profile: {args.model} N={n} x {nt} x {ns} steps; {machine}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    rows = []
    for name, (f, final) in cont.items():
        t0 = time.perf_counter()
        fin = final(f())
        first = time.perf_counter() - t0
        walls = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(f())
            walls.append(time.perf_counter() - t0)
        d = tempfile.mkdtemp(prefix="twa_prof_")
        t0 = time.perf_counter()
        with jax.profiler.trace(d):
            jax.block_until_ready(f())
        traced = time.perf_counter() - t0
        files = glob.glob(os.path.join(d, "**", "*.xplane.pb"), recursive=True)
        planes = summarize(files[0], args.top) if files else []
        host = host_profile(f, args.top) if args.host_profile else None
        row = {"contender": name, "host_profile": host, "first_call_s": first, "wall_min_s": min(walls), "walls_s": walls,
               "traced_wall_s": traced, "spin_steps_per_s": nt * n * ns / min(walls), "final_sz": fin,
               "devices": planes}
        rows.append(row)
        print(f"  {name}: first {first:.2f} s, wall {min(walls) * 1e3:.2f} ms ({row['spin_steps_per_s']:.3g} "
              f"spin-steps/s), final sz {fin:.4f}")
        for h in host or []:
            print(f"    host {h['cum_s'] * 1e3:8.3f} ms cum, {h['own_s'] * 1e3:8.3f} own, {h['calls']:6.1f} calls  {h['function']}")
        for p in planes:
            print(f"    {p['plane']}: {p['n_kernels']} kernels ({p['n_kernels'] / ns:.1f} per step), "
                  f"{p['kernel_s'] * 1e3:.2f} ms; {p['n_copies']} copies {p['copy_s'] * 1e3:.2f} ms; "
                  f"span {p['span_s'] * 1e3:.2f} ms")
            for k in p["top"][:12]:
                print(f"      {k['count']:6d} x  {k['total_s'] * 1e3:8.3f} ms  {k['name'][:100]}")
    ops = {}
    for name in ("simulate", "simulate_intervals"):
        if not args.loop_ops or name not in cont:
            continue
        ops[name] = simulate_loop_ops(cont[name][0])
        counts = collections.Counter(o["opcode"] for o in ops[name])
        print(f"  {name}'s solve loop body: {dict(counts)}")
        for (code, op), k in collections.Counter((o["opcode"], o["op_name"]) for o in ops[name]).items():
            print(f"    {k:3d} x {code:12s} {op[-110:] or '(no op name)'}")
    write_json({"benchmark": "profile_gpu", "loop_ops": ops.get("simulate"),
                "loop_ops_intervals": ops.get("simulate_intervals"), "machine": machine, "jax": jax.__version__, "model": args.model,
                "n_spins": n, "n_traj": nt, "n_steps": ns, "pad_grid": bool(args.pad_grid), "save_by": _plan.save_mode(jax.default_backend()),
                "xla_flags": os.environ.get("XLA_FLAGS", ""), "argv": sys.argv[1:], "rows": rows}, args.out)


if __name__ == "__main__":
    main()
