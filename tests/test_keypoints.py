import pickle
from pathlib import Path

import numpy as np
import pytest

from dataset.keypoints import count_keypoints, keypoint_indices, load_keypoints, select_keypoints
from utils.errors import ConfigurationError, DataError

PUBLISHED_PARTS = ["pose", "mouth_half", "hand", "face_others_1_3"]


def _indexed(num_frames: int) -> np.ndarray:
    """(T, 133, 3) where x = point index, y = frame index, score = 0.5."""
    array = np.zeros((num_frames, 133, 3), dtype=np.float64)
    array[..., 0] = np.arange(133)[None, :]
    array[..., 1] = np.arange(num_frames)[:, None]
    array[..., 2] = 0.5
    return array


def test_published_selection_count_and_sorted_order():
    assert count_keypoints(PUBLISHED_PARTS) == 79
    selected = select_keypoints(_indexed(2), PUBLISHED_PARTS)
    assert selected.shape == (2, 79, 3) and selected.dtype == np.float32
    expected = (
        list(range(23, 71, 3))  # face_others_1_3: 16 points
        + list(range(91, 133))  # hand: 42
        + list(range(71, 91, 2))  # mouth_half: 10
        + list(range(0, 11))  # pose: 11
    )
    assert len(expected) == 79
    assert selected[0, :, 0].astype(int).tolist() == expected
    assert selected[1, :, 1].tolist() == [1.0] * 79


def test_listing_order_does_not_matter():
    a = keypoint_indices(["pose", "hand"])
    b = keypoint_indices(["hand", "pose"])
    assert a.tolist() == b.tolist() == list(range(91, 133)) + list(range(11))


@pytest.mark.parametrize(
    ("part", "size"),
    [("pose", 11), ("hand", 42), ("hand_half", 21), ("mouth", 20), ("mouth_1_3", 7)],
)
def test_part_sizes(part: str, size: int):
    assert count_keypoints([part]) == size


def test_unknown_part_lists_valid_names():
    with pytest.raises(ConfigurationError, match=r"\['hands'\].*'face_others'.*'pose'"):
        count_keypoints(["pose", "hands"])
    with pytest.raises(ConfigurationError, match="no keypoint parts"):
        count_keypoints([])


def test_load_keypoints(tmp_path: Path):
    path = tmp_path / "kp.pkl"
    path.write_bytes(
        pickle.dumps({"a": {"keypoints": _indexed(4)}, "b": {"keypoints": _indexed(7)}})
    )
    loaded = load_keypoints(path, ["pose", "mouth_half"])
    assert sorted(loaded) == ["a", "b"]
    assert loaded["b"].shape == (7, 21, 3) and loaded["b"].dtype == np.float32
    assert loaded["a"][0, :, 0].astype(int).tolist() == list(range(71, 91, 2)) + list(range(11))


def test_load_keypoints_errors(tmp_path: Path):
    with pytest.raises(DataError, match="absent.pkl"):
        load_keypoints(tmp_path / "absent.pkl", ["pose"])
    corrupt = tmp_path / "corrupt.pkl"
    corrupt.write_bytes(pickle.dumps({"a": {"keypoints": _indexed(2)}})[:20])
    with pytest.raises(DataError, match="corrupt.pkl"):
        load_keypoints(corrupt, ["pose"])
    wrong = tmp_path / "wrong.pkl"
    wrong.write_bytes(pickle.dumps({"a": {"keypoints": np.zeros((3, 17, 3))}}))
    with pytest.raises(DataError, match=r"wrong\.pkl, sample 'a'.*\(3, 17, 3\)"):
        load_keypoints(wrong, ["pose"])
    flat = tmp_path / "flat.pkl"
    flat.write_bytes(pickle.dumps({"a": _indexed(2)}))
    with pytest.raises(DataError, match="'keypoints' array"):
        load_keypoints(flat, ["pose"])
