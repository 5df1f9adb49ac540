"""Recognition network: every registered configuration, outputs, losses, loading, options."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from dataset.augmentation import SpatialAugmentation, augment_batch
from dataset.heatmaps import HeatmapSpec, render_heatmaps
from modelling.published_checkpoints import load_recognition_state_dict, to_published_state_dict
from modelling.recognition_network import (
    FUSE_METHODS,
    INPUT_MODES,
    STREAMS,
    TEACHER_HEADS,
    RecognitionNetwork,
    VideoPreprocessor,
    build_recognition_network,
)
from utils.config import DISTILLATION_TEACHERS, Config, config_from_dict
from utils.errors import CheckpointError, ConfigurationError

VOCAB = 9
KEYPOINTS = 5
FRAMES, RAW = 8, (40, 32)  # frames per clip, raw frame (height, width)
LENGTHS = (8, 5)
LABELS, LABEL_LENGTHS = ((1, 2), (3, 0)), (2, 1)


def tiny_config(streams: tuple[str, ...], **recognition) -> Config:
    """A config of the published structure with tiny heads and images."""
    section = {
        "GlossTokenizer": {"gloss2id_file": "unused.pkl"},
        "s3d": {"pretrained_ckpt": "scratch", "use_block": 4, "freeze_block": 1},
        "keypoint_s3d": {"in_channel": 0, "pretrained_ckpt": "scratch", "use_block": 4},
        "heatmap_cfg": {"raw_size": list(RAW), "input_size": 16, "sigma": 2},
        "visual_head": {"hidden_size": 16, "ff_size": 32, "ff_kernelsize": [3, 3]},
        "fuse_method": "empty",
    }
    if len(streams) == 2:
        section |= {
            "fuse_method": "triplehead_cat_bilateral",
            "lateral": {"pose2rgb": True, "rgb2pose": True, "fusion_features": ["c1", "c2", "c3"]},
            "pyramid": {
                "version": "v1",
                "rgb": "multi_head",
                "pose": "multi_head",
                "num_levels": 3,
                "head_weight_rgb": 0.2,
                "head_weight_keypoint": 0.5,
            },
            "cross_distillation": {
                "types": {
                    "ensemble_last_teaches_rgb": 1,
                    "ensemble_last_teaches_keypoint": 1,
                    "ensemble_last_teaches_fuse": 0.5,
                    "ensemble_early_teaches_auxes": 0.25,
                }
            },
        }
    section |= recognition
    return config_from_dict(
        {
            "task": "S2G",
            "data": {
                "input_data": "videos",
                "dataset_name": "phoenix-2014t",
                "input_streams": list(streams),
                "zip_file": "videos.zip",
                "keypoint_file": "keypoints.pkl",
                "use_keypoints": ["pose"],
                "transform_cfg": {"img_size": 32},
            },
            "model": {"RecognitionNetwork": section},
            "training": {
                "model_dir": "unused",
                "optimization": {"learning_rate": {"default": 1e-3}},
            },
        }
    )


def build(cfg: Config, input_mode: str = "video", **kwargs) -> RecognitionNetwork:
    return build_recognition_network(
        cfg.model.RecognitionNetwork,
        cfg.data.input_streams,
        cfg.data.transform_cfg,
        KEYPOINTS,
        VOCAB,
        input_mode,
        **kwargs,
    )


def batch(streams, input_mode: str = "video", seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    size = (len(LENGTHS), FRAMES)
    inputs = {
        "lengths": torch.tensor(LENGTHS),
        "gloss_labels": torch.tensor(LABELS),
        "gloss_lengths": torch.tensor(LABEL_LENGTHS),
    }
    if input_mode == "feature":
        inputs["lengths"] = torch.tensor((2, 1))
        inputs["head_inputs"] = {s: torch.randn(2, 2, 832, generator=generator) for s in streams}
        return inputs
    height, width = RAW
    if "rgb" in streams:
        inputs["videos"] = torch.randint(0, 256, (*size, 3, height, width), generator=generator).to(
            torch.uint8
        )
    if "keypoint" in streams:
        scale = torch.tensor([width, height, 1.0])
        inputs["keypoints"] = torch.rand(*size, KEYPOINTS, 3, generator=generator) * scale
    return inputs


def _stream_sets(method_name: str) -> list[tuple[str, ...]]:
    count = FUSE_METHODS[method_name].num_streams
    return [(s,) for s in STREAMS] if count == 1 else [STREAMS]


REGISTERED = [
    (method, streams, mode)
    for method in FUSE_METHODS
    for streams in _stream_sets(method)
    for mode in INPUT_MODES
]


@pytest.fixture(scope="module")
def two_stream() -> RecognitionNetwork:
    torch.manual_seed(0)
    return build(tiny_config(STREAMS))


# -- every registered configuration ----------------------------------------------------------
@pytest.mark.parametrize(("method", "streams", "mode"), REGISTERED)
def test_registered_configuration_trains_and_runs_in_bf16(method, streams, mode) -> None:
    options = {}
    if mode == "feature" and len(streams) == 2:  # no auxiliary heads: no early ensemble
        options["cross_distillation"] = {"types": {"ensemble_last_teaches_rgb": 1}}
    network = build(tiny_config(streams, **options), mode)
    assert network.input_mode == mode
    inputs = batch(streams, mode)
    network.train()
    output = network(**inputs, generator=0)
    steps = 2  # video: 8 frames -> 2 steps after block 4; features: 2 steps given
    for name, head in output.heads.items():
        assert head.log_probs.shape[0] == 2 and head.log_probs.shape[-1] == VOCAB, name
        assert head.log_probs.dtype == torch.float32
    main = output.heads["fuse" if len(streams) == 2 else "gloss"]
    assert main.log_probs.shape == (2, steps, VOCAB)
    assert output.gloss_feature.shape == (2, steps, 16)
    assert torch.isfinite(output.total_loss)
    output.total_loss.backward()
    trainable = [n for n, p in network.named_parameters() if p.requires_grad]
    assert trainable
    missing = [n for n, p in network.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing[:5]

    network.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = network(**inputs)
    assert torch.isfinite(low.total_loss)
    assert low.heads[next(iter(low.heads))].log_probs.dtype == torch.float32


# -- outputs and losses ------------------------------------------------------------------------
def test_two_stream_output_structure(two_stream: RecognitionNetwork) -> None:
    two_stream.eval()
    with torch.no_grad():
        output = two_stream(**batch(STREAMS))
    assert set(output.heads) == {
        "rgb",
        "keypoint",
        "fuse",
        "ensemble",
        "ensemble_early",
        "rgb_aux_0",
        "rgb_aux_1",
        "keypoint_aux_0",
        "keypoint_aux_1",
    }
    assert output.heads["rgb"].log_probs.shape == (2, 2, VOCAB)
    assert output.heads["rgb_aux_0"].log_probs.shape == (2, 4, VOCAB)  # block 2: T/2
    assert output.heads["ensemble_early"].lengths.tolist() == [4, 2]
    assert output.lengths.tolist() == [2, 1]
    assert set(output.head_inputs) == {"rgb", "keypoint"}
    assert output.head_inputs["rgb"].shape == (2, 2, 832)
    assert output.loss_weights == {
        "ctc_fuse": 1.0,
        "ctc_rgb": 1.0,
        "ctc_keypoint": 1.0,
        "ctc_rgb_aux_0": 0.2,
        "ctc_rgb_aux_1": 0.2,
        "ctc_keypoint_aux_0": 0.5,
        "ctc_keypoint_aux_1": 0.5,
        "ensemble_last_teaches_rgb": 1,
        "ensemble_last_teaches_keypoint": 1,
        "ensemble_last_teaches_fuse": 0.5,
        "ensemble_early_teaches_auxes": 0.25,
    }
    total = sum(w * output.losses[n] for n, w in output.loss_weights.items())
    assert torch.allclose(output.total_loss, total)


def test_ensembles_sum_probabilities(two_stream: RecognitionNetwork) -> None:
    two_stream.eval()
    with torch.no_grad():
        heads = two_stream(**batch(STREAMS)).heads
    summed = heads["fuse"].probs + heads["rgb"].probs + heads["keypoint"].probs
    assert torch.allclose(heads["ensemble"].log_probs, summed.log().log_softmax(-1), atol=1e-6)
    assert torch.allclose(heads["ensemble"].probs, summed / 3, atol=1e-6)
    early = heads["rgb_aux_1"].probs + heads["keypoint_aux_1"].probs
    assert torch.allclose(heads["ensemble_early"].probs, early / 2, atol=1e-6)


@pytest.mark.parametrize(
    "wanted, computed, pyramid_runs",
    [
        (("ensemble",), {"fuse", "rgb", "keypoint", "ensemble"}, False),
        (("rgb",), {"fuse", "rgb"}, False),  # the fuse head: main head and gloss feature
        (("keypoint_aux_0",), {"fuse", "keypoint_aux_0"}, True),
        (("ensemble_early",), {"fuse", "rgb_aux_1", "keypoint_aux_1", "ensemble_early"}, True),
    ],
)
def test_selected_heads_are_those_of_the_whole_network(
    two_stream: RecognitionNetwork, wanted, computed, pyramid_runs, monkeypatch
) -> None:
    two_stream.eval()
    inputs = _unlabelled(batch(STREAMS))
    with torch.no_grad():
        whole = two_stream(**inputs)
        calls = []
        for pyramid in two_stream.backbone.pyramids.values():
            monkeypatch.setattr(
                pyramid, "forward", lambda maps, f=pyramid.forward: calls.append(1) or f(maps)
            )
        part = two_stream(**inputs, heads=wanted)
    assert set(part.heads) == computed
    assert bool(calls) == pyramid_runs
    for name in computed:
        assert torch.equal(part.heads[name].log_probs, whole.heads[name].log_probs), name
    for stream in STREAMS:
        assert torch.equal(part.head_inputs[stream], whole.head_inputs[stream])
    assert torch.equal(part.gloss_feature, whole.gloss_feature)
    assert torch.equal(part.lengths, whole.lengths)


def test_a_head_selection_names_unknown_heads_and_refuses_labels(two_stream) -> None:
    with pytest.raises(ValueError, match="head 'nope': the network has fuse"):
        two_stream(**_unlabelled(batch(STREAMS)), heads=("nope",))
    with pytest.raises(ValueError, match="losses need every head"):
        two_stream(**batch(STREAMS), heads=("ensemble",))


def _unlabelled(inputs: dict) -> dict:
    return {k: v for k, v in inputs.items() if k not in ("gloss_labels", "gloss_lengths")}


def test_loss_terms_follow_their_definitions(two_stream: RecognitionNetwork) -> None:
    two_stream.eval()
    inputs = batch(STREAMS)
    with torch.no_grad():
        output = two_stream(**inputs)
    heads = output.heads
    rgb = heads["rgb"]
    ctc = F.ctc_loss(
        rgb.log_probs.transpose(0, 1),
        inputs["gloss_labels"],
        rgb.lengths,
        inputs["gloss_lengths"],
        blank=0,
        reduction="sum",
        zero_infinity=True,
    )
    assert torch.allclose(output.losses["ctc_rgb"], ctc / 2)
    teacher = heads["ensemble"].probs
    kl = (teacher * (teacher.log() - heads["keypoint"].log_probs)).sum() / 2
    assert torch.allclose(output.losses["ensemble_last_teaches_keypoint"], kl, rtol=1e-5)
    auxes = sum(
        F.kl_div(heads[n].log_probs, heads["ensemble_early"].probs, reduction="batchmean")
        for n in ("rgb_aux_0", "rgb_aux_1", "keypoint_aux_0", "keypoint_aux_1")
    )
    assert torch.allclose(output.losses["ensemble_early_teaches_auxes"], auxes)


def test_distillation_teacher_is_detached(two_stream: RecognitionNetwork) -> None:
    two_stream.train()
    two_stream.zero_grad()
    output = two_stream(**batch(STREAMS), generator=0)
    output.losses["ensemble_last_teaches_rgb"].backward()
    assert two_stream.heads["fuse"].classifier.weight.grad is None
    assert two_stream.heads["keypoint"].classifier.weight.grad is None
    assert two_stream.heads["rgb"].classifier.weight.grad is not None
    two_stream.zero_grad()


def test_frozen_blocks_stay_frozen_in_the_network(two_stream: RecognitionNetwork) -> None:
    two_stream.train()
    two_stream.zero_grad()
    rgb_block1 = two_stream.backbone.streams["rgb"].block_layers(1)
    keypoint_block1 = two_stream.backbone.streams["keypoint"].block_layers(1)
    # TwoStream default (frozen_block_mode auto): the frozen block follows the training mode
    assert all(m.training for layer in rgb_block1 for m in layer.modules())
    assert all(m.training for layer in keypoint_block1 for m in layer.modules())
    two_stream(**batch(STREAMS), generator=0).total_loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in rgb_block1.parameters())
    assert all(p.grad is not None for p in keypoint_block1.parameters())
    two_stream.zero_grad()


def test_gloss_log_probs_by_head_name(two_stream: RecognitionNetwork) -> None:
    two_stream.eval()
    inputs = {k: v for k, v in batch(STREAMS).items() if not k.startswith("gloss_")}
    with torch.no_grad():
        exported = two_stream.gloss_log_probs(**inputs)
    assert {"rgb", "keypoint", "fuse", "ensemble", "rgb_aux_0"} <= set(exported)
    log_probs, lengths = exported["fuse"]
    assert log_probs.shape == (2, 2, VOCAB) and lengths.tolist() == [2, 1]

    single = build(tiny_config(("keypoint",))).eval()
    with torch.no_grad():
        exported = single.gloss_log_probs(
            lengths=inputs["lengths"], keypoints=batch(("keypoint",))["keypoints"]
        )
    assert set(exported) == {"gloss"}


def test_decode_every_head(two_stream: RecognitionNetwork) -> None:
    two_stream.eval()
    with torch.no_grad():
        output = two_stream(**batch(STREAMS))
    decoded = RecognitionNetwork.decode(output, beam_size=3)
    assert set(decoded) == set(output.heads)
    assert all(len(hyps) == 2 and all(0 not in h for h in hyps) for hyps in decoded.values())


def test_gloss_feature_selection() -> None:
    network = build(tiny_config(STREAMS, gloss_feature_ensemble="rgb_gloss_probabilities")).eval()
    with torch.no_grad():
        output = network(**batch(STREAMS))
    assert torch.equal(output.gloss_feature, output.heads["rgb"].probs)
    with pytest.raises(ConfigurationError, match="gloss_feature_ensemble"):
        build(tiny_config(("rgb",), gloss_feature_ensemble="keypoint_gloss_feature"), "feature")


def test_cat_order_and_single_direction_laterals() -> None:
    cfg = tiny_config(
        STREAMS,
        cat_order="rgb_first",
        lateral={"pose2rgb": True, "rgb2pose": False, "fusion_features": ["c2", "c3"]},
        pyramid={},
        cross_distillation=None,
    )
    network = build(cfg).eval()
    assert network.backbone.fused_blocks == (2, 3)
    assert all(f.rgb_to_keypoint is None for f in network.backbone.fusions)
    assert [s.sources for s in network.head_specs if s.name == "fuse"] == [("rgb", "keypoint")]
    with torch.no_grad():
        output = network(**batch(STREAMS))
    assert set(output.heads) == {"rgb", "keypoint", "fuse", "ensemble"}


# -- modes and options -------------------------------------------------------------------------
def test_feature_mode_reproduces_the_video_mode_heads(two_stream: RecognitionNetwork) -> None:
    two_stream.eval()
    with torch.no_grad():
        video = two_stream(**batch(STREAMS))
    features = build(tiny_config(STREAMS, cross_distillation=None), "feature").eval()
    state = {f"recognition_network.{k}": v for k, v in two_stream.state_dict().items()}
    load_recognition_state_dict(features, state, "two-stream video model")
    with torch.no_grad():
        output = features(lengths=video.lengths, head_inputs=video.head_inputs)
    for name in ("rgb", "keypoint", "fuse", "ensemble"):
        assert torch.allclose(output.heads[name].log_probs, video.heads[name].log_probs, atol=1e-5)
    assert "rgb_aux_0" not in output.heads


def test_channels_last_gives_the_same_outputs() -> None:
    cfg = tiny_config(STREAMS)
    torch.manual_seed(1)
    plain = build(cfg).eval()
    torch.manual_seed(1)
    channels_last = build(cfg, channels_last=True).eval()
    conv = channels_last.backbone.streams["rgb"].features[3][0][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last_3d)
    inputs = batch(STREAMS)
    with torch.no_grad():
        a, b = plain(**inputs), channels_last(**inputs)
    assert torch.allclose(a.heads["ensemble"].log_probs, b.heads["ensemble"].log_probs, atol=1e-4)


def test_activation_checkpointing_gives_the_same_loss_and_gradients() -> None:
    torch.manual_seed(2)
    plain = build(tiny_config(("rgb",)))
    torch.manual_seed(2)
    checkpointed = build(tiny_config(("rgb",), activation_checkpointing=True))
    assert checkpointed.backbone.streams["rgb"].activation_checkpointing
    inputs = batch(("rgb",))
    losses = []
    for network in (plain, checkpointed):
        network.train()
        torch.manual_seed(4)  # same dropout masks
        loss = network(**inputs, generator=3).total_loss
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    grads = [
        n.backbone.streams["rgb"].features[12].branch0[0].weight.grad for n in (plain, checkpointed)
    ]
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_training_augmentation_follows_the_generator(two_stream: RecognitionNetwork) -> None:
    two_stream.train()
    inputs = batch(STREAMS)
    preprocessed = [
        two_stream.preprocess(inputs["videos"], inputs["keypoints"], g) for g in (5, 5, 6)
    ]
    assert torch.equal(preprocessed[0]["rgb"], preprocessed[1]["rgb"])
    assert not torch.equal(preprocessed[0]["rgb"], preprocessed[2]["rgb"])
    assert preprocessed[0]["keypoint"].shape == (2, KEYPOINTS, FRAMES, 16, 16)
    assert preprocessed[0]["rgb"].shape == (2, 3, FRAMES, 32, 32)
    two_stream.eval()


def test_freeze_keeps_the_network_in_eval_mode() -> None:
    network = build(tiny_config(("rgb",), freeze=True))
    network.train()
    assert not network.training and not network.heads["gloss"].training
    assert not any(p.requires_grad for p in network.parameters())


# -- partial initialisation from single-stream checkpoints -------------------------------------
def _save_published(network: RecognitionNetwork, layout: str, path) -> None:
    state = to_published_state_dict(network.state_dict(), layout)
    torch.save({"model_state": {f"recognition_network.{k}": v for k, v in state.items()}}, path)


def test_two_stream_starts_from_the_single_stream_checkpoints(tmp_path) -> None:
    rgb = build(tiny_config(("rgb",)))
    keypoint = build(tiny_config(("keypoint",)))
    _save_published(rgb, "single_stream_rgb", tmp_path / "rgb.ckpt")
    torch.save(
        {"model_state": {f"recognition_network.{k}": v for k, v in keypoint.state_dict().items()}},
        tmp_path / "keypoint.ckpt",
    )  # this project's own layout works as well
    cfg = tiny_config(
        STREAMS,
        pretrained_path_rgb=str(tmp_path / "rgb.ckpt"),
        pretrained_path_keypoint=str(tmp_path / "keypoint.ckpt"),
    )
    network = build(cfg)
    state = network.state_dict()
    for key, value in rgb.state_dict().items():
        if key.startswith("backbone.streams.rgb."):
            assert torch.equal(state[key], value), key
    for source, target in ((rgb, "rgb"), (keypoint, "keypoint")):
        for key, value in source.heads["gloss"].state_dict().items():
            assert torch.equal(network.heads[target].state_dict()[key], value), (target, key)
    assert torch.equal(
        state["backbone.streams.keypoint.features.0.0.0.weight"],
        keypoint.state_dict()["backbone.streams.keypoint.features.0.0.0.weight"],
    )


def test_partial_initialisation_reports_mismatches(tmp_path) -> None:
    other_vocab = build_recognition_network(
        tiny_config(("rgb",)).model.RecognitionNetwork,
        ("rgb",),
        tiny_config(("rgb",)).data.transform_cfg,
        KEYPOINTS,
        VOCAB + 1,
        "video",
    )
    _save_published(other_vocab, "single_stream_rgb", tmp_path / "rgb.ckpt")
    cfg = tiny_config(STREAMS, pretrained_path_rgb=str(tmp_path / "rgb.ckpt"))
    with pytest.raises(CheckpointError, match=r"heads\.gloss\.classifier\.weight"):
        build(cfg)


# -- configuration errors ----------------------------------------------------------------------
def test_unknown_fuse_method_lists_the_valid_ones() -> None:
    cfg = tiny_config(("rgb",))
    section = dataclasses.replace(cfg.model.RecognitionNetwork, fuse_method="doublehead_bilateral")
    with pytest.raises(ConfigurationError, match="empty, triplehead_cat_bilateral"):
        build_recognition_network(
            section, ("rgb",), cfg.data.transform_cfg, KEYPOINTS, VOCAB, "video"
        )


def test_unknown_input_mode() -> None:
    with pytest.raises(ConfigurationError, match="video, feature"):
        build(tiny_config(("rgb",)), "frames")


def test_keypoint_channels_must_match_the_keypoints() -> None:
    cfg = tiny_config(("keypoint",), keypoint_s3d={"in_channel": 79, "pretrained_ckpt": "scratch"})
    with pytest.raises(ConfigurationError, match="in_channel"):
        build(cfg)


def test_distillation_needs_matching_time_resolution() -> None:
    cfg = tiny_config(STREAMS, cross_distillation={"types": {"ensemble_last_teaches_auxes": 1}})
    with pytest.raises(ConfigurationError, match="time resolutions"):
        build(cfg)
    cfg = tiny_config(STREAMS, cross_distillation={"types": {"ensemble_early_teaches_rgb": 1}})
    with pytest.raises(ConfigurationError, match="ensemble_early"):
        build(cfg, "feature")  # no auxiliary heads without the backbone


def test_every_distillation_teacher_of_the_config_has_a_head():
    assert set(TEACHER_HEADS) == set(DISTILLATION_TEACHERS)


@pytest.mark.parametrize("is_train", [True, False])
@pytest.mark.parametrize("center_crop_size", [None, 40, 70])
@pytest.mark.parametrize("streams", [("rgb", "keypoint"), ("keypoint",)])
def test_preprocessing_renders_the_published_heatmaps_into_the_crop(
    is_train, center_crop_size, streams
):
    """Direct rendering into the planned box = full-size maps cropped and resized as published."""
    spec = HeatmapSpec(raw_size=(60, 50), sigma=3.0)
    augmentation = SpatialAugmentation(
        img_size=32,
        heatmap_size=16,
        color_jitter=True,
        color_jitter_prob=1.0,
        center_crop=center_crop_size is not None,
        center_crop_size=center_crop_size or 224,
    )
    preprocessor = VideoPreprocessor(streams, augmentation, spec).train(is_train)
    gen = torch.Generator().manual_seed(3)
    videos = torch.randint(0, 256, (2, 4, 3, 60, 50), dtype=torch.uint8, generator=gen)
    keypoints = torch.rand(2, 4, 7, 3, generator=gen) * torch.tensor([50.0, 60.0, 1.0])
    got = preprocessor(videos, keypoints, generator=11)
    dense = render_heatmaps(keypoints, spec.raw_size, sigma=spec.sigma)
    rgb = videos if "rgb" in streams else None
    expected = augment_batch(rgb, dense, is_train, augmentation, 11, frame_size=spec.raw_size)
    assert sorted(got) == sorted(streams)
    torch.testing.assert_close(got["keypoint"], expected[1], atol=1e-6, rtol=0)
    if rgb is not None:
        assert torch.equal(got["rgb"], expected[0])


@pytest.mark.parametrize(
    ("streams", "setting", "expected"),
    [
        (("rgb",), "auto", "eval"),
        (("keypoint", "rgb"), "auto", "train"),
        (("keypoint", "rgb"), "eval", "eval"),
        (("rgb",), "train", "train"),
    ],
)
def test_frozen_block_mode_auto_is_the_originals_choice_per_model_kind(streams, setting, expected):
    network = build(tiny_config(streams, frozen_block_mode=setting)).train()
    rgb = network.backbone.streams["rgb"]
    assert rgb.frozen_mode == expected
    first_block_norms = [
        m for m in rgb.block_layers(1).modules() if isinstance(m, torch.nn.BatchNorm3d)
    ]
    assert first_block_norms and all(m.training == (expected == "train") for m in first_block_norms)
    assert not any(p.requires_grad for p in rgb.block_layers(1).parameters())


def test_frozen_block_mode_rejects_unknown_values():
    with pytest.raises(ConfigurationError, match="frozen_block_mode"):
        tiny_config(("rgb",), frozen_block_mode="batch")
