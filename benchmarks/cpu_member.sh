#!/usr/bin/env bash
# The ensemble's CPU members (issue 31), each the flagship's recipe (benchmarks/cpu_flagship.sh) at the
# flagship's budget of 7 hours, run in stretches: start it, stop it (kill; it resumes from the last epoch's
# checkpoint), start it again: the schedule continues from the training time already spent.
#
#   nohup bash benchmarks/cpu_member.sh dropout >> runs/members/dropout.log 2>&1 &
#
# MEMBER names recipes/member_MEMBER.toml, which holds every setting of its run:
# dropout: the mission's variant, resnet50_dropout (Dropout(0.05) after every one of the 49 activations),
#          everything else the flagship's, seed 0 included, so that the plain-vs-dropout table compares the
#          placement of dropout alone at equal CPU-hours.
# Every epoch's weights are kept (--snapshots) so that the last ones can be averaged (`python -m fer average`).
# A training run needs the machine to itself (DEVELOPERS.md): run tests and benchmarks after stopping it.
set -euo pipefail
MEMBER=${1:?"usage: cpu_member.sh MEMBER (dropout: recipes/member_dropout.toml)"}
DATA=${DATA:-../shared/data/fer2013.zip}
BUDGET=${BUDGET:-25200}
PY=${PY:-.venv/bin/python}
RECIPE=recipes/member_$MEMBER.toml  # every setting of the member's run
if [ ! -f "$RECIPE" ]; then
  echo "cpu_member.sh: no recipe $RECIPE for member $MEMBER ($(ls recipes | grep '^member_' | tr '\n' ' '))" >&2
  exit 2
fi
OUT=${OUT:-runs/members/$MEMBER.safetensors}
checkpoint="$(dirname "$OUT")/checkpoints/$(basename "$OUT" .safetensors)/last.pt"
if [ -f "$checkpoint" ]; then
  exec "$PY" -m fer train --out "$OUT" --resume --data "$DATA" --no-progress --snapshots
fi
exec "$PY" -m fer train --recipe "$RECIPE" --data "$DATA" --out "$OUT" --time-budget "$BUDGET" --no-progress
