#!/usr/bin/env bash
# The collapse-fix comparison of docs/darts.md: each --model.method searched on digits with the
# digits preset (plus the collapse monitor every 5 epochs), then retrained with the same darts-net
# recipe, one seed per call. Usage: scripts/darts_methods_digits.sh OUT SEED [METHOD ...]
set -euo pipefail
out=${1:?output directory}; seed=${2:-0}; shift 2 || true
methods=("$@"); [ ${#methods[@]} -gt 0 ] || methods=(darts darts- beta-darts sdarts-rs fair-darts gdas drnas pc-darts)
export OMP_NUM_THREADS=1
# the checkout's package (PYTHONPATH=. from the repository root), or the installed one
dlstrat() { python -c "from lightning_dlstrat.cli import app; app()" "$@"; }
for m in "${methods[@]}"; do
  dlstrat fit --model darts --seed "$seed" --model.method="$m" --model.eigen_every=5 --out "$out/search-$m-s$seed" > "$out/search-$m-s$seed.log" 2>&1
  run=$(ls -d "$out/search-$m-s$seed"/*/ | tail -1)
  dlstrat fit --model darts-net --genotype "$run/genotype.json" --seed "$seed" --out "$out/retrain-$m-s$seed" > "$out/retrain-$m-s$seed.log" 2>&1
  echo "$m seed $seed done"
done
