#!/usr/bin/env bash
# GPU benchmark: pair generation (seed recipe vs rk4 in fp32/TF32/bf16/CUDA graphs) and training
# throughput on one CUDA device, in one go, under 8 minutes. Prints a short table.
#   benchmarks/gpu.sh                 # on a CUDA machine; add --write to record it in BENCHMARKS.md
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
exec timeout 480 "$PY" -m benchmarks.gpu_bench --device cuda "$@"
