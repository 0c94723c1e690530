#!/usr/bin/env bash
# Ship a network trained on the four geometry-window sets as src/diffnorm/models/NAME.pt: its
# per-cell error model calibrated on the pooled val splits, its card holding its errors on each
# set's test split (windows never used in training or for choosing a checkpoint).
#
#   bash scripts/ship_windows.sh CHECKPOINT RUNS_PREFIX NAME NOTE
#
# DATA (default data) holds windows_stretched, windows_polar, windows_metres and
# windows_uniform with their val and test splits; VAL and TEST override it for each split
# (scripts/gpu_compare.sh makes data/val; a test-only copy is made the same way, with
# scripts/split_config.py --only test). Evaluations go to runs/RUNS_PREFIX_*.
set -euo pipefail
cd "$(dirname "$0")/.."
CKPT=${1:?checkpoint or model file} PREFIX=${2:?runs/ prefix} NAME=${3:?model name}
NOTE=${4:?what the model is and how it was trained}
BIN=${BIN:-.venv/bin}
VAL=${VAL:-${DATA:-data}} TEST=${TEST:-${DATA:-data}}
sets=(stretched polar metres uniform)
pooled=$(printf "$VAL/windows_%s," "${sets[@]}")
$BIN/diffnorm evaluate -m "$CKPT" -d "${pooled%,}" --split val --samples "" \
  --out "runs/${PREFIX}_val" -q
metrics=()
declare -A label=([stretched]="windows" [polar]="polar windows" [metres]="metre windows"
  [uniform]="uniform windows")
for t in "${sets[@]}"; do
  $BIN/diffnorm evaluate -m "$CKPT" -d "$TEST/windows_$t" --split test --samples "" \
    --out "runs/${PREFIX}_$t" -q
  metrics+=(--metrics "${label[$t]} test split=runs/${PREFIX}_$t/evaluation.json")
done
$BIN/diffnorm export -m "$CKPT" -o "src/diffnorm/models/$NAME.pt" --name "$NAME" \
  "${metrics[@]}" --note "$NOTE" --error-model "runs/${PREFIX}_val/evaluation.json"
