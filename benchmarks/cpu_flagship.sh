#!/usr/bin/env bash
# The CPU flagship's long run (issue 20): the recipe the pilots chose (experiments/cpu_pilots.toml), one time
# budget of 7 hours of training, run in stretches. Start it, stop it (kill; it resumes from the last epoch's
# checkpoint), start it again: the schedule continues from the training time already spent.
#
#   nohup bash benchmarks/cpu_flagship.sh >> runs/flagship/train.log 2>&1 &
#
# A training run needs the machine to itself (DEVELOPERS.md): run tests and benchmarks after stopping it.
# --snapshots keeps every epoch's weights (runs/flagship/snapshots/resnet50/; switched on in the
# real run from epoch 81, in its fourth stretch), so that its last epochs can be averaged (`python -m fer average`).
set -euo pipefail
DATA=${DATA:-../shared/data/fer2013.zip}
OUT=${OUT:-runs/flagship/resnet50.safetensors}
BUDGET=${BUDGET:-25200}
STEM=${STEM:-imagenet}
PY=${PY:-.venv/bin/python}
checkpoint="$(dirname "$OUT")/checkpoints/$(basename "$OUT" .safetensors)/last.pt"
if [ -f "$checkpoint" ]; then
  exec "$PY" -m fer train --out "$OUT" --resume --data "$DATA" --no-progress --snapshots
fi
exec "$PY" -m fer train --data "$DATA" --out "$OUT" --model resnet50 --head-dropout 0.3 --erase-prob 0 \
  --stem "$STEM" --time-budget "$BUDGET" --epochs 1000 --batch-size 128 --optimizer adamw --lr 1e-3 \
  --weight-decay 0.05 --label-smoothing 0.1 --seed 0 --no-progress --snapshots
