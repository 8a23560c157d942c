#!/usr/bin/env bash
# GPU checks and benchmarks in one unattended call (at most ~8 minutes), for a lent GPU machine:
#   bash scripts/gpu_check.sh            # writes everything to $OUT (or ./gpu_out) and prints it
# 1. the GPU tests (pytest mark `gpu`: CUDA-graph replay vs eager steps, fp16/bf16 paths);
# 2. DARTS search step, fast vs per-edge reference alternating (--compare), paper's CIFAR-10
#    configuration (C=16, 8 cells, 3x32x32): batch 64, first and second order, fp32 and bf16;
#    batch 256 first order; each with its CUDA peak memory (max_memory_allocated);
# 3. the fast step as a captured CUDA graph (lightning_dlstrat.cuda_graph), same settings.
# Each part has its own timeout, so one that hangs cannot eat the others' time; the budget
# (sum of timeouts) is 465 s. JSON records go to $OUT/darts_search_step.jsonl.
# The machine has torch, lightning, timm, torchmetrics, huggingface_hub and typer but installs
# nothing from the internet, so the project runs from the checkout with PYTHONPATH=.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=. MPLBACKEND=Agg
out="${OUT:-gpu_out}"
mkdir -p "$out"
json="$out/darts_search_step.jsonl"
bench() {  # bench TIMEOUT ARGS...: one benchmark run; a timeout is reported, not fatal
  local limit=$1
  shift
  echo "== darts_search_step.py $*"
  timeout "$limit" python3 benchmarks/darts_search_step.py --device cuda --json "$json" "$@" || echo "   (exit $? for: $*)"
}
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, lightning; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'lightning', lightning.__version__)"
  echo "== GPU tests"
  timeout 110 python3 -m pytest -q -k "gpu or cuda" tests/test_darts_fast.py tests/test_darts_search.py tests/test_gan.py 2>&1 | tail -8
  # reference vs fast, alternating pairs: ratios and both peaks (the reference's per-edge step
  # is slow, so 1 warm-up + 4 measured pairs)
  bench 45 --compare --order 1 --warmup 1 --steps 4
  bench 60 --compare --order 2 --warmup 1 --steps 4
  bench 45 --compare --order 1 --warmup 1 --steps 4 --precision bf16-mixed
  bench 60 --compare --order 2 --warmup 1 --steps 4 --precision bf16-mixed
  bench 45 --compare --order 1 --warmup 1 --steps 3 --batch-size 256
  # the fast step replayed from a CUDA graph (warm-up steps run eagerly, then one capture)
  bench 30 --cuda-graph --order 1 --warmup 4 --steps 10
  bench 35 --cuda-graph --order 2 --warmup 4 --steps 10 --precision bf16-mixed
  bench 30 --cuda-graph --order 1 --warmup 4 --steps 10 --batch-size 256
  date -u
} 2>&1 | tee "$out/gpu_check.txt"
