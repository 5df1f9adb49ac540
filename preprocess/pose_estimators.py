"""Whole-body pose estimators for keypoint extraction, chosen by exact name (:data:`ESTIMATORS`).

An estimator turns the RGB frames of one clip into COCO-WholeBody keypoints ``(T, 133, 3)``
(x, y in pixels of the frame as given, score in [0, 1]; NaN where nothing was found, which
:func:`preprocess.holistic_mapping.fill_missing` then places):

* ``mediapipe`` (default): MediaPipe Holistic's legacy solution API (mediapipe 0.10.14, whose
  wheel carries its models: nothing is downloaded). ``model_complexity=1``, the only one whose
  model the wheel holds; a fresh graph per clip, so a clip's points do not depend on the clip
  before it (and resuming or sharding changes nothing). Landmark smoothing is off by default:
  it lags behind fast hands (``smooth=True`` switches it on). Holistic follows one person.
* ``onnx``: a top-down whole-body model of the RTMW / DWPose family in ONNX (133 points
  natively), run with onnxruntime on the CPU or CUDA. The person box comes from a detector
  ONNX model (``detector=``; the largest, most central person is the signer) or is the whole
  frame (Phoenix, CSL-Daily: the signer fills it). The box is widened by ``padding`` (1.25),
  brought to the model's aspect ratio, warped to its input size, and the outputs are decoded
  as SimCC (two outputs: x and y distributions) or as heatmaps (one output), as they say.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

import cv2
import numpy as np

from preprocess.holistic_mapping import NUM_POINTS, HolisticFrame, frame_to_wholebody
from utils.errors import ConfigurationError, DataError

logger = logging.getLogger(__name__)

RTM_MEAN = (123.675, 116.28, 103.53)  # RGB, the RTMPose / RTMW / DWPose exports
RTM_STD = (58.395, 57.12, 57.375)


class PoseEstimator(Protocol):
    """What keypoint extraction needs from an estimator (one instance per process)."""

    name: str

    def describe(self) -> dict[str, Any]:
        """Name, version and settings, for the sidecar file of the keypoint file."""

    def clip(self, frames: Iterable[np.ndarray]) -> np.ndarray:
        """RGB frames uint8 ``(H, W, 3)`` of one clip, in order -> ``(T, 133, 3)``, NaN where
        not found."""

    def close(self) -> None: ...


# -- MediaPipe Holistic -------------------------------------------------------------------
def _landmarks(landmark_list: Any, size: tuple[int, int], visibility: bool) -> np.ndarray | None:
    """A MediaPipe landmark list -> ``(N, 2)`` pixels (``(N, 3)`` with the visibility)."""
    if landmark_list is None:
        return None
    height, width = size
    rows = [
        (p.x * width, p.y * height, *((p.visibility,) if visibility else ()))
        for p in landmark_list.landmark
    ]
    return np.asarray(rows, dtype=np.float32)


@dataclass
class MediaPipeHolistic:
    """The ``mediapipe`` estimator (module docstring)."""

    smooth: bool = False
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    name: str = field(default="mediapipe", init=False)

    def __post_init__(self) -> None:
        try:
            import mediapipe  # optional: only this estimator needs it
        except ImportError as error:
            raise ConfigurationError(
                "--estimator mediapipe needs mediapipe 0.10.14 (Python 3.9-3.12): run the "
                "README's set-up command (bash setup.sh)"
            ) from error
        self._mediapipe = mediapipe

    def describe(self) -> dict[str, Any]:
        return {
            "estimator": self.name,
            "version": f"mediapipe {self._mediapipe.__version__}",
            "settings": {
                "solution": "holistic (legacy solutions API)",
                "model_complexity": 1,
                "static_image_mode": False,
                "smooth_landmarks": self.smooth,
                "min_detection_confidence": self.min_detection_confidence,
                "min_tracking_confidence": self.min_tracking_confidence,
            },
        }

    def clip(self, frames: Iterable[np.ndarray]) -> np.ndarray:
        with self._graph() as holistic:
            return _stack([self._frame(holistic, f) for f in frames])

    def tracker(self) -> HolisticTracker:
        """Frames one at a time through one graph (a live stream: tracking carries over from
        frame to frame as within a clip); ``close()`` it at the end."""
        return HolisticTracker(self, self._graph())

    def _graph(self) -> Any:
        return self._mediapipe.solutions.holistic.Holistic(
            static_image_mode=False,
            model_complexity=1,
            smooth_landmarks=self.smooth,
            min_detection_confidence=self.min_detection_confidence,
            min_tracking_confidence=self.min_tracking_confidence,
        )

    def _frame(self, holistic: Any, frame: np.ndarray) -> np.ndarray:
        size = frame.shape[:2]
        result = holistic.process(np.ascontiguousarray(frame))
        return frame_to_wholebody(
            HolisticFrame(
                pose=_landmarks(result.pose_landmarks, size, visibility=True),
                face=_landmarks(result.face_landmarks, size, visibility=False),
                left_hand=_landmarks(result.left_hand_landmarks, size, visibility=False),
                right_hand=_landmarks(result.right_hand_landmarks, size, visibility=False),
            )
        )

    def close(self) -> None:
        pass


@dataclass
class HolisticTracker:
    """One RGB frame ``(H, W, 3)`` -> ``(133, 3)`` (NaN where not found) per call, one graph."""

    estimator: MediaPipeHolistic
    graph: Any

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        return self.estimator._frame(self.graph, frame)

    def close(self) -> None:
        self.graph.close()


def frame_estimator(estimator: PoseEstimator) -> Callable[[np.ndarray], np.ndarray]:
    """A per-frame function of ``estimator`` for a live stream: RGB ``(H, W, 3)`` ->
    ``(133, 3)``; MediaPipe's keeps one graph (close it with ``.close()``), the others
    estimate each frame alone."""
    if isinstance(estimator, MediaPipeHolistic):
        return estimator.tracker()
    if hasattr(estimator, "frame"):
        return estimator.frame
    return lambda frame: estimator.clip([frame])[0]


def _stack(points: list[np.ndarray]) -> np.ndarray:
    """Per-frame ``(133, 3)`` -> ``(T, 133, 3)`` float32 (``(0, 133, 3)`` for no frame)."""
    if not points:
        return np.zeros((0, NUM_POINTS, 3), dtype=np.float32)
    return np.stack(points).astype(np.float32, copy=False)


# -- ONNX top-down ----------------------------------------------------------------------------
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in frame pixels


@dataclass(frozen=True)
class Normalisation:
    """How an ONNX model wants its input: channel order and per-channel mean / std."""

    rgb: bool = True
    mean: tuple[float, float, float] = RTM_MEAN
    std: tuple[float, float, float] = RTM_STD

    def apply(self, image: np.ndarray) -> np.ndarray:
        """uint8 RGB ``(H, W, 3)`` -> float32 ``(1, 3, H, W)``."""
        pixels = image if self.rgb else image[..., ::-1]
        pixels = (pixels.astype(np.float32) - np.asarray(self.mean, np.float32)) / np.asarray(
            self.std, np.float32
        )
        return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None])


def input_box(box: Box, aspect: float, padding: float) -> tuple[np.ndarray, np.ndarray]:
    """Centre and size ``(w, h)`` of the region warped to the model input.

    The box is widened by ``padding`` and then grown along one axis to the model's aspect
    ratio ``aspect`` (input width / height), as the top-down models were trained.
    """
    x0, y0, x1, y1 = box
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2], dtype=np.float64)
    width, height = (x1 - x0) * padding, (y1 - y0) * padding
    if width > height * aspect:
        height = width / aspect
    else:
        width = height * aspect
    return centre, np.array([width, height], dtype=np.float64)


def warp_matrix(centre: np.ndarray, size: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """``(2, 3)`` affine map from frame pixels to model-input pixels (``input_size`` = (w, h))."""
    scale = np.array(input_size, dtype=np.float64) / size
    offset = -(centre - size / 2) * scale
    return np.array([[scale[0], 0.0, offset[0]], [0.0, scale[1], offset[1]]])


def to_frame(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Model-input pixels ``(K, 2)`` -> frame pixels (the inverse of :func:`warp_matrix`)."""
    return (points - matrix[:, 2]) / np.diag(matrix[:, :2])


def decode_simcc(x_scores: np.ndarray, y_scores: np.ndarray, input_size: tuple[int, int]):
    """SimCC outputs ``(K, Lx)``, ``(K, Ly)`` -> input-pixel points ``(K, 2)``, scores ``(K,)``.

    The split ratio (bins per pixel) is ``Lx / input width``; the score of a point is the
    smaller of its two maxima, as RTMPose decodes, clipped to [0, 1].
    """
    split = x_scores.shape[-1] / input_size[0]
    points = np.stack([x_scores.argmax(-1), y_scores.argmax(-1)], axis=-1) / split
    scores = np.minimum(x_scores.max(-1), y_scores.max(-1))
    return points.astype(np.float64), np.clip(scores, 0.0, 1.0)


def decode_heatmaps(heatmaps: np.ndarray, input_size: tuple[int, int]):
    """Heatmaps ``(K, h, w)`` -> input-pixel points ``(K, 2)`` and scores ``(K,)``.

    The peak, moved a quarter pixel towards its larger neighbour (the usual sub-pixel
    refinement), scaled by the output stride; the score is the peak value clipped to [0, 1].
    """
    count, height, width = heatmaps.shape
    flat = heatmaps.reshape(count, -1)
    peak = flat.argmax(-1)
    y, x = np.divmod(peak, width)
    rows = np.arange(count)
    dx = np.zeros(count)
    dy = np.zeros(count)
    inner_x = (x > 0) & (x < width - 1)
    inner_y = (y > 0) & (y < height - 1)
    dx[inner_x] = (
        0.25
        * np.sign(
            heatmaps[rows, y, np.minimum(x + 1, width - 1)]
            - heatmaps[rows, y, np.maximum(x - 1, 0)]
        )[inner_x]
    )
    dy[inner_y] = (
        0.25
        * np.sign(
            heatmaps[rows, np.minimum(y + 1, height - 1), x]
            - heatmaps[rows, np.maximum(y - 1, 0), x]
        )[inner_y]
    )
    stride = np.array([input_size[0] / width, input_size[1] / height])
    points = np.stack([x + dx, y + dy], axis=-1) * stride
    return points, np.clip(flat.max(-1), 0.0, 1.0)


def choose_signer(boxes: np.ndarray, frame_size: tuple[int, int]) -> Box | None:
    """The signer among person boxes ``(N, 4)``: the largest, most central one.

    Rank = box area x (1 - distance of its centre from the frame centre / half diagonal).
    """
    if len(boxes) == 0:
        return None
    height, width = frame_size
    area = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
    centres = (boxes[:, :2] + boxes[:, 2:4]) / 2
    offset = np.linalg.norm(centres - np.array([width / 2, height / 2]), axis=1)
    centrality = 1 - offset / (0.5 * np.hypot(width, height))
    return tuple(float(v) for v in boxes[int(np.argmax(area * centrality.clip(0)))][:4])


@dataclass
class OnnxWholeBody:
    """The ``onnx`` estimator (module docstring): a 133-point top-down model and its options.

    Args:
        model: the whole-body model (input ``(1, 3, H, W)``; SimCC or heatmap outputs).
        detector: optional person detector: input ``(1, 3, H, W)``, first output
            ``(1, N, >=5)`` boxes ``x0, y0, x1, y1, score`` in its input pixels, optional
            second output ``(1, N)`` class labels (person = 0). The frame is resized into
            its input keeping the aspect ratio (padded at the right and bottom).
        device: ``cpu`` or ``cuda`` (onnxruntime's CUDA provider).
        normalisation, detector_normalisation: the models' input conventions.
        padding: box widening before the crop.
        min_box_score: detections below it are ignored.
    """

    model: Path
    detector: Path | None = None
    device: str = "cpu"
    normalisation: Normalisation = Normalisation()
    detector_normalisation: Normalisation = Normalisation()
    padding: float = 1.25
    min_box_score: float = 0.3
    name: str = field(default="onnx", init=False)

    def __post_init__(self) -> None:
        import onnxruntime  # optional: only this estimator needs it

        self._onnxruntime = onnxruntime
        self._pose = self._session(self.model)
        shape = self._pose.get_inputs()[0].shape
        if len(shape) != 4 or not all(isinstance(v, int) for v in shape[2:]):
            raise DataError(
                f"{self.model}: expected an input (1, 3, H, W) of fixed H, W, got {shape}"
            )
        self.input_size = (shape[3], shape[2])  # (w, h)
        self._detector = None if self.detector is None else self._session(self.detector)

    def _session(self, path: Path):
        path = Path(path)
        if not path.is_file():
            raise DataError(f"ONNX model {path} does not exist")
        providers = ["CUDAExecutionProvider"] if self.device == "cuda" else []
        try:
            return self._onnxruntime.InferenceSession(
                str(path), providers=[*providers, "CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own types for unreadable models
            raise DataError(f"cannot load ONNX model {path}: {error}") from error

    def describe(self) -> dict[str, Any]:
        return {
            "estimator": self.name,
            "version": f"onnxruntime {self._onnxruntime.__version__}",
            "settings": {
                "model": str(self.model),
                "detector": None if self.detector is None else str(self.detector),
                "input_size": list(self.input_size),
                "padding": self.padding,
                "normalisation": vars(self.normalisation),
            },
        }

    def clip(self, frames: Iterable[np.ndarray]) -> np.ndarray:
        return _stack([self.frame(f) for f in frames])

    def frame(self, frame: np.ndarray) -> np.ndarray:
        """One RGB frame -> ``(133, 3)`` (NaN without a person)."""
        height, width = frame.shape[:2]
        box = (0.0, 0.0, float(width), float(height))
        if self._detector is not None:
            box = choose_signer(self.person_boxes(frame), (height, width))
            if box is None:
                return _no_person()
        centre, size = input_box(box, self.input_size[0] / self.input_size[1], self.padding)
        matrix = warp_matrix(centre, size, self.input_size)
        crop = cv2.warpAffine(frame, matrix, self.input_size, flags=cv2.INTER_LINEAR)
        outputs = self._pose.run(
            None, {self._pose.get_inputs()[0].name: self.normalisation.apply(crop)}
        )
        points, scores = self._decode(outputs)
        if len(points) != NUM_POINTS:
            raise DataError(f"{self.model}: gives {len(points)} points, expected {NUM_POINTS}")
        result = np.empty((NUM_POINTS, 3), dtype=np.float32)
        result[:, :2] = to_frame(points, matrix)
        result[:, 2] = scores
        return result

    def _decode(self, outputs: list[np.ndarray]):
        if len(outputs) >= 2 and outputs[0].ndim == 3:
            return decode_simcc(outputs[0][0], outputs[1][0], self.input_size)
        if outputs[0].ndim == 4:
            return decode_heatmaps(outputs[0][0], self.input_size)
        shapes = [o.shape for o in outputs]
        raise DataError(f"{self.model}: outputs {shapes} are neither SimCC (x, y) nor heatmaps")

    def person_boxes(self, frame: np.ndarray) -> np.ndarray:
        """Person boxes ``(N, 4)`` in frame pixels from the detector."""
        shape = self._detector.get_inputs()[0].shape
        in_h, in_w = shape[2], shape[3]
        scale = min(in_w / frame.shape[1], in_h / frame.shape[0])
        resized = cv2.resize(frame, (round(frame.shape[1] * scale), round(frame.shape[0] * scale)))
        canvas = np.full((in_h, in_w, 3), 114, dtype=np.uint8)
        canvas[: resized.shape[0], : resized.shape[1]] = resized
        feed = {self._detector.get_inputs()[0].name: self.detector_normalisation.apply(canvas)}
        outputs = self._detector.run(None, feed)
        boxes = outputs[0][0]
        keep = boxes[:, 4] >= self.min_box_score
        if len(outputs) > 1:
            keep &= outputs[1][0].reshape(-1) == 0
        return boxes[keep, :4] / scale


def _no_person() -> np.ndarray:
    points = np.full((NUM_POINTS, 3), np.nan, dtype=np.float32)
    points[:, 2] = 0.0
    return points


ESTIMATORS: Mapping[str, Callable[..., PoseEstimator]] = MappingProxyType(
    {"mediapipe": MediaPipeHolistic, "onnx": OnnxWholeBody}
)
"""``--estimator`` name -> the estimator class (its keyword options)."""


def build_estimator(name: str, **options: Any) -> PoseEstimator:
    """The estimator ``name`` (exact); an unknown name lists the valid ones."""
    if name not in ESTIMATORS:
        raise ConfigurationError(
            f"--estimator: unknown estimator {name!r}; valid: {', '.join(ESTIMATORS)}"
        )
    return ESTIMATORS[name](**options)
