import gzip
import logging
import pickle
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dataset.annotations import Sample
from dataset.batching import (
    FeatureDataset,
    PaddedFeatures,
    SignDataset,
    load_feature_file,
)
from dataset.frames import build_frame_reader
from dataset.gloss_vocabulary import GlossVocabulary
from utils.errors import DataError

H, W, K = 6, 8, 5
VOCAB = GlossVocabulary({"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "a": 4, "b": 5, "c": 6})


def _frame(sample: int, index: int) -> np.ndarray:
    """RGB frame: R = frame index, G = sample index, B = 7."""
    frame = np.empty((H, W, 3), dtype=np.uint8)
    frame[...] = (index, sample, 7)
    return frame


def _png(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


def _keypoints(sample: int, num_frames: int) -> np.ndarray:
    """(T, K, 3): x = frame index, y = sample index, score = 1."""
    kp = np.ones((num_frames, K, 3), dtype=np.float32)
    kp[..., 0] = np.arange(num_frames)[:, None]
    kp[..., 1] = sample
    return kp


@pytest.fixture
def toy(tmp_path: Path):
    """A Phoenix-2014T style zip with four samples of 9, 12, 6 and 16 frames."""
    counts = [9, 12, 6, 16]
    samples = [
        Sample(name=f"train/s{i}", gloss="A B" if i % 2 else "C", text=f"t{i}", num_frames=n)
        for i, n in enumerate(counts)
    ]
    zip_path = tmp_path / "toy.zip"
    with zipfile.ZipFile(zip_path, "w") as z:
        for i, s in enumerate(samples):
            for f in range(s.num_frames):
                z.writestr(f"images/{s.name}/images{f + 1:04d}.png", _png(_frame(i, f)))
    keypoints = {s.name: _keypoints(i, s.num_frames) for i, s in enumerate(samples)}
    return samples, build_frame_reader("phoenix-2014t", zip_path), keypoints


def test_item_and_collation_with_replicate_padding(toy):
    samples, reader, keypoints = toy
    data = SignDataset(samples, frame_reader=reader, keypoints=keypoints, vocabulary=VOCAB)
    item = data[0]
    assert item["frames"].shape == (8, 3, H, W) and item["frames"].dtype == torch.uint8
    assert item["keypoints"].shape == (8, K, 3) and item["keypoints"].dtype == torch.float32
    batch = data.collate_fn([data[i] for i in range(4)])
    assert batch["names"] == [s.name for s in samples]
    assert batch["texts"] == ["t0", "t1", "t2", "t3"]
    assert batch["lengths"].tolist() == [8, 12, 4, 16]  # eval: truncated to multiples of 4
    videos, kps = batch["videos"], batch["keypoints"]
    assert videos.shape == (4, 16, 3, H, W) and videos.dtype == torch.uint8
    assert kps.shape == (4, 16, K, 3) and kps.dtype == torch.float32
    for b, length in enumerate([8, 12, 4, 16]):
        expected = [min(t, length - 1) for t in range(16)]  # last frame repeated
        assert videos[b, :, 0, 0, 0].tolist() == expected  # R channel = frame index
        assert (videos[b, :, 1] == b).all()  # G channel = sample index
        assert kps[b, :, 0, 0].tolist() == expected
        assert (kps[b, :, :, 1] == b).all()
    assert batch["gloss_labels"].tolist() == [[6, 1], [4, 5], [6, 1], [4, 5]]
    assert batch["gloss_lengths"].tolist() == [1, 2, 1, 2]


def test_keypoint_only_and_frame_only(toy):
    samples, reader, keypoints = toy
    kp_only = SignDataset(samples, keypoints=keypoints)
    batch = kp_only.collate_fn([kp_only[1], kp_only[2]])
    assert batch["videos"] is None and batch["keypoints"].shape == (2, 12, K, 3)
    assert batch["gloss_labels"] is None
    rgb_only = SignDataset(samples, frame_reader=reader)
    batch = rgb_only.collate_fn([rgb_only[3]])
    assert batch["keypoints"] is None and batch["videos"].shape == (1, 16, 3, H, W)


def test_training_items_are_sampled_and_reproducible(toy):
    samples, reader, keypoints = toy
    args = dict(frame_reader=reader, keypoints=keypoints, is_train=True, tmin=0.5, tmax=1.5)
    data = SignDataset(samples, seed=3, **args)
    first = data[3]
    again = SignDataset(samples, seed=3, **args)[3]
    assert torch.equal(first["frames"], again["frames"])
    assert first["length"] % 4 == 0
    # frames and keypoints come from the same sampled indices
    assert first["frames"][:, 0, 0, 0].tolist() == first["keypoints"][:, 0, 0].int().tolist()
    lengths = set()
    for epoch in range(6):
        data.set_epoch(epoch)
        lengths.add(data[3]["length"])
    assert len(lengths) > 1  # a new draw each epoch


def test_skips_are_logged(toy, caplog):
    samples, reader, keypoints = toy
    samples = [
        *samples,
        Sample(name="train/not_in_keypoints", gloss="A", num_frames=9),
        Sample(name="train/wrong_count", gloss="A", num_frames=10),
        Sample(name="train/no_gloss", gloss="  ", num_frames=8),
        Sample(name="train/too_short", gloss="A", num_frames=3),
    ]
    keypoints = dict(keypoints)
    keypoints["train/wrong_count"] = _keypoints(0, 12)
    keypoints["train/no_gloss"] = _keypoints(0, 8)
    keypoints["train/too_short"] = _keypoints(0, 3)
    with caplog.at_level(logging.WARNING, logger="dataset.batching"):
        data = SignDataset(
            samples, frame_reader=reader, keypoints=keypoints, vocabulary=VOCAB, split="train"
        )
    assert len(data) == 4
    reasons = dict(data.skipped)
    assert reasons == {
        "train/not_in_keypoints": "missing from the keypoint file",
        "train/wrong_count": "keypoints have 12 frames, the annotation says 10",
        "train/no_gloss": "empty gloss",
        "train/too_short": "3 frames, fewer than 4",
    }
    for name, reason in reasons.items():
        assert any(name in r.message and reason in r.message for r in caplog.records), name
    assert "skipped 4 of 8 samples" in caplog.text
    # without a vocabulary, glosses are not needed
    no_vocab = SignDataset(samples[:4] + [samples[6]], frame_reader=reader, keypoints=keypoints)
    assert len(no_vocab) == 5


def test_all_skipped_is_an_error(toy):
    samples, reader, _ = toy
    with pytest.raises(DataError, match="dev: no usable sample among 4"):
        SignDataset(samples, keypoints={}, split="dev")


def test_corrupt_image_names_sample(tmp_path: Path):
    zip_path = tmp_path / "bad.zip"
    with zipfile.ZipFile(zip_path, "w") as z:
        for f in range(4):
            data = b"\x89PNG\r\n\x1a\nbroken" if f == 2 else _png(_frame(0, f))
            z.writestr(f"images/dev/clip7/images{f + 1:04d}.png", data)
    data = SignDataset(
        [Sample(name="dev/clip7", gloss="A", num_frames=4)],
        frame_reader=build_frame_reader("phoenix-2014t", zip_path),
    )
    with pytest.raises(DataError, match=r"bad\.zip.*images0003\.png.*'dev/clip7'"):
        data[0]


def test_num_frames_filled_from_reader(tmp_path: Path):
    folder = tmp_path / "clips" / "x"
    folder.mkdir(parents=True)
    for f in range(6):
        (folder / f"{f:03d}.png").write_bytes(_png(_frame(1, f)))
    sample = Sample(name="x", gloss="A", video=folder)
    data = SignDataset([sample], frame_reader=build_frame_reader("folder"))
    assert data.samples[0].num_frames == 6 and data[0]["length"] == 4


def _batches(loader, epochs=(0, 1)):
    out = []
    for epoch in epochs:
        loader.dataset.set_epoch(epoch)
        for batch in loader:
            out.append((batch["names"], batch["lengths"], batch["videos"], batch["keypoints"]))
    return out


def _write_features(path: Path, features: dict[str, torch.Tensor]) -> Path:
    records = [
        {"name": n, "gloss": "", "text": "", "num_frames": len(f), "sign": f}
        for n, f in features.items()
    ]
    with gzip.open(path, "wb") as f:
        pickle.dump(records, f)
    return path


def test_feature_dataset(tmp_path: Path, caplog):
    samples = [
        Sample(name="a", gloss="A B", text="x"),
        Sample(name="b", gloss="C", text="y"),
        Sample(name="c", gloss="A", text="z"),
    ]
    rgb = {"a": torch.rand(3, 4), "b": torch.rand(5, 4), "c": torch.rand(2, 4)}
    pose = {"a": torch.rand(3, 2), "b": torch.rand(5, 2)}  # no "c"
    rgb_file = _write_features(tmp_path / "rgb.dev", rgb)
    pose_file = _write_features(tmp_path / "pose.dev", pose)
    with caplog.at_level(logging.WARNING, logger="dataset.batching"):
        data = FeatureDataset(
            samples,
            {"head_rgb_input": rgb_file, "inputs_embeds_list": [rgb_file, pose_file]},
            vocabulary=VOCAB,
        )
    assert [s.name for s in data.samples] == ["a", "b"]
    assert data.skipped == [("c", f"missing from feature file {pose_file}")]
    assert "'c'" in caplog.text and "pose.dev" in caplog.text
    batch = data.collate_fn([data[0], data[1]])
    padded = batch["features"]["head_rgb_input"]
    assert isinstance(padded, PaddedFeatures)
    assert padded.values.shape == (2, 5, 4)
    assert torch.equal(padded.values[0, :3], rgb["a"]) and (padded.values[0, 3:] == 0).all()
    assert torch.equal(padded.values[1], rgb["b"])
    assert padded.lengths.tolist() == [3, 5]
    assert padded.mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    embeds = batch["features"]["inputs_embeds_list"]
    assert [e.values.shape for e in embeds] == [(2, 5, 4), (2, 5, 2)]
    assert batch["gloss_labels"].tolist() == [[4, 5], [6, 1]]
    assert batch["texts"] == ["x", "y"]


def test_feature_file_errors(tmp_path: Path):
    with pytest.raises(DataError, match="absent.train"):
        load_feature_file(tmp_path / "absent.train")
    bad = tmp_path / "bad.train"
    bad.write_bytes(b"not gzip")
    with pytest.raises(DataError, match="bad.train"):
        load_feature_file(bad)
    flat = _write_features(tmp_path / "flat.train", {"a": torch.rand(3, 4)})
    records = pickle.loads(gzip.decompress(flat.read_bytes()))
    records[0]["sign"] = torch.rand(3)
    flat.write_bytes(gzip.compress(pickle.dumps(records)))
    with pytest.raises(DataError, match=r"flat\.train, sample 'a'.*\(T, D\)"):
        load_feature_file(flat)
