"""Fusion helps on data whose cues are split between the streams (dataset/synthetic.py).

One-gloss clips of 4 glosses: a colour pair (only the pixels tell its two glosses apart) and
a palm pair (only the keypoints do), so each single stream can at best guess within one of
the pairs. As in the demo schedule, a video-only and a keypoint-only model are trained for
``PRE_STEPS`` and a TwoStream model starts from them for ``FUSE_STEPS``; the single-stream
models are trained on for the same ``FUSE_STEPS`` (same seed, same batches), so that every
model has had the same number of steps. The joint head of the TwoStream model reads both
streams and must reach a lower CTC loss on held-out clips than either single-stream model,
and the laterals must carry gradient from each stream's head into the other stream.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import training
from dataset.synthetic import DemoPaths, generate_demo_dataset
from engine.experiment import build_task_model, build_vocabularies, load_model_weights
from engine.task_data import build_dataset
from modelling.recognition_network import FUSE_HEAD, SINGLE_HEAD
from utils.checkpoints import CheckpointManager
from utils.config import load_config

DEMO = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "demo"
PRE_STEPS = 100
FUSE_STEPS = 60
DATA = dict(
    num_train=48,
    num_dev=24,
    num_test=2,
    vocab_size=4,  # glosses 0, 1: a colour pair; 2, 3: a palm pair
    min_glosses=1,
    max_glosses=1,
    min_frames_per_gloss=8,
    max_frames_per_gloss=8,
    rest_frames=1,
    max_rest_frames=1,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> DemoPaths:
    return generate_demo_dataset(tmp_path_factory.mktemp("split-cues"), seed=0, **DATA)


def _overrides(data: DemoPaths, model_dir: Path, steps: int, validate_every: int) -> list[str]:
    return [
        *(f"data.{split}={path}" for split, path in data.annotations.items()),
        f"data.zip_file={data.frames_zip}",
        f"data.keypoint_file={data.keypoints}",
        f"model.RecognitionNetwork.GlossTokenizer.gloss2id_file={data.gloss2ids}",
        f"training.model_dir={model_dir}",
        "training.random_seed=0",
        "training.num_workers=0",
        "training.batch_size=4",
        f"training.max_steps={steps}",
        "training.total_epoch=100",
        "training.optimization.t_max=100",
        "training.validation.unit=step",
        f"training.validation.freq={validate_every}",
        "training.keep_last_ckpts=2",
        "training.mixed_precision=fp32",
        "testing.cfg={recognition: {beam_size: 1}}",
    ]


def _train(stage: str, model_dir: Path, overrides: list[str]) -> Path:
    config = DEMO / f"{stage}.yaml"
    assert training.main(["--config", str(config), "--override", *overrides]) == 0
    return model_dir


def _step_checkpoint(model_dir: Path, step: int) -> Path:
    path = CheckpointManager(model_dir / "ckpts", keep_last=2).step_path(step)
    assert path.is_file(), f"no checkpoint of step {step} in {model_dir}"
    return path


@pytest.fixture(scope="module")
def runs(data: DemoPaths, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The checkpoints compared: each model after ``PRE_STEPS + FUSE_STEPS`` steps."""
    root = tmp_path_factory.mktemp("runs")
    torch.set_num_threads(2)
    total = PRE_STEPS + FUSE_STEPS
    singles = {
        stage: _train(stage, root / stage, _overrides(data, root / stage, total, PRE_STEPS))
        for stage in ("video", "keypoint")
    }
    streams = [
        f"model.RecognitionNetwork.pretrained_path_rgb={_step_checkpoint(singles['video'], PRE_STEPS)}",
        "model.RecognitionNetwork.pretrained_path_keypoint="
        f"{_step_checkpoint(singles['keypoint'], PRE_STEPS)}",
    ]
    s2g = root / "s2g"
    _train("s2g", s2g, [*_overrides(data, s2g, FUSE_STEPS, FUSE_STEPS), *streams])
    return {
        "video": _step_checkpoint(singles["video"], total),
        "keypoint": _step_checkpoint(singles["keypoint"], total),
        "s2g": _step_checkpoint(s2g, FUSE_STEPS),
    }


def _model(checkpoint: Path):
    model_dir = checkpoint.parents[1]
    cfg = load_config(model_dir / "config.yaml")
    vocabs = build_vocabularies(cfg, model_dir, save=False)
    model = build_task_model(cfg, vocabs)
    load_model_weights(model, checkpoint)
    return cfg, vocabs, model


def _dev_batch(checkpoint: Path):
    cfg, vocabs, model = _model(checkpoint)
    dataset = build_dataset(cfg, "dev", vocabs, is_train=False)
    batch = dataset.collate_fn([dataset[i] for i in range(len(dataset))])
    return model, batch


def _dev_ctc_losses(checkpoint: Path) -> dict[str, float]:
    """Per head, the CTC loss (mean over the dev clips, evaluation mode)."""
    model, batch = _dev_batch(checkpoint)
    with torch.no_grad():
        output = model.eval()(batch)
    return {
        name.removeprefix("ctc_"): float(value)
        for name, value in output.recognition.losses.items()
        if name.startswith("ctc_")
    }


def test_the_joint_head_beats_each_single_stream(runs: dict[str, Path]) -> None:
    video = _dev_ctc_losses(runs["video"])[SINGLE_HEAD]
    keypoint = _dev_ctc_losses(runs["keypoint"])[SINGLE_HEAD]
    joint = _dev_ctc_losses(runs["s2g"])[FUSE_HEAD]
    print(f"dev CTC loss: video {video:.3f}, keypoint {keypoint:.3f}, joint head {joint:.3f}")
    assert joint < min(video, keypoint) - 0.1


def _grad_norms(model, loss: torch.Tensor) -> dict[str, float]:
    model.zero_grad()
    loss.backward(retain_graph=True)
    streams = model.recognition_network.backbone.streams
    return {
        name: torch.stack([p.grad.norm() for p in stream.parameters() if p.grad is not None])
        .norm()
        .item()
        if any(p.grad is not None for p in stream.parameters())
        else 0.0
        for name, stream in streams.items()
    }


def test_the_laterals_carry_gradient_into_both_streams(runs: dict[str, Path]) -> None:
    model, batch = _dev_batch(runs["s2g"])
    output = model.train()(batch)
    losses = output.recognition.losses
    # Each stream's own head reaches the other stream only through the laterals.
    from_keypoint_head = _grad_norms(model, losses["ctc_keypoint"])
    from_rgb_head = _grad_norms(model, losses["ctc_rgb"])
    for norms in (from_keypoint_head, from_rgb_head):
        assert all(torch.isfinite(torch.tensor(v)) for v in norms.values())
    assert from_keypoint_head["rgb"] > 0.0 and from_rgb_head["keypoint"] > 0.0
    # The control: no laterals, no gradient across.
    for fusion in model.recognition_network.backbone.fusions:
        for parameter in fusion.parameters():
            parameter.data.zero_()
    output = model(batch)
    assert _grad_norms(model, output.recognition.losses["ctc_keypoint"])["rgb"] == 0.0
