"""MediaPipe Holistic landmarks -> the 133 COCO-WholeBody keypoints the models read.

Holistic gives per frame 33 pose landmarks (with a visibility), 468 face-mesh points and two
hands of 21 points, each part possibly missing. COCO-WholeBody (what HRNet gave the
published keypoint files) has 133 points:

=========  ===========================================  =====================================
COCO       points                                       from Holistic
=========  ===========================================  =====================================
0-16       body: nose, eyes, ears, shoulders, elbows,   pose 0, 2, 5, 7, 8, 11-16, 23-28
           wrists, hips, knees, ankles (left first)
17-22      feet: big toe, small toe, heel (left, then   pose 31, -, 29, 32, -, 30 (small toes:
           right)                                       no counterpart, score 0)
23-90      face: the 68-point iBUG layout (jaw, brows,  face-mesh points :data:`FACE_MESH_68`
           nose, eyes, lips)
91-111     left hand: wrist, thumb, index, middle,      left hand 0-20 (same order)
           ring, little finger (4 points each)
112-132    right hand                                   right hand 0-20
=========  ===========================================  =====================================

"Left" is the person's own left, as in COCO-WholeBody: in a camera image (not a mirror or
selfie view) it is on the image's right. Holistic names pose sides the same way (checked on
a photograph: its left eye and shoulder lie on the image's right). Hands are assigned by
their wrist: a Holistic hand belongs to the side whose pose wrist is nearer, so the hands
follow the pose's sides. Mirrored videos swap every side: pass ``mirrored=True``.

Scores: pose points take Holistic's visibility (in [0, 1]); face and hand points 1 where
the part was found; everything else 0. Because the published configs render every point
whatever its score, a point without a detection never stays at (0, 0) (it would draw a blob
in a corner of the heatmaps): it is interpolated in time between the frames where it was
found (held at the first / last such frame), and a point found in no frame of the clip
goes to its anchor (a hand to its wrist, a small toe to the big toe, the face to the nose, a
body point to its neighbour), and to the frame centre when the whole clip has no person
(:func:`dataset.keypoints.fill_missing`, also used where keypoint files are read). Filled
points keep score 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dataset.keypoints import FACE, LEFT_HAND, NUM_WHOLEBODY_POINTS, RIGHT_HAND, fill_missing

NUM_POINTS = NUM_WHOLEBODY_POINTS

# COCO-WholeBody body and feet point -> Holistic pose landmark (-1: none)
POSE_SOURCES = (
    0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28,  # body 0-16
    31, -1, 29, 32, -1, 30,  # feet 17-22: big toe, small toe, heel (left, right)
)  # fmt: skip
# The iBUG 68 layout from face-mesh indices: jaw (17), right brow (5), left brow (5), nose
# bridge (4), nose bottom (5), right eye (6), left eye (6), outer lips (12), inner lips (8).
FACE_MESH_68 = (
    127, 234, 93, 132, 58, 172, 136, 150, 152, 379, 365, 397, 288, 361, 323, 454, 356,
    70, 63, 105, 66, 107,
    336, 296, 334, 293, 300,
    168, 197, 5, 4,
    75, 97, 2, 326, 305,
    33, 160, 158, 133, 153, 144,
    362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    78, 82, 13, 312, 308, 317, 14, 87,
)  # fmt: skip
NOSE_TIP_68 = 30  # point 30 of the 68 (COCO 53) is the tip of the nose


# COCO point -> its mirror image (left <-> right), for mirrored videos
MIRROR = (
    (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15, 20, 21, 22, 17, 18, 19)
    + tuple(
        23 + j
        for j in (
            *range(16, -1, -1), *range(26, 21, -1), *range(21, 16, -1), *range(27, 31),
            *range(35, 30, -1), 45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
            54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65,
        )
    )
    + tuple(range(112, 133))
    + tuple(range(91, 112))
)  # fmt: skip


@dataclass
class HolisticFrame:
    """One frame's Holistic result in pixels of the frame; a part is None when not found.

    pose: ``(33, 3)`` x, y, visibility; face: ``(468, 2)``; hands: ``(21, 2)`` each, as
    Holistic labels them.
    """

    pose: np.ndarray | None = None
    face: np.ndarray | None = None
    left_hand: np.ndarray | None = None
    right_hand: np.ndarray | None = None

    @property
    def has_person(self) -> bool:
        return any(p is not None for p in (self.pose, self.face, self.left_hand, self.right_hand))


def frame_to_wholebody(frame: HolisticFrame) -> np.ndarray:
    """One frame -> ``(133, 3)`` float32 (x, y, score); missing points are NaN with score 0."""
    points = np.full((NUM_POINTS, 3), np.nan, dtype=np.float32)
    points[:, 2] = 0.0
    if frame.pose is not None:
        sources = np.array(POSE_SOURCES)
        found = sources >= 0
        points[: len(sources)][found] = frame.pose[sources[found]]
    if frame.face is not None:
        points[FACE, :2] = frame.face[list(FACE_MESH_68)]
        points[FACE, 2] = 1.0
    for part, hand in zip((LEFT_HAND, RIGHT_HAND), _hands_by_side(frame), strict=True):
        if hand is not None:
            points[part, :2] = hand
            points[part, 2] = 1.0
    return points


def _hands_by_side(frame: HolisticFrame) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(left, right) hand: each found hand goes to the side of the nearer pose wrist."""
    hands = [h for h in (frame.left_hand, frame.right_hand) if h is not None]
    if frame.pose is None or not hands:
        return frame.left_hand, frame.right_hand
    wrists = frame.pose[[15, 16], :2]  # the pose's left and right wrist
    if len(hands) == 1:
        distance = np.linalg.norm(wrists - hands[0][0], axis=1)
        return (hands[0], None) if distance[0] <= distance[1] else (None, hands[0])
    first, second = hands
    keep = np.linalg.norm(first[0] - wrists[0]) + np.linalg.norm(second[0] - wrists[1])
    swap = np.linalg.norm(first[0] - wrists[1]) + np.linalg.norm(second[0] - wrists[0])
    return (second, first) if swap < keep else (first, second)


def holistic_to_wholebody(
    frames: Sequence[HolisticFrame], frame_size: tuple[int, int], mirrored: bool = False
) -> np.ndarray:
    """A clip's Holistic results -> float32 ``(T, 133, 3)`` COCO-WholeBody (module docstring)."""
    if not frames:
        return np.zeros((0, NUM_POINTS, 3), dtype=np.float32)
    points = np.stack([frame_to_wholebody(f) for f in frames])
    if mirrored:
        points = points[:, list(MIRROR)]
    return fill_missing(points, frame_size)
