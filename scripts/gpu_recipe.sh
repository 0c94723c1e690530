#!/usr/bin/env bash
# The default network trained on at GPU pace, in one call of at most 10 minutes on a lent GPU
# machine: exact data for the four window sets on every core (train and val splits), then
# configs/train/windows_smooth_gpu.yaml (windows-smooth-m10 on its own windows, held on the GPU:
# data.resident) until the call's time is nearly spent, and the model file, best checkpoint,
# training log, GPU samples and each step's wall time in $OUT. Evaluate, calibrate its error
# model and ship it here afterwards: the same configs and seeds make the same val windows here.
#
#   bash scripts/gpu_wheels.sh                  # here, once: the wheels the device lacks, in .whl/
#   device run, carry [".whl"]:  bash scripts/gpu_recipe.sh
#   QUICK=1 bash scripts/gpu_recipe.sh          # a CPU smoke run of every step (~2 minutes)
#
# BUDGET (s, default 585) is the whole call; SETUP (s, default 130) what training needs before
# its first step (reading and encoding the windows), which trainer.max_time does not count;
# WIDTH, LOADERS (cores − 2), LR and BATCH override the config; INIT= (empty) trains a new
# network instead (with WIDTH=40, say); TARGET=log_images_walk the walk-mean baseline.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
OUT=${OUT:-runs/gpu_recipe/out}
mkdir -p "$OUT"
LOG=$OUT/recipe.log
: > "$LOG"
step() { echo "[$((SECONDS - start)) s] $*" | tee -a "$LOG"; }
export PYTHONUNBUFFERED=1

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
if command -v nvidia-smi > /dev/null; then  # utilization every 5 s, for the record
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,power.draw --format=csv \
    -l 5 > "$OUT/gpu.csv" 2>&1 &
fi

if [[ -n ${QUICK:-} ]]; then  # a few dozen windows and a few short epochs: every step, on a CPU
  SCALE=${SCALE:-0.01}; BUDGET=${BUDGET:-400}; SETUP=${SETUP:-30}; DATA=data/gpu_quick
  extra=(--trainer.max_epochs 6 --trainer.check_val_every_n_epoch 3 --data.batch_size 8)
else
  SCALE=${SCALE:-1}; BUDGET=${BUDGET:-585}; SETUP=${SETUP:-130}; DATA=data
  extra=()
fi
RUN=runs/gpu_recipe/train
mkdir -p "$RUN"
roots=()
for set in stretched_9k:stretched polar:polar metres:metres uniform:uniform; do
  config=$RUN/windows_${set##*:}.yaml folder=$DATA/windows_${set##*:}
  # the same windows (seeds follow split and index), fewer where SCALE < 1, no test split
  $PY - "configs/data/windows_${set%%:*}.yaml" "$config" "$SCALE" <<'PY'
import sys, yaml
src, dst, scale = sys.argv[1], sys.argv[2], float(sys.argv[3])
c = yaml.safe_load(open(src))
c["splits"] = {k: max(2, round(v * scale)) if k != "test" else 0 for k, v in c["splits"].items()}
yaml.safe_dump(c, open(dst, "w"))
PY
  $DN generate -c "$config" -o "$folder" -q
  roots+=("$folder")
  step "generated $folder"
done
pooled=$(IFS=,; echo "${roots[*]}")

# training gets what is left but for its setup and ~40 s to write the model file
left=$((BUDGET - (SECONDS - start) - SETUP - 40))
((left > 30)) || { step "no time left to train"; exit 1; }
max_time=$(printf '00:%02d:%02d:%02d' $((left / 3600)) $((left % 3600 / 60)) $((left % 60)))
step "training for up to $max_time after setup, $LOADERS loader processes"
args=(--config configs/train/windows_smooth_gpu.yaml --data.root "$pooled"
  --data.num_workers "$LOADERS" --trainer.max_time "$max_time"
  --trainer.default_root_dir "$RUN" --trainer.enable_progress_bar false "${extra[@]}")
[[ -n ${WIDTH:-} ]] && args+=(--model.width "$WIDTH")
[[ -n ${LR:-} ]] && args+=(--model.lr "$LR")
[[ -n ${BATCH:-} ]] && args+=(--data.batch_size "$BATCH")
[[ -n ${TARGET:-} ]] && args+=(--model.target "$TARGET")
[[ -v INIT ]] && args+=(--model.init_from "${INIT:-null}")
$DN train fit "${args[@]}" 2>&1 | grep -v -i warn | tail -n 8 | tee -a "$LOG"
version=$(ls -td "$RUN"/csv/version_* | head -n 1)
best=$version/checkpoints/best.ckpt  # by validation loss; last.ckpt if no validation ran
[[ -f $best ]] || best=$version/checkpoints/last.ckpt
cp "$version"/metrics.csv "$OUT"/train_metrics.csv
step "trained: $best"

name=windows-smooth-gpu-m10
$DN export -m "$best" -o "$OUT/$name.pt" --name "$name" \
  --note "configs/train/windows_smooth_gpu.yaml by scripts/gpu_recipe.sh (max_time $max_time after setup)"
step "exported $OUT/$name.pt ($(du -h "$OUT/$name.pt" | cut -f1))"
size=$(stat -c %s "$best")
((size < 16000000)) && cp "$best" "$OUT/best.ckpt" && step "copied $best ($size bytes)"
