"""Feature pyramid: published upsampling layers and top-down accumulation."""

from __future__ import annotations

import pytest
import torch

from modelling.pyramid import FeaturePyramid, UpsampleLevel


def _levels(batch: int = 2) -> list[torch.Tensor]:
    """Block 2, 3, 4 outputs of a (T=16, 64x64) clip: (192, 8, 16, 16), (480, 8, 8, 8), (832, 4, 4, 4)."""
    return [
        torch.randn(batch, 192, 8, 16, 16),
        torch.randn(batch, 480, 8, 8, 8),
        torch.randn(batch, 832, 4, 4, 4),
    ]


def test_upsample_layers_follow_the_published_definition() -> None:
    pyramid = FeaturePyramid((2, 3, 4))
    top, lower = pyramid.upsample  # top-down order, as published
    assert top.spatial.weight.shape == (832, 480, 1, 3, 3)
    assert top.temporal.weight.shape == (480, 480, 3, 1, 1)
    assert lower.spatial.weight.shape == (480, 192, 1, 3, 3)
    assert top.spatial.stride == (1, 2, 2) and top.spatial.padding == (0, 1, 1)
    assert top.spatial.output_padding == (0, 1, 1)
    # block 4 has half the frames of block 3: only the top upsampling doubles time
    assert top.temporal.stride == (2, 1, 1) and top.temporal.output_padding == (1, 0, 0)
    assert lower.temporal.stride == (1, 1, 1) and lower.temporal.output_padding == (0, 0, 0)
    assert top.temporal.padding == (1, 0, 0)
    for layer in (top, lower):
        assert layer.spatial.bias is None and layer.temporal.bias is None
        for norm in (layer.spatial_norm, layer.temporal_norm):
            assert norm.eps == 1e-3 and norm.momentum == 1e-3


def test_upsample_doubles_space_and_scales_time() -> None:
    layer = UpsampleLevel(32, 16, time_scale=2).eval()
    assert layer(torch.randn(1, 32, 3, 5, 7)).shape == (1, 16, 6, 10, 14)
    layer = UpsampleLevel(32, 16, time_scale=1).eval()
    assert layer(torch.randn(1, 32, 3, 5, 7)).shape == (1, 16, 3, 10, 14)


def test_top_down_accumulation() -> None:
    pyramid = FeaturePyramid((2, 3, 4)).eval()
    levels = _levels()
    with torch.no_grad():
        fused = pyramid(levels)
        middle = levels[1] + pyramid.upsample[0](levels[2])
        bottom = levels[0] + pyramid.upsample[1](middle)
    assert [f.shape for f in fused] == [lv.shape for lv in levels]
    assert torch.equal(fused[2], levels[2])
    assert torch.allclose(fused[1], middle)
    assert torch.allclose(fused[0], bottom)  # the lower level sees the already fused middle


def test_four_levels_and_gradients() -> None:
    pyramid = FeaturePyramid((1, 2, 3, 4))
    assert [u.temporal.stride[0] for u in pyramid.upsample] == [2, 1, 1]
    levels = [torch.randn(2, 64, 8, 32, 32), *_levels()]
    levels = [lv.requires_grad_() for lv in levels]
    fused = pyramid(levels)
    fused[0].sum().backward()
    assert all(lv.grad is not None for lv in levels)


@pytest.mark.parametrize("blocks", [(4,), (2, 4), (3, 2)])
def test_blocks_must_be_consecutive(blocks) -> None:
    with pytest.raises(ValueError):
        FeaturePyramid(blocks)
