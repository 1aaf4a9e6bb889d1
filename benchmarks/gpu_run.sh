#!/usr/bin/env bash
# The prepared device run (issues: flagship engine, ablation, ensemble): one command on the GPU machine.
#
#   here:    ../shared/tools/device-bundle.sh bundle && ../shared/tools/device-bundle.sh hide-weights
#   device:  run(command="OUT=$OUT bash benchmarks/gpu_run.sh", carry=[".devdata"], timeout_s=540)
#   here:    ../shared/tools/device-bundle.sh join <files_at>/parts resnet50_dropout.safetensors trained_models/NEW.safetensors
#            ../shared/tools/device-bundle.sh restore-weights, then score PrivateTest on the CPU.
#
# Smoke-test it on the CPU first: PATH=.venv/bin:$PATH OUT=/tmp/gpu-smoke DATA=../shared/data/fer2013.zip SUBSET=256 BUDGET=20 \
#   VAL_SUBSET=256 BATCH=32 DEVICE=cpu bash benchmarks/gpu_run.sh
set -euo pipefail
OUT=${OUT:?set OUT}
DATA=${DATA:-.devdata/fer2013-trainval.zip}
BUDGET=${BUDGET:-400}          # seconds of training, evaluation included
STEM=${STEM:-no_maxpool}
BATCH=${BATCH:-256}
LR=${LR:-2e-3}
EMA=${EMA:-0.999}
subset_args=()
[ -n "${SUBSET:-}" ] && subset_args+=(--subset "$SUBSET")
[ -n "${VAL_SUBSET:-}" ] && subset_args+=(--val-subset "$VAL_SUBSET")
mkdir -p "$OUT"
export PYTHONPATH=.
{ nvidia-smi || echo "no nvidia-smi"; python3 -c "import torch; print('torch', torch.__version__)" || true; } > "$OUT/machine.txt" 2>&1
for stem in imagenet no_maxpool cifar; do
  python3 benchmarks/throughput.py train --stem "$stem" --batch-size "$BATCH" --train-steps 5 --device "${DEVICE:-cuda}" \
    --modes eager >> "$OUT/throughput.jsonl"
done
python3 -m fer train --data "$DATA" --arch resnet50_dropout --stem "$STEM" --batch-size "$BATCH" --lr "$LR" \
  --ema-decay "$EMA" --epochs 1000 --time-budget "$BUDGET" --out "$OUT/resnet50_dropout.safetensors" \
  --no-progress "${subset_args[@]}" 2>&1 | tee "$OUT/train.log"
# Files come back at most 16 MiB each: split the weights; the checkpoint stays behind.
bundle=.devdata/device-bundle.sh
[ -f "$bundle" ] || bundle=../shared/tools/device-bundle.sh
bash "$bundle" split "$OUT/resnet50_dropout.safetensors" "$OUT/parts"
rm -rf "$OUT/resnet50_dropout.safetensors" "$OUT/checkpoints"
ls -l "$OUT" "$OUT/parts"
