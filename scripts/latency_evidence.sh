#!/usr/bin/env bash
# docs/latency.md, (a): each latency table's prediction against measurement on 50 random cells of
# its space's evaluation network, for digits and digits-hard, batch 1 and 32, one thread.
# Usage: scripts/latency_evidence.sh OUT   (the tables are profiled on first use and cached)
set -euo pipefail
out=${1:?output directory}; mkdir -p "$out"
export OMP_NUM_THREADS=1
dlstrat() { python -c "from lightning_dlstrat.cli import app; app()" "$@"; }
for space in nb201 darts; do
  for data in digits digits-hard; do
    for batch in 1 32; do
      repeats=$([ "$batch" = 1 ] && echo 50 || echo 20)
      dlstrat latency check --space "$space" --data "$data" --batch-size "$batch" --threads 1 --samples 50 --repeats "$repeats" \
        --out "$out/check-$space-$data-b$batch.json" | tee -a "$out/checks.txt"
    done
  done
done
