"""The keypoint extraction command end to end: sources, output format, resume, shards, failures."""

import json
import pickle
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import pytest

import training
from dataset.annotations import load_annotations
from dataset.batching import SignDataset
from dataset.keypoints import load_keypoints
from dataset.synthetic import generate_demo_dataset
from preprocess import extract_keypoints as extraction
from preprocess.extract_keypoints import (
    extract_keypoints,
    guess_layout,
    main,
    merge_keypoint_files,
    open_source,
    zip_sample_names,
)

pytest.importorskip("mediapipe", reason="mediapipe 0.10.14 is installed by setup.sh")
PARTS = ["pose", "mouth_half", "hand", "face_others_1_3"]
DEMO_KEYPOINT = (
    Path(__file__).resolve().parents[1] / "experiments" / "configs" / "demo" / "keypoint.yaml"
)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """A folder: the photograph moving for 6 frames (mp4), a corrupt and an empty video."""
    folder = tmp_path_factory.mktemp("videos")
    photo = cv2.imread(str(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"))
    photo = cv2.resize(photo, (256, 300))
    writer = cv2.VideoWriter(
        str(folder / "grace.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25, (256, 300)
    )
    for i in range(6):
        writer.write(np.roll(photo, 3 * i, axis=1))
    writer.release()
    (folder / "broken.mp4").write_bytes(b"this is not a video")
    cv2.VideoWriter(
        str(folder / "empty.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25, (64, 64)
    ).release()
    return folder


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    generate_demo_dataset(root, seed=3, num_train=3, num_dev=1, num_test=1, vocab_size=6)
    return root


@pytest.fixture(scope="module")
def demo_keypoints(demo: Path, tmp_path_factory) -> Path:
    """The demo zip's five clips, extracted in one uninterrupted run."""
    output = tmp_path_factory.mktemp("extracted") / "demo-kp.pkl"
    extract_keypoints(demo / "demo-videos.zip", output, annotations=_annotations(demo))
    return output


def _annotations(demo: Path) -> list[Path]:
    return [demo / f"demo.{split}" for split in ("train", "dev", "test")]


def _load(path: Path) -> dict:
    with open(path, "rb") as handle:
        return pickle.load(handle)


def test_videos_end_to_end_with_failures_reported(videos: Path, tmp_path: Path):
    output = tmp_path / "kp.pkl"
    summary = extract_keypoints(videos, output, preview=tmp_path / "preview")
    entries = _load(output)
    assert list(entries) == ["grace"]  # named by the file stem
    points = entries["grace"]["keypoints"]
    assert points.shape == (6, 133, 3) and points.dtype == np.float32
    assert not np.isnan(points).any() and points[..., 2].min() >= 0 and points[..., 2].max() <= 1
    assert 120 <= points[0, 0, 0] <= 145 and 100 <= points[0, 0, 1] <= 130  # the nose, halved
    assert set(summary.failed) == {"broken", "empty"}
    assert "cannot open video" in summary.failed["broken"]
    info = json.loads((tmp_path / "kp.pkl.json").read_text())
    assert info["estimator"] == "mediapipe" and info["version"].startswith("mediapipe 0.10")
    assert info["frame_sizes"] == {"grace": [300, 256]} and set(info["failed"]) == {
        "broken",
        "empty",
    }
    assert len(info["mapping"]["face_mesh_68"]) == 68
    selected = load_keypoints(output, PARTS)  # the models' own reader
    assert selected["grace"].shape == (6, 79, 3)
    preview = cv2.imread(str(tmp_path / "preview" / "grace.png"))
    assert preview is not None and preview.shape[0] >= 300 and preview.shape[1] >= 256 * 3 * 0.9
    assert not (tmp_path / "kp.pkl.parts").exists()


def test_a_phoenix_layout_zip_gives_the_loaders_frame_counts(demo: Path, demo_keypoints: Path):
    output = demo_keypoints
    samples = [s for a in _annotations(demo) for s in load_annotations(a)]
    entries = _load(output)
    assert list(entries) == [s.name for s in samples]
    for sample in samples:
        assert len(entries[sample.name]["keypoints"]) == sample.num_frames
    dataset = SignDataset(samples, keypoints=load_keypoints(output, PARTS), split="all")
    assert not dataset.skipped and len(dataset) == len(samples)
    # without annotation files the clips are the zip's own
    names = zip_sample_names(
        open_source(demo / "demo-videos.zip").reader._zip().namelist(), "phoenix-2014t"
    )
    assert names == [s.name for s in samples]


def test_layouts_are_guessed_from_member_names(tmp_path: Path):
    assert guess_layout(["images/train/a/images0001.png"], tmp_path) == "phoenix-2014t"
    assert guess_layout(["x/01April.avi_pid0_fn000000-0.png"], tmp_path) == "phoenix-2014"
    assert guess_layout(["sentence_frames-512x512/S0001/000000.jpg"], tmp_path) == "csl-daily"
    assert zip_sample_names(
        ["x/01April.avi_pid0_fn000000-0.png", "x/01April.avi_pid0_fn000001-0.png"], "phoenix-2014"
    ) == ["x/01April"]


def test_an_interrupted_run_resumes_without_doing_a_clip_twice(
    demo, demo_keypoints, tmp_path, monkeypatch
):
    full = demo_keypoints
    monkeypatch.setattr(extraction, "PART_SIZE", 1)
    calls: list[str] = []
    original = extraction.extract_clip

    def interrupted(estimator, reader, sample, mirrored=False):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(sample.name)
        return original(estimator, reader, sample, mirrored)

    monkeypatch.setattr(extraction, "extract_clip", interrupted)
    resumed = tmp_path / "resumed.pkl"
    with pytest.raises(KeyboardInterrupt):
        extract_keypoints(demo / "demo-videos.zip", resumed, annotations=_annotations(demo))
    assert not resumed.exists(), "an interrupted run leaves no (partial) output"
    assert len(list((tmp_path / "resumed.pkl.parts").glob("part-*.pkl"))) == 2  # 2 clips saved
    monkeypatch.setattr(extraction, "extract_clip", original)
    counted: list[str] = []
    monkeypatch.setattr(
        extraction, "extract_clip",
        lambda e, r, s, m=False: counted.append(s.name) or original(e, r, s, m),
    )  # fmt: skip
    extract_keypoints(demo / "demo-videos.zip", resumed, annotations=_annotations(demo))
    assert set(counted).isdisjoint(calls) and len(counted) == 5 - 2
    expected, got = _load(full), _load(resumed)
    assert list(got) == list(expected)
    for name in expected:
        np.testing.assert_array_equal(got[name]["keypoints"], expected[name]["keypoints"])


def test_shards_merge_into_the_whole_file(demo: Path, demo_keypoints: Path, tmp_path: Path):
    shards = []
    for index in range(2):
        shard = tmp_path / f"shard{index}.pkl"
        extract_keypoints(
            demo / "demo-videos.zip", shard, annotations=_annotations(demo), shard=(index, 2)
        )
        shards.append(shard)
    assert len(_load(shards[0])) == 3 and len(_load(shards[1])) == 2  # every 2nd clip
    merged = tmp_path / "merged.pkl"
    assert merge_keypoint_files(shards, merged) == 5
    whole = _load(merged)
    for name, entry in _load(demo_keypoints).items():
        np.testing.assert_array_equal(whole[name]["keypoints"], entry["keypoints"])
    info = json.loads((tmp_path / "merged.pkl.json").read_text())
    assert info["shards"] == ["0/2", "1/2"] and info["clips"] == 5
    with pytest.raises(Exception, match="also in an earlier shard"):
        merge_keypoint_files([shards[0], shards[0]], tmp_path / "twice.pkl")


def test_worker_processes_give_the_same_file(demo: Path, tmp_path: Path):
    one, two = tmp_path / "one.pkl", tmp_path / "two.pkl"
    extract_keypoints(demo / "demo-videos.zip", one, annotations=_annotations(demo), limit=4)
    extract_keypoints(
        demo / "demo-videos.zip", two, annotations=_annotations(demo), limit=4, workers=2
    )
    first, second = _load(one), _load(two)
    assert list(first) == list(second)
    for name in first:
        np.testing.assert_array_equal(first[name]["keypoints"], second[name]["keypoints"])


def test_the_extracted_file_trains_the_demo_keypoint_stage(
    demo: Path, demo_keypoints: Path, tmp_path: Path
):
    keypoints = demo_keypoints
    overrides = [
        f"data.train={demo / 'demo.train'}", f"data.dev={demo / 'demo.dev'}",
        f"data.test={demo / 'demo.test'}", f"data.keypoint_file={keypoints}",
        f"model.RecognitionNetwork.GlossTokenizer.gloss2id_file={demo / 'gloss2ids.pkl'}",
        f"training.model_dir={tmp_path / 'run'}", "training.max_steps=2",
        "training.num_workers=0", "training.batch_size=2",
    ]  # fmt: skip
    assert training.main(["--config", str(DEMO_KEYPOINT), "--override", *overrides]) == 0
    assert (tmp_path / "run" / "results.json").is_file()


def test_command_line_errors_exit_with_2(tmp_path: Path, capsys):
    assert main([str(tmp_path / "absent"), "-o", str(tmp_path / "x.pkl")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([str(tmp_path), "-o", str(tmp_path / "x.pkl"), "--estimator", "openpose"]) == 2
    assert "valid: mediapipe, onnx" in capsys.readouterr().err
    assert main([str(tmp_path), "-o", str(tmp_path / "x.pkl"), "--estimator", "onnx"]) == 2
    assert "--onnx-model" in capsys.readouterr().err
