#!/usr/bin/env bash
# The default network trained on at GPU pace, in one call of at most 10 minutes on a lent GPU
# machine: with CHECK=auto first benchmarks/bench_cnn.py (the default network and its TorchScript
# graph on the GPU beside the CPU, ~60 s), then exact data for the four window sets on every core (train and
# val splits, SCALE of them, for at most GEN seconds), then configs/train/windows_smooth_gpu.yaml
# (the default network on those windows, held on the GPU: data.resident) until a deadline that
# leaves FINISH seconds, and the model files, best checkpoint, training log (as it is written),
# GPU samples, the benchmark's table and each step's wall time in $OUT (8 files, the most that come
# back: write nothing else there, or one of them stays behind). Back here, scripts/gpu_compare.sh
# scores what came back against the shipped default on data/val, windows neither trained on.
#
#   bash scripts/gpu_wheels.sh                  # here, once: the wheels the device lacks, in .whl/
#   device run, carry [".whl"]:  bash scripts/gpu_recipe.sh
#   QUICK=1 bash scripts/gpu_recipe.sh          # a CPU smoke run of every step (~2.5 minutes)
#
# Measured on the lent H200 machine (2026-12-04, 16 cores): the first call's four full sets
# (15 730 windows) took 421 s to generate, 0.43 core-s a window; after a write lock was removed,
# the second call's took 214 s, 0.18 core-s, then 88 s of setup and 8 452 training steps in
# 192 s (docs/results.md, "Two GPU calls"); the third (a fresh machine, SEED_OFFSET 100): the
# check ~60 s, 10 928 windows in ~150 s, 64 s of setup, 11 146 steps in 235 s (21 ms a step),
# 577 s in all. Generation stops at GEN seconds (default 200) with what it has made, each set's
# val windows whole.
# BUDGET (s, default 585) is the whole call, FINISH (40) what export needs after training;
# WIDTH, LOADERS (cores − 2), LR, BATCH and RESIDENT override the config; INIT= (empty) trains
# a new network instead (with WIDTH=40, say); TARGET=log_images_walk the walk-mean baseline;
# CHECK=auto runs the check on a GPU (CHECK=1 on a CPU too; the default, 0, skips it: it passed
# on the H200 on 2026-12-04, and its minute buys ~2 800 steps); SEED_OFFSET (200) draws fresh
# windows.
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
step "python $($PY -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available())'), $cores cores, $(free -g | awk '/Mem/ {print $2}') GiB, /dev/shm $(df -h /dev/shm | awk 'NR == 2 {print $2}')"
if command -v nvidia-smi > /dev/null; then  # utilization every 5 s, for the record
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,power.draw --format=csv \
    -l 5 > "$OUT/gpu.csv" 2>&1 &
  trap "kill $! 2> /dev/null || true" EXIT
fi

# with CHECK=auto, first, a minute: the default network and its TorchScript graph timed on the GPU
# and set beside the CPU's (benchmarks/bench_cnn.py, its table and JSON in $OUT/bench_cnn.txt;
# CHECK=1 runs it without a GPU too)
if [[ ${CHECK:-0} == 1 ]] || { [[ ${CHECK:-0} == auto ]] \
  && $PY -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; }; then
  if timeout 120 $PY benchmarks/bench_cnn.py --samples "" --exact-above "" --train-steps 1 \
    > "$OUT/bench_cnn.txt" 2>&1; then
    grep -E "^\| (cnn|torchscript)" "$OUT/bench_cnn.txt" | tee -a "$LOG"
  else
    step "bench_cnn failed (status $?): see bench_cnn.txt; training goes on"
  fi
fi

if [[ -n ${QUICK:-} ]]; then  # a few dozen windows and a few short epochs: every step, on a CPU
  SCALE=${SCALE:-0.01}; BUDGET=${BUDGET:-170}; GEN=${GEN:-40}; DATA=data/gpu_quick
  extra=(--trainer.check_val_every_n_epoch 3 --data.batch_size 8)
else
  SCALE=${SCALE:-1}; BUDGET=${BUDGET:-585}; GEN=${GEN:-200}; DATA=data
  extra=(--trainer.benchmark true)  # cuDNN picks its fastest kernels: every input is one size
fi
FINISH=${FINISH:-40}
# windows the default has not been trained on: the configs' seeds + SEED_OFFSET (0: their own,
# on which windows-smooth-gpu-m10 made its 8 452 steps; 100: windows-smooth-gpu2-m10's 11 146,
# so the next run wants another, 200). The val windows here then differ from data/val too, so
# scripts/gpu_compare.sh scores both networks on windows neither trained on.
SEED_OFFSET=${SEED_OFFSET:-200}
RUN=runs/gpu_recipe/train
mkdir -p "$RUN"
# exact data: each set gets its share (by windows) of what is left of GEN seconds, makes its val
# windows whole, then train windows until its --time-limit; training takes what the manifests
# list (a warm machine's next call completes the sets)
sets=(polar:polar metres:metres uniform:uniform stretched_9k:stretched)
windows_in() {  # a config's windows (its splits' sizes): the sets' shares of GEN follow them
  $PY -c "import sys, yaml; print(sum(yaml.safe_load(open(sys.argv[1]))['splits'].values()))" "$1"
}
left_windows=0
for set in "${sets[@]}"; do
  $PY scripts/split_config.py "configs/data/windows_${set%%:*}.yaml" \
    "$RUN/windows_${set##*:}.yaml" --scale "$SCALE" --only train,val --seed-offset "$SEED_OFFSET"
  left_windows=$((left_windows + $(windows_in "$RUN/windows_${set##*:}.yaml")))
done
roots=()
for set in "${sets[@]}"; do
  config=$RUN/windows_${set##*:}.yaml folder=$DATA/windows_${set##*:}
  windows=$(windows_in "$config")
  share=$(((GEN - (SECONDS - start)) * windows / left_windows))
  share=$((share > 5 ? share : 5))
  left_windows=$((left_windows - windows))
  $DN generate -c "$config" -o "$folder" -q --time-limit "$share"
  roots+=("$folder")
  listed=$($PY -c "import json, sys; print(json.load(open(sys.argv[1]))['splits'])" \
    "$folder/manifest.json")
  step "generated $folder: $listed (limit ${share} s)"
done
pooled=$(IFS=,; echo "${roots[*]}")

# training stops at a moment (diffnorm.ml.deadline.Deadline) that leaves FINISH seconds to write
# the model file, whatever the setup (reading, encoding, moving the windows to the GPU) took; a
# watchdog ends it 20 s later if it has not stopped. Its log goes to $OUT as it is written.
deadline=$(($(date +%s) + BUDGET - (SECONDS - start) - FINISH))
((deadline - $(date +%s) > 60)) || { step "no time left to train"; exit 1; }
step "training until $(date -d @$deadline +%T) ($((deadline - $(date +%s))) s from now, setup included), $LOADERS loader processes"
rm -rf "$RUN"/csv "$RUN"/tb "$RUN"/final.ckpt  # a warm machine keeps an earlier call's run
args=(--config configs/train/windows_smooth_gpu.yaml --data.root "$pooled"
  --data.num_workers "$LOADERS" --trainer.default_root_dir "$RUN"
  --trainer.enable_progress_bar false
  "--trainer.callbacks+=diffnorm.ml.deadline.Deadline" "--trainer.callbacks.at=$deadline"
  "--trainer.callbacks.final=$RUN/final.ckpt" "${extra[@]}")
[[ -n ${WIDTH:-} ]] && args+=(--model.width "$WIDTH")
[[ -n ${LR:-} ]] && args+=(--model.lr "$LR")
[[ -n ${BATCH:-} ]] && args+=(--data.batch_size "$BATCH")
[[ -n ${RESIDENT:-} ]] && args+=(--data.resident "$RESIDENT")
[[ -n ${TARGET:-} ]] && args+=(--model.target "$TARGET")
[[ -v INIT ]] && args+=(--model.init_from "${INIT:-null}")
timeout -k 10 $((deadline - $(date +%s) + 20)) $DN train fit "${args[@]}" > "$OUT/train.log" 2>&1 \
  || step "training ended with status $? (124: the watchdog)"
grep -E "^data:|Time limit|stopped|Error" "$OUT/train.log" | tail -n 12 | tee -a "$LOG" || true
version=$(ls -td "$RUN"/csv/version_* 2> /dev/null | head -n 1 || true)
[[ -n $version ]] || { step "training wrote no run folder: see $OUT/train.log"; exit 1; }
cp "$version"/metrics.csv "$OUT"/train_metrics.csv 2> /dev/null || true
best=$version/checkpoints/best.ckpt  # by validation max |eps|
final=$RUN/final.ckpt  # where the schedule ended (the Deadline's)
[[ -f $best ]] || best=$final
[[ -f $final ]] || final=$best
[[ -f $best ]] || { step "no checkpoint was written: see $OUT/train.log"; exit 1; }
steps=$(awk -F, 'NR > 1 && $3 != "" {s = $3} END {print s + 1}' "$OUT"/train_metrics.csv)
step "trained $steps steps: best $best, final $final"

# both: the best on validation and the annealed end; compare them on the val windows here
note="configs/train/windows_smooth_gpu.yaml by scripts/gpu_recipe.sh (deadline $(date -d @$deadline +%T), SCALE $SCALE)"
for which in best final; do
  ckpt=${!which} name=gpu-recipe-$which  # not a shipped name: compared with them back here
  $DN export -m "$ckpt" -o "$OUT/$name.pt" --name "$name" --note "$note ($which)"
  step "exported $OUT/$name.pt from $ckpt ($(du -h "$OUT/$name.pt" | cut -f1))"
done
size=$(stat -c %s "$best")
if ((size < 16000000)); then
  cp "$best" "$OUT/best.ckpt" && step "copied $best ($size bytes)"
else
  step "$best ($size bytes) is too large to come back; the model files hold its weights"
fi
