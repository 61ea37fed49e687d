#!/usr/bin/env bash
# GPU benchmark: pair generation (seed recipe vs rk4 in fp32/TF32/bf16/CUDA graphs) and training
# throughput on one CUDA device, in one go. Prints a short table. The cifar part (1,000 steps of
# configs/cifar10.yaml's 49.4M U-Net at batch 128, fp32 and bf16) has not run on a GPU yet, so
# the total time is unknown: run it alone first with --parts cifar.
#   benchmarks/gpu.sh                 # on a CUDA machine; add --write to record it in BENCHMARKS.md
#   benchmarks/gpu.sh --parts cifar   # only the CIFAR U-Net training steps
#   benchmarks/gpu.sh --dry-run       # CPU fallback: the same code path, tiny sizes, seconds
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
if [[ " $* " == *" --dry-run "* ]]; then
  exec timeout 300 "$PY" -m benchmarks.gpu_bench --device cpu "$@"
fi
"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' || {
  echo "gpu.sh: no CUDA device visible; run 'benchmarks/gpu.sh --dry-run' for the CPU path" >&2
  exit 2
}
exec timeout 570 "$PY" -m benchmarks.gpu_bench --device cuda "$@"
