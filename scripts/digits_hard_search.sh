#!/usr/bin/env bash
# Search vs random search on digits-hard (data/digits.py): each --model.method searched with the
# space's digits preset (plus the collapse monitor every 5 epochs), and random-nas (best of 8
# genotypes by validation accuracy), each winner retrained with the space's retrain recipe
# (nb201-net or darts-net) and the same seed. One seed per call; docs/darts.md has the tables.
# Usage: PYTHONPATH=. [SPACE=nb201|darts] scripts/digits_hard_search.sh OUT SEED [METHOD ...]
#        (METHOD: random, or a --model.method; SPACE defaults to nb201)
set -euo pipefail
out=${1:?output directory}; seed=${2:-0}; shift 2 || true
space=${SPACE:-nb201}
methods=("$@"); [ ${#methods[@]} -gt 0 ] || methods=(random darts darts- beta-darts sdarts-rs fair-darts gdas drnas)
retrain=$([ "$space" = nb201 ] && echo nb201-net || echo darts-net)
tag=$([ "$space" = nb201 ] && echo "" || echo "$space-")
export OMP_NUM_THREADS=1
dlstrat() { python -c "from lightning_dlstrat.cli import app; app()" "$@"; }
for m in "${methods[@]}"; do
  name="$tag$m-s$seed"
  if [ "$m" = random ]; then
    dlstrat fit --model random-nas --model.space="$space" --data digits-hard --seed "$seed" --out "$out/search-$name" > "$out/search-$name.log" 2>&1
  else
    dlstrat fit --model darts --model.space="$space" --data digits-hard --seed "$seed" --model.method="$m" --model.eigen_every=5 \
      --out "$out/search-$name" > "$out/search-$name.log" 2>&1
  fi
  run=$(ls -d "$out/search-$name"/*/ | tail -1)
  dlstrat fit --model "$retrain" --data digits-hard --genotype "$run" --seed "$seed" --out "$out/retrain-$name" > "$out/retrain-$name.log" 2>&1
  echo "$space $m seed $seed done"
done
