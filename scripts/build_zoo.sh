#!/usr/bin/env bash
# Rebuild the zoo's trained folders (zoo/NAME) from the package's own recipes, through the same
# export a user runs. Each folder then records the command, config.yaml and summary of its run.
#   bash scripts/build_zoo.sh [RUNS_DIR] [NAME ...]     # default: all five, runs under runs/zoo
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/zoo}
shift || true
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(mlp-digits gan-ring8 gan-digits gan-digits-cond darts-digits)

fit() { python -m lightning_dlstrat fit "$@" --out "$out" | tee /dev/stderr | sed -n 's/^run directory: //p' | tail -1; }
export_to() {  # RUN NAME SUMMARY
    rm -rf "zoo/$2"
    python -m lightning_dlstrat zoo export "$1" --out "zoo/$2" --repo-id "lightning-dlstrat/$2" --summary "$3"
}

for name in "${names[@]}"; do
    case "$name" in
        mlp-digits) export_to "$(fit --model mlp)" mlp-digits "MLP 64-128-10 on the 8x8 digits" ;;
        gan-ring8) export_to "$(fit --model gan --data ring8)" gan-ring8 "GAN generator (EMA, MLP) for the ring of 8 Gaussians" ;;
        gan-digits) export_to "$(fit --model gan)" gan-digits "GAN generator (EMA, dense) for the 8x8 digits" ;;
        gan-digits-cond) export_to "$(fit --model gan --model.conditional=true)" gan-digits-cond "class-conditional GAN generator (EMA, dense with conditional BatchNorm) for the 8x8 digits" ;;
        darts-digits)
            search=$(fit --model darts)
            export_to "$(fit --model darts-net --genotype "$search/genotype.json")" darts-digits "DARTS cell searched on the 8x8 digits, retrained (C=8, 5 cells)" ;;
        *) echo "unknown zoo model $name" >&2; exit 2 ;;
    esac
done
