#!/usr/bin/env bash
# The prepared device run (issue 21): one command on the GPU machine trains the three variants of
# experiments/gpu_ablation.toml at equal time, side by side on the one GPU (a sweep with --jobs 3), and sends
# back the best on PublicTest; a follow-up call, at once, sends back each other one (the machine keeps its
# files only while it is warm). Everything else comes back in report.tar.gz (results, histories, logs).
#
#   here:    ../shared/tools/device-bundle.sh bundle && ../shared/tools/device-bundle.sh hide-weights
#   device:  run(command="OUT=$OUT bash benchmarks/gpu_run.sh", carry=[".devdata"], timeout_s=540)
#   device:  run(command="OUT=$OUT bash benchmarks/gpu_run.sh fetch resnet50", timeout_s=60)   # each other run
#   here:    ../shared/tools/device-bundle.sh join <files_at>/parts NAME.safetensors runs/gpu/NAME.safetensors
#            ../shared/tools/device-bundle.sh restore-weights, then score PrivateTest on the CPU.
#
# Smoke-test it on the CPU first (two minutes):
#   PATH=.venv/bin:$PATH OUT=/tmp/gpu-smoke DATA=../shared/data/fer2013.zip BUDGET=15 JOBS=1 DEVICE=cpu \
#     SETTINGS="subset=256 val_subset=256 batch_size=32" bash benchmarks/gpu_run.sh
set -euo pipefail
OUT=${OUT:?set OUT}
DATA=${DATA:-.devdata/fer2013-trainval.zip}
BUDGET=${BUDGET:-400}   # seconds of training for each variant, evaluation included
JOBS=${JOBS:-3}
DEVICE=${DEVICE:-cuda}
SWEEP=runs/sweeps/gpu_ablation
export PYTHONPATH=.
bundle=.devdata/device-bundle.sh
[ -f "$bundle" ] || bundle=../shared/tools/device-bundle.sh
mkdir -p "$OUT"

send() {  # one run's weights as parts of 15 MiB (a file comes back only up to 16 MiB), named after the run
  bash "$bundle" split "$SWEEP/$1,seed=0/model.safetensors" "$OUT/parts" > /dev/null
  for f in "$OUT"/parts/model.safetensors*; do mv "$f" "${f/model.safetensors/$1.safetensors}"; done
}

if [ "${1:-}" = fetch ]; then
  send "$2"
  ls -l "$OUT/parts"
  exit 0
fi

report=$(mktemp -d)
{ nvidia-smi || echo "no nvidia-smi"; python3 -c "import torch; print('torch', torch.__version__)"; } \
  > "$report/machine.txt" 2>&1 || true
python3 benchmarks/throughput.py train --stem no_maxpool --batch-size 256 --train-steps 5 --device "$DEVICE" \
  --modes eager > "$report/throughput.jsonl" 2>&1 || true
overrides=(--set "time_budget=$BUDGET" --set "device=\"$DEVICE\"")
for setting in ${SETTINGS:-}; do overrides+=(--set "$setting"); done
# A failed run is in the results with its error; the others still come back.
python3 -m fer sweep experiments/gpu_ablation.toml --engine train --jobs "$JOBS" --data "$DATA" "${overrides[@]}" \
  2>&1 | tee "$report/sweep.log" || true
cp "$SWEEP"/results.* "$SWEEP"/summary.* "$SWEEP"/sweep.png "$report/" 2>/dev/null || true
for run in "$SWEEP"/*/; do
  name=$(basename "$run")
  cp "$run/log.txt" "$report/$name.log" 2>/dev/null || true
  cp "$run/model.history.csv" "$report/$name.history.csv" 2>/dev/null || true
done
tar -czf "$OUT/report.tar.gz" -C "$report" .
best=$(python3 -c "import pandas; t = pandas.read_csv('$SWEEP/results.csv'); print(t.loc[t.best_val_acc.idxmax(), 'name'])")
echo "best on PublicTest: $best"
send "$best"
ls -l "$OUT" "$OUT/parts"
