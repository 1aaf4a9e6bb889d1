#!/usr/bin/env bash
# CPU pilots for the flagship recipe (issue 20): equal wall time for each candidate, full training set,
# chosen on PublicTest. Each pilot is a whole run: warm-up + cosine fitted into BUDGET seconds (evaluation
# included), so its last epochs are at a low learning rate and its best PublicTest is a finished model.
#
#   nohup bash benchmarks/cpu_pilots.sh > runs/pilots/pilots.log 2>&1 &
#
#   a  the shipped recipe: resnet50_dropout (p 0.05 after every activation), random erasing
#   b  plain resnet50, head dropout 0.3, flip + shift/zoom/rotation, no random erasing
#   c  the better of a and b on PublicTest, with the no-max-pool stem (layer1 sees 24 x 24, not 12 x 12)
# All: AdamW, peak lr 1e-3, weight decay 0.05, batch 128, label smoothing 0.1, seed 0.
set -euo pipefail
DATA=${DATA:-../shared/data/fer2013.zip}
BUDGET=${BUDGET:-1000}
OUT=${OUT:-runs/pilots}
PY=${PY:-.venv/bin/python}
common=(--data "$DATA" --time-budget "$BUDGET" --epochs 100 --batch-size 128 --optimizer adamw --lr 1e-3
        --weight-decay 0.05 --label-smoothing 0.1 --seed 0 --no-progress)
declare -A recipe=(
  [a]="--model resnet50_dropout --dropout 0.05"
  [b]="--model resnet50 --head-dropout 0.3 --erase-prob 0"
)
best() {  # the best PublicTest accuracy in a history
  "$PY" -c "import pandas, sys; print(pandas.read_csv(sys.argv[1]).public_acc.max())" "$1"
}
for name in a b; do
  [ -f "$OUT/$name.history.csv" ] && [ -f "$OUT/$name.safetensors" ] && continue  # done: rerunning skips it
  # shellcheck disable=SC2086
  "$PY" -m fer train "${common[@]}" ${recipe[$name]} --out "$OUT/$name.safetensors" --force
done
a=$(best "$OUT/a.history.csv"); b=$(best "$OUT/b.history.csv")
winner=$("$PY" -c "print('a' if $a > $b else 'b')")
echo "pilot a $a, pilot b $b: c = $winner with the no_maxpool stem"
# shellcheck disable=SC2086
"$PY" -m fer train "${common[@]}" ${recipe[$winner]} --stem no_maxpool --out "$OUT/c.safetensors" --force
