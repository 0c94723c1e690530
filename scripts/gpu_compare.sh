#!/usr/bin/env bash
# After scripts/gpu_recipe.sh on a lent GPU, here: its two model files (best on validation and
# the annealed end) against the shipped default, on the four sets' whole val splits made from
# the configs' own seeds (data/val: the windows the recipe validated on when SEED_OFFSET was 0;
# with an offset, windows neither network trained on), then, with GRIDS=1,
# on the grids no network was trained on (benchmarks/bench_generalization.py, network only).
#
#   bash scripts/gpu_compare.sh /work/.device/N         # the folder the device's files came to
#   GRIDS=1 bash scripts/gpu_compare.sh /work/.device/N  # and the unseen grids (~10 minutes)
#
# Ship the better one, if it beats the default on the unseen grids, with scripts/ship_windows.sh
# (VAL=data/val TEST=data/test: its error model calibrated on these val windows, its card on
# the test splits).
set -euo pipefail
cd "$(dirname "$0")/.."
FROM=${1:?the folder holding gpu-recipe-best.pt and gpu-recipe-final.pt}
PY=${PY:-.venv/bin/python}
DN="$PY -m diffnorm"
VAL=${VAL:-data/val}
roots=()
for set in stretched_9k:stretched polar:polar metres:metres uniform:uniform; do
  config=$VAL/windows_${set##*:}.yaml folder=$VAL/windows_${set##*:}
  mkdir -p "$VAL"
  $PY scripts/split_config.py "configs/data/windows_${set%%:*}.yaml" "$config" --only val
  $DN generate -c "$config" -o "$folder" -q
  roots+=("$folder")
done
pooled=$(IFS=,; echo "${roots[*]}")
models=("$($PY -c "from diffnorm.models import DEFAULT; print(DEFAULT)")")  # then what came back
for file in "$FROM"/gpu-recipe-best.pt "$FROM"/gpu-recipe-final.pt; do
  if [[ -f $file ]]; then models+=("$file"); else echo "$file: missing, skipped"; fi
done
for model in "${models[@]}"; do
  out=runs/gpu_compare/$(basename "${model%.pt}")
  $DN evaluate -m "$model" -d "$pooled" --split val --samples "" --out "$out" -q > /dev/null
  $PY - "$model" "$out/evaluation.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[2]))["cnn"]  # [mean, std] over windows of each window's metric
print(f"{sys.argv[1]}: over the val windows, mean of each one's mean {c['mean_abs'][0]:.3e}, "
      f"Q99.99 {c['q9999'][0]:.3g}, max {c['max_abs'][0]:.3g}")
PY
done
if [[ -n ${GRIDS:-} ]]; then
  for model in "${models[@]}"; do
    echo "== $model on unseen grids"
    $PY benchmarks/bench_generalization.py --model "$model" --samples 1 --randomization 0
  done
fi
