"""Per-task datasets and loaders built from configs, on a tiny synthetic dataset."""

import gzip
import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import training
from dataset.gloss_vocabulary import GlossVocabulary
from dataset.synthetic import generate_demo_dataset
from dataset.text_tokenizer import VocabularyTextTokenizer
from engine.task_data import Vocabularies, build_dataset, build_loader, load_split
from utils.config import config_from_dict, load_config
from utils.distributed import DistributedContext
from utils.errors import ConfigurationError, DataError

CPU = DistributedContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    generate_demo_dataset(root, seed=1, num_train=6, num_dev=3, num_test=3, vocab_size=6)
    return root


def _cfg(demo: Path, task: str, **data) -> dict:
    base = {
        "task": task,
        "data": {
            "dataset_name": "demo",
            "train": str(demo / "demo.train"),
            "dev": str(demo / "demo.dev"),
            "test": str(demo / "demo.test"),
            **data,
        },
        "model": {},
        "training": {"model_dir": str(demo / "out"), "batch_size": 2, "random_seed": 3},
    }
    return base


def _s2g_config(demo: Path, streams: list[str], dev: Path | None = None):
    data = {
        "input_streams": streams,
        "zip_file": str(demo / "demo-videos.zip"),
        "frame_layout": "phoenix-2014t",
        "keypoint_file": str(demo / "demo-keypoints.pkl"),
        "use_keypoints": ["pose", "hand"],
        "transform_cfg": {"img_size": 64, "temporal_augmentation": {"tmin": 0.5, "tmax": 1.5}},
    }
    raw = _cfg(demo, "S2G", **data)
    if dev is not None:
        raw["data"]["dev"] = str(dev)
    raw["model"] = {
        "RecognitionNetwork": {
            "GlossTokenizer": {"gloss2id_file": str(demo / "gloss2ids.pkl")},
            "s3d": {},
            "keypoint_s3d": {},
            "heatmap_cfg": {"raw_size": [64, 64], "input_size": 32, "sigma": 2},
            "fuse_method": "triplehead_cat_bilateral" if len(streams) == 2 else "empty",
            "lateral": {},
        }
    }
    raw["training"]["optimization"] = {"learning_rate": {"default": 1e-3}}
    return config_from_dict(raw, "demo.yaml")


def test_sign_batches_have_frames_keypoints_and_labels(demo: Path):
    cfg = _s2g_config(demo, ["keypoint", "rgb"])
    vocab = GlossVocabulary.from_file(demo / "gloss2ids.pkl")
    dataset = build_dataset(cfg, "train", Vocabularies(gloss=vocab), is_train=True)
    loader, sampler = build_loader(dataset, 2, shuffle=True, num_workers=0, seed=3, ctx=CPU)
    sampler.set_epoch(0)
    batch = next(iter(loader))
    B, T = batch["videos"].shape[:2]
    assert batch["videos"].dtype == torch.uint8 and batch["videos"].shape[2:] == (3, 64, 64)
    assert batch["keypoints"].shape == (B, T, 11 + 42, 3)
    assert batch["lengths"].max().item() == T and (batch["lengths"] % 4 == 0).all()
    assert batch["gloss_labels"].shape[0] == B
    # every gloss of the batch is in the vocabulary
    assert (batch["gloss_labels"] != vocab.unk_id).all()


def test_prediction_keeps_clips_without_gloss_training_skips_them(demo: Path, tmp_path: Path):
    with gzip.open(demo / "demo.dev", "rb") as handle:
        samples = pickle.load(handle)
    samples[1]["gloss"] = ""
    dev = tmp_path / "unlabelled.dev"
    with gzip.open(dev, "wb") as handle:
        pickle.dump(samples, handle)
    cfg = _s2g_config(demo, ["keypoint"], dev=dev)
    vocabs = Vocabularies(gloss=GlossVocabulary.from_file(demo / "gloss2ids.pkl"))
    predicted = build_dataset(cfg, "dev", vocabs, is_train=False)
    trained = build_dataset(cfg, "dev", vocabs, is_train=True)
    assert len(predicted) == len(samples) == 3
    assert len(trained) == 2
    assert [s.name for s in trained.samples] == [samples[0]["name"], samples[2]["name"]]


def test_loader_order_depends_only_on_seed_and_epoch(demo: Path):
    cfg = _s2g_config(demo, ["keypoint"])
    dataset = build_dataset(
        cfg, "train", Vocabularies(gloss=GlossVocabulary.from_file(demo / "gloss2ids.pkl")), True
    )
    orders = []
    for _ in range(2):
        loader, sampler = build_loader(dataset, 2, shuffle=True, num_workers=0, seed=3, ctx=CPU)
        sampler.set_epoch(1)
        orders.append([n for batch in loader for n in batch["names"]])
    assert orders[0] == orders[1]
    loader, sampler = build_loader(dataset, 2, shuffle=True, num_workers=0, seed=3, ctx=CPU)
    sampler.set_epoch(1, start=2)
    assert [n for batch in loader for n in batch["names"]] == orders[0][2:]


def _epochs(loader, sampler, epochs) -> list[tuple]:
    out = []
    for epoch in epochs:
        sampler.set_epoch(epoch)
        loader.dataset.set_epoch(epoch)
        out += [(b["names"], b["lengths"], b["videos"], b["keypoints"]) for b in loader]
    return out


def test_worker_processes_give_the_same_batches(demo: Path):
    cfg = _s2g_config(demo, ["keypoint", "rgb"])
    vocabs = Vocabularies(gloss=GlossVocabulary.from_file(demo / "gloss2ids.pkl"))
    runs = []
    for workers in (0, 2):
        dataset = build_dataset(cfg, "train", vocabs, is_train=True)
        loader, sampler = build_loader(
            dataset, 2, shuffle=True, num_workers=workers, seed=9, ctx=CPU
        )
        runs.append(_epochs(loader, sampler, [0, 1]))
    serial, parallel = runs
    assert len(serial) == len(parallel) == 6
    for (n1, l1, v1, k1), (n2, l2, v2, k2) in zip(serial, parallel):
        assert n1 == n2 and torch.equal(l1, l2) and torch.equal(v1, v2) and torch.equal(k1, k2)
    # the two epochs differ: the persistent workers saw set_epoch
    assert any(
        a[0] != b[0] or not torch.equal(a[1], b[1]) for a, b in zip(parallel[:3], parallel[3:])
    )


def test_an_unshuffled_loader_keeps_the_annotation_order(demo: Path):
    cfg = _s2g_config(demo, ["keypoint"])
    vocabs = Vocabularies(gloss=GlossVocabulary.from_file(demo / "gloss2ids.pkl"))
    dataset = build_dataset(cfg, "dev", vocabs, is_train=False)
    loader, sampler = build_loader(dataset, 2, shuffle=False, num_workers=0, seed=1, ctx=CPU)
    sampler.set_epoch(0)
    names = [n for b in loader for n in b["names"]]
    assert names == [s.name for s in load_split(cfg, "dev")]


def test_two_ranks_split_the_global_batches_of_one(demo: Path):
    cfg = _s2g_config(demo, ["keypoint"])
    dataset = build_dataset(
        cfg, "train", Vocabularies(gloss=GlossVocabulary.from_file(demo / "gloss2ids.pkl")), True
    )
    one, s1 = build_loader(dataset, 2, shuffle=True, num_workers=0, seed=5, ctx=CPU)
    s1.set_epoch(0)
    single = [batch["names"] for batch in one]
    per_rank = []
    for rank in range(2):
        ctx = DistributedContext(
            rank=rank, local_rank=rank, world_size=2, device=torch.device("cpu")
        )
        loader, sampler = build_loader(dataset, 1, shuffle=True, num_workers=0, seed=5, ctx=ctx)
        sampler.set_epoch(0)
        per_rank.append([batch["names"][0] for batch in loader])
    merged = [sorted(pair) for pair in zip(*per_rank)]
    assert merged == [sorted(names) for names in single]


def test_gloss_to_text_batches(demo: Path):
    raw = _cfg(demo, "G2T", input_data="gloss")
    raw["model"] = {
        "TranslationNetwork": {
            "TextTokenizer": {"level": "word"},
            "model_config": {"d_model": 16},
        }
    }
    raw["training"]["optimization"] = {"learning_rate": {"default": 1e-3}}
    cfg = config_from_dict(raw, "g2t.yaml")
    samples = load_split(cfg, "train")
    source = GlossVocabulary.from_glosses([s.gloss for s in samples])
    text = VocabularyTextTokenizer.build([s.text for s in samples], "word")
    vocabs = Vocabularies(source=source, source_language="de_DGS", text=text)
    dataset = build_dataset(cfg, "train", vocabs, is_train=True)
    batch = dataset.collate_fn([dataset[0], dataset[1]])
    assert batch["gloss_input_ids"].shape == batch["gloss_attention_mask"].shape
    last = batch["gloss_attention_mask"].sum(1) - 1
    assert (batch["gloss_input_ids"][torch.arange(2), last] == source.to_dict()["de_DGS"]).all()
    assert batch["text_labels"].shape == batch["decoder_input_ids"].shape
    assert (batch["decoder_input_ids"][:, 0] == text.sos_id).all()
    assert (
        text.decode(torch.cat([batch["decoder_input_ids"][:, :1], batch["text_labels"]], 1))
        == batch["texts"]
    )


# -- own videos, as docs/data.md describes them ----------------------------------------------
DOCS = Path(__file__).resolve().parents[1] / "docs" / "data.md"
CUSTOM = (
    Path(__file__).resolve().parents[1] / "experiments" / "configs" / "custom" / "s2g_video.yaml"
)


def _docs_manifest() -> str:
    """The ```json block of the docs' "Your own videos" section, as written there."""
    section = DOCS.read_text(encoding="utf-8").split("## Your own videos", 1)[1]
    return section.split("```json\n", 1)[1].split("```", 1)[0]


def _video(path: Path, size: tuple[int, int], frames: int) -> None:
    rng = np.random.default_rng(0)
    height, width = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (width, height))
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    writer.release()


def test_the_docs_manifest_example_trains_as_written(tmp_path: Path, monkeypatch):
    """The manifest of the docs, videos of two sizes, the config the docs point to."""
    mine = tmp_path / "data" / "mine"
    (mine / "videos").mkdir(parents=True)
    (mine / "frames" / "clip002").mkdir(parents=True)
    (mine / "my_clips.jsonl").write_text(_docs_manifest(), encoding="utf-8")
    _video(mine / "videos" / "clip001.mp4", (240, 320), 12)  # wide, not 260 x 210
    for i in range(10):
        cv2.imwrite(
            str(mine / "frames" / "clip002" / f"{i:03d}.png"), np.full((260, 210, 3), i, np.uint8)
        )
    monkeypatch.chdir(tmp_path)  # the config's relative paths: data/mine/..., experiments/...
    overrides = ["training.max_steps=2", "training.num_workers=0", "training.batch_size=1"]
    assert training.main(["--config", str(CUSTOM), "--override", *overrides]) == 0
    run = tmp_path / "experiments" / "outputs" / "mine" / "s2g"
    vocabulary = GlossVocabulary.from_file(run / "gloss2ids.pkl")
    assert "morgen" in vocabulary and "regen" in vocabulary  # built from the training glosses
    results = json.loads((run / "results.json").read_text())
    assert "wer" in results["dev"]
    cfg = load_config(CUSTOM, ["training.model_dir=" + str(run)])
    vocabs = Vocabularies(gloss=vocabulary)
    batch = next(
        iter(
            build_loader(
                build_dataset(cfg, "dev", vocabs, is_train=False),
                2,
                shuffle=False,
                num_workers=0,
                seed=0,
                ctx=CPU,
            )[0]
        )
    )
    assert batch["videos"].shape[-2:] == (260, 210)  # both clips brought to the frame size


# -- own frames of several sizes -------------------------------------------------------------
def _mixed_sizes(tmp_path: Path, frame_size: list[int] | None, batch_size: int = 2):
    """A manifest of a 48 x 64 video and a folder of 40 x 40 frames (no frame counts)."""
    (tmp_path / "frames" / "b").mkdir(parents=True, exist_ok=True)
    _video(tmp_path / "a.mp4", (48, 64), 8)
    for i in range(8):
        cv2.imwrite(
            str(tmp_path / "frames" / "b" / f"{i:02d}.png"), np.zeros((40, 40, 3), np.uint8)
        )
    manifest = tmp_path / "clips.jsonl"
    rows = [{"name": "a", "video": "a.mp4", "gloss": "X"}, {"name": "b", "video": "frames/b/"}]
    manifest.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    raw = _cfg(tmp_path, "S2G", dataset_name="custom", frame_layout="video", dev=str(manifest))
    raw["data"]["frame_size"] = frame_size
    raw["training"]["batch_size"] = batch_size
    raw["model"] = {"RecognitionNetwork": {"GlossTokenizer": {}, "s3d": {}}}
    raw["training"]["optimization"] = {"learning_rate": {"default": 1e-3}}
    return config_from_dict(raw, "mine.yaml")


def test_frames_of_several_sizes_name_data_frame_size_before_any_batch(tmp_path: Path):
    vocabs = Vocabularies(gloss=GlossVocabulary.from_glosses(["X"]))
    with pytest.raises(ConfigurationError) as error:
        build_dataset(_mixed_sizes(tmp_path, None), "dev", vocabs, is_train=False)
    message = str(error.value)
    assert message.startswith("data.frame_size: not set")
    assert "48 x 64 (1 clip: a)" in message and "40 x 40 (1 clip: b)" in message
    fitted = build_dataset(_mixed_sizes(tmp_path, [32, 32]), "dev", vocabs, is_train=False)
    batch = fitted.collate_fn([fitted[0], fitted[1]])
    assert batch["videos"].shape[-2:] == (32, 32)
    one_by_one = build_dataset(_mixed_sizes(tmp_path, None, 1), "dev", vocabs, is_train=False)
    with pytest.raises(DataError, match=r"differ in size within a batch.*set data.frame_size"):
        one_by_one.collate_fn([one_by_one[0], one_by_one[1]])
