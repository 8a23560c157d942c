#!/usr/bin/env bash
# Rebuild the zoo's trained folders (zoo/NAME) from the package's own recipes, through the same
# export a user runs. Each folder then records the command, config.yaml and summary of its run.
# The searched models come out of the one search-to-model command (`dlstrat fit --retrain`,
# docs/pipeline.md): its export/hub folder, card and receipt included, is the zoo folder.
#   bash scripts/build_zoo.sh [RUNS_DIR] [NAME ...]     # default: all six, runs under runs/zoo
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/zoo}
shift || true
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(mlp-digits gan-ring8 gan-digits gan-digits-cond darts-digits nb201-digits-hard)

fit() { python -m lightning_dlstrat fit "$@" --out "$out" | tee /dev/stderr | sed -n 's/^run directory: //p' | tail -1; }
searched() {  # NAME FLAGS...: search, retrain, test and export in one run; its Hub folder becomes zoo/NAME
    local name=$1; shift
    local run
    run=$(fit "$@" --retrain --repo-id "lightning-dlstrat/$name")
    rm -rf "zoo/$name" && cp -r "$run/export/hub" "zoo/$name"
}
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
        darts-digits) searched darts-digits --model darts ;;
        nb201-digits-hard) searched nb201-digits-hard --model darts --model.space=nb201 --data digits-hard ;;
        *) echo "unknown zoo model $name" >&2; exit 2 ;;
    esac
done
