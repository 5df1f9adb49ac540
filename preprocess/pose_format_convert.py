"""Convert between a folder of ``.pose`` files and the keypoint pickle, both ways.

    python -m preprocess.pose_format_convert to-pose data/x-keypoints.pkl poses/ [--fps 25]
    python -m preprocess.pose_format_convert to-pickle poses/ data/x-keypoints.pkl

``.pose`` is the file format of the sign-language-processing toolkit (the ``pose-format``
package): one file per video. Its MediaPipe Holistic layout has the components
``POSE_LANDMARKS`` (33), ``FACE_LANDMARKS`` (468), ``LEFT_HAND_LANDMARKS`` and
``RIGHT_HAND_LANDMARKS`` (21 each); it is related to the 133 COCO-WholeBody points by the
mapping of :mod:`preprocess.holistic_mapping`.

* ``.pose`` -> pickle: the extractor's mapping (body from the pose, the 68 face points from
  the mesh, hands by their wrist), the confidence as the score, missing points filled in
  as the extractor fills them; each clip checked as keypoints are where they enter
  (docs/data.md: non-finite or far-away points of seen points filled in and logged, a clip
  with no point seen left out with a warning naming its file). Lost: the 400 mesh points that are not among the 68, the 16
  pose points without a COCO counterpart (inner / outer eye corners, mouth corners, the
  pose's own finger and foot points), and depth.
* pickle -> ``.pose``: the 17 body points with a pose counterpart, heels and big toes into
  ``POSE_LANDMARKS``, the 68 face points into their mesh indices, the hands as they are;
  the score becomes the confidence, and every other point has confidence 0 (masked). Lost:
  the small toes (no pose counterpart); the rest of the mesh was never there.

A file ``<name>.pose`` per sample; ``/`` in sample names (``train/clip``) becomes ``__``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pose_format import Pose
from pose_format.numpy import NumPyPoseBody
from pose_format.pose_header import PoseHeader, PoseHeaderComponent, PoseHeaderDimensions

# run by its path (python preprocess/x.py) as well as with python -m: the first form puts
# preprocess/, not the repository, on the import path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset.keypoints import check_keypoints
from preprocess.holistic_mapping import (
    FACE,
    FACE_MESH_68,
    LEFT_HAND,
    NUM_POINTS,
    POSE_SOURCES,
    RIGHT_HAND,
)
from utils.cli import run_command
from utils.errors import DataError
from utils.files import atomic_pickle, atomic_write, read_pickle

logger = logging.getLogger(__name__)

POSE_NAMES = (
    "NOSE", "LEFT_EYE_INNER", "LEFT_EYE", "LEFT_EYE_OUTER", "RIGHT_EYE_INNER", "RIGHT_EYE",
    "RIGHT_EYE_OUTER", "LEFT_EAR", "RIGHT_EAR", "MOUTH_LEFT", "MOUTH_RIGHT", "LEFT_SHOULDER",
    "RIGHT_SHOULDER", "LEFT_ELBOW", "RIGHT_ELBOW", "LEFT_WRIST", "RIGHT_WRIST", "LEFT_PINKY",
    "RIGHT_PINKY", "LEFT_INDEX", "RIGHT_INDEX", "LEFT_THUMB", "RIGHT_THUMB", "LEFT_HIP",
    "RIGHT_HIP", "LEFT_KNEE", "RIGHT_KNEE", "LEFT_ANKLE", "RIGHT_ANKLE", "LEFT_HEEL",
    "RIGHT_HEEL", "LEFT_FOOT_INDEX", "RIGHT_FOOT_INDEX",
)  # fmt: skip
HAND_NAMES = (
    "WRIST", "THUMB_CMC", "THUMB_MCP", "THUMB_IP", "THUMB_TIP", "INDEX_FINGER_MCP",
    "INDEX_FINGER_PIP", "INDEX_FINGER_DIP", "INDEX_FINGER_TIP", "MIDDLE_FINGER_MCP",
    "MIDDLE_FINGER_PIP", "MIDDLE_FINGER_DIP", "MIDDLE_FINGER_TIP", "RING_FINGER_MCP",
    "RING_FINGER_PIP", "RING_FINGER_DIP", "RING_FINGER_TIP", "PINKY_MCP", "PINKY_PIP",
    "PINKY_DIP", "PINKY_TIP",
)  # fmt: skip
POSE_LIMBS = (
    (11, 12), (11, 13), (13, 15), (12, 14), (14, 16), (11, 23), (12, 24), (23, 24),
    (23, 25), (25, 27), (24, 26), (26, 28), (27, 29), (28, 30), (27, 31), (28, 32),
    (0, 2), (0, 5), (2, 7), (5, 8), (9, 10),
)  # fmt: skip
HAND_LIMBS = tuple(
    (0 if j == 0 else 1 + 4 * f + j - 1, 1 + 4 * f + j) for f in range(5) for j in range(4)
)
COMPONENTS = (
    ("POSE_LANDMARKS", POSE_NAMES, POSE_LIMBS, (255, 200, 0)),
    ("FACE_LANDMARKS", tuple(str(i) for i in range(468)), (), (200, 200, 200)),
    ("LEFT_HAND_LANDMARKS", HAND_NAMES, HAND_LIMBS, (255, 120, 60)),
    ("RIGHT_HAND_LANDMARKS", HAND_NAMES, HAND_LIMBS, (60, 220, 90)),
)
OFFSETS = {
    "POSE_LANDMARKS": 0,
    "FACE_LANDMARKS": 33,
    "LEFT_HAND_LANDMARKS": 501,
    "RIGHT_HAND_LANDMARKS": 522,
}
HOLISTIC_POINTS = 543


def holistic_header(width: int, height: int) -> PoseHeader:
    """A pose-format header of the MediaPipe Holistic layout, x y and confidence per point."""
    components = [
        PoseHeaderComponent(name, list(points), list(limbs), [colour], "XYC")
        for name, points, limbs, colour in COMPONENTS
    ]
    return PoseHeader(0.1, PoseHeaderDimensions(width=width, height=height, depth=0), components)


def correspondence() -> tuple[np.ndarray, np.ndarray]:
    """(COCO-WholeBody indices, Holistic-layout indices) of the points both layouts have."""
    coco = [k for k, source in enumerate(POSE_SOURCES) if source >= 0]
    holistic = [POSE_SOURCES[k] for k in coco]
    coco += list(range(FACE.start, FACE.stop))
    holistic += [OFFSETS["FACE_LANDMARKS"] + i for i in FACE_MESH_68]
    for part, name in ((LEFT_HAND, "LEFT_HAND_LANDMARKS"), (RIGHT_HAND, "RIGHT_HAND_LANDMARKS")):
        coco += list(range(part.start, part.stop))
        holistic += [OFFSETS[name] + i for i in range(21)]
    return np.array(coco), np.array(holistic)


def wholebody_to_holistic(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(T, 133, 3)`` -> Holistic-layout ``(T, 543, 2)`` positions and ``(T, 543)`` confidence."""
    coco, holistic = correspondence()
    data = np.zeros((len(points), HOLISTIC_POINTS, 2), dtype=np.float32)
    confidence = np.zeros((len(points), HOLISTIC_POINTS), dtype=np.float32)
    data[:, holistic] = points[:, coco, :2]
    confidence[:, holistic] = points[:, coco, 2]
    return data, confidence


def holistic_to_points(
    data: np.ndarray, confidence: np.ndarray, size: tuple[int, int], where: str = "the clip"
) -> np.ndarray:
    """Holistic-layout ``(T, 543, >=2)`` and ``(T, 543)`` -> ``(T, 133, 3)``, filled.

    A point with confidence 0 counts as not seen and is filled in as the extractor fills;
    the rest is checked as keypoints are where they enter
    (:func:`dataset.keypoints.check_keypoints`: non-finite or far-away points of a seen
    point are filled in and logged; a clip with nothing seen is refused, naming ``where``).
    """
    coco, holistic = correspondence()
    points = np.full((len(data), NUM_POINTS, 3), np.nan, dtype=np.float32)
    points[..., 2] = 0.0
    points[:, coco, :2] = data[:, holistic, :2]
    points[:, coco, 2] = confidence[:, holistic]
    undetected = ~(points[..., 2] > 0)  # a NaN confidence is no detection either
    points[undetected] = [np.nan, np.nan, 0.0]
    checked, repair = check_keypoints(points, where, size, undetected=undetected)
    if repair.repaired:
        logger.warning("%s: %s", where, repair.describe())
    return checked


def file_name(sample: str) -> str:
    return sample.replace("/", "__") + ".pose"


def pickle_to_pose(pickle_path: str | Path, folder: str | Path, fps: float = 25.0) -> int:
    """Write one ``.pose`` file per clip of a keypoint pickle; returns the number of clips."""
    pickle_path, folder = Path(pickle_path), Path(folder)
    entries = read_pickle(pickle_path, "keypoint file", "a dict name -> {'keypoints': ...}", dict)
    sizes = _frame_sizes(pickle_path)
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for name, entry in entries.items():
        where = f"keypoint file {pickle_path}, clip '{name}'"
        try:
            if not isinstance(entry, dict) or "keypoints" not in entry:
                raise DataError(f"{where}: expected a dict with a 'keypoints' array")
            points, repair = check_keypoints(entry["keypoints"], where, sizes.get(name))
        except DataError as error:
            logger.warning("refused, no .pose file written: %s", error)
            continue
        if repair.repaired:
            logger.warning("%s: %s", where, repair.describe())
        height, width = sizes.get(name) or _extent(points)
        data, confidence = wholebody_to_holistic(points)
        body = NumPyPoseBody(fps=fps, data=data[:, None], confidence=confidence[:, None])
        pose = Pose(holistic_header(int(width), int(height)), body)
        atomic_write(folder / file_name(name), pose.write)
        written += 1
    return written


def pose_to_pickle(folder: str | Path, pickle_path: str | Path) -> int:
    """Read every ``.pose`` file of ``folder`` (Holistic layout) into one keypoint pickle."""
    folder = Path(folder)
    files = sorted(folder.glob("*.pose"))
    if not files:
        raise DataError(f"folder {folder} holds no .pose file")
    entries = {}
    for path in files:
        pose = _read_pose(path)
        data = np.asarray(
            pose.body.data.filled(0) if hasattr(pose.body.data, "filled") else pose.body.data
        )
        confidence = np.asarray(pose.body.confidence)
        dimensions = pose.header.dimensions
        size = (dimensions.height, dimensions.width)
        try:
            points = holistic_to_points(data[:, 0], confidence[:, 0], size, f"pose file {path}")
        except DataError as error:
            logger.warning("refused, left out of the keypoint file: %s", error)
            continue
        entries[path.stem.replace("__", "/")] = {"keypoints": points}
    if not entries:
        raise DataError(f"no usable clip among the {len(files)} .pose files of {folder}")
    atomic_pickle(entries, pickle_path)
    return len(entries)


def _read_pose(path: Path) -> Pose:
    try:
        pose = Pose.read(path.read_bytes())
    except Exception as error:  # pose-format raises many types for a damaged file
        raise DataError(f"cannot read pose file {path}: {error}") from error
    names = [c.name for c in pose.header.components]
    expected = [name for name, *_ in COMPONENTS]
    if names[: len(expected)] != expected or pose.header.total_points() < HOLISTIC_POINTS:
        raise DataError(
            f"pose file {path}: components {names}, expected the MediaPipe Holistic layout "
            f"{expected} (468 face points)"
        )
    return pose


def _frame_sizes(pickle_path: Path) -> dict[str, tuple[int, int]]:
    sidecar = pickle_path.with_name(pickle_path.name + ".json")
    if not sidecar.is_file():
        return {}
    return {
        n: tuple(s)
        for n, s in json.loads(sidecar.read_text("utf-8")).get("frame_sizes", {}).items()
    }


def _extent(points: np.ndarray) -> tuple[int, int]:
    """(height, width) that holds every point (when the frame size is not recorded)."""
    return int(np.ceil(points[..., 1].max())) + 1, int(np.ceil(points[..., 0].max())) + 1


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("direction", choices=("to-pose", "to-pickle"))
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--fps", type=float, default=25.0, help="to-pose: frames per second")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    if args.direction == "to-pose":
        count = pickle_to_pose(args.source, args.target, args.fps)
    else:
        count = pose_to_pickle(args.source, args.target)
    print(f"{count} clips: {args.source} -> {args.target} (clips refused or filled in: above)")


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
