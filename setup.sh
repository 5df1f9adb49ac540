#!/usr/bin/env bash
# The set-up command: everything the project needs, into the active Python (3.10-3.12 for the
# keypoint extractor's MediaPipe; the rest runs on 3.13 too). Idempotent.
#   bash setup.sh
set -euo pipefail
cd "$(dirname "$0")"
python -m pip install -r requirements.txt
python -m pip install --no-deps -r requirements-nodeps.txt
python - <<'PY'
import cv2, importlib.util
print("set up: cv2", cv2.__version__, "from", cv2.__file__)
if importlib.util.find_spec("mediapipe") is None:
    print("note: mediapipe is not installed (Python 3.13?): keypoint extraction with "
          "--estimator mediapipe is unavailable, --estimator onnx works")
PY
