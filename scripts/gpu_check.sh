#!/usr/bin/env bash
# One-call check of a GPU machine: library versions, the sign-to-gloss benchmark at the shapes
# of shared/reference/peer-measurements.md, and the whole demo schedule trained on the GPU with
# bf16 autocast and channels_last. Figures go to $OUT (default /tmp/gpu_check).
#
#   OUT=/tmp/gpu_check bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu_check}
WORK=${WORK:-/tmp/gpu_check_work}
mkdir -p "$OUT" "$WORK"
# Machines without a package index: wheels carried in .whl/ (pip download / pip wheel there).
if ! "$PY" -c "import rouge_score" 2>/dev/null && [ -d .whl ]; then
    "$PY" -m pip install -q --no-index --find-links .whl rouge-score nltk
fi

"$PY" -c "import torch, torchvision, transformers; print('torch', torch.__version__, \
'torchvision', torchvision.__version__, 'transformers', transformers.__version__, \
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" | tee "$OUT/versions.txt"

bench() { "$PY" scripts/benchmark.py --warmup 3 --steps 8 "$@" 2>&1 | tee -a "$OUT/benchmark.txt"; }
if [ "${BENCH:-1}" = 1 ]; then
bench --frames 112 --batch 1 4 --modes fp32 bf16 bf16+cl
bench --frames 208 --batch 1 --modes fp32 bf16+cl
fi

started=$(date +%s)
timeout "${SCHEDULE_TIMEOUT:-300}" "$PY" scripts/schedule.py demo \
    --output-root "$WORK/outputs" --data-root "$WORK/data" \
    --override training.mixed_precision=bf16 --override training.channels_last=true \
    > "$OUT/schedule.log" 2>&1
status=$?
echo "demo schedule on the GPU (bf16, channels_last): exit $status, $(($(date +%s) - started)) s" \
    | tee -a "$OUT/schedule.log"
grep -v "^20..-..-.. " "$OUT/schedule.log" | tail -45
if [ "${KEYPOINT_FP32:-0}" = 1 ]; then  # the keypoint stage again in fp32, to compare with bf16
    timeout 60 "$PY" training.py --config "$WORK/outputs/configs/keypoint.yaml" \
        --override training.model_dir="$WORK/keypoint_fp32" > "$OUT/keypoint_fp32.log" 2>&1
    echo "keypoint stage in fp32 on the GPU: exit $?"
    grep -v "^20..-..-.. " "$OUT/keypoint_fp32.log" | tail -5
fi
exit $status
