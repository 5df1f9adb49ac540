"""Speed of keypoint extraction per core (prints a table, writes JSON).

    taskset -c 0 python scripts/benchmark_keypoints.py          # one core
    python scripts/benchmark_keypoints.py --frames 200 --json keypoints.json

* ``mediapipe``: MediaPipe Holistic on Phoenix-sized frames (260 high x 210 wide) made from
  matplotlib's sample photograph (a person, moving a little from frame to frame); frames/s
  of ``estimator.clip`` for one clip, the graph's start included.
* ``onnx`` overhead: everything around the model, per frame (the crop, normalisation,
  onnxruntime's call, SimCC decoding and back-transform), with a stand-in graph of the RTMW
  input size (288 x 384) that does almost no work itself: no whole-body model can be
  downloaded here, so the model's own time is not measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import matplotlib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from preprocess.pose_estimators import OnnxWholeBody, build_estimator  # noqa: E402


def phoenix_frames(count: int) -> list[np.ndarray]:
    """RGB 260 x 210 frames of the sample photograph, shifted by a few pixels in turn."""
    photo = cv2.imread(str(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"))
    frame = cv2.cvtColor(cv2.resize(photo, (222, 260))[:, 6:216], cv2.COLOR_BGR2RGB)
    return [np.ascontiguousarray(np.roll(frame, (i % 10) - 5, axis=1)) for i in range(count)]


def stand_in_rtmw(path: Path, width: int = 288, height: int = 384) -> Path:
    """An ONNX graph with RTMW's input and SimCC outputs (split 2) that barely computes."""
    import onnx
    from onnx import TensorProto, helper

    source = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, height, width])
    consts = [
        helper.make_tensor("x", TensorProto.FLOAT, [1, 133, 2 * width], np.zeros(266 * width)),
        helper.make_tensor("y", TensorProto.FLOAT, [1, 133, 2 * height], np.zeros(266 * height)),
    ]
    nodes = [
        helper.make_node("ReduceMax", ["input"], ["peak"], keepdims=0),
        helper.make_node("Add", ["x", "peak"], ["simcc_x"]),
        helper.make_node("Add", ["y", "peak"], ["simcc_y"]),
    ]
    outputs = [
        helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [1, 133, 2 * width]),
        helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [1, 133, 2 * height]),
    ]
    graph = helper.make_graph(nodes, "stand-in", [source], outputs, initializer=consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    frames = phoenix_frames(args.frames)
    rows = []
    holistic = build_estimator("mediapipe")
    started = time.perf_counter()
    holistic.clip(frames)
    seconds = time.perf_counter() - started
    rows.append({"what": "mediapipe holistic, 260x210", "frames_per_s": args.frames / seconds})
    with tempfile.TemporaryDirectory() as tmp:
        estimator = OnnxWholeBody(stand_in_rtmw(Path(tmp) / "rtmw.onnx"))
        estimator.clip(frames[:5])
        started = time.perf_counter()
        estimator.clip(frames)
        per_frame = (time.perf_counter() - started) / args.frames
    rows.append(
        {"what": "onnx overhead around the model, 288x384 input", "ms_per_frame": 1e3 * per_frame}
    )
    for row in rows:
        value = row.get("frames_per_s")
        text = (
            f"{value:.1f} frames/s" if value is not None else f"{row['ms_per_frame']:.2f} ms/frame"
        )
        print(f"{row['what']:<50} {text}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
