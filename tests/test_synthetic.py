"""The synthetic demo dataset: formats, determinism, and that its signal is learnable."""

import gzip
import pickle
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dataset.synthetic import (
    SPLITS,
    SyntheticConfig,
    ensure_demo_dataset,
    generate_demo_dataset,
    gloss_to_text,
    main,
    plan_split,
)
from utils.errors import ConfigurationError

SMALL = {"num_train": 8, "num_dev": 3, "num_test": 3}
HANDS = slice(91, 133)


def _annotations(path: Path) -> list[dict]:
    with gzip.open(path, "rb") as handle:
        return pickle.load(handle)


def _keypoints(path: Path) -> dict:
    with open(path, "rb") as handle:
        return pickle.load(handle)


def _frame(archive: zipfile.ZipFile, name: str, index: int) -> np.ndarray:
    """Frame ``index`` (0-based) of a sample, RGB ``(H, W, 3)``."""
    data = archive.read(f"images/{name}/images{index + 1:04d}.png")
    return cv2.cvtColor(
        cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """The default-sized dataset and the seconds it took to generate."""
    out = tmp_path_factory.mktemp("demo")
    start = time.perf_counter()
    generate_demo_dataset(out, seed=0)
    return out, time.perf_counter() - start


def test_generation_is_fast(demo: tuple[Path, float]) -> None:
    # Target is < 10 s on 2 cores; the margin absorbs other jobs on a shared machine.
    assert demo[1] < 15.0


def test_same_seed_gives_identical_files(tmp_path: Path) -> None:
    first = generate_demo_dataset(tmp_path / "a", seed=3, **SMALL)
    second = generate_demo_dataset(tmp_path / "b", seed=3, **SMALL)
    files = sorted(p.name for p in first.root.iterdir())
    assert files == sorted(p.name for p in second.root.iterdir())
    for name in files:
        assert (first.root / name).read_bytes() == (second.root / name).read_bytes(), name
    other = generate_demo_dataset(tmp_path / "c", seed=4, **SMALL)
    assert _keypoints(other.keypoints).keys() == _keypoints(first.keypoints).keys()
    assert other.frames_zip.read_bytes() != first.frames_zip.read_bytes()
    glosses = [[s["gloss"] for s in _annotations(p.annotations["train"])] for p in (first, other)]
    assert glosses[0] != glosses[1]


def test_annotation_format(demo: tuple[Path, float]) -> None:
    root = demo[0]
    config = SyntheticConfig()
    for split in SPLITS:
        samples = _annotations(root / f"demo.{split}")
        assert len(samples) == config.split_size(split)
        for sample in samples:
            assert list(sample) == [
                "name",
                "signer",
                "gloss",
                "text",
                "sign",
                "num_frames",
                "alignments",
            ]
            assert sample["name"].startswith(f"{split}/")
            assert sample["signer"].startswith("Signer")
            words = sample["gloss"].split(" ")
            assert 2 <= len(words) <= 5 and all(w.isupper() for w in words)
            assert sample["text"] == sample["text"].lower() and sample["text"].endswith(" .")
            assert isinstance(sample["sign"], torch.Tensor) and sample["sign"].numel() == 0
            assert sample["alignments"] == {}
            assert sample["num_frames"] >= 4 * len(words)


def test_vocabulary_format(demo: tuple[Path, float]) -> None:
    root = demo[0]
    with open(root / "gloss2ids.pkl", "rb") as handle:
        gloss2ids = pickle.load(handle)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "zh_CN", "de_DE", "zh_CSL", "de_DGS"]
    assert list(gloss2ids)[:9] == specials
    assert sorted(gloss2ids.values()) == list(range(len(gloss2ids)))
    assert gloss2ids["<s>"] == 0
    used = {w for s in _annotations(root / "demo.train") for w in s["gloss"].split()}
    assert {w.lower() for w in used} == set(list(gloss2ids)[9:])
    assert 12 <= len(used) <= 20


def test_frames_and_keypoints_match_annotations(demo: tuple[Path, float]) -> None:
    root = demo[0]
    keypoints = _keypoints(root / "demo-keypoints.pkl")
    with zipfile.ZipFile(root / "demo-videos.zip") as archive:
        members = set(archive.namelist())
        for split in SPLITS:
            for sample in _annotations(root / f"demo.{split}")[:5]:
                name, frames = sample["name"], sample["num_frames"]
                points = keypoints[name]["keypoints"]
                assert points.dtype == np.float32 and points.shape == (frames, 133, 3)
                assert f"images/{name}/images{frames:04d}.png" in members
                assert f"images/{name}/images{frames + 1:04d}.png" not in members
                assert _frame(archive, name, 0).shape == (64, 64, 3)
    assert len(members) == sum(
        s["num_frames"] for sp in SPLITS for s in _annotations(root / f"demo.{sp}")
    )


def test_rendered_hands_sit_on_hand_keypoints(demo: tuple[Path, float]) -> None:
    root = demo[0]
    keypoints = _keypoints(root / "demo-keypoints.pkl")
    checked = 0
    with zipfile.ZipFile(root / "demo-videos.zip") as archive:
        for sample in _annotations(root / "demo.dev")[:6]:
            points = keypoints[sample["name"]]["keypoints"]
            for t in range(sample["num_frames"]):
                frame = _frame(archive, sample["name"], t)
                background = frame[0, 0]  # the top-left corner is never covered
                xy = np.rint(points[t, HANDS, :2]).astype(int)
                inside = (xy[:, 0] >= 0) & (xy[:, 0] < 64) & (xy[:, 1] >= 0) & (xy[:, 1] < 64)
                colours = frame[xy[inside, 1], xy[inside, 0]]
                assert (colours != background).any(axis=1).all()
                checked += int(inside.sum())
    assert checked > 1000


def _segment_features(points: np.ndarray, span: tuple[int, int]) -> np.ndarray:
    """Hand keypoints (x, y) at 5 evenly spaced moments of a gloss, flattened."""
    start, end = span
    times = np.linspace(start, end - 1, 5)
    hands = points[:, HANDS, :2].reshape(len(points), -1)
    return np.stack(
        [np.interp(times, np.arange(len(points)), hands[:, k]) for k in range(hands.shape[1])], 1
    ).ravel()


def _nearest_centroid_accuracy(train: list, evaluate: list) -> float:
    labels = sorted({g for g, _ in train})
    centroids = np.stack([np.mean([f for g, f in train if g == label], 0) for label in labels])
    hits = [labels[np.argmin(((centroids - f) ** 2).sum(1))] == g for g, f in evaluate]
    return float(np.mean(hits))


def test_keypoints_identify_each_gloss(demo: tuple[Path, float]) -> None:
    root = demo[0]
    keypoints = _keypoints(root / "demo-keypoints.pkl")
    segments = {}
    for split in ("train", "dev"):
        segments[split] = [
            (gloss, _segment_features(keypoints[plan.name]["keypoints"] / 64.0, span))
            for plan in plan_split(SyntheticConfig(), split, seed=0)
            for gloss, span in zip(plan.glosses, plan.spans, strict=True)
        ]
    assert _nearest_centroid_accuracy(segments["train"], segments["dev"]) >= 0.97
    # Samples of one gloss agree far better than different glosses do.
    labels = sorted({g for g, _ in segments["train"]})
    groups = [np.stack([f for g, f in segments["train"] if g == label]) for label in labels]
    centroids = np.stack([group.mean(0) for group in groups])
    spread = np.mean(
        [
            np.linalg.norm(group - c, axis=1).mean()
            for group, c in zip(groups, centroids, strict=True)
        ]
    )
    distances = np.linalg.norm(centroids[:, None] - centroids[None], axis=-1)
    assert distances[~np.eye(len(labels), dtype=bool)].min() > 2.5 * spread


def test_frames_identify_each_gloss(demo: tuple[Path, float]) -> None:
    """The RGB stream alone carries the gloss: where the picture changed from the first frame."""
    root = demo[0]
    segments: dict[str, list] = {}
    with zipfile.ZipFile(root / "demo-videos.zip") as archive:
        for split, count in (("train", 80), ("dev", 20)):
            segments[split] = []
            for plan in plan_split(SyntheticConfig(), split, seed=0)[:count]:
                rest = _frame(archive, plan.name, 0).astype(int)
                for gloss, (start, end) in zip(plan.glosses, plan.spans, strict=True):
                    masks = []
                    for t in (start, (start + end - 1) // 2, end - 1):
                        moved = np.abs(_frame(archive, plan.name, t) - rest).sum(-1) > 30
                        masks.append(
                            cv2.resize(
                                moved.astype(np.float32), (16, 16), interpolation=cv2.INTER_AREA
                            )
                        )
                    segments[split].append((gloss, np.concatenate(masks).ravel()))
    assert _nearest_centroid_accuracy(segments["train"], segments["dev"]) >= 0.9


@pytest.mark.parametrize(
    ("glosses", "text"),
    [
        (("REGEN", "STARK"), "der regen ist kräftig ."),
        (("STARK", "WIND", "NORD"), "der wind ist kräftig im norden ."),
        (("NORD", "MORGEN", "REGEN"), "morgen kommt der regen im norden ."),
        (("KALT", "HEUTE"), "heute wird es kalt ."),
        (("SUED", "NORD"), "es bleibt ruhig im süden und im norden ."),
        (("WOLKE", "NACHT"), "in der nacht kommen die wolken ."),
        (("SONNE", "REGEN", "WARM"), "die sonne und der regen sind warm ."),
    ],
)
def test_text_grammar(glosses: tuple[str, ...], text: str) -> None:
    assert gloss_to_text(glosses) == text


def test_text_is_a_function_of_the_glosses(demo: tuple[Path, float]) -> None:
    root = demo[0]
    seen: dict[str, str] = {}
    for split in SPLITS:
        for sample in _annotations(root / f"demo.{split}"):
            assert seen.setdefault(sample["gloss"], sample["text"]) == sample["text"]
            assert sample["text"] == gloss_to_text(sample["gloss"].split())
    with pytest.raises(ConfigurationError):
        gloss_to_text(["NOT-A-GLOSS"])


def test_every_gloss_spans_enough_frames() -> None:
    config = SyntheticConfig()
    for plan in plan_split(config, "train", seed=0):
        assert plan.spans[0][0] == config.rest_frames
        assert plan.spans[-1][1] == plan.num_frames - config.rest_frames
        for (_, end), (next_start, _) in zip(plan.spans, plan.spans[1:]):
            assert end == next_start
        assert all(6 <= end - start <= 10 for start, end in plan.spans)


def test_ensure_generates_only_when_needed(tmp_path: Path) -> None:
    paths = ensure_demo_dataset(tmp_path, **SMALL)
    stamp = paths.frames_zip.stat().st_mtime_ns
    assert ensure_demo_dataset(tmp_path, **SMALL).frames_zip.stat().st_mtime_ns == stamp
    paths.keypoints.unlink()
    ensure_demo_dataset(tmp_path, **SMALL)
    assert paths.keypoints.is_file()
    changed = {**SMALL, "num_dev": 4}
    ensure_demo_dataset(tmp_path, **changed)
    assert len(_annotations(paths.annotations["dev"])) == 4


def test_invalid_settings_are_rejected() -> None:
    with pytest.raises(ConfigurationError, match="min_frames_per_gloss"):
        SyntheticConfig(min_frames_per_gloss=3)
    with pytest.raises(ConfigurationError, match="vocab_size"):
        SyntheticConfig(vocab_size=99)


def test_command_line(tmp_path: Path) -> None:
    main(
        [
            "--out",
            str(tmp_path),
            "--seed",
            "1",
            "--num-train",
            "2",
            "--num-dev",
            "1",
            "--num-test",
            "1",
            "--frame-size",
            "48",
            "40",
        ]
    )
    with zipfile.ZipFile(tmp_path / "demo-videos.zip") as archive:
        name = _annotations(tmp_path / "demo.test")[0]["name"]
        assert _frame(archive, name, 0).shape == (48, 40, 3)
