"""Videos -> frames the loaders read: layouts, sizes, frame rates, resume, bad videos."""

import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from dataset.annotations import Sample, load_annotations
from dataset.frames import FolderFrameReader, ZipFrameReader, phoenix2014t_member
from preprocess import preprocess_video as module
from preprocess.preprocess_video import main, preprocess_videos


def _video(path: Path, size: tuple[int, int], frames: int, fps: float = 25.0) -> Path:
    height, width = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for i in range(frames):
        frame = np.zeros((height, width, 3), np.uint8)
        frame[:, : width // 2] = 200  # a bright left half, to see the crop
        frame[0, 0] = i
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture()
def videos(tmp_path: Path) -> Path:
    folder = tmp_path / "videos"
    folder.mkdir()
    _video(folder / "wide.mp4", (240, 320), 10)
    _video(folder / "tall.mp4", (400, 300), 20, fps=50.0)
    (folder / "broken.avi").write_bytes(b"no video here")
    return folder


def test_a_phoenix_layout_zip_of_videos_of_any_size(videos: Path, tmp_path: Path):
    output = tmp_path / "out" / "frames.zip"
    summary = preprocess_videos(videos, output, fps=25)
    assert summary["clips"] == 2 and set(summary["failed"]) == {"broken"}
    with zipfile.ZipFile(output) as archive:
        names = archive.namelist()
    assert "images/wide/images0001.png" in names and "images/tall/images0010.png" in names
    assert "images/tall/images0011.png" not in names  # 20 frames at 50/s -> 10 at 25/s
    reader = ZipFrameReader(output, phoenix2014t_member)
    frames = reader.read(Sample(name="wide"), np.arange(10))
    assert frames.shape == (10, 260, 210, 3)  # scaled and centre-cropped, not stretched
    manifest = load_annotations(output.with_name("frames.zip.jsonl"))
    assert {(s.name, s.num_frames) for s in manifest} == {("wide", 10), ("tall", 10)}
    assert not output.with_name("frames.zip.parts").exists()


def test_a_folder_layout_with_another_size_and_padding(videos: Path, tmp_path: Path):
    output = tmp_path / "frames"
    preprocess_videos(videos, output, layout="folder", size=(100, 100), fit="pad")
    reader = FolderFrameReader(root=output)
    wide = reader.read(Sample(name="wide"), [0])[0]
    assert wide.shape == (100, 100, 3)
    assert wide[:10].max() < 20 and wide[50, 10].min() > 150  # black bands above, content inside
    assert reader.count_frames(Sample(name="tall")) == 20


def test_an_interrupted_run_goes_on_with_the_other_videos(videos, tmp_path, monkeypatch):
    output = tmp_path / "frames.zip"
    encoded = []
    original = module.encode_clip

    def counted(task):
        encoded.append(task.sample.name)
        return original(task)

    monkeypatch.setattr(module, "encode_clip", counted)
    parts = tmp_path / "frames.zip.parts"
    parts.mkdir()
    module._store(
        original(
            module.Task(
                Sample(name="wide", video=videos / "wide.mp4"),
                "phoenix-2014t",
                (260, 210),
                "crop",
                None,
            )
        ),
        output,
        "phoenix-2014t",
    )
    summary = preprocess_videos(videos, output)
    assert sorted(encoded) == ["broken", "tall"] and summary["clips"] == 2


def test_bad_arguments_exit_with_2(tmp_path: Path, capsys):
    assert main([str(tmp_path / "absent"), "-o", str(tmp_path / "x.zip")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "-o", str(tmp_path / "x.zip")]) == 2
    assert "no video file" in capsys.readouterr().err
