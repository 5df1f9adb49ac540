#!/usr/bin/env bash
# The whole GPU speed check in one call (at most 9 minutes: every part has a time limit), for
# a machine that is lent for minutes: every input is generated there, figures go to $OUT.
#
#   OUT=/tmp/gpu_bench bash scripts/gpu_benchmark.sh
#   PEER=../peer/TwoStreamNetwork ONLY_PEER=1 OUT=... bash scripts/gpu_benchmark.sh  # the original
#
# 1. TwoStream Phoenix-2014T S2G train step at T=112: batch 1 / 4 / 8, fp32 and bf16 with
#    channels_last_3d and cudnn.benchmark, then torch.compile at batch 4 (clips/s, peak GB);
#    T=208 at batch 1.
# 2. bf16 against fp32: 100 train steps from the same weights and batches (loss curves).
# 3. The data loader on this machine's cores (frames/s per worker, clips/s of the whole path).
# 4. CTC decoding of a Phoenix-2014T-dev-sized batch; G2T / S2T train step and generation.
# 5. With PEER set (best in a call of its own, ONLY_PEER=1): the original implementation's
#    train step, same shapes, same machine.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu_benchmark}
mkdir -p "$OUT"
part() {  # part NAME SECONDS COMMAND...: run with a time limit, log, never stop the script
    local name=$1 limit=$2
    shift 2
    echo "== $name ($(date +%T), limit ${limit}s)" | tee -a "$OUT/summary.txt"
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local status=$?
    grep -v "Warning\|warn(" "$OUT/$name.log" | tail -25 | tee -a "$OUT/summary.txt"
    echo "   exit $status" | tee -a "$OUT/summary.txt"
}

"$PY" -c "import torch, torchvision, transformers; print('torch', torch.__version__, \
'torchvision', torchvision.__version__, 'transformers', transformers.__version__, \
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU', \
'cpus', __import__('os').cpu_count())" | tee "$OUT/summary.txt"

if [ "${ONLY_PEER:-0}" != 1 ]; then
part train_t112 150 "$PY" scripts/benchmark.py --frames 112 --batch 1 4 \
    --modes fp32 bf16 bf16+cl+cudnn --warmup 3 --steps 8 --json "$OUT/train_t112.json"
part train_b8 60 "$PY" scripts/benchmark.py --frames 112 --batch 8 \
    --modes bf16+cl+cudnn fp32+cudnn --warmup 3 --steps 6 --json "$OUT/train_b8.json"
part train_compile 120 "$PY" scripts/benchmark.py --frames 112 --batch 4 \
    --modes bf16+cl+cudnn+compile --warmup 4 --steps 8 --json "$OUT/train_compile.json"
part train_t208 40 "$PY" scripts/benchmark.py --frames 208 --batch 1 \
    --modes bf16+cl+cudnn --warmup 3 --steps 6 --json "$OUT/train_t208.json"
part precision 60 "$PY" scripts/compare_precision.py --frames 112 --batch 1 --batches 8 \
    --steps 100 --modes bf16+cl --json "$OUT/precision.json"
part loader 50 "$PY" scripts/benchmark_data.py --clips 24 --workers 0 4 8 16 --batch 4 \
    --json "$OUT/loader.json"
part decoding 20 "$PY" scripts/benchmark_decoding.py --json "$OUT/decoding.json"
part translation 40 "$PY" scripts/benchmark_translation.py --batch 8 32 --json "$OUT/translation.json"
fi
if [ -n "${PEER:-}" ]; then
    part peer 120 "$PY" ../shared/tools/peer_bench.py --peer "$PEER" --T 112 --B 1 \
        --steps 8 --warmup 3 --variants noanomaly,bf16_cudnn_cl --infer-frames 100 \
        --out "$OUT/peer.json"
fi
echo "done $(date +%T)" | tee -a "$OUT/summary.txt"
