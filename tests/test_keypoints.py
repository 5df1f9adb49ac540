import pickle
from pathlib import Path

import numpy as np
import pytest

from dataset.keypoints import (
    ANCHORS,
    NUM_WHOLEBODY_POINTS,
    check_keypoints,
    count_keypoints,
    fill_missing,
    frame_ranges,
    keypoint_indices,
    load_keypoints,
    select_keypoints,
)
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
    with pytest.raises(DataError, match=r"no usable clip.*wrong\.pkl, clip 'a'.*\(3, 17, 3\)"):
        load_keypoints(wrong, ["pose"])
    flat = tmp_path / "flat.pkl"
    flat.write_bytes(pickle.dumps({"a": _indexed(2)}))
    with pytest.raises(DataError, match="'keypoints' array"):
        load_keypoints(flat, ["pose"])


SIZE = (260, 210)  # height, width


def test_anchors_form_a_tree_rooted_at_the_nose():
    for point in range(NUM_WHOLEBODY_POINTS):
        seen, current = set(), point
        while ANCHORS[current] >= 0:
            assert current not in seen, f"anchor cycle through {current}"
            seen.add(current)
            current = ANCHORS[current]
        assert current == 0


def test_fill_missing_keeps_found_points():
    points = np.random.default_rng(0).uniform(0, 200, (3, 133, 3)).astype(np.float32)
    assert np.array_equal(fill_missing(points, SIZE), points)
    with pytest.raises(ValueError):
        fill_missing(np.zeros((2, 5)), SIZE)


# -- keypoints checked where they enter ------------------------------------------------------
def _clip(frames: int = 10, seed: int = 0) -> np.ndarray:
    """(T, 133, 3) inside a 260 x 210 frame, scores in (0.5, 1)."""
    rng = np.random.default_rng(seed)
    points = rng.uniform([10, 10, 0.5], [200, 250, 1.0], (frames, 133, 3))
    return points.astype(np.float32)


def test_a_clean_clip_passes_unchanged():
    clip = _clip()
    checked, repair = check_keypoints(clip, "k.pkl, clip 'a'", SIZE)
    assert np.array_equal(checked, clip) and not repair.repaired


def test_non_finite_points_are_interpolated_from_the_neighbouring_frames_with_score_0():
    clip = _clip()
    clip[3:6, 95, :2] = np.nan  # a hand point lost for three frames
    clip[7, 0, 0] = np.inf
    clip[8, 1, 2] = np.nan  # a score only
    checked, repair = check_keypoints(clip, "k.pkl, clip 'a'", SIZE)
    assert np.isfinite(checked).all()
    expected = np.linspace(clip[2, 95, :2], clip[6, 95, :2], 5)[1:4]
    np.testing.assert_allclose(checked[3:6, 95, :2], expected, rtol=1e-5)
    assert (checked[3:6, 95, 2] == 0).all() and checked[8, 1, 2] == 0
    np.testing.assert_array_equal(checked[:3], clip[:3])  # untouched frames stay as they were
    assert repair.non_finite == 5 and repair.frames == [3, 4, 5, 7, 8]
    assert repair.describe().startswith("5 non-finite points in frames 3-5, 7-8 filled in")


def test_empty_frames_and_points_far_outside_the_frame_are_filled_in():
    clip = _clip()
    clip[4] = 0.0  # an extractor's frame without a person
    clip[6, 10, 0] = 5000.0  # far right of a 210 pixels wide frame
    clip[7, 11, 1] = -300.0  # far above (more than 260 pixels)
    checked, repair = check_keypoints(clip, "k.pkl, clip 'a'", SIZE)
    assert repair.empty_frames == 1 and repair.far_outside == 2 and repair.frames == [4, 6, 7]
    np.testing.assert_allclose(checked[4, :, :2], (clip[3, :, :2] + clip[5, :, :2]) / 2, rtol=1e-5)
    assert 0 <= checked[6, 10, 0] <= 210 and 0 <= checked[7, 11, 1] <= 260
    assert checked[4, :, 2].max() == 0 and checked[6, 10, 2] == 0
    _, unsized = check_keypoints(clip, "k.pkl, clip 'a'")  # no frame size: not judged
    assert unsized.far_outside == 0 and unsized.frames == [4]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c[:, :100], r"k.pkl, clip 'a': keypoints of shape \(10, 100, 3\)"),
        (lambda c: c[:0], "no frame of keypoints"),
        (lambda c: np.zeros_like(c), "no usable point in any of its 10 frames"),
        (lambda c: np.full_like(c, np.nan), "no usable point"),
        (lambda c: c * 20, r"100% of the points .* far outside the 260 x 210 frame \(frames 0-9"),
    ],
)
def test_unusable_clips_are_refused_naming_the_clip_and_the_frames(change, message):
    with pytest.raises(DataError, match=message):
        check_keypoints(change(_clip()), "k.pkl, clip 'a'", SIZE)


def test_only_the_points_a_model_uses_count():
    clip = _clip()
    clip[:, 17:23, :2] = np.nan  # feet never found: not among the published parts
    used = keypoint_indices(PUBLISHED_PARTS)
    checked, repair = check_keypoints(clip, "k.pkl, clip 'a'", SIZE, used)
    assert not repair.repaired and np.isfinite(checked).all()
    np.testing.assert_allclose(checked[:, 18, :2], checked[:, 17, :2])  # at their anchors


def test_points_the_source_marks_undetected_are_filled_without_counting():
    clip = _clip()
    undetected = np.zeros((10, 133), bool)
    undetected[:, 91:133] = True  # no hand found in the whole clip (a .pose file's confidence 0)
    clip[undetected] = np.nan
    checked, repair = check_keypoints(clip, "poses/a.pose", SIZE, undetected=undetected)
    assert not repair.repaired and np.isfinite(checked).all()
    np.testing.assert_allclose(checked[:, 100, :2], checked[:, 9, :2])  # at the left wrist
    assert (checked[:, 91:, 2] == 0).all()
    with pytest.raises(DataError, match="poses/a.pose: no usable point"):
        check_keypoints(clip, "poses/a.pose", SIZE, undetected=np.ones((10, 133), bool))


def test_the_keypoint_file_repairs_and_refuses_clips_and_logs_each(tmp_path: Path, caplog):
    broken = _clip(seed=1)
    broken[2:4, 91:101, :2] = np.nan  # 10 hand points in two frames
    path = tmp_path / "kp.pkl"
    entries = {"good": _clip(), "broken": broken, "empty": np.zeros((10, 133, 3))}
    path.write_bytes(pickle.dumps({k: {"keypoints": v} for k, v in entries.items()}))
    with caplog.at_level("WARNING", logger="dataset.keypoints"):
        table = load_keypoints(path, PUBLISHED_PARTS, SIZE)
    assert sorted(table) == ["broken", "good"] and list(table.refused) == ["empty"]
    assert np.isfinite(table["broken"]).all() and table["broken"].shape == (10, 79, 3)
    log = caplog.text
    assert f"keypoint file {path}, clip 'broken': 20 non-finite points in frames 2-3" in log
    assert (
        "clip 'empty': no usable point" in log and "1 clips with points filled in, 1 refused" in log
    )


def test_the_extractors_frame_sizes_judge_its_clips(tmp_path: Path):
    path = tmp_path / "kp.pkl"
    clip = _clip() * 4  # points up to 1000 pixels: inside a 1080 x 1920 video
    path.write_bytes(pickle.dumps({"a": {"keypoints": clip}}))
    with pytest.raises(DataError, match="far outside the 260 x 210 frame"):
        load_keypoints(path, ["pose"], SIZE)
    (tmp_path / "kp.pkl.json").write_text('{"frame_sizes": {"a": [1080, 1920]}}')
    assert not load_keypoints(path, ["pose"], SIZE).refused


def test_frame_ranges():
    assert frame_ranges([9, 3, 4, 5, 11]) == "3-5, 9, 11"
    assert frame_ranges(range(0, 40, 2), limit=3) == "0, 2, 4, ..."
