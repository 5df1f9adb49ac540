"""The synthetic demo dataset: formats, determinism, and that its signal is learnable."""

import gzip
import json
import pickle
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dataset.synthetic import (
    GENERATOR_VERSION,
    GLOSS_SIGNS,
    SPLITS,
    SamplePlan,
    SyntheticConfig,
    ensure_demo_dataset,
    generate_demo_dataset,
    gloss_to_text,
    main,
    plan_split,
    render_sample,
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
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default-sized dataset (``python -m dataset.synthetic`` prints how long it takes)."""
    out = tmp_path_factory.mktemp("demo")
    generate_demo_dataset(out, seed=0)
    return out


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


def test_annotation_format(demo: Path) -> None:
    root = demo
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


def test_vocabulary_format(demo: Path) -> None:
    root = demo
    with open(root / "gloss2ids.pkl", "rb") as handle:
        gloss2ids = pickle.load(handle)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "zh_CN", "de_DE", "zh_CSL", "de_DGS"]
    assert list(gloss2ids)[:9] == specials
    assert sorted(gloss2ids.values()) == list(range(len(gloss2ids)))
    assert gloss2ids["<s>"] == 0
    used = {w for s in _annotations(root / "demo.train") for w in s["gloss"].split()}
    assert {w.lower() for w in used} == set(list(gloss2ids)[9:])
    assert 12 <= len(used) <= 20


def test_frames_and_keypoints_match_annotations(demo: Path) -> None:
    root = demo
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


def test_rendered_hands_sit_on_hand_keypoints(tmp_path: Path) -> None:
    # Noise-free keypoints: every hand point is a vertex of the drawn hand.
    root = generate_demo_dataset(tmp_path, keypoint_noise=0.0, **SMALL).root
    keypoints = _keypoints(root / "demo-keypoints.pkl")
    checked = 0
    with zipfile.ZipFile(root / "demo-videos.zip") as archive:
        for sample in _annotations(root / "demo.train"):
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


def test_keypoint_noise_is_what_was_asked(tmp_path: Path) -> None:
    clean = _keypoints(generate_demo_dataset(tmp_path / "a", keypoint_noise=0.0, **SMALL).keypoints)
    noisy = _keypoints(generate_demo_dataset(tmp_path / "b", keypoint_noise=0.4, **SMALL).keypoints)
    errors = np.concatenate(
        [(noisy[n]["keypoints"] - clean[n]["keypoints"])[..., :2].ravel() for n in clean]
    )
    assert 0.35 < errors.std() < 0.45 and abs(errors.mean()) < 0.05


def _twin_plans(first: str, second: str) -> tuple[SamplePlan, SamplePlan]:
    """Two one-gloss samples alike in everything (seed, signer, timing) but the gloss."""
    return tuple(
        SamplePlan(f"twin/{g}", 1, (g,), ((2, 10),), 12, seed=(0, 0, 0)) for g in (first, second)
    )


@pytest.mark.parametrize("gloss", [2, 6, 10, 14])
def test_palm_twins_draw_the_same_frames(gloss: int) -> None:
    # Odd movements: glosses k and k + 1 differ only in which side the thumb is.
    names = [sign.gloss for sign in GLOSS_SIGNS]
    a, b = (
        render_sample(p, SyntheticConfig()) for p in _twin_plans(names[gloss], names[gloss + 1])
    )
    assert np.array_equal(a.frames, b.frames)
    thumb_tips = [s.keypoints[5, 112 + 4, :2] for s in (a, b)]  # right thumb tip, mid-gloss
    assert np.linalg.norm(thumb_tips[0] - thumb_tips[1]) > 5.0  # pixels of the 64 x 64 frame


@pytest.mark.parametrize("gloss", [0, 4, 8, 12])
def test_colour_twins_give_the_same_keypoints(gloss: int) -> None:
    # Even movements: glosses k and k + 1 differ only in the colour of the hands.
    names = [sign.gloss for sign in GLOSS_SIGNS]
    a, b = (
        render_sample(p, SyntheticConfig()) for p in _twin_plans(names[gloss], names[gloss + 1])
    )
    assert np.array_equal(a.keypoints, b.keypoints)
    changed = np.abs(a.frames.astype(int) - b.frames).sum(-1) > 100
    assert changed[2:10].sum(axis=(1, 2)).min() > 20  # the hands of every gloss frame
    assert not changed[:2].any() and not changed[10:].any()  # hands at rest are skin


def test_without_the_split_every_cue_is_in_both_streams() -> None:
    names = [sign.gloss for sign in GLOSS_SIGNS]
    config = SyntheticConfig(cue_split=False)
    for first, second in ((0, 1), (2, 3)):
        a, b = (render_sample(p, config) for p in _twin_plans(names[first], names[second]))
        assert not np.array_equal(a.frames, b.frames)
        assert np.abs(a.keypoints - b.keypoints).max() > 5.0


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


def _keypoint_segments(config: SyntheticConfig, root: Path, label) -> dict[str, list]:
    keypoints = _keypoints(root / "demo-keypoints.pkl")
    return {
        split: [
            (label(gloss), _segment_features(keypoints[plan.name]["keypoints"] / 64.0, span))
            for plan in plan_split(config, split, seed=0)
            for gloss, span in zip(plan.glosses, plan.spans, strict=True)
        ]
        for split in ("train", "dev")
    }


def _index(gloss: str) -> int:
    return [sign.gloss for sign in GLOSS_SIGNS].index(gloss)


def _up_to_colour(gloss: str) -> int:
    """The gloss index, colour pairs (even movements) merged."""
    index = _index(gloss)
    return index & ~1 if (index // 2) % 2 == 0 else index


def _up_to_palm(gloss: str) -> int:
    """The gloss index, palm pairs (odd movements) merged."""
    index = _index(gloss)
    return index & ~1 if (index // 2) % 2 == 1 else index


def test_keypoints_identify_movement_and_palm(demo: Path) -> None:
    segments = _keypoint_segments(SyntheticConfig(), demo, _up_to_colour)
    assert _nearest_centroid_accuracy(segments["train"], segments["dev"]) >= 0.97
    whole = _keypoint_segments(SyntheticConfig(), demo, _index)
    assert _nearest_centroid_accuracy(whole["train"], whole["dev"]) < 0.85  # colour is missing


def test_without_the_split_keypoints_identify_each_gloss(tmp_path: Path) -> None:
    config = SyntheticConfig(cue_split=False)
    root = generate_demo_dataset(tmp_path, cue_split=False).root
    segments = _keypoint_segments(config, root, _index)
    assert _nearest_centroid_accuracy(segments["train"], segments["dev"]) >= 0.97


def _frame_segments(root: Path, label) -> dict[str, list]:
    """Per gloss: where the picture changed from the first frame (3 moments, 16 x 16) and the
    mean colour of the changed pixels."""
    segments: dict[str, list] = {}
    with zipfile.ZipFile(root / "demo-videos.zip") as archive:
        for split, count in (("train", 80), ("dev", 20)):
            segments[split] = []
            for plan in plan_split(SyntheticConfig(), split, seed=0)[:count]:
                rest = _frame(archive, plan.name, 0).astype(int)
                for gloss, (start, end) in zip(plan.glosses, plan.spans, strict=True):
                    parts = []
                    for t in (start, (start + end - 1) // 2, end - 1):
                        frame = _frame(archive, plan.name, t)
                        moved = np.abs(frame - rest).sum(-1) > 30
                        small = cv2.resize(moved.astype(np.float32), (16, 16), cv2.INTER_AREA)
                        parts += [small.ravel(), 4 * frame[moved].mean(0) / 255.0]
                    segments[split].append((label(gloss), np.concatenate(parts)))
    return segments


def test_frames_identify_movement_and_colour(demo: Path) -> None:
    segments = _frame_segments(demo, _up_to_palm)
    assert _nearest_centroid_accuracy(segments["train"], segments["dev"]) >= 0.9
    whole = _frame_segments(demo, _index)
    assert _nearest_centroid_accuracy(whole["train"], whole["dev"]) < 0.85  # palm is missing


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


def test_text_is_a_function_of_the_glosses(demo: Path) -> None:
    root = demo
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


def test_rests_are_drawn_evenly_between_their_bounds() -> None:
    config = SyntheticConfig(rest_frames=2, max_rest_frames=8)
    rests = []
    for plan in plan_split(config, "train", seed=0):
        rests += [plan.spans[0][0], plan.num_frames - plan.spans[-1][1]]
        for (_, end), (next_start, _) in zip(plan.spans, plan.spans[1:]):
            assert end == next_start
    counts = np.bincount(rests, minlength=9)
    assert len(counts) == 9 and counts[:2].sum() == 0
    assert counts[2:].min() > 0.5 * len(rests) / 7


def test_drawn_rests_keep_the_sentences_and_signers_of_fixed_ones() -> None:
    fixed = plan_split(SyntheticConfig(), "dev", seed=0)
    varied = plan_split(SyntheticConfig(max_rest_frames=8), "dev", seed=0)
    assert [(p.glosses, p.signer) for p in fixed] == [(p.glosses, p.signer) for p in varied]
    lengths = [[b - a for a, b in p.spans] for p in fixed]
    assert lengths == [[b - a for a, b in p.spans] for p in varied]
    assert sum(p.num_frames for p in varied) > sum(p.num_frames for p in fixed)


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


def test_data_of_an_older_generator_is_regenerated(tmp_path: Path) -> None:
    paths = ensure_demo_dataset(tmp_path, **SMALL)
    info = json.loads(paths.info.read_text())
    assert info["generator_version"] == GENERATOR_VERSION
    paths.info.write_text(json.dumps({**info, "generator_version": GENERATOR_VERSION - 1}))
    stamp = paths.frames_zip.stat().st_mtime_ns
    ensure_demo_dataset(tmp_path, **SMALL)
    assert paths.frames_zip.stat().st_mtime_ns != stamp
    assert json.loads(paths.info.read_text())["generator_version"] == GENERATOR_VERSION


def test_invalid_settings_are_rejected() -> None:
    with pytest.raises(ConfigurationError, match="min_frames_per_gloss"):
        SyntheticConfig(min_frames_per_gloss=3)
    with pytest.raises(ConfigurationError, match="vocab_size"):
        SyntheticConfig(vocab_size=99)
    with pytest.raises(ConfigurationError, match="rest_frames <= max_rest_frames"):
        SyntheticConfig(rest_frames=5, max_rest_frames=4)


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
            "--max-rest-frames",
            "30",
        ]
    )
    with zipfile.ZipFile(tmp_path / "demo-videos.zip") as archive:
        name = _annotations(tmp_path / "demo.test")[0]["name"]
        assert _frame(archive, name, 0).shape == (48, 40, 3)
    info = json.loads((tmp_path / "demo-info.json").read_text())
    assert (info["rest_frames"], info["max_rest_frames"]) == (2, 30)
    plans = plan_split(
        SyntheticConfig(**{k: info[k] for k in ("rest_frames", "max_rest_frames")}), "train", 1
    )
    frames = [s["num_frames"] for s in _annotations(tmp_path / "demo.train")]
    assert frames == [p.num_frames for p in plans[:2]]
