"""One training step of each S2G model equals the original release's.

``fixtures/published_train_step_reference.pt`` holds what the ORIGINAL code computed in one
training step of the Phoenix-2014T video-only, keypoint-only and TwoStream S2G models (see
``fixtures/make_published_train_step_reference.py``): float64, dropout off, the deterministic
weights of ``tests/published_reference.py`` and fixed S3D inputs. Here the same weights are
loaded into this project's network, which is trained for one step by this project's
:class:`~engine.trainer.Trainer` (schedule stepped at the epoch start, forward, backward, fused
Adam), and every loss term, every gradient, every parameter update and every BatchNorm
statistic is compared with the original's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from dataset.keypoints import count_keypoints
from engine.task_data import build_loader
from engine.trainer import Trainer
from modelling.published_checkpoints import load_recognition_state_dict, to_published_state_dict
from modelling.recognition_network import build_recognition_network
from modelling.sign_language_model import SignToGloss
from tests.published_reference import (
    VOCAB_SIZE,
    fingerprint,
    synthetic_inputs,
    synthetic_state_dict,
    synthetic_stream_inputs,
    train_step_config,
)
from utils.config import config_from_dict
from utils.distributed import DistributedContext

REFERENCE = Path(__file__).parent / "fixtures" / "published_train_step_reference.pt"
LAYOUTS = {
    "video": "single_stream_rgb",
    "keypoint": "single_stream_keypoint",
    "two_stream": "two_stream",
}
PREFIX = "recognition_network."
LOSS_TOLERANCE = 1e-5  # relative
TENSOR_TOLERANCE = 1e-4  # of the tensor's norm
CPU = DistributedContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))


class OneBatch(Dataset):
    """The two clips of ``synthetic_inputs`` as a dataset (raw frames, keypoints, labels)."""

    def __init__(self) -> None:
        self.inputs = synthetic_inputs()

    def __len__(self) -> int:
        return len(self.inputs["lengths"])

    def __getitem__(self, index: int) -> int:
        return index

    def collate_fn(self, indices: list[int]) -> dict:
        batch = {k: v[indices] for k, v in self.inputs.items()}
        batch["names"] = [f"clip{i}" for i in indices]
        return batch


@pytest.fixture(scope="module")
def reference() -> dict:
    return torch.load(REFERENCE, weights_only=True)


def _network(model_name: str, cfg):
    network = build_recognition_network(
        cfg.model.RecognitionNetwork,
        cfg.data.input_streams,
        cfg.data.transform_cfg,
        count_keypoints(cfg.data.use_keypoints),
        VOCAB_SIZE,
        "video",
    )
    published = synthetic_state_dict(
        to_published_state_dict(network.state_dict(), LAYOUTS[model_name])
    )
    load_recognition_state_dict(network, {PREFIX + k: v for k, v in published.items()}, model_name)
    network.double()
    for module in network.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    streams = synthetic_stream_inputs(torch.float64)
    # the step is compared from the S3D inputs on (see published_reference)
    network.preprocessor.forward = lambda videos, keypoints, generator=None: {
        name: streams[name].clone() for name in network.streams
    }
    return network


def _published_names(tensors: dict[str, torch.Tensor], model_name: str) -> dict:
    """``recognition_network.<our key>`` -> published key, for gradients and updates."""
    ours = {k[len(PREFIX) :]: v for k, v in tensors.items()}
    published = to_published_state_dict(ours, LAYOUTS[model_name], positional_encoding=False)
    return {PREFIX + k: v for k, v in published.items()}


def _grouped_losses(losses: dict[str, torch.Tensor]) -> dict[str, float]:
    """Our weighted loss terms grouped as the original reports them."""
    if "ctc_gloss" in losses:
        return {"recognition_loss": float(losses["total"])}
    grouped = {"recognition_loss_fuse": float(losses["ctc_fuse"])}
    for stream in ("rgb", "keypoint"):
        terms = [v for k, v in losses.items() if k.startswith(f"ctc_{stream}")]
        grouped[f"recognition_loss_{stream}"] = float(sum(terms))
    for name in ("keypoint", "rgb", "fuse"):
        grouped[f"ensemble_last_teaches_{name}_loss"] = float(
            losses[f"ensemble_last_teaches_{name}"]
        )
    grouped["recognition_loss"] = float(losses["total"])
    return grouped


def _train_one_step(model_name: str, tmp_path: Path) -> dict:
    raw = train_step_config(model_name)
    raw["training"] |= {"max_steps": 1, "batch_size": 2, "shuffle": False, "num_workers": 0}
    cfg = config_from_dict(raw, "published_reference.yaml")
    model = SignToGloss(_network(model_name, cfg), vocabulary=None)
    dataset = OneBatch()
    loader, sampler = build_loader(dataset, 2, shuffle=False, num_workers=0, seed=0, ctx=CPU)
    trainer = Trainer(cfg, model, loader, sampler, lambda m, split: None, CPU, tmp_path)
    trainer._validate_and_save = lambda: None  # the step is under test, not validation

    seen: dict = {"buffers_before": {k: b.clone() for k, b in model.named_buffers()}}
    seen["params_before"] = {k: p.detach().clone() for k, p in model.named_parameters()}
    step = trainer.optimizer.step

    def recording_step(*args, **kwargs):
        seen["gradients"] = {
            k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None
        }
        seen["learning_rates"] = [group["lr"] for group in trainer.optimizer.param_groups]
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    add = trainer.losses.add

    def recording_add(losses, finite=True):
        seen["losses"] = {k: v.detach() for k, v in losses.items()}
        add(losses, finite)

    trainer.losses.add = recording_add
    trainer.train()
    assert trainer.global_step == 1
    seen["updates"] = {
        k: p.detach() - seen["params_before"][k] for k, p in model.named_parameters()
    }
    saved = model.state_dict()  # constant tables (positions) are not saved, nor compared
    seen["buffers"] = {
        k: b.double() - seen["buffers_before"][k].double()
        for k, b in model.named_buffers()
        if k in saved
    }
    seen["trainable"] = {k for k, p in model.named_parameters() if p.requires_grad}
    return seen


def _assert_close(ours: dict, recorded: dict, what: str) -> None:
    expected = dict(zip(recorded["keys"], recorded["values"]))
    assert set(ours) == set(expected), (
        f"{what}: only ours {sorted(set(ours) - set(expected))[:5]}, "
        f"only the original's {sorted(set(expected) - set(ours))[:5]}"
    )
    for key, reference in expected.items():
        mine = fingerprint(ours[key])
        scale = max(float(reference[0]), 1e-12)  # the reference tensor's norm
        worst = float((mine - reference).abs().max()) / scale
        assert worst <= TENSOR_TOLERANCE, f"{what} {key}: differs by {worst:.2e} of its norm"


@pytest.mark.parametrize("model_name", list(LAYOUTS))
def test_training_step_matches_the_original(model_name: str, reference: dict, tmp_path: Path):
    expected = reference["models"][model_name]
    seen = _train_one_step(model_name, tmp_path)

    losses = _grouped_losses(seen["losses"])
    for name, value in losses.items():
        assert value == pytest.approx(expected["losses"][name], rel=LOSS_TOLERANCE), name
    assert sorted(seen["learning_rates"]) == pytest.approx(sorted(expected["learning_rates"]))

    trainable = _published_names({k: None for k in seen["trainable"]}, model_name)
    assert set(trainable) == set(expected["trainable"])
    _assert_close(_published_names(seen["gradients"], model_name), expected["gradients"], "grad")
    updates = _published_names(seen["updates"], model_name)
    _assert_close(updates, expected["updates"], "update")
    buffers = _published_names(seen["buffers"], model_name)
    _assert_close(buffers, expected["buffers"], "buffer")
