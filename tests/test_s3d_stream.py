"""S3D stream: architecture, freezing, checkpointing, published S3D checkpoints."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn
from torchvision.models.video import S3D

from modelling.s3d_stream import (
    BLOCK_CHANNELS,
    BLOCK_END_INDICES,
    S3DStream,
    load_published_s3d,
    original_to_torchvision,
    torchvision_to_original,
)
from utils.errors import CheckpointError

CLIP = (1, 3, 8, 32, 32)  # (B, C, T, H, W)


def _norms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_block_outputs_have_published_shapes() -> None:
    stream = S3DStream(use_block=4).eval()
    outputs = stream(torch.randn(CLIP))
    assert [o.shape[1] for o in outputs] == list(BLOCK_CHANNELS)
    # time /2 after block 1 and /4 after block 4; space /2, /4, /8, /16
    assert [tuple(o.shape[2:]) for o in outputs] == [(4, 16, 16), (4, 8, 8), (4, 4, 4), (2, 2, 2)]
    assert len(stream.features) == BLOCK_END_INDICES[-1] + 1


def test_batchnorm_settings_match_the_published_s3d() -> None:
    norms = _norms(S3DStream(use_block=4))
    assert len(norms) == 61  # as in the published layout (blocks 1-4)
    assert all(m.eps == 1e-3 and m.momentum == 1e-3 and m.affine for m in norms)


@pytest.mark.parametrize("use_block", [1, 2, 3])
def test_fewer_blocks(use_block: int) -> None:
    stream = S3DStream(use_block=use_block).eval()
    outputs = stream(torch.randn(CLIP))
    assert len(outputs) == use_block
    assert outputs[-1].shape[1] == stream.out_channels == BLOCK_CHANNELS[use_block - 1]


def test_heatmap_stream_replaces_the_first_convolution() -> None:
    stream = S3DStream(in_channels=79, use_block=1)
    conv = stream.features[0][0][0]
    assert conv.weight.shape == (64, 79, 1, 7, 7)
    assert conv.stride == (1, 2, 2) and conv.padding == (0, 3, 3) and conv.bias is None
    assert stream(torch.randn(1, 79, 4, 16, 16))[0].shape == (1, 64, 2, 8, 8)


def test_frozen_blocks_get_no_gradient_and_stay_in_eval_mode() -> None:
    stream = S3DStream(use_block=2, freeze_block=1)
    stream.train()
    frozen, trainable = stream.block_layers(1), stream.block_layers(2)
    assert not any(m.training for layer in frozen for m in layer.modules())
    assert all(m.training for layer in trainable for m in layer.modules())
    assert not any(p.requires_grad for p in frozen.parameters())
    running_mean = _norms(frozen)[0].running_mean.clone()
    stream(torch.randn(2, *CLIP[1:]))[-1].sum().backward()
    assert all(p.grad is None for p in frozen.parameters())
    assert all(p.grad is not None for p in trainable.parameters())
    assert torch.equal(_norms(frozen)[0].running_mean, running_mean)


def test_frozen_blocks_in_train_mode_use_batch_statistics_but_get_no_gradient() -> None:
    stream = S3DStream(use_block=2, freeze_block=1, frozen_mode="train")
    stream.train()
    frozen = stream.block_layers(1)
    assert all(m.training for layer in frozen for m in layer.modules())
    norm = _norms(frozen)[0]
    running_mean = norm.running_mean.clone()
    stream(torch.randn(2, *CLIP[1:]))[-1].sum().backward()
    assert all(p.grad is None for p in frozen.parameters())
    assert not torch.equal(norm.running_mean, running_mean)  # momentum 1e-3 step taken
    assert int(norm.num_batches_tracked) == 1
    stream.eval()
    assert not any(m.training for m in stream.modules())


def test_unknown_frozen_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="frozen_mode"):
        S3DStream(use_block=2, freeze_block=1, frozen_mode="batch")


def test_activation_checkpointing_matches_plain_training_step() -> None:
    plain = S3DStream(use_block=2, freeze_block=1).train()
    checkpointed = S3DStream(use_block=2, freeze_block=1, activation_checkpointing=True).train()
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, *CLIP[1:])
    plain(x)[-1].square().mean().backward()
    checkpointed(x)[-1].square().mean().backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        if a.grad is not None:
            assert torch.allclose(a.grad, b.grad, atol=1e-6), name
    # recomputation must not update BatchNorm statistics a second time
    for (name, a), b in zip(plain.named_buffers(), checkpointed.buffers()):
        assert torch.allclose(a.float(), b.float(), atol=1e-7), name


def test_channels_last_gives_the_same_output() -> None:
    stream = S3DStream(use_block=2).eval()
    x = torch.randn(CLIP)
    expected = stream(x)[-1]
    stream.to(memory_format=torch.channels_last_3d)
    out = stream(x.contiguous(memory_format=torch.channels_last_3d))[-1]
    assert torch.allclose(out, expected, atol=1e-5)


# -- key conversion ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("original", "torchvision"),
    [
        ("base.0.conv_s.weight", "0.0.0.weight"),
        ("base.0.bn_s.running_var", "0.0.1.running_var"),
        ("base.0.conv_t.weight", "0.1.0.weight"),
        ("base.3.bn_t.bias", "3.1.1.bias"),
        ("base.2.conv.weight", "2.0.weight"),
        ("base.2.bn.num_batches_tracked", "2.1.num_batches_tracked"),
        ("base.5.branch0.0.conv.weight", "5.branch0.0.weight"),
        ("base.5.branch0.0.bn.weight", "5.branch0.1.weight"),
        ("base.8.branch1.0.conv.weight", "8.branch1.0.0.weight"),
        ("base.8.branch1.1.conv_s.weight", "8.branch1.1.0.0.weight"),
        ("base.12.branch2.1.bn_t.running_mean", "12.branch2.1.1.1.running_mean"),
        ("base.15.branch3.1.conv.weight", "15.branch3.1.0.weight"),
    ],
)
def test_key_conversion_both_ways(original: str, torchvision: str) -> None:
    assert original_to_torchvision(original) == torchvision
    assert torchvision_to_original(torchvision) == original


def test_every_torchvision_s3d_feature_key_converts_and_back() -> None:
    keys = list(S3D().features.state_dict())
    originals = [torchvision_to_original(k) for k in keys]
    assert len(set(originals)) == len(keys)
    assert [original_to_torchvision(k) for k in originals] == keys


def test_unknown_key_is_rejected() -> None:
    with pytest.raises(KeyError):
        original_to_torchvision("base.1.conv.weight")  # index 1 is a max pool


# -- published S3D checkpoints -----------------------------------------------------------------
def _original_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    """All 16 S3D feature layers in the original naming, with recognisable values."""
    generator = torch.Generator().manual_seed(seed)
    return {
        torchvision_to_original(k): torch.randn(v.shape, generator=generator)
        if v.is_floating_point()
        else v
        for k, v in S3D().features.state_dict().items()
    }


def test_loads_actioncls_checkpoint(tmp_path) -> None:
    weights = _original_weights()
    raw = {f"module.{k}": v for k, v in weights.items()}
    raw["module.fc.0.weight"] = torch.zeros(400, 1024, 1, 1, 1)
    folder = tmp_path / "s3ds_actioncls_ckpt"
    folder.mkdir()
    torch.save(raw, folder / "S3D_kinetics400.pt")
    stream = S3DStream(use_block=3)
    load_published_s3d(stream, folder)
    state = stream.state_dict()
    for key in ("features.0.0.0.weight", "features.6.branch3.1.1.running_var"):
        original = torchvision_to_original(key.removeprefix("features."))
        assert torch.equal(state[key], weights[original]), key


def test_loads_glosscls_checkpoint_into_a_heatmap_stream(tmp_path, caplog) -> None:
    weights = _original_weights(1)
    raw = {"state_dict": {f"backbone.{k}": v for k, v in weights.items()}, "epoch": 3}
    folder = tmp_path / "s3ds_glosscls_ckpt"
    folder.mkdir()
    torch.save(raw, folder / "model_best.pth.tar")
    stream = S3DStream(in_channels=17, use_block=4)
    first_conv = stream.features[0][0][0].weight.clone()
    with caplog.at_level(logging.INFO, logger="modelling.s3d_stream"):
        load_published_s3d(stream, folder)
    assert torch.equal(stream.features[0][0][0].weight, first_conv)
    assert "first convolution left at initialisation" in caplog.text
    assert torch.equal(
        stream.features[12].branch0[0].weight, weights["base.12.branch0.0.conv.weight"]
    )


def test_missing_or_misshaped_weights_are_named(tmp_path) -> None:
    weights = _original_weights()
    del weights["base.3.conv_t.weight"]
    weights["base.5.branch0.0.bn.bias"] = torch.zeros(3)
    torch.save(weights, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError) as error:
        load_published_s3d(S3DStream(use_block=4), tmp_path)
    assert "missing: features.3.1.0.weight" in str(error.value)
    assert "features.5.branch0.1.bias" in str(error.value)


def test_folder_needs_exactly_one_checkpoint(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="exactly one"):
        load_published_s3d(S3DStream(use_block=1), tmp_path)


def test_torchvision_kinetics_layout_loads(tmp_path):
    """torchvision's S3D weights (features.N…, plus the classifier) initialise a stream."""
    full = S3D()
    torch.save(full.state_dict(), tmp_path / "s3d_kinetics400.pt")
    stream = S3DStream(use_block=4)
    load_published_s3d(stream, tmp_path)
    expected = full.features[0][0][0].weight
    assert torch.equal(stream.features[0][0][0].weight, expected)
    assert torch.equal(stream.features[12].branch0[0].weight, full.features[12].branch0[0].weight)
