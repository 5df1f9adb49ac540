"""COCO-WholeBody keypoints (133 points from HRNet) and the published part selection.

The published keypoint file is a pickle of ``dict[sample name, {'keypoints': (T, 133, 3)}]``
with ``(x, y, score)`` in pixels of the raw frame. A model uses a few body parts:

* ``pose``: points 0..10 (body: nose, eyes, ears, shoulders, elbows, wrists)
* ``hand``: points 91..132 (both hands)
* ``mouth``: points 71..90
* ``face_others``: points 23..70 (face contour, brows, nose, eyes)

``<part>_half`` keeps every 2nd point of the part and ``<part>_1_3`` every 3rd (for
``hand``, ``mouth`` and ``face_others``). Parts are concatenated in *sorted name order*,
whatever the order they are listed in, as in the published code.

Keypoints are checked where they enter (:func:`check_keypoints`: the keypoint file of a
config, ``translate.py --keypoints``, ``.pose`` files): a clip's non-finite coordinates,
frames with every point at (0, 0) and points far outside the frame are treated as not
detected and filled in as the extractor fills undetected points (:func:`fill_missing`,
score 0), with a logged count; a clip of the wrong shape, without any point, or with most
of its points unusable is refused with a message naming the file, the clip and the frames
(docs/data.md, "Keypoints that are missing or broken").
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

from utils.errors import ConfigurationError, DataError
from utils.files import read_pickle

logger = logging.getLogger(__name__)

NUM_WHOLEBODY_POINTS = 133
BODY = slice(0, 17)
FEET = slice(17, 23)
FACE = slice(23, 91)
LEFT_HAND = slice(91, 112)
RIGHT_HAND = slice(112, 133)
LEFT_WRIST, RIGHT_WRIST = 9, 10
MOST_UNUSABLE = 0.5  # a clip with more than this share of its points unusable is refused
LISTED_CLIPS = 20  # clips named one by one in the log of a keypoint file; the rest counted


def _part_table() -> MappingProxyType[str, tuple[int, ...]]:
    base = {
        "pose": tuple(range(0, 11)),
        "hand": tuple(range(91, 133)),
        "mouth": tuple(range(71, 91)),
        "face_others": tuple(range(23, 71)),
    }
    table = dict(base)
    for part in ("mouth", "face_others", "hand"):
        table[f"{part}_half"] = base[part][::2]
        table[f"{part}_1_3"] = base[part][::3]
    return MappingProxyType(table)


KEYPOINT_PARTS = _part_table()
"""Part name -> indices into the 133 COCO-WholeBody points (read-only)."""


def keypoint_indices(parts: Iterable[str]) -> np.ndarray:
    """Indices of the selected points, parts in sorted name order: int64 ``(N,)``."""
    parts = list(parts)
    unknown = [p for p in parts if p not in KEYPOINT_PARTS]
    if unknown:
        raise ConfigurationError(
            f"unknown keypoint part(s) {unknown}; valid parts: {sorted(KEYPOINT_PARTS)}"
        )
    if not parts:
        raise ConfigurationError(
            f"no keypoint parts selected; choose among {sorted(KEYPOINT_PARTS)}"
        )
    return np.array([i for p in sorted(parts) for i in KEYPOINT_PARTS[p]], dtype=np.int64)


def count_keypoints(parts: Iterable[str]) -> int:
    """Number of points the selection gives (e.g. 79 for the published TwoStream parts)."""
    return len(keypoint_indices(parts))


def select_keypoints(keypoints: np.ndarray, parts: Iterable[str]) -> np.ndarray:
    """``(T, 133, 3)`` -> ``(T, N, 3)`` float32 for the selected parts."""
    return np.ascontiguousarray(keypoints[:, keypoint_indices(parts)], dtype=np.float32)


# -- filling in points without a detection --------------------------------------------------
def _anchors() -> tuple[int, ...]:
    """For every point, where it goes when it is found in no frame (-1: the frame centre)."""
    anchor = [-1] * NUM_WHOLEBODY_POINTS
    # a body point goes to its neighbour towards the nose; the nose to the frame centre
    body = {1: 0, 2: 0, 3: 1, 4: 2, 5: 0, 6: 0, 7: 5, 8: 6, 9: 7, 10: 8}
    body |= {11: 5, 12: 6, 13: 11, 14: 12, 15: 13, 16: 14}
    for point, neighbour in body.items():
        anchor[point] = neighbour
    for toe, ankle in ((17, 15), (19, 15), (20, 16), (22, 16)):
        anchor[toe] = ankle
    anchor[18], anchor[21] = 17, 20  # small toes: the big toe
    for point in range(FACE.start, FACE.stop):
        anchor[point] = 0  # the nose
    for point in range(LEFT_HAND.start, LEFT_HAND.stop):
        anchor[point] = LEFT_WRIST
    for point in range(RIGHT_HAND.start, RIGHT_HAND.stop):
        anchor[point] = RIGHT_WRIST
    return tuple(anchor)


ANCHORS = _anchors()


def fill_missing(points: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """Place every point without a detection (NaN coordinates).

    A point is interpolated in time between the frames where it was found (held at the
    first / last such frame); a point found in no frame of the clip goes to its anchor
    (:data:`ANCHORS`: a hand to its wrist, a small toe to the big toe, the face to the
    nose, a body point to its neighbour), and to the frame centre when the anchors have
    nothing either. Never (0, 0): the published configs render every point whatever its
    score, and a point there would draw a blob in a corner of the heatmaps.

    Args:
        points: ``(T, 133, 3)`` with NaN coordinates where nothing was found.
        frame_size: ``(height, width)``, for the frame centre.

    Returns:
        ``(T, 133, 3)`` float32 without NaN; the scores are unchanged.
    """
    if points.ndim != 3 or points.shape[1:] != (NUM_WHOLEBODY_POINTS, 3):
        raise ValueError(f"expected (T, {NUM_WHOLEBODY_POINTS}, 3) points, got {points.shape}")
    points = points.astype(np.float32, copy=True)
    time = np.arange(len(points))
    found = ~np.isnan(points[..., 0])  # (T, 133)
    never = [k for k in range(NUM_WHOLEBODY_POINTS) if not found[:, k].any()]
    for k in np.flatnonzero(found.any(0)):
        seen = found[:, k]
        if seen.all():
            continue
        for axis in (0, 1):
            points[:, k, axis] = np.interp(time, time[seen], points[seen, k, axis])
    centre = np.array([frame_size[1] / 2, frame_size[0] / 2], dtype=np.float32)
    for k in sorted(never, key=_anchor_depth):
        anchor = ANCHORS[k]
        defined = anchor >= 0 and not np.isnan(points[0, anchor, 0])
        points[:, k, :2] = points[:, anchor, :2] if defined else centre
    return points


def _anchor_depth(point: int) -> int:
    """How many anchors lie between ``point`` and a point without one (fill those first)."""
    depth = 0
    while ANCHORS[point] >= 0:  # the anchors form a tree rooted at the nose
        point, depth = ANCHORS[point], depth + 1
    return depth


# -- checking a clip where it enters -------------------------------------------------------
@dataclass
class KeypointRepair:
    """What :func:`check_keypoints` filled in, counted over the points a model uses."""

    non_finite: int = 0  # (frame, point) pairs with a NaN / infinite coordinate or score
    empty_frames: int = 0  # frames with every point at (0, 0)
    far_outside: int = 0  # (frame, point) pairs more than a frame's size outside the frame
    frames: list[int] = field(default_factory=list)  # frames with a point filled in

    @property
    def repaired(self) -> bool:
        return bool(self.frames)

    def describe(self) -> str:
        """``'20 non-finite points in frames 3-7 filled in (…)'``; counts are (frame, point) pairs."""
        counts = [
            f"{self.non_finite} non-finite point{'s' * (self.non_finite != 1)}"
            if self.non_finite
            else "",
            f"{self.empty_frames} frame{'s' * (self.empty_frames != 1)} with every point at (0, 0)"
            if self.empty_frames
            else "",
            f"{self.far_outside} point{'s' * (self.far_outside != 1)} far outside the frame"
            if self.far_outside
            else "",
        ]
        what = ", ".join(c for c in counts if c)
        return (
            f"{what} in frames {frame_ranges(self.frames)} filled in (interpolated between "
            "the neighbouring frames, or at an anchor point where missing in every frame; "
            "score 0)"
        )


def frame_ranges(frames: Sequence[int], limit: int = 8) -> str:
    """``[3, 4, 5, 9]`` -> ``'3-5, 9'`` (at most ``limit`` runs, then ``...``)."""
    runs: list[list[int]] = []
    for frame in sorted(frames):
        if runs and frame == runs[-1][1] + 1:
            runs[-1][1] = frame
        else:
            runs.append([frame, frame])
    text = [f"{a}-{b}" if b > a else f"{a}" for a, b in runs[:limit]]
    return ", ".join(text) + (", ..." if len(runs) > limit else "")


def check_keypoints(
    points: np.ndarray,
    where: str,
    frame_size: tuple[int, int] | None = None,
    used: np.ndarray | None = None,
    undetected: np.ndarray | None = None,
) -> tuple[np.ndarray, KeypointRepair]:
    """One clip's keypoints as they enter, repaired or refused (module docstring).

    Args:
        points: ``(T, 133, 3)`` (x, y, score) in pixels of the frames as stored.
        where: the file and the clip, for messages (``"keypoint file k.pkl, clip 'a'"``).
        frame_size: ``(height, width)`` of those frames, when known: points more than that
            size outside the frame are filled in like missing ones.
        used: the point indices a model reads (counts and refusals consider those only);
            default all 133.
        undetected: bool ``(T, 133)``, points the source marks as not found (a ``.pose``
            file's confidence 0): filled in as the extractor fills them, not counted.

    Returns:
        float32 ``(T, 133, 3)`` without non-finite values, and what was filled in.

    Raises:
        DataError: the wrong shape, no frame, no usable point, or more than half of the used
            points unusable, naming ``where`` and the frames.
    """
    array = _as_clip(points, where)
    used = np.arange(NUM_WHOLEBODY_POINTS) if used is None else np.asarray(used)
    expected = np.zeros(array.shape[:2], bool) if undetected is None else np.asarray(undetected)
    non_finite = ~np.isfinite(array).all(2) & ~expected  # coordinates or score
    far = _far_outside(array, frame_size) & ~expected
    empty = (array[..., :2] == 0).all((1, 2))  # an extractor's "nobody here"
    broken = (~np.isfinite(array[..., :2]).all(2) | far | empty[:, None]) & ~expected
    missing = broken | expected
    _refuse_unusable(missing, broken[:, used], where, frame_size)
    repair = KeypointRepair(
        non_finite=int(non_finite[:, used].sum()),
        empty_frames=int(empty.sum()),
        far_outside=int(far[:, used].sum()),
        frames=np.flatnonzero((broken | non_finite)[:, used].any(1)).tolist(),
    )
    if not missing.any() and not non_finite.any():
        return array, repair
    array[..., 2] = np.where(missing | ~np.isfinite(array[..., 2]), 0.0, array[..., 2])
    array[..., :2][missing] = np.nan
    return fill_missing(array, frame_size or _extent(array, missing)), repair


def _as_clip(points: np.ndarray, where: str) -> np.ndarray:
    """``points`` as float32 ``(T, 133, 3)``, T > 0, or a DataError naming ``where``."""
    array = np.asarray(points)
    shape = (NUM_WHOLEBODY_POINTS, 3)
    if array.ndim != 3 or array.shape[1:] != shape or not np.issubdtype(array.dtype, np.number):
        raise DataError(
            f"{where}: keypoints of shape {array.shape} ({array.dtype}), expected "
            f"(T, {NUM_WHOLEBODY_POINTS}, 3) numbers (x, y, score)"
        )
    if len(array) == 0:
        raise DataError(f"{where}: no frame of keypoints")
    return array.astype(np.float32)


def _far_outside(array: np.ndarray, frame_size: tuple[int, int] | None) -> np.ndarray:
    """(T, 133): finite points more than one frame size left, right, above or below the frame."""
    if frame_size is None:
        return np.zeros(array.shape[:2], dtype=bool)
    height, width = frame_size
    with np.errstate(invalid="ignore"):
        x, y = array[..., 0], array[..., 1]
        beyond = (x < -width) | (x > 2 * width) | (y < -height) | (y > 2 * height)
        return beyond & np.isfinite(array[..., :2]).all(2)


def _refuse_unusable(
    missing: np.ndarray, broken: np.ndarray, where: str, frame_size: tuple[int, int] | None
) -> None:
    """A DataError when no point is usable, or most of the used ones (``broken``) are not."""
    frames = len(missing)
    if missing.all():
        raise DataError(
            f"{where}: no usable point in any of its {frames} frames (every point is "
            "undetected, non-finite, at (0, 0) or far outside the frame): no person detected"
        )
    share = broken.mean()
    if share > MOST_UNUSABLE:
        outside = (
            f" or far outside the {frame_size[0]} x {frame_size[1]} frame" if frame_size else ""
        )
        bad = np.flatnonzero(broken.any(1)).tolist()
        raise DataError(
            f"{where}: {share:.0%} of the points the model uses are non-finite, at (0, 0)"
            f"{outside} (frames {frame_ranges(bad)} of {frames}): too few to fill in"
        )


def _extent(array: np.ndarray, missing: np.ndarray) -> tuple[int, int]:
    """(height, width) holding the usable points (for the centre when no size is known)."""
    usable = array[~missing][:, :2]
    return int(np.ceil(usable[:, 1].max())) + 1, int(np.ceil(usable[:, 0].max())) + 1


# -- the keypoint file of a config ---------------------------------------------------------
class KeypointTable(dict):
    """Sample name -> float32 ``(T, N, 3)``; ``refused`` names the clips left out and why."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.refused: dict[str, str] = {}


def load_keypoints(
    path: str | Path, parts: Iterable[str], frame_size: tuple[int, int] | None = None
) -> KeypointTable:
    """Read a published keypoint pickle, check each clip and keep the selected parts.

    Args:
        frame_size: ``(height, width)`` the keypoints refer to (a dataset's stored frames);
            clips listed in the extractor's ``<file>.json`` (``frame_sizes``) use theirs.

    Returns:
        sample name -> float32 ``(T, N, 3)`` of ``(x, y, score)`` in raw-frame pixels, with
        the clips refused by :func:`check_keypoints` in ``refused`` (name -> reason).

    Raises:
        DataError: missing/unreadable file, or no clip of it usable.
    """
    indices = keypoint_indices(parts)  # config errors before reading a large file
    path = Path(path)
    raw = read_pickle(
        path,
        "keypoint file",
        "a pickled dict sample name -> {'keypoints': (T, 133, 3) array}",
        Mapping,
    )
    sizes = _sidecar_sizes(path)
    table, repaired = KeypointTable(), []
    for name, entry in raw.items():
        where = f"keypoint file {path}, clip '{name}'"
        try:
            points, repair = _checked(entry, where, sizes.get(name, frame_size), indices)
        except DataError as error:
            table.refused[name] = str(error)
            continue
        table[name] = np.ascontiguousarray(points[:, indices])
        if repair.repaired:
            repaired.append(f"{where}: {repair.describe()}")
    _log_checks(path, table, repaired)
    if raw and not table:
        raise DataError(f"{path}: no usable clip; the first: {next(iter(table.refused.values()))}")
    return table


def _checked(
    entry: object, where: str, frame_size: tuple[int, int] | None, used: np.ndarray
) -> tuple[np.ndarray, KeypointRepair]:
    if not isinstance(entry, Mapping) or "keypoints" not in entry:
        raise DataError(f"{where}: expected a dict with a 'keypoints' array")
    return check_keypoints(entry["keypoints"], where, frame_size, used)


def _sidecar_sizes(path: Path) -> dict[str, tuple[int, int]]:
    """Clip -> (height, width) from the extractor's ``<file>.json``, when there is one."""
    sidecar = path.with_name(path.name + ".json")
    if not sidecar.is_file():
        return {}
    try:
        sizes = json.loads(sidecar.read_text(encoding="utf-8")).get("frame_sizes") or {}
        return {str(name): (int(size[0]), int(size[1])) for name, size in sizes.items()}
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
        logger.warning("%s: frame sizes not read (%s); points are not checked against them",
                       sidecar, error)  # fmt: skip
        return {}


def _log_checks(path: Path, table: KeypointTable, repaired: list[str]) -> None:
    """One line per repaired or refused clip (the first ones), then the counts."""
    lines = repaired + [f"refused: {reason}" for reason in table.refused.values()]
    for line in lines[:LISTED_CLIPS]:
        logger.warning("%s", line)
    if lines:
        logger.warning(
            "keypoint file %s: %d clips with points filled in, %d refused (skipped)%s",
            path, len(repaired), len(table.refused),
            f"; {len(lines) - LISTED_CLIPS} more not listed" if len(lines) > LISTED_CLIPS else "",
        )  # fmt: skip
