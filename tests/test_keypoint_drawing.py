"""Drawing the 133 keypoints: the model's points stand out, every line joins real points."""

import numpy as np
import pytest

from dataset.keypoint_drawing import SELECTED, contact_sheet, draw_wholebody, skeleton


def test_skeleton_joins_valid_points_of_every_part():
    lines = skeleton()
    assert all(0 <= a < 133 and 0 <= b < 133 and a != b for a, b in lines)
    touched = {p for line in lines for p in line}
    assert set(range(17)) <= touched and set(range(91, 133)) <= touched
    assert {23, 23 + 67} <= touched  # the face contours


def test_selected_points_are_drawn_red_where_they_are():
    frame = np.zeros((100, 120, 3), np.uint8)
    points = np.zeros((133, 3), np.float32)
    points[:, :2] = [60, 50]
    points[0] = [20, 30, 1.0]
    drawn = draw_wholebody(frame, points, selected=[0])
    assert tuple(drawn[30, 20]) == SELECTED
    assert frame.sum() == 0, "the frame itself is not changed"
    half = draw_wholebody(np.zeros((50, 60, 3), np.uint8), points, selected=[0], scale=0.5)
    assert tuple(half[15, 10]) == SELECTED


def test_contact_sheet_tiles_images():
    tiles = [np.full((10, 20, 3), i, np.uint8) for i in range(5)]
    sheet = contact_sheet(tiles, columns=3)
    assert sheet.shape == (20, 60, 3)
    assert sheet[15, 25, 0] == 4 and sheet[15, 45, 0] == 0
    with pytest.raises(ValueError):
        contact_sheet([])
