"""This project's recognition networks reproduce the published ones numerically.

``fixtures/published_s2g_reference.pt`` holds fingerprints of the gloss log-probabilities
(and loss terms) that the ORIGINAL code computed for the Phoenix-2014T video-only,
keypoint-only and TwoStream S2G models, with the deterministic weights and batch of
``tests/published_reference.py`` (see ``fixtures/make_published_s2g_reference.py``). Here
the same weights are written in the published layout, converted, loaded into our network
and run on the same batch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dataset.keypoints import count_keypoints
from modelling.published_checkpoints import load_recognition_state_dict, to_published_state_dict
from modelling.recognition_network import build_recognition_network
from tests.published_reference import (
    VOCAB_SIZE,
    config_dict,
    summarise,
    synthetic_inputs,
    synthetic_state_dict,
)
from utils.config import config_from_dict

REFERENCE = Path(__file__).parent / "fixtures" / "published_s2g_reference.pt"
LAYOUTS = {
    "video": "single_stream_rgb",
    "keypoint": "single_stream_keypoint",
    "two_stream": "two_stream",
}
TOLERANCE = 1e-3
AUX_WEIGHTS = {"rgb": 0.2, "keypoint": 0.5}  # head_weight_rgb / head_weight_keypoint


@pytest.fixture(scope="module")
def reference() -> dict:
    return torch.load(REFERENCE, weights_only=True)


@pytest.fixture(scope="module")
def batch() -> dict:
    return synthetic_inputs()


def _run_ours(model_name: str, batch: dict):
    cfg = config_from_dict(config_dict(model_name))
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
    load_recognition_state_dict(
        network, {f"recognition_network.{k}": v for k, v in published.items()}, model_name
    )
    network.eval()
    with torch.no_grad():
        return network(
            lengths=batch["lengths"],
            videos=batch["videos"],
            keypoints=batch["keypoints"],
            gloss_labels=batch["gloss_labels"],
            gloss_lengths=batch["gloss_lengths"],
        )


def _published_losses(output) -> dict[str, torch.Tensor]:
    """Our loss terms grouped the way the published code reported them."""
    losses = output.losses
    if "ctc_gloss" in losses:
        return {"recognition_loss": output.total_loss}
    grouped = {"recognition_loss": output.total_loss, "recognition_loss_fuse": losses["ctc_fuse"]}
    for stream, weight in AUX_WEIGHTS.items():
        aux = sum(v for k, v in losses.items() if k.startswith(f"ctc_{stream}_aux_"))
        grouped[f"recognition_loss_{stream}"] = losses[f"ctc_{stream}"] + weight * aux
    for name in ("keypoint", "rgb", "fuse"):
        grouped[f"ensemble_last_teaches_{name}_loss"] = losses[f"ensemble_last_teaches_{name}"]
    return grouped


@pytest.mark.parametrize("model_name", list(LAYOUTS))
def test_gloss_log_probs_match_published(model_name: str, reference: dict, batch: dict) -> None:
    expected = reference["models"][model_name]
    output = _run_ours(model_name, batch)
    assert set(output.heads) == set(expected["heads"])
    for name, summary in expected["heads"].items():
        head = output.heads[name]
        assert torch.equal(head.lengths, expected["lengths"][name]), name
        ours = summarise(head.log_probs)
        for key in ("columns", "mean", "max", "centroid"):
            diff = (ours[key] - summary[key]).abs().max().item()
            assert diff < TOLERANCE, f"{model_name}/{name}/{key}: max abs diff {diff:.2e}"
        # the published best class scores (within tolerance) as best here too
        at_published_best = head.log_probs.gather(-1, summary["argmax"][..., None])[..., 0]
        assert torch.allclose(at_published_best, ours["max"], atol=TOLERANCE), name

    grouped = _published_losses(output)
    assert set(grouped) == set(expected["losses"])
    for name, value in expected["losses"].items():
        assert grouped[name].item() == pytest.approx(value, rel=1e-4, abs=TOLERANCE), name
