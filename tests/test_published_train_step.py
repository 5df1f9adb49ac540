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

import pickle
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from dataset.batching import PaddedFeatures
from dataset.gloss_vocabulary import SPECIAL_TOKENS
from dataset.keypoints import count_keypoints
from engine.experiment import build_task_model, build_vocabularies
from engine.task_data import build_loader
from engine.trainer import Trainer
from modelling.published_checkpoints import load_recognition_state_dict, to_published_state_dict
from modelling.recognition_network import build_recognition_network
from modelling.sign_language_model import SignToGloss
from tests import translation_helpers
from tests.published_reference import (
    S2T_STEP_LENGTHS,
    S2T_STEP_MBART,
    TRAIN_STEP_SEED,
    VOCAB_SIZE,
    fingerprint,
    s2t_step_config,
    synthetic_inputs,
    synthetic_s2t_features,
    synthetic_state_dict,
    synthetic_stream_inputs,
    synthetic_tensor,
    train_step_config,
)
from utils.config import config_from_dict
from utils.distributed import DistributedContext

REFERENCE = Path(__file__).parent / "fixtures" / "published_train_step_reference.pt"
LAYOUTS = {
    "video": "single_stream_rgb",
    "keypoint": "single_stream_keypoint",
    "two_stream": "two_stream",
    "s2t": "two_stream",  # the TwoStream S2T network's three heads
}
S2G_MODELS = ("video", "keypoint", "two_stream")
PREFIX = "recognition_network."
LOSS_TOLERANCE = 1e-5  # relative
TENSOR_TOLERANCE = 1e-4  # of the tensor's norm
ZERO_NORM = 1e-9  # float64 noise below: the attention key biases get analytically zero gradients
CPU = DistributedContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))


class OneBatch(Dataset):
    """Two clips as a dataset: ``inputs`` holds every batch entry for both, in clip order."""

    def __init__(self, inputs: dict) -> None:
        self.inputs = inputs

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> int:
        return index

    def collate_fn(self, indices: list[int]) -> dict:
        assert indices == [0, 1], "the batch is the fixture's, in its order"
        return dict(self.inputs, names=["clip0", "clip1"])


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
    """Our keys -> published ones (the recognition network's renamed, the others the same)."""
    ours = {k[len(PREFIX) :]: v for k, v in tensors.items() if k.startswith(PREFIX)}
    published = to_published_state_dict(ours, LAYOUTS[model_name], positional_encoding=False)
    others = {k: v for k, v in tensors.items() if not k.startswith(PREFIX)}
    return {PREFIX + k: v for k, v in published.items()} | others


def _grouped_losses(losses: dict[str, torch.Tensor]) -> dict[str, float]:
    """Our weighted loss terms grouped as the original reports them."""
    if "ctc_gloss" in losses:
        return {"recognition_loss": float(losses["total"])}
    grouped = {"recognition_loss_fuse": float(losses["ctc_fuse"]), "total_loss": losses["total"]}
    if "translation" in losses:
        grouped["translation_loss"] = float(losses["translation"])
        grouped["recognition_loss"] = float(losses["total"] - losses["translation"])
    for stream in ("rgb", "keypoint"):
        terms = [v for k, v in losses.items() if k.startswith(f"ctc_{stream}")]
        grouped[f"recognition_loss_{stream}"] = float(sum(terms))
    for name in ("keypoint", "rgb", "fuse"):
        term = f"ensemble_last_teaches_{name}"
        if term in losses:
            grouped[term + "_loss"] = float(losses[term])
    grouped.setdefault("recognition_loss", float(losses["total"]))
    grouped["total_loss"] = float(grouped["total_loss"])
    return grouped


def _one_step_config(raw: dict):
    raw["training"] |= {"max_steps": 1, "batch_size": 2, "shuffle": False, "num_workers": 0}
    return config_from_dict(raw, "published_reference.yaml")


def _train_one_step(model_name: str, tmp_path: Path) -> dict:
    cfg = _one_step_config(train_step_config(model_name))
    model = SignToGloss(_network(model_name, cfg), vocabulary=None)
    return _train(model, cfg, synthetic_inputs(), tmp_path)


def _train(model, cfg, inputs: dict, tmp_path: Path) -> dict:
    """One step of this project's trainer on the batch ``inputs``; what it saw and changed."""
    dataset = OneBatch(inputs)
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
    """Fingerprints equal, key by key. A tensor that only the original has must be one the
    step left unchanged: the original's S2T builds pyramid heads it never runs on features."""
    expected = dict(zip(recorded["keys"], recorded["values"]))
    unused = {k for k in set(expected) - set(ours) if not expected[k].any()}
    expected = {k: v for k, v in expected.items() if k not in unused}
    assert set(ours) == set(expected), (
        f"{what}: only ours {sorted(set(ours) - set(expected))[:5]}, "
        f"only the original's {sorted(set(expected) - set(ours))[:5]}"
    )
    for key, reference in expected.items():
        mine = fingerprint(ours[key])
        scale = max(float(reference[0]), ZERO_NORM)  # the reference tensor's norm
        worst = float((mine - reference).abs().max()) / scale
        assert worst <= TENSOR_TOLERANCE, f"{what} {key}: differs by {worst:.2e} of its norm"


def _s2t_model(cfg, tmp_path: Path):
    """Our S2T task model with the weights the original got: translation from the published
    checkpoint, heads and mapper from ``synthetic_tensor`` by published key."""
    model = build_task_model(cfg, build_vocabularies(cfg, tmp_path, save=False))
    template = _published_names(
        {k: v for k, v in model.state_dict().items() if not k.startswith("translation_network.")},
        "s2t",
    )
    values = {k: synthetic_tensor(k, v.shape, v.dtype) for k, v in template.items()}
    recognition = {k: v for k, v in values.items() if k.startswith(PREFIX)}
    load_recognition_state_dict(model.recognition_network, recognition, "s2t")
    model.vl_mapper.load_state_dict(
        {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("vl_mapper.")}
    )
    model.double()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def _s2t_config(tmp_path: Path):
    pruned = translation_helpers.make_pruned_mbart(tmp_path, **S2T_STEP_MBART, seed=TRAIN_STEP_SEED)
    checkpoint = translation_helpers.write_published_checkpoint(
        tmp_path / "translation.ckpt",
        translation_helpers.published_translation_state(pruned, TRAIN_STEP_SEED),
    )
    glosses = list(SPECIAL_TOKENS) + [f"GLOSS{i}" for i in range(VOCAB_SIZE - len(SPECIAL_TOKENS))]
    gloss2id = tmp_path / "gloss2ids.pkl"
    gloss2id.write_bytes(pickle.dumps({g: i for i, g in enumerate(glosses)}))
    return _one_step_config(s2t_step_config(str(gloss2id), str(pruned), str(checkpoint)))


def _s2t_batch(expected: dict) -> dict:
    features = synthetic_s2t_features(torch.float64)
    lengths = torch.tensor(S2T_STEP_LENGTHS)
    mask = (torch.arange(max(S2T_STEP_LENGTHS))[None] < lengths[:, None]).long()
    inputs = synthetic_inputs()
    return {
        "features": {s: PaddedFeatures(v, mask, lengths) for s, v in features.items()},
        "gloss_labels": inputs["gloss_labels"],
        "gloss_lengths": inputs["gloss_lengths"],
        "text_labels": expected["labels"],
        "decoder_input_ids": expected["decoder_input_ids"],
    }


def _compare(model_name: str, seen: dict, expected: dict) -> None:

    losses = _grouped_losses(seen["losses"])
    assert set(losses) <= set(expected["losses"])
    for name, value in losses.items():
        assert value == pytest.approx(expected["losses"][name], rel=LOSS_TOLERANCE), name
    assert sorted(seen["learning_rates"]) == pytest.approx(sorted(expected["learning_rates"]))

    trainable = _published_names({k: None for k in seen["trainable"]}, model_name)
    # the same parameters train: ours, and the original's that a step can change
    assert set(trainable) == set(expected["trainable"]) & set(expected["gradients"]["keys"])
    _assert_close(_published_names(seen["gradients"], model_name), expected["gradients"], "grad")
    updates = _published_names(seen["updates"], model_name)
    _assert_close(updates, expected["updates"], "update")
    buffers = _published_names(seen["buffers"], model_name)
    _assert_close(buffers, expected["buffers"], "buffer")


@pytest.mark.parametrize("model_name", S2G_MODELS)
def test_s2g_training_step_matches_the_original(model_name: str, reference: dict, tmp_path: Path):
    _compare(model_name, _train_one_step(model_name, tmp_path), reference["models"][model_name])


def test_s2t_training_step_matches_the_original(reference: dict, tmp_path: Path):
    expected = reference["models"]["s2t"]
    cfg = _s2t_config(tmp_path)
    seen = _train(_s2t_model(cfg, tmp_path), cfg, _s2t_batch(expected), tmp_path)
    _compare("s2t", seen, expected)
