#!/usr/bin/env bash
# Rebuild the pretrained models shipped in src/diffnorm/models/ from nothing: exact data,
# training, evaluation on test samples never used in training, model files with their cards.
#
#   bash scripts/build_models.sh            # CPU: the sizes used for the shipped files
#   EPOCHS=300 bash scripts/build_models.sh # longer training (e.g. on a GPU node)
#
# Each step resumes when run again (datasets and checkpoints are kept under data/ and runs/).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
EPOCHS=${EPOCHS:-}
MODELS=src/diffnorm/models

latest_ckpt() { ls -t "$1"/csv/version_*/checkpoints/"$2".ckpt | head -n 1; }

# 4° demo grid: trained on its own data
$BIN/diffnorm generate -c configs/data/small.yaml -o data/small -q
$BIN/diffnorm train fit --config configs/train/shipped_latlon4.yaml ${EPOCHS:+--trainer.max_epochs $EPOCHS}
ckpt=$(latest_ckpt runs/shipped_latlon4 best)
$BIN/diffnorm evaluate -m "$ckpt" -d data/small --out runs/shipped_latlon4/eval -q

# 1° grids: the 4° model fine-tuned on crops of each grid's samples
for grid in orca1 toy; do
  $BIN/diffnorm generate -c configs/data/${grid}_cpu.yaml -o data/${grid}_cpu -q
  $BIN/diffnorm train fit --config configs/train/shipped_${grid}.yaml \
    --model.init_from "$ckpt" ${EPOCHS:+--trainer.max_epochs $EPOCHS}
  fine=$(latest_ckpt runs/shipped_${grid} best)
  $BIN/diffnorm evaluate -m "$fine" -d data/${grid}_cpu --out runs/shipped_${grid}/eval -q
done

$BIN/diffnorm export -m "$ckpt" -o $MODELS/latlon4-m10.pt --name latlon4-m10 \
  --metrics "latlon 4° test split=runs/shipped_latlon4/eval/evaluation.json"
for grid in orca1 toy; do
  $BIN/diffnorm export -m "$(latest_ckpt runs/shipped_${grid} best)" \
    -o $MODELS/${grid}-m10.pt --name ${grid}-m10 \
    --metrics "${grid} test split=runs/shipped_${grid}/eval/evaluation.json"
done
$BIN/diffnorm models
