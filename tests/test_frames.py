import pickle
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from dataset.annotations import Sample
from dataset.frames import (
    FRAME_LAYOUTS,
    FolderFrameReader,
    FrameFit,
    VideoFrameReader,
    ZipFrameReader,
    build_frame_reader,
    default_layout,
)
from utils.errors import ConfigurationError, DataError

H, W = 6, 8


def _rgb(index: int, height: int = H, width: int = W) -> np.ndarray:
    """A frame whose colour encodes its index: R = 20 * index, G = 60, B = 200."""
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[...] = (20 * index, 60, 200)
    return frame


def _encode(rgb: np.ndarray, ext: str = ".png") -> bytes:
    ok, data = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


def _write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for member, data in members.items():
            z.writestr(member, data)
    return path


def test_phoenix2014t_zip_layout(tmp_path: Path):
    name = "train/01April_2010_Thursday_heute-6694"
    members = {f"images/{name}/images{i + 1:04d}.png": _encode(_rgb(i)) for i in range(5)}
    reader = build_frame_reader("phoenix-2014t", _write_zip(tmp_path / "p.zip", members))
    frames = reader.read(Sample(name=name, num_frames=5), [0, 2, 2, 4])
    assert frames.shape == (4, H, W, 3) and frames.dtype == np.uint8
    assert frames[:, 0, 0, 0].tolist() == [0, 40, 40, 80]  # red channel first: RGB order
    assert (frames[..., 1] == 60).all() and (frames[..., 2] == 200).all()
    assert reader.count_frames(Sample(name=name)) == 5  # counted from the members


def test_phoenix2014_zip_layout(tmp_path: Path):
    name = "fullFrame-210x260px/train/01April_2010_Thursday_heute_default-0/1/01April_2010_Thursday_heute"
    members = {f"{name}.avi_pid0_fn{i:06d}-0.png": _encode(_rgb(i)) for i in range(3)}
    reader = build_frame_reader("phoenix-2014", _write_zip(tmp_path / "p14.zip", members))
    frames = reader.read(Sample(name=name, num_frames=3), np.array([2, 0]))
    assert frames[:, 0, 0, 0].tolist() == [40, 0]


def test_csl_daily_zip_layout_cut_and_resize(tmp_path: Path):
    name = "S000000_P0000_T00"
    image = _rgb(3, 512, 512)
    image[:80] = 0  # the rows csl_cut removes
    members = {
        f"sentence_frames-512x512/{name}/{i:06d}.jpg": _encode(image, ".jpg") for i in [0, 1]
    }
    path = _write_zip(tmp_path / "csl.zip", members)
    sample = Sample(name=name, num_frames=2)
    default = build_frame_reader("csl-daily", path).read(sample, [0, 1])
    assert default.shape == (2, 320, 320, 3)
    cut = build_frame_reader("csl-daily", path, csl_cut=True, csl_resize=None).read(sample, [1])
    assert cut.shape == (1, 432, 512, 3)
    assert np.abs(cut[0, :, :, 0].astype(int) - 60).max() <= 10  # black rows gone
    small = build_frame_reader("csl-daily", path, csl_cut=True, csl_resize=[320, 270])
    assert small.read(sample, [0]).shape == (1, 270, 320, 3)


def test_zip_errors_name_zip_member_and_sample(tmp_path: Path):
    name = "dev/sample-1"
    members = {
        f"images/{name}/images0001.png": _encode(_rgb(0)),
        f"images/{name}/images0002.png": b"\x89PNG\r\n\x1a\n broken",
    }
    reader = build_frame_reader("phoenix-2014t", _write_zip(tmp_path / "bad.zip", members))
    sample = Sample(name=name, num_frames=3)
    with pytest.raises(DataError, match=r"bad\.zip.*images0002\.png.*dev/sample-1.*corrupt"):
        reader.read(sample, [0, 1])
    with pytest.raises(DataError, match=r"bad\.zip.*images0003\.png.*dev/sample-1.*missing"):
        reader.read(sample, [2])
    with pytest.raises(DataError, match="no frames for sample 'other'"):
        reader.count_frames(Sample(name="other"))
    with pytest.raises(DataError, match="absent.zip"):
        build_frame_reader("phoenix-2014t", tmp_path / "absent.zip")
    not_zip = tmp_path / "not_a.zip"
    not_zip.write_bytes(b"plain bytes")
    with pytest.raises(DataError, match=r"not_a\.zip"):
        build_frame_reader("phoenix-2014t", not_zip).read(sample, [0])


def test_zip_handle_is_per_process_and_not_pickled(tmp_path: Path):
    name = "s"
    members = {f"images/{name}/images0001.png": _encode(_rgb(1))}
    reader = build_frame_reader("phoenix-2014t", _write_zip(tmp_path / "h.zip", members))
    assert isinstance(reader, ZipFrameReader)
    reader._handles = {-1: "handle of another process"}  # as inherited through fork
    assert reader.read(Sample(name=name), [0])[0, 0, 0, 0] == 20
    assert list(reader._handles.values())[0] != "handle of another process"
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._handles == {}
    assert clone.read(Sample(name=name), [0])[0, 0, 0, 0] == 20
    reader.close()
    clone.close()


def test_folder_reader_sorted_by_name(tmp_path: Path):
    folder = tmp_path / "clips" / "a"
    folder.mkdir(parents=True)
    for i in [2, 0, 1]:  # written out of order
        (folder / f"frame_{i:03d}.png").write_bytes(_encode(_rgb(i)))
    (folder / "notes.txt").write_text("not an image")
    reader = FolderFrameReader(root=tmp_path / "clips")
    sample = Sample(name="a")
    assert reader.count_frames(sample) == 3
    assert reader.read(sample, [2, 1, 0, 0])[:, 0, 0, 0].tolist() == [40, 20, 0, 0]
    explicit = Sample(name="x", video=folder)
    resized = FolderFrameReader(fit=FrameFit((3, 4))).read(explicit, [1])
    assert resized.shape == (1, 3, 4, 3) and resized[0, 0, 0, 0] == 20


def test_folder_reader_errors(tmp_path: Path):
    reader = FolderFrameReader(root=tmp_path)
    with pytest.raises(DataError, match=r"missing.*does not exist"):
        reader.read(Sample(name="missing"), [0])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        reader.count_frames(Sample(name="empty"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "0.png").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"0\.png of sample 'bad' is corrupt"):
        reader.read(Sample(name="bad"), [0])
    with pytest.raises(DataError, match="has 1 images, frame 3"):
        reader.read(Sample(name="bad"), [3])
    with pytest.raises(DataError, match="no video path"):
        FolderFrameReader().read(Sample(name="bad"), [0])


@pytest.mark.parametrize(("fourcc", "suffix"), [("mp4v", ".mp4"), ("MJPG", ".avi")])
def test_video_reader(tmp_path: Path, fourcc: str, suffix: str):
    path = tmp_path / f"clip{suffix}"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25, (32, 24))
    assert writer.isOpened()
    for i in range(10):
        writer.write(cv2.cvtColor(_rgb(i, 24, 32), cv2.COLOR_RGB2BGR))
    writer.release()
    reader = VideoFrameReader()
    sample = Sample(name="clip", video=path)
    assert reader.count_frames(sample) == 10
    frames = reader.read(sample, [9, 0, 5, 5])
    assert frames.shape == (4, 24, 32, 3)
    red = frames[:, 12, 16, 0].astype(int)
    assert np.abs(red - np.array([180, 0, 100, 100])).max() <= 8
    assert np.abs(frames[:, 12, 16, 2].astype(int) - 200).max() <= 8  # blue stays blue
    with pytest.raises(DataError, match=r"ends after 10 frames, frame 10"):
        reader.read(sample, [10])
    with pytest.raises(DataError, match="absent.mp4"):
        reader.count_frames(Sample(name="x", video=tmp_path / "absent.mp4"))


def test_video_reader_accepts_image_folders(tmp_path: Path):
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "0.png").write_bytes(_encode(_rgb(4)))
    reader = build_frame_reader("video", tmp_path)
    assert reader.count_frames(Sample(name="f")) == 1
    assert reader.read(Sample(name="f"), [0])[0, 0, 0, 0] == 80


def test_registry_and_defaults():
    assert set(FRAME_LAYOUTS) == {"phoenix-2014t", "phoenix-2014", "csl-daily", "folder", "video"}
    with pytest.raises(TypeError):
        FRAME_LAYOUTS["mine"] = FolderFrameReader  # read-only
    with pytest.raises(ConfigurationError, match=r"'Phoenix'.*\['csl-daily', 'folder'"):
        build_frame_reader("Phoenix")
    with pytest.raises(ConfigurationError, match=r"no option\(s\) \['csl_cut'\]"):
        build_frame_reader("folder", None, csl_cut=True)
    with pytest.raises(ConfigurationError, match="needs the path of its zip"):
        build_frame_reader("csl-daily")
    assert default_layout("Phoenix-2014T") == "phoenix-2014t"
    assert default_layout("phoenix-2014") == "phoenix-2014"
    assert default_layout("csl-daily") == "csl-daily"
    assert default_layout("my-signs") == "video"
