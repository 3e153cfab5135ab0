#!/bin/bash
# Every GPU measurement the speed issue asks for, in one command (about 30 min on one H100):
#
#     bash benchmarks/run_gpu.sh [TAG]          # TAG names the result files (default: gpu)
#
# Writes benchmarks/results/*_TAG.json; copy the printed lines into benchmarks/README.md with
# the device named. The NumPy baseline runs only at N = 100 (it takes minutes at larger sizes);
# the scan is skipped where it cannot hold 1e5 trajectories of 1e4 spins.
set -euo pipefail
cd "$(dirname "$0")"
tag=${1:-gpu}
out=results
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true

# 1. Eq. 56 chain, 1e5 trajectories (targets: >= 5e9 spin-steps/s at N = 1000, >= 0.9x the scan)
python bench_chain.py --n-spins 100 --n-traj 100000 --n-steps 200 --out $out/chain_N100_$tag.json
for n in 1000 4000; do
  python bench_chain.py --n-spins $n --n-traj 100000 --n-steps 200 --skip-numpy --out $out/chain_N${n}_$tag.json
done
# full float32 matrix products instead of TF32, for the speed cost
python bench_chain.py --n-spins 1000 --n-traj 100000 --n-steps 200 --skip-numpy --matmul-precision highest \
  --out $out/chain_N1000_${tag}_fp32.json
# 2. memory: 1e5 trajectories of 1e4 spins with dense Gamma on one GPU (chunked automatically;
#    the JSON records the device's peak memory)
python bench_chain.py --n-spins 10000 --n-traj 100000 --n-steps 10 --skip-numpy --skip-scan \
  --repeats 1 --out $out/chain_N10000_$tag.json
# 3. memory-bound models against the 24-byte-per-spin-step roofline
python bench_rydberg.py --n-spins 10000 --n-traj 10000 --n-steps 100 --skip-numpy --out $out/rydberg_N10000_$tag.json
python bench_tavis_cummings.py --n-spins 10000 --n-traj 10000 --n-steps 100 --skip-numpy --out $out/tc_N10000_$tag.json
# 4. accuracy per cost with TF32 (the default) and full float32 matrix products
python bench_accuracy.py --model chain --n-traj 20000 --out $out/accuracy_chain16_${tag}_tf32.json
python bench_accuracy.py --model chain --n-traj 20000 --matmul-precision highest --out $out/accuracy_chain16_${tag}_fp32.json
# 5. several GPUs: the same run on 1 and on all devices (simulate shards over jax.devices())
if [ "$(python -c 'import jax; print(len(jax.devices()))')" -gt 1 ]; then
  CUDA_VISIBLE_DEVICES=0 python bench_chain.py --n-spins 1000 --n-traj 100000 --n-steps 200 --skip-numpy --skip-scan \
    --out $out/chain_N1000_${tag}_1gpu.json
  python bench_chain.py --n-spins 1000 --n-traj 100000 --n-steps 200 --skip-numpy --skip-scan \
    --out $out/chain_N1000_${tag}_allgpus.json
fi
