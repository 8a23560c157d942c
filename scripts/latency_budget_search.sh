#!/usr/bin/env bash
# docs/latency.md, (b): searches under latency budgets, each retrained and measured, one seed per call.
# Usage: SPACE=nb201 DATA=digits-hard scripts/latency_budget_search.sh OUT SEED BUDGET_MS... (none: no budget)
set -euo pipefail
out=${1:?output directory}; seed=${2:?seed}; shift 2
space=${SPACE:-nb201}; data=${DATA:-digits-hard}
export OMP_NUM_THREADS=1
dlstrat() { python -c "from lightning_dlstrat.cli import app; app()" "$@"; }
for budget in "$@"; do
  flag=$([ "$budget" = none ] && echo "" || echo "--model.latency_target=$budget")
  dlstrat fit --model darts --model.space="$space" --data "$data" --seed "$seed" $flag --retrain --export onnx \
    --out "$out/$space-$data-b$budget-s$seed" > "$out/$space-$data-b$budget-s$seed.log" 2>&1
  echo "$space $data budget $budget seed $seed done"
done
