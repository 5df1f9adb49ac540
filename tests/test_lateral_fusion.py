"""Lateral connections between the RGB and keypoint streams."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from modelling.lateral_fusion import BilateralFusion, LateralConnection


def test_rgb_to_keypoint_is_a_strided_convolution() -> None:
    lateral = LateralConnection(8, "rgb_to_keypoint")
    conv = lateral.conv
    assert isinstance(conv, nn.Conv3d) and not isinstance(conv, nn.ConvTranspose3d)
    assert conv.kernel_size == (7, 3, 3) and conv.stride == (1, 2, 2)
    assert conv.padding == (3, 1, 1) and conv.bias is None
    rgb, keypoint = torch.randn(2, 8, 5, 16, 12), torch.randn(2, 8, 5, 8, 6)
    assert torch.allclose(lateral(keypoint, rgb), keypoint + conv(rgb))


def test_keypoint_to_rgb_is_a_strided_transposed_convolution() -> None:
    lateral = LateralConnection(8, "keypoint_to_rgb", kernel_size=(5, 3, 3))
    conv = lateral.conv
    assert isinstance(conv, nn.ConvTranspose3d)
    assert conv.stride == (1, 2, 2) and conv.padding == (2, 1, 1)
    assert conv.output_padding == (0, 1, 1) and conv.bias is None
    rgb, keypoint = torch.randn(2, 8, 5, 16, 12), torch.randn(2, 8, 5, 8, 6)
    out = lateral(rgb, keypoint)
    assert out.shape == rgb.shape
    assert torch.allclose(out, rgb + conv(keypoint))


def test_kaiming_normal_initialisation() -> None:
    weight = LateralConnection(64, "rgb_to_keypoint").conv.weight
    expected_std = math.sqrt(2.0 / (64 * 7 * 3 * 3))  # fan_in, gain sqrt(2)
    assert weight.std().item() == pytest.approx(expected_std, rel=0.05)
    assert abs(weight.mean().item()) < expected_std / 20


def test_both_directions_read_the_features_before_fusion() -> None:
    fusion = BilateralFusion(4)
    rgb, keypoint = torch.randn(1, 4, 3, 8, 8), torch.randn(1, 4, 3, 4, 4)
    fused_rgb, fused_keypoint = fusion(rgb, keypoint)
    assert torch.allclose(fused_rgb, rgb + fusion.keypoint_to_rgb.conv(keypoint))
    assert torch.allclose(fused_keypoint, keypoint + fusion.rgb_to_keypoint.conv(rgb))


def test_directions_can_be_switched_off() -> None:
    fusion = BilateralFusion(4, keypoint_to_rgb=False)
    rgb, keypoint = torch.randn(1, 4, 3, 8, 8), torch.randn(1, 4, 3, 4, 4)
    fused_rgb, fused_keypoint = fusion(rgb, keypoint)
    assert fusion.keypoint_to_rgb is None and fused_rgb is rgb
    assert not torch.equal(fused_keypoint, keypoint)


def test_unknown_direction() -> None:
    with pytest.raises(ValueError):
        LateralConnection(4, "sideways")
