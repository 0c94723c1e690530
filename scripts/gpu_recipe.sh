#!/usr/bin/env bash
# windows-smooth-m10's recipe on one GPU machine in one call of at most 10 minutes: exact data
# for the four window sets on every core, training (configs/train/windows_smooth_gpu.yaml)
# until the call's time is nearly spent, the error model from the pooled val split, and the
# model file in $OUT with the training log. Evaluate and ship it here afterwards (the same
# configs and seeds make the same windows here: scripts/build_models.sh's evaluate/export).
#
#   bash scripts/gpu_wheels.sh                  # here, once: the wheels the device lacks, in .whl/
#   device run, carry [".whl"]:  bash scripts/gpu_recipe.sh
#   QUICK=1 bash scripts/gpu_recipe.sh          # a CPU smoke run of every step (~3 minutes)
#
# BUDGET (s, default 570) is the whole call; EPOCHS (20), WIDTH (40) and LOADERS (cores − 2)
# override the config; INIT=windows-smooth-m10 (with WIDTH=24) trains the shipped network on
# instead of a new one; TARGET=log_images_walk trains on the walk-mean baseline instead of the
# config's smoothed one. Each step's wall time goes to $OUT/recipe.log.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
OUT=${OUT:-runs/gpu_recipe/out}
mkdir -p "$OUT"
LOG=$OUT/recipe.log
: > "$LOG"
step() { echo "[$((SECONDS - start)) s] $*" | tee -a "$LOG"; }

PY=${PY:-python3}
if [[ -d .whl ]] && ! $PY -c "import cholespy, global_land_mask, jsonargparse" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
DN="$PY -m diffnorm"
cores=$(nproc)
LOADERS=${LOADERS:-$((cores > 2 ? cores - 2 : 1))}
step "python $($PY -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available())'), $cores cores"

if [[ -n ${QUICK:-} ]]; then  # a few dozen windows and one short epoch: every step, on a CPU
  SCALE=${SCALE:-0.01}; EPOCHS=${EPOCHS:-1}; WIDTH=${WIDTH:-8}; BUDGET=${BUDGET:-600}
  DATA=data/gpu_quick
else
  SCALE=${SCALE:-1}; EPOCHS=${EPOCHS:-20}; WIDTH=${WIDTH:-40}; BUDGET=${BUDGET:-570}
  DATA=data
fi
RUN=runs/gpu_recipe/train
roots=()
for set in stretched_9k:stretched polar:polar metres:metres uniform:uniform; do
  config=configs/data/windows_${set%%:*}.yaml folder=$DATA/windows_${set##*:}
  if [[ $SCALE != 1 ]]; then  # the same windows, fewer of them
    scaled=$RUN/windows_${set##*:}.yaml
    mkdir -p "$RUN"
    $PY - "$config" "$scaled" "$SCALE" <<'PY'
import sys, yaml
src, dst, scale = sys.argv[1], sys.argv[2], float(sys.argv[3])
c = yaml.safe_load(open(src))
c["splits"] = {k: max(2, round(v * scale)) for k, v in c["splits"].items()}
yaml.safe_dump(c, open(dst, "w"))
PY
    config=$scaled
  fi
  $DN generate -c "$config" -o "$folder" -q
  roots+=("$folder")
  step "generated $folder"
done
pooled=$(IFS=,; echo "${roots[*]}")

# training gets what is left but for ~2 minutes of setup, evaluation and export
left=$((BUDGET - (SECONDS - start) - 120))
((left > 60)) || { step "no time left to train"; exit 1; }
max_time=$(printf '00:%02d:%02d:%02d' $((left / 3600)) $((left % 3600 / 60)) $((left % 60)))
step "training: up to $EPOCHS epochs or $max_time, width $WIDTH, $LOADERS loader processes"
$DN train fit --config configs/train/windows_smooth_gpu.yaml --data.root "$pooled" \
  --data.num_workers "$LOADERS" --model.width "$WIDTH" --trainer.max_epochs "$EPOCHS" \
  --trainer.max_time "$max_time" --trainer.default_root_dir "$RUN" \
  ${INIT:+--model.init_from "$INIT"} ${TARGET:+--model.target "$TARGET"} 2>&1 | tail -n 5
version=$(ls -td "$RUN"/csv/version_* | head -n 1)
best=$version/checkpoints/best.ckpt  # by validation loss; last.ckpt if no epoch ended
[[ -f $best ]] || best=$version/checkpoints/last.ckpt
cp "$version"/metrics.csv "$OUT"/train_metrics.csv
step "trained: $best"

$DN evaluate -m "$best" -d "$pooled" --split val --samples "" --out "$RUN"/eval_val \
  --device auto -q > /dev/null
cp "$RUN"/eval_val/evaluation.md "$OUT"/eval_val.md
name=windows-smooth-gpu-m10
$DN export -m "$best" -o "$OUT/$name.pt" --name "$name" \
  --note "configs/train/windows_smooth_gpu.yaml by scripts/gpu_recipe.sh (width $WIDTH, up to $EPOCHS epochs in $max_time)" \
  --error-model "$RUN"/eval_val/evaluation.json
step "exported $OUT/$name.pt ($(du -h "$OUT/$name.pt" | cut -f1))"
