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
exec "$PY" -m fer train --recipe flagship --data "$DATA" --out "$OUT" --stem "$STEM" --time-budget "$BUDGET" \
  --no-progress  # recipes/flagship.toml: every other setting
