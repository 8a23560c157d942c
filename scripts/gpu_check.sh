#!/usr/bin/env bash
# GPU checks and benchmarks in one call, for the lent GPU machine (the `device` tool):
#   bash scripts/gpu_check.sh            # writes everything to $OUT (or ./gpu_out) and prints it
# The machine has torch, lightning, timm, torchmetrics, huggingface_hub and typer but installs
# nothing from the internet, so the project runs from the checkout with PYTHONPATH=.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=. MPLBACKEND=Agg
out="${OUT:-gpu_out}"
mkdir -p "$out"
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, lightning; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'lightning', lightning.__version__)"
  echo "== GPU tests (16-mixed / bf16-mixed paths that skip on CPU)"
  timeout 240 python3 -m pytest -q -x tests/test_darts_search.py tests/test_gan.py -k gpu 2>&1 | tail -5
  echo "== DARTS search step, paper's CIFAR-10 configuration (C=16, 8 cells, 64+64 images 32x32)"
  for impl in reference fast; do
    timeout 150 python3 benchmarks/darts_search_step.py --device cuda --implementation "$impl" --no-channels-last --steps 5
  done
  timeout 90 python3 benchmarks/darts_search_step.py --device cuda --channels-last --steps 5 --order 1
  timeout 90 python3 benchmarks/darts_search_step.py --device cuda --no-channels-last --precision bf16-mixed --steps 5
  timeout 90 python3 benchmarks/darts_search_step.py --device cuda --no-channels-last --batch-size 256 --steps 3 --order 1
} 2>&1 | tee "$out/gpu_check.txt"
