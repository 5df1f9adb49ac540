"""Holistic -> COCO-WholeBody: which landmark lands where, sides, and points without detection."""

import numpy as np

from dataset.keypoints import KEYPOINT_PARTS, keypoint_indices
from preprocess.holistic_mapping import (
    FACE,
    FACE_MESH_68,
    LEFT_HAND,
    MIRROR,
    NUM_POINTS,
    RIGHT_HAND,
    HolisticFrame,
    frame_to_wholebody,
    holistic_to_wholebody,
)

SIZE = (260, 210)  # height, width


def _pose() -> np.ndarray:
    """33 landmarks at (10 * i, 5 * i + 1) with visibility 0.9; left wrist (15) at (150, 76)."""
    points = np.stack([np.arange(33) * 10.0, np.arange(33) * 5.0 + 1, np.full(33, 0.9)], 1)
    return points.astype(np.float32)


def _hand(x: float, y: float) -> np.ndarray:
    return np.stack([x + np.arange(21), y + np.zeros(21)], 1).astype(np.float32)


def test_body_feet_and_face_come_from_the_documented_landmarks():
    face = np.stack([np.arange(468) * 1.0, np.arange(468) * 2.0], 1).astype(np.float32)
    points = frame_to_wholebody(HolisticFrame(pose=_pose(), face=face))
    expected_pose = [0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28]
    np.testing.assert_allclose(points[:17, 0], np.array(expected_pose) * 10.0)
    np.testing.assert_allclose(points[:17, 2], 0.9, rtol=1e-6)  # the pose visibility
    np.testing.assert_allclose(points[[17, 19, 20, 22], 0], np.array([31, 29, 32, 30]) * 10.0)
    assert np.isnan(points[[18, 21], 0]).all() and (points[[18, 21], 2] == 0).all()
    np.testing.assert_allclose(points[FACE, 1], np.array(FACE_MESH_68) * 2.0)
    assert (points[FACE, 2] == 1).all()
    assert np.isnan(points[91:, 0]).all() and (points[91:, 2] == 0).all()  # no hands found


def test_hands_go_to_the_side_of_the_nearer_pose_wrist():
    pose = _pose()  # left wrist (15) at (150, 76), right wrist (16) at (160, 81)
    pose[15, :2], pose[16, :2] = (200.0, 100.0), (20.0, 100.0)
    near_left, near_right = _hand(201, 101), _hand(19, 99)
    as_labelled = frame_to_wholebody(
        HolisticFrame(pose=pose, left_hand=near_left, right_hand=near_right)
    )
    swapped = frame_to_wholebody(
        HolisticFrame(pose=pose, left_hand=near_right, right_hand=near_left)
    )
    for points in (as_labelled, swapped):
        np.testing.assert_allclose(points[LEFT_HAND, :2], near_left)
        np.testing.assert_allclose(points[RIGHT_HAND, :2], near_right)
    one = frame_to_wholebody(HolisticFrame(pose=pose, left_hand=near_right))  # mislabelled
    assert np.isnan(one[LEFT_HAND, 0]).all() and np.allclose(one[RIGHT_HAND, :2], near_right)


def test_the_selection_the_models_read_lands_on_the_intended_parts():
    selected = keypoint_indices(["pose", "mouth_half", "hand", "face_others_1_3"])
    assert len(selected) == 79
    body, hands = selected[selected < 23], selected[selected >= 91]
    face = selected[(selected >= 23) & (selected < 91)]
    assert list(body) == list(range(11))  # nose, eyes, ears, shoulders, elbows, wrists
    assert set(hands) == set(range(91, 133))
    mouth = set(KEYPOINT_PARTS["mouth_half"])
    assert mouth <= set(range(71, 91))  # the 68-point lips (48-67)
    mesh = [FACE_MESH_68[i - 23] for i in face]
    assert len(set(mesh)) == len(mesh) == len(face)  # distinct mesh points


def test_missing_points_are_interpolated_then_anchored_never_at_the_origin():
    frames = [HolisticFrame(pose=_pose(), left_hand=_hand(10, 20)) for _ in range(4)]
    frames[1].left_hand = frames[2].left_hand = None
    frames[3].left_hand = _hand(40, 50)
    points = holistic_to_wholebody(frames, SIZE)
    assert not np.isnan(points).any() and points.dtype == np.float32
    np.testing.assert_allclose(points[:, 91, :2], [[10, 20], [20, 30], [30, 40], [40, 50]])
    np.testing.assert_array_equal(points[:, 91, 2], [1, 0, 0, 1])  # filled points: score 0
    right_wrist = points[:, 10, :2]  # the right hand was never found: at its wrist
    for k in range(RIGHT_HAND.start, RIGHT_HAND.stop):
        np.testing.assert_allclose(points[:, k, :2], right_wrist)
    np.testing.assert_allclose(points[:, 18, :2], points[:, 17, :2])  # small toe: the big toe
    np.testing.assert_allclose(points[:, FACE, :2], np.repeat(points[:, :1, :2], 68, 1))


def test_a_clip_without_a_person_sits_at_the_frame_centre():
    points = holistic_to_wholebody([HolisticFrame(), HolisticFrame()], SIZE)
    np.testing.assert_allclose(points[..., :2], np.broadcast_to([105.0, 130.0], (2, 133, 2)))
    assert (points[..., 2] == 0).all()


def test_a_person_lost_for_some_frames_is_held_at_the_frames_around():
    seen = HolisticFrame(pose=_pose())
    points = holistic_to_wholebody([seen, HolisticFrame(), seen], SIZE)
    np.testing.assert_allclose(points[1, :17, :2], points[0, :17, :2])
    assert (points[1, :17, 2] == 0).all() and (points[0, :17, 2] > 0).all()


def test_mirror_swaps_every_side_and_undoes_itself():
    mirror = np.array(MIRROR)
    assert sorted(mirror) == list(range(NUM_POINTS))
    np.testing.assert_array_equal(mirror[mirror], np.arange(NUM_POINTS))
    assert list(mirror[[1, 5, 9, 17]]) == [2, 6, 10, 20]
    assert list(mirror[[23, 23 + 36, 23 + 48, 23 + 30]]) == [23 + 16, 23 + 45, 23 + 54, 23 + 30]
    np.testing.assert_array_equal(mirror[LEFT_HAND], np.arange(112, 133))
    frame = HolisticFrame(pose=_pose(), left_hand=_hand(150, 76))
    plain, mirrored = (holistic_to_wholebody([frame], SIZE, m) for m in (False, True))
    np.testing.assert_allclose(mirrored[0, RIGHT_HAND], plain[0, LEFT_HAND])
