"""Published checkpoints: layouts, conversion, strict loading, parameter counts."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch

from dataset.keypoints import count_keypoints
from modelling.published_checkpoints import (
    RECOGNITION_CONVERTERS,
    convert_published_state_dict,
    convert_recognition_state_dict,
    detect_layout,
    load_recognition_state_dict,
    to_published_state_dict,
)
from modelling.recognition_network import RecognitionNetwork, build_recognition_network
from modelling.visual_head import sinusoid_table
from tests.published_reference import config_dict, synthetic_inputs
from tests.test_recognition_network import STREAMS, build, tiny_config
from utils.checkpoints import load_checkpoint, model_state_of
from utils.config import config_from_dict
from utils.errors import CheckpointError

PREFIX = "recognition_network."
# layout file -> (model of tests/published_reference.py, gloss vocabulary, layout name)
LAYOUT_FILES = {
    "TwoStream_phoenix-2014t_video": ("video", 1124, "single_stream_rgb"),
    "TwoStream_phoenix-2014t_keypoint": ("keypoint", 1124, "single_stream_keypoint"),
    "TwoStream_phoenix-2014t_s2g": ("two_stream", 1124, "two_stream"),
    "SingleStream_phoenix-2014t_s2g": ("video", 1094, "single_stream_rgb"),
}
# the other TwoStream S2G models: the Phoenix-2014T architecture with another vocabulary
OTHER_TWO_STREAM = {"TwoStream_phoenix-2014_s2g": 1235, "TwoStream_csl-daily_s2g": 2004}
SMALL_INPUTS = (
    "data.transform_cfg.img_size=32",
    "model.RecognitionNetwork.heatmap_cfg.input_size=16",
)
# parameters (frozen ones included) of the published models, from their state-dict layouts
PUBLISHED_PARAMETER_COUNTS = {
    "two_stream": 104_866_108,
    "video": 12_034_468,
    "keypoint": 12_272_804,
}


def build_published(model: str, vocab_size: int, input_mode: str = "video") -> RecognitionNetwork:
    cfg = config_from_dict(config_dict(model), overrides=SMALL_INPUTS)
    return build_recognition_network(
        cfg.model.RecognitionNetwork,
        cfg.data.input_streams,
        cfg.data.transform_cfg,
        count_keypoints(cfg.data.use_keypoints),
        vocab_size,
        input_mode,
    )


def read_layout(path: Path) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    layout = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        layout[key] = (tuple(ast.literal_eval(shape)), getattr(torch, dtype))
    return layout


def state_from_layout(layout: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values for every published key (He-scaled weights, positive variances);
    the position tables as the published models stored them."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, (shape, dtype) in layout.items():
        leaf = key.rsplit(".", 1)[-1]
        if key.endswith("pe.pe"):
            state[key] = sinusoid_table(shape[1], shape[2])[None]
        elif dtype == torch.int64:
            state[key] = torch.zeros(shape, dtype=dtype)
        elif leaf == "running_var":
            state[key] = torch.rand(shape, generator=generator) + 0.5
        elif len(shape) == 1:
            state[key] = torch.randn(shape, generator=generator) * 0.1 + (leaf == "weight")
        else:
            fan_in = shape[0] if "conv_trans" in key or "rgb_stream_lateral" in key else shape[1]
            scale = (2.0 / (fan_in * math.prod(shape[2:]))) ** 0.5
            state[key] = torch.randn(shape, generator=generator) * scale
    return state


# -- the published layouts -------------------------------------------------------------------
@pytest.mark.parametrize("name", list(LAYOUT_FILES))
def test_published_checkpoint_loads_strictly(name: str, state_dict_layout_dir, tmp_path) -> None:
    model, vocab_size, layout_name = LAYOUT_FILES[name]
    layout = read_layout(state_dict_layout_dir / f"{name}.tsv")
    state = state_from_layout(layout)
    if name == "TwoStream_phoenix-2014t_video":  # through a file once; the others in memory
        path = tmp_path / "best.ckpt"
        torch.save({"model_state": state}, path)
        state = model_state_of(load_checkpoint(path), path)

    detected = detect_layout({k.removeprefix(PREFIX): v for k, v in state.items()})
    assert (detected.name, detected.vocab_size, detected.has_backbone) == (
        layout_name,
        vocab_size,
        True,
    )
    network = build_published(model, vocab_size)
    load_recognition_state_dict(network, state, name)
    own = network.state_dict()
    if model == "two_stream":
        pairs = {
            "visual_backbone_twostream.rgb_stream.backbone.base.5.branch1.1.conv_t.weight": (
                "backbone.streams.rgb.features.5.branch1.1.1.0.weight"
            ),
            "visual_backbone_twostream.pose_stream_lateral.2.conv.weight": (
                "backbone.fusions.2.rgb_to_keypoint.conv.weight"
            ),
            "visual_head_keypoint_remain.1.feedforward.pwff_layer.3.bias": (
                "heads.keypoint_aux_1.feedforward.layers.3.bias"
            ),
            "visual_backbone_twostream.pose_stream.pyramid.upsample_layers.0.bn_t.running_var": (
                "backbone.pyramids.keypoint.upsample.0.temporal_norm.running_var"
            ),
        }
        for published, ours in pairs.items():
            assert torch.equal(own[ours], state[PREFIX + published]), published

    batch = synthetic_inputs()
    network.eval()
    with torch.no_grad():
        output = network(
            lengths=torch.tensor([4]),
            videos=batch["videos"][:1, :4],
            keypoints=batch["keypoints"][:1, :4],
        )
    main = output.heads["fuse" if model == "two_stream" else "gloss"]
    assert main.log_probs.shape == (1, 1, vocab_size)
    assert torch.isfinite(main.log_probs).all()


@pytest.mark.parametrize("name", list(OTHER_TWO_STREAM))
def test_other_two_stream_layouts_convert_to_our_keys(name: str, state_dict_layout_dir) -> None:
    layout = read_layout(state_dict_layout_dir / f"{name}.tsv")
    state = {
        k.removeprefix(PREFIX): sinusoid_table(*shape[1:])[None]
        if k.endswith("pe.pe")
        else torch.empty(shape, dtype=dtype)
        for k, (shape, dtype) in layout.items()
    }
    assert detect_layout(state).vocab_size == OTHER_TWO_STREAM[name]
    converted = convert_recognition_state_dict(state)
    reference = build_published("two_stream", OTHER_TWO_STREAM[name]).state_dict()
    assert {k: v.shape for k, v in converted.items()} == {k: v.shape for k, v in reference.items()}


def test_wrong_shape_is_reported_by_name(state_dict_layout_dir) -> None:
    layout = read_layout(state_dict_layout_dir / "TwoStream_phoenix-2014t_video.tsv")
    state = state_from_layout(layout)
    state[PREFIX + "visual_head.fc1.weight"] = torch.zeros(512, 1024)
    network = build_published("video", 1124)
    with pytest.raises(CheckpointError) as error:
        load_recognition_state_dict(network, state, "video.ckpt")
    message = str(error.value)
    assert "shape (512, 1024) != (512, 832): heads.gloss.projection.weight" in message
    assert "recognition_network.visual_head.fc1.weight" in message  # its published name


def test_missing_and_unexpected_keys_are_reported_by_name() -> None:
    network = build_published("video", 1124)
    state = {
        PREFIX + k: v
        for k, v in to_published_state_dict(network.state_dict(), "single_stream_rgb").items()
    }
    del state[PREFIX + "visual_head.gloss_output_layer.bias"]
    with pytest.raises(CheckpointError, match=r"missing: heads\.gloss\.classifier\.bias"):
        load_recognition_state_dict(network, state)
    state[PREFIX + "visual_head.gloss_output_layer.bias"] = torch.zeros(1124)
    state[PREFIX + "visual_head.extra_layer.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"visual_head\.extra_layer\.weight"):
        load_recognition_state_dict(network, state)


def test_a_changed_position_table_is_refused() -> None:
    network = build_published("keypoint", 1124)
    state = to_published_state_dict(network.state_dict(), "single_stream_keypoint")
    state["visual_head_keypoint.pe.pe"] = state["visual_head_keypoint.pe.pe"] + 0.1
    with pytest.raises(CheckpointError, match=r"visual_head_keypoint\.pe\.pe"):
        convert_recognition_state_dict(state)


# -- parameter counts -----------------------------------------------------------------------
@pytest.mark.parametrize("model", list(PUBLISHED_PARAMETER_COUNTS))
def test_parameter_count_matches_the_published_model(model: str) -> None:
    network = build_published(model, 1124)
    assert sum(p.numel() for p in network.parameters()) == PUBLISHED_PARAMETER_COUNTS[model]


# -- conversion helpers -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_two_stream() -> RecognitionNetwork:
    return build(tiny_config(STREAMS))


def test_round_trip_through_the_published_names(tiny_two_stream) -> None:
    state = tiny_two_stream.state_dict()
    published = to_published_state_dict(state, "two_stream")
    assert all(k.startswith(("visual_backbone_twostream.", "visual_head")) for k in published)
    converted = convert_recognition_state_dict(published)
    assert list(converted) == list(state)
    assert all(converted[k] is state[k] for k in state)


def test_project_checkpoints_pass_unchanged() -> None:
    state = {"heads.gloss.classifier.bias": torch.zeros(3)}
    assert detect_layout(state).name == "project"
    assert convert_recognition_state_dict(state) == state


def test_whole_model_conversion_is_composable(tiny_two_stream) -> None:
    state = tiny_two_stream.state_dict()
    published = {PREFIX + k: v for k, v in to_published_state_dict(state, "two_stream").items()}
    published["translation_network.model.shared.weight"] = torch.zeros(2, 2)
    with pytest.raises(CheckpointError, match=r"translation_network\.model\.shared\.weight"):
        convert_published_state_dict(published)  # no converter for it

    def rename_translation(part: dict) -> dict:
        return {f"mbart.{k}": v for k, v in part.items()}

    converters = {**RECOGNITION_CONVERTERS, "translation_network.": rename_translation}
    converted = convert_published_state_dict(published, converters)
    assert "translation_network.mbart.model.shared.weight" in converted
    assert PREFIX + "heads.fuse.classifier.weight" in converted


def test_feature_mode_network_takes_the_heads_of_a_published_s2g_checkpoint(
    tiny_two_stream,
) -> None:
    video = tiny_two_stream
    published = {
        PREFIX + k: v for k, v in to_published_state_dict(video.state_dict(), "two_stream").items()
    }
    features = build(tiny_config(STREAMS, cross_distillation=None), "feature")
    load_recognition_state_dict(features, published)
    assert torch.equal(
        features.heads["fuse"].classifier.weight, video.heads["fuse"].classifier.weight
    )


def test_unknown_state_dict_is_refused() -> None:
    with pytest.raises(CheckpointError, match="not a recognition state dict"):
        detect_layout({"encoder.weight": torch.zeros(1)})
