"""Keypoint pickle <-> .pose files (pose-format's MediaPipe Holistic layout), both ways."""

import pickle
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pose_format", reason="pose-format is installed by setup.sh")
from pose_format import Pose
from pose_format.numpy import NumPyPoseBody

from preprocess.holistic_mapping import FACE_MESH_68
from preprocess.pose_format_convert import (
    HOLISTIC_POINTS,
    correspondence,
    holistic_header,
    main,
    pickle_to_pose,
    pose_to_pickle,
)
from utils.errors import DataError


def _keypoints(frames: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    points = np.concatenate(
        [rng.uniform(0, 200, (frames, 133, 2)), rng.uniform(0.1, 1, (frames, 133, 1))], -1
    ).astype(np.float32)
    points[:, 18, 2] = points[:, 21, 2] = 0.0  # the small toes: no Holistic counterpart
    points[:, 18, :2], points[:, 21, :2] = points[:, 17, :2], points[:, 20, :2]  # as filled
    return points


def test_pickle_to_pose_and_back_keeps_every_point_both_layouts_share(tmp_path: Path):
    entries = {"train/a": {"keypoints": _keypoints(4, 0)}, "b": {"keypoints": _keypoints(2, 1)}}
    source = tmp_path / "kp.pkl"
    source.write_bytes(pickle.dumps(entries))
    assert pickle_to_pose(source, tmp_path / "poses", fps=25) == 2
    assert sorted(p.name for p in (tmp_path / "poses").iterdir()) == ["b.pose", "train__a.pose"]
    pose = Pose.read((tmp_path / "poses" / "train__a.pose").read_bytes())
    assert [c.name for c in pose.header.components] == [
        "POSE_LANDMARKS", "FACE_LANDMARKS", "LEFT_HAND_LANDMARKS", "RIGHT_HAND_LANDMARKS",
    ]  # fmt: skip
    assert pose.body.data.shape == (4, 1, HOLISTIC_POINTS, 2) and pose.body.fps == 25
    face = np.asarray(pose.body.confidence[0, 0, 33 : 33 + 468])
    assert (face[list(FACE_MESH_68)] > 0).all() and (np.delete(face, FACE_MESH_68) == 0).all()
    assert pose_to_pickle(tmp_path / "poses", tmp_path / "back.pkl") == 2
    back = pickle.loads((tmp_path / "back.pkl").read_bytes())
    for name, entry in entries.items():
        np.testing.assert_allclose(back[name]["keypoints"], entry["keypoints"], atol=1e-4)


def test_the_correspondence_is_one_to_one():
    coco, holistic = correspondence()
    assert len(set(coco)) == len(coco) == 131  # every COCO point but the two small toes
    assert len(set(holistic)) == len(holistic) and holistic.max() < HOLISTIC_POINTS


def test_unseen_points_of_a_pose_file_are_filled_in(tmp_path: Path):
    data = np.zeros((3, 1, HOLISTIC_POINTS, 2), np.float32)
    confidence = np.zeros((3, 1, HOLISTIC_POINTS), np.float32)
    data[:, 0, 15] = [[50, 60], [52, 62], [54, 64]]  # only the left wrist is seen
    confidence[:, 0, 15] = 1.0
    folder = tmp_path / "poses"
    folder.mkdir()
    with open(folder / "clip.pose", "wb") as handle:
        Pose(holistic_header(100, 120), NumPyPoseBody(25, data, confidence)).write(handle)
    pose_to_pickle(folder, tmp_path / "kp.pkl")
    points = pickle.loads((tmp_path / "kp.pkl").read_bytes())["clip"]["keypoints"]
    np.testing.assert_allclose(points[:, 9, :2], data[:, 0, 15])
    np.testing.assert_allclose(points[:, 91:112, :2], np.repeat(points[:, 9:10, :2], 21, 1))
    assert (points[:, 91:, 2] == 0).all() and not np.isnan(points).any()


def test_files_that_are_not_holistic_poses_are_refused(tmp_path: Path, capsys):
    folder = tmp_path / "poses"
    folder.mkdir()
    (folder / "bad.pose").write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot read pose file .*bad.pose"):
        pose_to_pickle(folder, tmp_path / "kp.pkl")
    assert main(["to-pickle", str(tmp_path / "empty"), str(tmp_path / "kp.pkl")]) == 2
    assert "no .pose file" in capsys.readouterr().err


def _pose_file(path: Path, data: np.ndarray, confidence: np.ndarray) -> None:
    with open(path, "wb") as handle:
        Pose(holistic_header(100, 120), NumPyPoseBody(25, data, confidence)).write(handle)


def test_pose_files_are_checked_as_keypoints_where_they_enter(tmp_path: Path, caplog):
    folder = tmp_path / "poses"
    folder.mkdir()
    data = np.random.default_rng(0).uniform(10, 90, (4, 1, HOLISTIC_POINTS, 2)).astype(np.float32)
    confidence = np.ones((4, 1, HOLISTIC_POINTS), np.float32)
    data[2, 0, 15] = [np.inf, 5.0]  # the left wrist, seen in frame 2 at infinity
    _pose_file(folder / "seen.pose", data, confidence)
    _pose_file(folder / "nobody.pose", data, np.zeros_like(confidence))
    with caplog.at_level("WARNING"):
        assert pose_to_pickle(folder, tmp_path / "kp.pkl") == 1
    points = pickle.loads((tmp_path / "kp.pkl").read_bytes())["seen"]["keypoints"]
    assert np.isfinite(points).all() and points[2, 9, 2] == 0  # filled in, score 0
    np.testing.assert_allclose(points[2, 9, :2], (points[1, 9, :2] + points[3, 9, :2]) / 2)
    assert f"pose file {folder / 'seen.pose'}: 1 non-finite point in frames 2" in caplog.text
    assert f"pose file {folder / 'nobody.pose'}: no usable point in any of its 4" in caplog.text
    _pose_file(folder / "seen.pose", data, np.zeros_like(confidence))
    with pytest.raises(DataError, match="no usable clip among the 2 .pose files"):
        pose_to_pickle(folder, tmp_path / "none.pkl")


def test_keypoint_pickles_are_checked_before_they_become_pose_files(tmp_path: Path, caplog):
    broken = _keypoints(4, 0)
    broken[1, 91:101, :2] = np.nan
    entries = {"a": {"keypoints": broken}, "empty": {"keypoints": np.zeros((3, 133, 3))}}
    source = tmp_path / "kp.pkl"
    source.write_bytes(pickle.dumps(entries))
    with caplog.at_level("WARNING"):
        assert pickle_to_pose(source, tmp_path / "poses") == 1
    assert [p.name for p in (tmp_path / "poses").iterdir()] == ["a.pose"]
    assert "clip 'a': 10 non-finite points in frames 1 filled in" in caplog.text
    assert "clip 'empty': no usable point" in caplog.text
