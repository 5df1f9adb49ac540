"""The pose estimators: MediaPipe Holistic on a real photograph, ONNX on graphs built here."""

from pathlib import Path

import cv2
import matplotlib
import numpy as np
import pytest

from preprocess.pose_estimators import (
    ESTIMATORS,
    Normalisation,
    OnnxWholeBody,
    build_estimator,
    choose_signer,
    decode_heatmaps,
    decode_simcc,
    frame_estimator,
    input_box,
    to_frame,
    warp_matrix,
)
from utils.errors import ConfigurationError, DataError

GRACE = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
# Read off the 512 x 600 photograph by eye (a grid drawn over it), independently of any
# estimator: (x0, y0, x1, y1) boxes around each point, in pixels.
BOXES = {
    0: (245, 205, 290, 250),  # nose
    1: (285, 170, 330, 215),  # left eye: the person's left, on the image's right
    2: (200, 175, 250, 220),  # right eye
    5: (400, 370, 500, 460),  # left shoulder
    6: (40, 370, 140, 460),  # right shoulder
}


def _inside(point: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    image = cv2.imread(str(GRACE))
    if image is None:
        pytest.skip(f"{GRACE} (matplotlib's sample photograph) is absent")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def holistic():
    pytest.importorskip("mediapipe", reason="mediapipe 0.10.14 is installed by setup.sh")
    return build_estimator("mediapipe")


def test_estimators_are_chosen_by_exact_name():
    assert list(ESTIMATORS) == ["mediapipe", "onnx"]
    with pytest.raises(ConfigurationError, match="valid: mediapipe, onnx"):
        build_estimator("mediapipe-heavy")


def test_holistic_finds_the_face_and_shoulders_of_the_photograph(photo, holistic):
    points = holistic.clip([photo])[0]
    assert points.shape == (133, 3) and photo.shape == (600, 512, 3)
    for index, box in BOXES.items():
        assert _inside(points[index], box), (index, points[index])
        assert points[index, 2] > 0.9
    assert points[1, 0] > points[2, 0] and points[5, 0] > points[6, 0]  # left on the right
    assert _inside(points[53], BOXES[0])  # the face mesh's nose tip (68-point 30)
    assert np.isnan(points[91:, 0]).all()  # no hand in the picture


def test_holistic_follows_a_moving_photograph(photo, holistic):
    """Frames of the photo pasted at known offsets: the points move by those offsets.

    Measured errors (this machine, Holistic 0.10.14, smoothing off): pose face points up to
    16 px, shoulders up to 21 px, the face mesh's nose tip up to 3.5 px. Tolerances: 25, 30, 6.
    """
    height, width = photo.shape[:2]
    offsets = [(0, 0), (8, 4), (16, 8), (24, 12), (32, 16), (40, 20)]
    frames = []
    for dx, dy in offsets:
        canvas = np.zeros((height + 40, width + 60, 3), np.uint8)
        canvas[dy : dy + height, dx : dx + width] = photo
        frames.append(canvas)
    points = holistic.clip(frames)
    for index, tolerance in ((0, 25), (1, 25), (2, 25), (5, 30), (6, 30), (53, 6)):
        moved = points[:, index, :2] - points[0, index, :2]
        errors = np.linalg.norm(moved - np.array(offsets), axis=1)
        assert errors.max() <= tolerance, (index, errors.round(1))


def test_frame_by_frame_the_tracker_gives_the_points_of_the_clip(photo, holistic):
    """A live stream's frames one at a time through one graph: the clip's points."""
    frames = [photo, np.ascontiguousarray(photo[:, 4:]), photo]
    whole = holistic.clip(frames)
    tracker = frame_estimator(holistic)
    one_by_one = np.stack([tracker(frame) for frame in frames])
    tracker.close()
    np.testing.assert_allclose(one_by_one, whole, atol=1e-3)
    assert np.isfinite(one_by_one[:, 0, :2]).all()


def test_coordinates_are_in_the_pixels_of_the_frame_as_given(photo, holistic):
    """The photo at half size: the points at half the coordinates (measured up to 10 px)."""
    full = holistic.clip([photo])[0]
    half = holistic.clip([cv2.resize(photo, (256, 300), interpolation=cv2.INTER_AREA)])[0]
    for index in (0, 1, 2, 5, 6, 53):
        assert np.linalg.norm(half[index, :2] * 2 - full[index, :2]) <= 15, index


def test_a_mirrored_photograph_is_labelled_by_appearance(photo, holistic):
    """A mirror image looks like a person: its 'left' eye is again on the image's right.

    Mirrored (selfie) videos therefore need ``--mirrored``, which swaps the sides.
    """
    flipped = holistic.clip([np.ascontiguousarray(photo[:, ::-1])])[0]
    assert flipped[1, 0] > flipped[2, 0]
    width = photo.shape[1]
    assert _inside((width - flipped[2, 0], flipped[2, 1]), BOXES[1])  # the real left eye


# -- ONNX: the crop, the back-transform and the decoding on built graphs ----------------------
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

INPUT_W, INPUT_H = 96, 128


def _save(graph, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _pose_graph(path: Path, kind: str) -> Path:
    """133 identical maps of the input's channel mean: the brightest pixel is every point.

    ``simcc``: x / y distributions (split 2: every input column / row twice); ``heatmap``:
    every 4th pixel (stride 4).
    """
    source = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, INPUT_H, INPUT_W])
    nodes = [helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1], keepdims=1)]
    consts = [helper.make_tensor("repeat", TensorProto.INT64, [3], [1, 133, 1])]
    if kind == "simcc":
        consts.append(helper.make_tensor("two", TensorProto.FLOAT, [3], [1, 1, 2]))
        nodes += [
            helper.make_node("ReduceMax", ["mean"], ["cols"], axes=[2], keepdims=0),  # (1,1,W)
            helper.make_node("ReduceMax", ["mean"], ["rows"], axes=[3], keepdims=0),  # (1,1,H)
            helper.make_node("Resize", ["cols", "", "two"], ["cols2"], mode="nearest"),
            helper.make_node("Resize", ["rows", "", "two"], ["rows2"], mode="nearest"),
            helper.make_node("Tile", ["cols2", "repeat"], ["simcc_x"]),
            helper.make_node("Tile", ["rows2", "repeat"], ["simcc_y"]),
        ]
        outputs = [
            helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [1, 133, 2 * INPUT_W]),
            helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [1, 133, 2 * INPUT_H]),
        ]
    else:
        consts += [
            helper.make_tensor("starts", TensorProto.INT64, [2], [0, 0]),
            helper.make_tensor("ends", TensorProto.INT64, [2], [INPUT_H, INPUT_W]),
            helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3]),
            helper.make_tensor("steps", TensorProto.INT64, [2], [4, 4]),
            helper.make_tensor("repeat4", TensorProto.INT64, [4], [1, 133, 1, 1]),
        ]
        nodes += [
            helper.make_node("Slice", ["mean", "starts", "ends", "axes", "steps"], ["sampled"]),
            helper.make_node("Tile", ["sampled", "repeat4"], ["heatmaps"]),
        ]
        shape = [1, 133, INPUT_H // 4, INPUT_W // 4]
        outputs = [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, shape)]
    return _save(helper.make_graph(nodes, kind, [source], outputs, initializer=consts), path)


def _detector_graph(path: Path, boxes: list[list[float]], labels: list[int]) -> Path:
    """A detector answering the same boxes (its input pixels) whatever it sees."""
    source = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 64, 64])
    dets = helper.make_tensor("dets_value", TensorProto.FLOAT, [1, len(boxes), 5], sum(boxes, []))
    classes = helper.make_tensor("labels_value", TensorProto.INT64, [1, len(labels)], labels)
    nodes = [
        helper.make_node("Identity", ["dets_value"], ["dets"]),
        helper.make_node("Identity", ["labels_value"], ["labels"]),
    ]
    outputs = [
        helper.make_tensor_value_info("dets", TensorProto.FLOAT, [1, len(boxes), 5]),
        helper.make_tensor_value_info("labels", TensorProto.INT64, [1, len(labels)]),
    ]
    graph = helper.make_graph(nodes, "detector", [source], outputs, initializer=[dets, classes])
    return _save(graph, path)


def _dot(size: tuple[int, int], x: int, y: int, radius: int = 1) -> np.ndarray:
    frame = np.zeros((*size, 3), np.uint8)
    frame[y - radius : y + radius + 1, x - radius : x + radius + 1] = 255
    return frame


def test_the_crop_matrix_and_its_inverse():
    centre, size = input_box((10, 20, 110, 220), aspect=0.75, padding=1.25)
    np.testing.assert_allclose(centre, [60, 120])
    np.testing.assert_allclose(size, [187.5, 250])  # 125 x 250, widened to aspect 0.75
    matrix = warp_matrix(centre, size, (96, 128))
    corners = np.array([[centre[0] - size[0] / 2, centre[1] - size[1] / 2], centre])
    mapped = corners @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(mapped, [[0, 0], [48, 64]])
    np.testing.assert_allclose(to_frame(mapped, matrix), corners)


def test_simcc_and_heatmap_decoding():
    x, y = np.zeros((2, 20)), np.zeros((2, 30))
    x[0, 7], y[0, 12], x[1, 19], y[1, 0] = 0.8, 0.6, 3.0, 2.0
    points, scores = decode_simcc(x, y, (10, 15))
    np.testing.assert_allclose(points, [[3.5, 6.0], [9.5, 0.0]])
    np.testing.assert_allclose(scores, [0.6, 1.0])
    maps = np.zeros((1, 8, 6))
    maps[0, 3, 2], maps[0, 3, 3] = 0.9, 0.5  # the right neighbour is larger than the left
    points, scores = decode_heatmaps(maps, (24, 32))
    np.testing.assert_allclose(points, [[(2 + 0.25) * 4, 3 * 4]])
    np.testing.assert_allclose(scores, [0.9])


@pytest.mark.parametrize(("kind", "radius", "tolerance"), [("simcc", 1, 2.8), ("heatmap", 6, 11.0)])
def test_onnx_finds_a_dot_through_crop_model_and_back_transform(tmp_path, kind, radius, tolerance):
    """The whole frame is the box: the dot's frame position comes back. The 210 x 260 frame,
    widened by 1.25, is 262.5 x 350 frame pixels in the 96 x 128 input (0.366 input pixels a
    frame pixel): SimCC within one input pixel (2.8 frame pixels), heatmaps within their
    stride of 4 input pixels (11 frame pixels; their dot is 13 pixels wide, so that the
    every-4th-pixel map sees it)."""
    estimator = OnnxWholeBody(_pose_graph(tmp_path / f"{kind}.onnx", kind))
    assert estimator.input_size == (INPUT_W, INPUT_H)
    for x, y in ((50, 60), (150, 200), (20, 240)):
        points = estimator.clip([_dot((260, 210), x, y, radius)])[0]
        assert points.shape == (133, 3)
        assert np.abs(points[:, :2] - [x, y]).max() <= tolerance, points[0]
        assert (points[:, 2] == 1).all()  # bright: the maxima are above 1, clipped


def test_onnx_with_a_detector_crops_the_signer(tmp_path):
    """Two people: the small one in a corner is ignored, the dot in the central one found."""
    pose = _pose_graph(tmp_path / "simcc.onnx", "simcc")
    # detector input 64 x 64; the 260 x 210 frame is scaled by 64 / 260 into it
    scale = 64 / 260
    boxes = [
        [0, 0, 20 * scale, 20 * scale, 0.9],
        [40 * scale, 40 * scale, 170 * scale, 220 * scale, 0.8],
    ]
    detector = _detector_graph(tmp_path / "det.onnx", boxes, [0, 0])
    estimator = OnnxWholeBody(pose, detector=detector)
    frame = _dot((260, 210), 100, 150)
    frame[3:6, 3:6] = 255  # a brighter corner would win a whole-frame crop: it is outside
    np.testing.assert_allclose(estimator.person_boxes(frame)[1], [40, 40, 170, 220], atol=1e-4)
    points = estimator.clip([frame])[0]
    assert np.abs(points[0, :2] - [100, 150]).max() <= 1.5


def test_no_person_gives_nan_and_score_zero(tmp_path):
    detector = _detector_graph(tmp_path / "det.onnx", [[0, 0, 10, 10, 0.1]], [0])  # too unsure
    estimator = OnnxWholeBody(_pose_graph(tmp_path / "p.onnx", "simcc"), detector=detector)
    points = estimator.clip([_dot((260, 210), 50, 50)])[0]
    assert np.isnan(points[:, 0]).all() and (points[:, 2] == 0).all()


def test_the_signer_is_the_largest_most_central_person():
    boxes = np.array([[0, 0, 60, 60], [70, 60, 150, 200], [150, 0, 210, 120]], float)
    assert choose_signer(boxes, (260, 210)) == (70.0, 60.0, 150.0, 200.0)
    assert choose_signer(np.zeros((0, 4)), (260, 210)) is None


def test_onnx_models_that_do_not_fit_are_refused(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        OnnxWholeBody(tmp_path / "absent.onnx")
    (tmp_path / "garbage.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(DataError, match="cannot load ONNX model"):
        OnnxWholeBody(tmp_path / "garbage.onnx")


def test_normalisation_orders_and_scales_channels():
    image = np.zeros((2, 3, 3), np.uint8)
    image[..., 0] = 255
    rgb = Normalisation().apply(image)
    bgr = Normalisation(rgb=False).apply(image)
    assert rgb.shape == (1, 3, 2, 3)
    assert rgb[0, 0, 0, 0] == pytest.approx((255 - 123.675) / 58.395)
    assert bgr[0, 2, 0, 0] == pytest.approx((255 - 103.53) / 57.375)
