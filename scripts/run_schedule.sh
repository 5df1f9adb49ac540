#!/usr/bin/env bash
# The whole staged schedule of one dataset in one command:
#
#   bash scripts/run_schedule.sh demo                      # synthetic data, CPU, minutes
#   GPUS=8 bash scripts/run_schedule.sh phoenix-2014t      # torchrun with 8 processes per stage
#   bash scripts/run_schedule.sh phoenix-2014t --gpus 4 --output-root /scratch/runs/p14t
#
# DATASET: demo | phoenix-2014 | phoenix-2014t | csl-daily. Stage outputs go to
# experiments/outputs/DATASET/STAGE/; stages whose outputs exist are skipped.
# Options: --gpus N, --output-root DIR, --data-root DIR, --override KEY=VALUE (every stage),
# --quick (tiny data, a few steps per stage: what CI runs). See scripts/schedule.py.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python scripts/schedule.py "$@"
