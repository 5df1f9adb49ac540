"""Drawing COCO-WholeBody keypoints on frames: for a person to check what was extracted.

:func:`draw_wholebody` draws the skeleton (body, feet, face contours, fingers) and the 133
points on an RGB frame; the points a model reads (a selection such as the published 79)
are drawn larger and in a colour of their own, the others small and grey, and points with
score 0 (filled in, not detected) hollow.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import cv2
import numpy as np

BODY_LIMBS = (
    (0, 1), (0, 2), (1, 3), (2, 4), (5, 6), (5, 7), (7, 9), (6, 8), (8, 10), (5, 11),
    (6, 12), (11, 12), (11, 13), (13, 15), (12, 14), (14, 16),
    (15, 17), (15, 18), (15, 19), (16, 20), (16, 21), (16, 22),
)  # fmt: skip
FACE_CHAINS = (  # the 68-point contours (offset 23): jaw, brows, nose, eyes, lips
    (range(0, 17), False), (range(17, 22), False), (range(22, 27), False),
    (range(27, 31), False), (range(31, 36), False), (range(36, 42), True),
    (range(42, 48), True), (range(48, 60), True), (range(60, 68), True),
)  # fmt: skip
HAND_STARTS = (91, 112)
COLOURS = {"body": (80, 200, 255), "left": (255, 120, 60), "right": (60, 220, 90)}
SELECTED, OTHER = (255, 40, 40), (170, 170, 170)


def skeleton() -> list[tuple[int, int]]:
    """Every drawn line as a pair of COCO-WholeBody indices."""
    lines = list(BODY_LIMBS)
    for chain, closed in FACE_CHAINS:
        points = [23 + i for i in chain]
        lines += list(zip(points, points[1:] + points[:1] if closed else points[1:]))
    for start in HAND_STARTS:
        for finger in range(5):
            joints = [start] + [start + 1 + 4 * finger + j for j in range(4)]
            lines += list(zip(joints, joints[1:]))
    return lines


def _colour(a: int, b: int) -> tuple[int, int, int]:
    if a >= HAND_STARTS[1] or b >= HAND_STARTS[1]:
        return COLOURS["right"]
    if a >= HAND_STARTS[0] or b >= HAND_STARTS[0]:
        return COLOURS["left"]
    return COLOURS["body"]


def draw_wholebody(
    frame: np.ndarray, points: np.ndarray, selected: Iterable[int] = (), scale: float = 1.0
) -> np.ndarray:
    """A copy of RGB ``frame`` ``(H, W, 3)`` with ``points`` ``(133, 3)`` drawn.

    Args:
        selected: indices drawn as the model's points (larger, red).
        scale: the frame was resized by this factor since the points were taken.
    """
    canvas = np.ascontiguousarray(frame.copy())
    xy = np.round(points[:, :2] * scale).astype(int)
    thickness = max(1, round(min(frame.shape[:2]) / 300))
    for a, b in skeleton():
        cv2.line(canvas, tuple(xy[a]), tuple(xy[b]), _colour(a, b), thickness, cv2.LINE_AA)
    chosen = set(selected)
    radius = max(1, round(min(frame.shape[:2]) / 150))
    for index, (x, y) in enumerate(xy):
        colour = SELECTED if index in chosen else OTHER
        size = radius + (1 if index in chosen else 0)
        filled = -1 if points[index, 2] > 0 else 1
        cv2.circle(canvas, (int(x), int(y)), size, colour, filled, cv2.LINE_AA)
    return canvas


def contact_sheet(images: Sequence[np.ndarray], columns: int = 3) -> np.ndarray:
    """Equal-sized RGB images tiled row by row (empty tiles black)."""
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    height, width = images[0].shape[:2]
    rows = -(-len(images) // columns)
    sheet = np.zeros((rows * height, min(columns, len(images)) * width, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        sheet[r * height : (r + 1) * height, c * width : (c + 1) * width] = image
    return sheet
