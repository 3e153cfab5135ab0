#!/bin/bash
# The GPU measurements of the speed issue, most important first, in ONE call of at most 8 minutes
# on one H100/H200 (total budget BENCH_BUDGET_S, default 470 s, counted from the start):
#
#     bash benchmarks/run_gpu.sh [--out DIR] [TAG]           # TAG names the files (default: gpu)
#     bash benchmarks/run_gpu.sh --tiny [--out DIR] [TAG]    # same steps, tiny sizes, on CPU (TAG: tiny)
#     bash benchmarks/run_gpu.sh --only b,c [...]            # only these steps (e.g. to rerun one)
#
# Output in DIR (--out, else $BENCH_OUT, else benchmarks/results): one JSON per step, written when
# its step finishes (the throughput scripts also write it after each contender's first call, with
# "complete": false until the end), so a step killed by its time limit or a later one keeps what
# was done; run_gpu_TAG_steps.tsv (step, status ok/timeout/failed/skipped, exit code, seconds,
# limit, JSON file), one line per step as it ends; run_gpu_TAG.log, everything printed. Copy the
# summary printed at the end into benchmarks/README.md with the device named.
#
# Steps. Each runs under `timeout` (limit in brackets, cut to what is left of the budget); one that
# runs over is killed and the next one starts. Expected durations on one H100, estimated from the
# sizes (the chain at N = 1000 runs on CPU at 1.9e7 spin-steps/s on 2 cores; a GPU 100-300x
# faster, 2e9-6e9; 10-30 s of compilation per contender, plus 5-10 s to start each process):
#
#  a. Eq. 56 chain, N = 1000, 1e5 trajectories, 50 steps, 2 repeats, no NumPy: simulate (built-in
#     and plain jnp model) against the hand-written lax.scan; spin-steps/s and the ratio (targets
#     >= 5e9 and >= 0.9x the scan). 5e9 spin-steps per call, 1-3 s; 9 calls.   ~60-120 s [130 s]
#  b. memory: N = 1e4 spins with dense Gamma, 1e5 trajectories, 5 steps, 1 repeat, simulate only
#     (automatic chunks); the JSON records the device's peak memory and its limit (target: runs on
#     80 GB). On a card with more memory XLA_PYTHON_CLIENT_MEM_FRACTION is lowered so that JAX
#     sees what it sees on an 80 GB H100 (BENCH_EMULATE_80GB=0 to keep all of it). About 2e14
#     flops per step (TF32); host set-up of the couplings and eigendecompositions 20-40 s.
#                                                                             ~60-100 s [130 s]
#  c. Rydberg chain, N = 1e4, 1e4 trajectories, 100 steps, 2 repeats, simulate and scan: the
#     fraction of the 24-byte-per-spin-step roofline (aim 30 %) from the device's bandwidth (table
#     in bench_rydberg.py keyed by the device kind; BENCH_BANDWIDTH_GBS to give it).  ~40-60 s [80 s]
#  d. accuracy, Eq. 56 chain N = 16, 20000 trajectories, rotation Heun at 1x and 4x the default dt
#     against dt/8, with TF32 (--matmul-precision default), then full float32 (highest).
#     Compilation-bound (4 compilations per run, 8720 steps for the reference). ~2 x 30-45 s [2 x 60 s]
#  Optional, each only when what is left of the budget covers its whole limit, in this order:
#  p. profile (profile_gpu.py): Rydberg N = 10 x 1e5 x 100 steps, simulate (diffrax's save loop,
#     the default), simulate saving by intervals (no loop in a step), and the lanes kernel, one
#     call each under jax.profiler.trace and five under cProfile: device kernels
#     and copies per step, their time against the wall time, the host's top functions; and the
#     nested loops, conditionals and copies inside simulate's step loop in the program the GPU
#     compiled, each with the JAX op that made it (--loop-ops: which of them synchronize a
#     step with the host).                                                     ~45-70 s [100 s]
#  s. sweeps (bench_sweep.py): 64 points of the Rydberg chain N = 4 x 1000 trajectories x 100 steps,
#     tw.sweep (all points in one batch) against a Python loop of tw.simulate and the hand-written
#     batched scans: the speed issue's >= 10x the loop, which the 2-core CPU cannot reach (the
#     sweep runs there at the batched kernel's speed, 3.8x the loop).       ~30-50 s [80 s]
#  g. small systems on the GPU (bench_small.py): Rydberg and Tavis-Cummings N = 10, 1e5
#     trajectories, 100 steps, simulate against the lanes kernel, once with the step's noise kept
#     by an optimization barrier (the default off CPU) and once by an always-true conditional (the
#     CPU default): which one the GPU should use.                             ~2 x 25-35 s [2 x 60 s]
#  h. the state's layout on the GPU (bench_layout.py): batch first against batch last at
#     Rydberg N = 10 x 1e5, N = 1000 x 1e4, the chain N = 100 x 1e4, Tavis-Cummings N = 100 x 1e4:
#     whether the plan's size rule (measured on CPU) holds there.             ~50-70 s [90 s]
#  e. Tavis-Cummings, N = 1e4, 1e4 trajectories, 100 steps, simulate and scan. ~40-60 s [80 s]
#  f. more than one GPU: chain N = 1000, 1e5 trajectories, simulate alone, on GPU 0 and on all.
#                                                                         ~2 x 30-50 s [2 x 60 s]
#  r. gradient (bench_grad.py): value_and_grad of the dense dipole chain N = 100, 1e4 trajectories,
#     300 steps, 2 parameters (forward mode, a tangent per parameter next to the state) against a
#     forward run, time and memory ratio (the CPU's is 3.3-3.6x).               ~40-70 s [120 s]
#  Expected in all: a-d 4-6 min, with e 5-7 min; the limits of a-d add up to 460 s. Exit status 0
#  when a-d all finished; a summary of every JSON is printed at the end.
#
# --tiny: the same commands (not f) on CPU (JAX_PLATFORMS=cpu) at N = 32-50, 128-256 trajectories,
# 3-5 steps, 1 repeat (d: 64 trajectories, t <= 1), limit 120 s each, a nominal 20 GB/s for the
# roofline; compilation-bound: 1.5-3.5 min on 2 shared cores, one step 10-25 s.
# tests/test_gpu_script.py runs it into a temporary folder (step c by default, the others with
# --runslow).
set -uo pipefail  # no -e: a failed or timed-out step must not stop the next one

tiny=0
tag=""
only=""
out=${BENCH_OUT:-}
while [ $# -gt 0 ]; do
  case $1 in
    --tiny) tiny=1 ;;
    --out) out=${2:?--out needs a folder}; shift ;;
    --out=*) out=${1#--out=} ;;
    --only) only=${2:?--only needs a list such as b,c}; shift ;;
    --only=*) only=${1#--only=} ;;
    -h | --help) sed -n '2,/^set /p' "$0" | sed '$d'; exit 0 ;;
    -*) echo "run_gpu.sh: unknown option $1" >&2; exit 2 ;;
    *) tag=$1 ;;
  esac
  shift
done
here=$(cd "$(dirname "$0")" && pwd)
if [ $tiny = 1 ]; then tag=${tag:-tiny}; else tag=${tag:-gpu}; fi
out=${out:-$here/results}
mkdir -p "$out" && out=$(cd "$out" && pwd) || exit 2
cd "$here" || exit 2
export PYTHONUNBUFFERED=1  # keep the output of a step that `timeout` kills
log=$out/run_gpu_$tag.log
steps=$out/run_gpu_${tag}_steps.tsv
exec > >(tee "$log") 2>&1

budget=${BENCH_BUDGET_S:-470}
if [ $tiny = 1 ]; then
  export JAX_PLATFORMS=cpu
  budget=${BENCH_BUDGET_S:-600}
fi
start=$SECONDS
n_bad=0  # required steps (a-d) that did not finish
printf 'step\tstatus\texit\tseconds\tlimit_s\tjson\n' > "$steps"

record() {  # record NAME STATUS EXIT SECONDS LIMIT JSON
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >> "$steps"
}

# step [--optional [--need S]] NAME LIMIT_S JSON COMMAND...: run COMMAND under `timeout` for at
# most LIMIT_S seconds and at most what is left of the budget; an optional step runs only when the
# budget left covers its whole limit (or S). Records the outcome and always returns 0.
step() {
  local optional=0 need=""
  if [ "$1" = --optional ]; then optional=1; shift; fi
  if [ "$1" = --need ]; then need=$2; shift 2; fi
  local name=$1 limit=$2 json=$3
  shift 3
  need=${need:-$limit}
  if [ -n "$only" ] && [[ ",$only," != *",${name:0:1},"* ]]; then return 0; fi  # not selected by --only
  local left=$((budget - (SECONDS - start)))
  if [ $optional = 1 ] && [ "$left" -lt "$need" ]; then
    echo "=== $name: skipped (budget left ${left} s < the ${need} s it needs)"
    record "$name" skipped "" 0 "$limit" "$json"
    return 0
  fi
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 10 ]; then
    echo "=== $name: skipped (budget spent)"
    n_bad=$((n_bad + 1))
    record "$name" skipped "" 0 "$limit" "$json"
    return 0
  fi
  echo "=== $name [limit ${limit} s, $((SECONDS - start)) s elapsed]: $*"
  local t0=$SECONDS rc status
  timeout -k 5 "$limit" "$@"
  rc=$?
  case $rc in
    0) status=ok ;;
    124 | 137) status=timeout ;;
    *) status=failed ;;
  esac
  echo "=== $name: $status (exit $rc) after $((SECONDS - t0)) s"
  [ $status = ok ] || [ $optional = 1 ] || n_bad=$((n_bad + 1))
  record "$name" $status $rc $((SECONDS - t0)) "$limit" "$json"
  return 0
}

# sizes: GPU run, or --tiny (CPU smoke test of the same commands)
if [ $tiny = 1 ]; then
  a_n=32 a_traj=128 a_steps=5 a_rep=1
  b_n=48 b_traj=256 b_steps=3
  c_n=50 c_traj=128 c_steps=5 c_rep=1
  d_traj=64 d_factors=4 d_tmax=(--t-max 1)
  g_n=4 g_traj=256 g_steps=5 g_rep=1
  h_cases=rydberg:10:256
  p_args=(--n-spins 4 --n-traj 256 --n-steps 5 --repeats 1)
  r_args=(--n-spins 6 --n-traj 64 --n-steps 20 --repeats 1)
  s_args=(--n-points-per-axis 2 --n-traj 64 --n-steps 10 --n-save 3 --repeats 1)
  lim_a=120 lim_b=120 lim_c=120 lim_d=120 lim_e=120 lim_f=120 lim_g=120 lim_h=120 lim_p=120 lim_r=120 lim_s=120
  bandwidth=${BENCH_BANDWIDTH_GBS:-20}  # nominal, so that the roofline fraction is computed on CPU too
else
  a_n=1000 a_traj=100000 a_steps=50 a_rep=2
  b_n=10000 b_traj=100000 b_steps=5
  c_n=10000 c_traj=10000 c_steps=100 c_rep=2
  d_traj=20000 d_factors=1,4 d_tmax=()
  g_n=10 g_traj=100000 g_steps=100 g_rep=2
  h_cases=rydberg:10:100000,rydberg:1000:10000,chain:100:10000,tavis_cummings:100:10000
  p_args=(--n-spins 10 --n-traj 100000 --n-steps 100 --repeats 3)
  r_args=(--n-spins 100 --n-traj 10000 --n-steps 300 --repeats 2)
  s_args=(--n-points-per-axis 8 --n-traj 1000 --n-steps 100 --repeats 3)
  lim_a=130 lim_b=130 lim_c=80 lim_d=60 lim_e=80 lim_f=60 lim_g=60 lim_h=90 lim_p=100 lim_r=120 lim_s=80
  bandwidth=${BENCH_BANDWIDTH_GBS:-}
fi

echo "run_gpu.sh: tag $tag, results in $out, budget ${budget} s$([ $tiny = 1 ] && echo ', tiny sizes on CPU')"
gpu_mib=""
if [ $tiny = 0 ] && command -v nvidia-smi > /dev/null; then
  timeout 30 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  gpu_mib=$(timeout 30 nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -n1 | tr -dc 0-9)
fi
n_dev=1  # --tiny: one CPU device, step f not run
if [ $tiny = 0 ]; then
  n_dev=$(timeout 60 python -c 'import jax; d = jax.devices(); print(len(d)); import sys; print(d[0].platform, d[0].device_kind, "jax", jax.__version__, file=sys.stderr)' | tail -n1)
  case $n_dev in '' | *[!0-9]*) n_dev=1 ;; esac
  echo "JAX devices: $n_dev"
fi

# b on a card with more than 80 GB: give JAX the memory pool it has on an 80 GB H100 (0.75 of 81559 MiB)
b_env=()
if [ $tiny = 0 ] && [ "${BENCH_EMULATE_80GB:-1}" = 1 ] && [ -z "${XLA_PYTHON_CLIENT_MEM_FRACTION:-}" ] \
  && [ -n "$gpu_mib" ] && [ "$gpu_mib" -gt 82000 ]; then
  b_env=(env XLA_PYTHON_CLIENT_MEM_FRACTION="$(awk -v t="$gpu_mib" 'BEGIN { printf "%.3f", 0.75 * 81559 / t }')")
  echo "step b runs with ${b_env[1]} (the memory JAX gets on an 80 GB card)"
fi

f_a=$out/chain_N${a_n}_$tag.json
f_b=$out/chain_N${b_n}_${tag}_memory.json
f_c=$out/rydberg_N${c_n}_$tag.json
f_d1=$out/accuracy_chain16_${tag}_tf32.json
f_d2=$out/accuracy_chain16_${tag}_fp32.json
f_e=$out/tc_N${c_n}_$tag.json
f_g1=$out/small_N${g_n}_${tag}_barrier.json
f_g2=$out/small_N${g_n}_${tag}_cond.json
f_h=$out/layout_${tag}.json
f_p=$out/profile_rydberg_${tag}.json
f_r=$out/grad_${tag}.json
f_s=$out/sweep_${tag}.json
f_f1=$out/chain_N${a_n}_${tag}_1gpu.json
f_f2=$out/chain_N${a_n}_${tag}_allgpus.json

step a_chain $lim_a "$f_a" python bench_chain.py --n-spins $a_n --n-traj $a_traj --n-steps $a_steps \
  --repeats $a_rep --skip-numpy --out "$f_a"
step b_memory $lim_b "$f_b" ${b_env[@]+"${b_env[@]}"} python bench_chain.py --n-spins $b_n --n-traj $b_traj --n-steps $b_steps \
  --repeats 1 --skip-numpy --skip-scan --skip-plain --out "$f_b"
step c_rydberg $lim_c "$f_c" python bench_rydberg.py --n-spins $c_n --n-traj $c_traj --n-steps $c_steps \
  --repeats $c_rep --skip-numpy ${bandwidth:+--bandwidth-gbs $bandwidth} --out "$f_c"
step d_accuracy_tf32 $lim_d "$f_d1" python bench_accuracy.py --model chain --n-traj $d_traj --factors $d_factors \
  --solvers rotation_heun ${d_tmax[@]+"${d_tmax[@]}"} --matmul-precision default --out "$f_d1"
step d_accuracy_fp32 $lim_d "$f_d2" python bench_accuracy.py --model chain --n-traj $d_traj --factors $d_factors \
  --solvers rotation_heun ${d_tmax[@]+"${d_tmax[@]}"} --matmul-precision highest --out "$f_d2"
step --optional p_profile $lim_p "$f_p" python profile_gpu.py --model rydberg "${p_args[@]}" --host-profile --loop-ops --out "$f_p"
step --optional s_sweep $lim_s "$f_s" python bench_sweep.py "${s_args[@]}" \
  --skip sweep_bs1,sweep_store,sweep_executor,scan --out "$f_s"
for how in barrier cond; do
  f_g=$f_g1; [ $how = cond ] && f_g=$f_g2
  step --optional g_small_$how $lim_g "$f_g" python bench_small.py --models rydberg,tavis_cummings --sizes $g_n \
    --n-traj $g_traj --n-steps $g_steps --repeats $g_rep --skip-numpy --noise-by $how --out "$f_g"
done
step --optional h_layout $lim_h "$f_h" python bench_layout.py --cases $h_cases --n-steps $g_steps \
  --repeats $g_rep --out "$f_h"
step --optional e_tavis_cummings $lim_e "$f_e" python bench_tavis_cummings.py --n-spins $c_n --n-traj $c_traj \
  --n-steps $c_steps --repeats $c_rep --skip-numpy --out "$f_e"
step --optional r_grad $lim_r "$f_r" python bench_grad.py "${r_args[@]}" --out "$f_r"
if [ "$n_dev" -gt 1 ]; then
  one=(env CUDA_VISIBLE_DEVICES=0)
  f_need=$lim_f  # the pair only if both fit in what is left now
  [ $((budget - (SECONDS - start))) -lt $((2 * lim_f)) ] && f_need=$((2 * lim_f))
  step --optional --need $f_need f_1gpu $lim_f "$f_f1" "${one[@]}" python bench_chain.py --n-spins $a_n --n-traj $a_traj \
    --n-steps $a_steps --repeats $a_rep --skip-numpy --skip-scan --skip-plain --out "$f_f1"
  step --optional --need $f_need f_allgpus $lim_f "$f_f2" python bench_chain.py --n-spins $a_n --n-traj $a_traj \
    --n-steps $a_steps --repeats $a_rep --skip-numpy --skip-scan --skip-plain --out "$f_f2"
fi

echo "=== summary ($((SECONDS - start)) s in all; steps in $steps)"
column -t -s $'\t' "$steps" 2> /dev/null || cat "$steps"
timeout 60 python - "$steps" << 'EOF'
import collections, csv, json, os, sys

rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
for r in rows:
    path = r["json"]
    if not os.path.exists(path):
        print(f"{r['step']}: {r['status']}, no JSON")
        continue
    try:
        d = json.load(open(path))
    except ValueError as e:
        print(f"{r['step']}: {r['status']}, unreadable JSON ({e})")
        continue
    head = f"{r['step']} ({r['status']}, {os.path.basename(path)}): {d.get('machine', '?').split(';')[0]}"
    if d.get("benchmark") == "bench_small":
        print(f"{head}: " + "; ".join(
            f"{x['model']} N={x['n_spins']} x {x['n_traj']}, noise by {x['noise_by']}: simulate "
            f"{x['simulate_spin_steps_per_s']:.3g} spin-steps/s, {x.get('simulate_over_lanes', float('nan')):.2f}x "
            f"the lanes kernel, first call {x['simulate_first_call_s']:.1f} s" for x in d["rows"]))
        continue
    if d.get("benchmark") == "profile_gpu":
        cells = []
        for x in d["rows"]:
            dev = x["devices"][0] if x["devices"] else None
            cells.append(f"{x['contender']} wall {1e3 * x['wall_min_s']:.2f} ms" + (
                f", {dev['n_kernels'] / d['n_steps']:.1f} kernels/step, kernels {1e3 * dev['kernel_s']:.2f} ms, "
                f"copies {1e3 * dev['copy_s']:.2f} ms" if dev else ""))
        if d.get("loop_ops") is not None:
            kinds = collections.Counter(o["opcode"] for o in d["loop_ops"])
            cells.append("simulate's loop body: " + (", ".join(f"{v} {k}" for k, v in sorted(kinds.items())) or "nothing"))
        print(f"{head}: {d['model']} N={d['n_spins']} x {d['n_traj']} x {d['n_steps']}: " + "; ".join(cells))
        continue
    if d.get("benchmark") == "bench_layout":
        print(f"{head}: " + "; ".join(
            f"{x['model']} N={x['n_spins']} x {x['n_traj']}: batch last {x['last_over_first']:.2f}x batch first "
            f"(size rule: {x['auto']})" for x in d["rows"]))
        continue
    if "ratios" in d and "n_points" in d:  # bench_sweep
        r = d["ratios"]
        print(f"{head}: {d['n_points']} points of rydberg N={d['n_spins']} x {d['n_traj']} x {d['n_steps']}: sweep "
              f"{d['stats']['sweep']['wall_min']:.3g} s, {r.get('sweep_vs_loop', float('nan')):.2f}x the loop of "
              f"simulate, {r.get('sweep_vs_scan_tlast_common', float('nan')):.2f}x the batched kernel")
        continue
    if "time_ratio" in d:  # bench_grad
        print(f"{head}: {d['model']} N={d['n_spins']} x {d['n_traj']} x {d['n_steps']}, {d['n_params']} parameters: "
              f"gradient {d['grad']['min_s']:.3g} s against forward {d['forward']['min_s']:.3g} s, "
              f"{d['time_ratio']:.2f}x time, {d['memory_ratio']:.2f}x memory")
        continue
    if "rows" in d:  # bench_accuracy
        cells = [f"{x['solver']} dt x{x['factor']:g}: err {x['err']:.3g} = {x['err'] / x['floor']:.1f} floor, "
                 f"drift {x['norm_drift']:.2g}" for x in d["rows"] if "err" in x]
        print(f"{head}, {d['dtype']}, {d['n_traj']} traj.: " + "; ".join(cells))
        continue
    size = f"{d['model']} {d['n_spins']} x {d['n_traj']} x {d['n_steps']}"
    parts = [f"{k[:-len('_spin_steps_per_s')]} {v:.3g}" for k, v in d.items() if k.endswith("_spin_steps_per_s")]
    line = f"{head}: {size}, spin-steps/s: " + ", ".join(parts or ["none (not complete)"])
    if "ratio_vs_scan" in d:
        line += f"; simulate/scan {d['ratio_vs_scan']:.2f}"
    if d.get("peak_memory_kind"):
        peak = max(v for k, v in d.items() if k.endswith("_peak_memory_bytes"))
        line += f"; {d['peak_memory_kind']} {peak / 2**30:.2f} GiB"
        if d.get("device_memory_limit_bytes"):
            line += f" of a {d['device_memory_limit_bytes'] / 2**30:.1f} GiB limit"
    if d.get("simulate_roofline_fraction") is not None:
        line += (f"; roofline ({d['roofline_bytes_per_spin_step']} B/spin-step, {d['device_bandwidth_gbs']:.0f} GB/s): "
                 f"simulate {100 * d['simulate_roofline_fraction']:.1f} %")
        if d.get("scan_roofline_fraction") is not None:
            line += f", scan {100 * d['scan_roofline_fraction']:.1f} %"
    if not d.get("complete", True):
        line += " [incomplete]"
    print(line)
EOF
echo "required steps not finished: $n_bad"
[ $n_bad = 0 ]
