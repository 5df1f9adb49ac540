"""Stream backbone: block-wise lateral fusion, pyramid levels, output lengths and masks."""

from __future__ import annotations

import pytest
import torch

from modelling.s3d_stream import S3DStream
from modelling.two_stream import StreamBackbone, length_mask, output_lengths

T, RGB, HEATMAP, KEYPOINTS = 8, 32, 16, 5


@pytest.fixture(scope="module")
def two_stream() -> StreamBackbone:
    torch.manual_seed(0)
    streams = {"rgb": S3DStream(3), "keypoint": S3DStream(KEYPOINTS)}
    return StreamBackbone(streams, {"rgb": 3, "keypoint": 3}, fused_blocks=(1, 2, 3)).eval()


def _inputs(batch: int = 2) -> dict[str, torch.Tensor]:
    return {
        "rgb": torch.randn(batch, 3, T, RGB, RGB),
        "keypoint": torch.randn(batch, KEYPOINTS, T, HEATMAP, HEATMAP),
    }


def test_output_lengths_floor_the_scaled_length() -> None:
    lengths = torch.tensor([16, 15, 13, 4, 1])
    assert output_lengths(lengths, 16, 4).tolist() == [4, 3, 3, 1, 0]
    assert output_lengths(lengths, 16, 8).tolist() == [8, 7, 6, 2, 0]


def test_length_mask() -> None:
    mask = length_mask(torch.tensor([3, 0, 1]), 4)
    assert mask.tolist() == [[True, True, True, False], [False] * 4, [True, False, False, False]]


def test_two_stream_levels(two_stream: StreamBackbone) -> None:
    with torch.no_grad():
        levels = two_stream(_inputs(), torch.tensor([8, 6]))
    for name in ("rgb", "keypoint"):
        assert [lv.block for lv in levels[name]] == [2, 3, 4]
        assert [tuple(lv.features.shape) for lv in levels[name]] == [
            (2, 4, 192),
            (2, 4, 480),
            (2, 2, 832),
        ]
        assert [lv.lengths.tolist() for lv in levels[name]] == [[4, 3], [4, 3], [2, 1]]
        assert levels[name][-1].mask.tolist() == [[True, True], [True, False]]
    assert two_stream.out_channels("rgb") == (192, 480, 832)
    assert len(two_stream.fusions) == 3


def test_fusion_links_the_streams(two_stream: StreamBackbone) -> None:
    """Changing the heatmaps changes the RGB features, through the laterals only."""
    inputs, lengths = _inputs(1), torch.tensor([8])
    other = dict(inputs, keypoint=torch.randn_like(inputs["keypoint"]))
    with torch.no_grad():
        a = two_stream(inputs, lengths)["rgb"][-1].features
        b = two_stream(other, lengths)["rgb"][-1].features
    assert not torch.allclose(a, b)


def test_without_laterals_streams_are_independent() -> None:
    torch.manual_seed(0)
    rgb = S3DStream(3, use_block=2)
    backbone = StreamBackbone({"rgb": rgb}).eval()
    with torch.no_grad():
        x = torch.randn(1, 3, T, RGB, RGB)
        levels = backbone({"rgb": x}, torch.tensor([8]))
        expected = rgb(x)[-1].mean(dim=(-2, -1)).transpose(1, 2)
    assert len(levels["rgb"]) == 1 and levels["rgb"][0].block == 2
    assert torch.allclose(levels["rgb"][0].features, expected)


def test_fused_block_output_feeds_the_next_block(two_stream: StreamBackbone) -> None:
    """Block 2 of each stream reads the fused block-1 output (published order)."""
    inputs = _inputs(1)
    rgb, keypoint = two_stream.streams["rgb"], two_stream.streams["keypoint"]
    with torch.no_grad():
        x_rgb, x_kp = (
            rgb.forward_block(inputs["rgb"], 1),
            keypoint.forward_block(inputs["keypoint"], 1),
        )
        x_rgb, x_kp = two_stream.fusions[0](x_rgb, x_kp)
        x_rgb, x_kp = rgb.forward_block(x_rgb, 2), keypoint.forward_block(x_kp, 2)
        x_rgb, x_kp = two_stream.fusions[1](x_rgb, x_kp)
        expected = {"rgb": x_rgb, "keypoint": x_kp}
        outputs = two_stream._run_blocks(inputs)
    for name in expected:
        assert torch.allclose(outputs[name][1], expected[name], atol=1e-5)


def test_gradients_reach_both_inputs(two_stream: StreamBackbone) -> None:
    two_stream.train()
    try:
        inputs = {k: v.requires_grad_() for k, v in _inputs().items()}
        levels = two_stream(inputs, torch.tensor([8, 5]))
        sum(lv.features.sum() for lv in levels["rgb"]).backward()
        for name in ("keypoint", "rgb"):  # the keypoint input reaches the rgb output via laterals
            grad = inputs[name].grad
            assert grad is not None and torch.isfinite(grad).all(), name
            assert grad.abs().sum() > 0, f"no gradient reaches the {name} input"
        # without the lateral into rgb, the keypoint input no longer reaches the rgb levels
        inputs = {k: v.detach().requires_grad_() for k, v in _inputs().items()}
        saved = [f.keypoint_to_rgb for f in two_stream.fusions]
        for fusion in two_stream.fusions:
            fusion.keypoint_to_rgb = None
        try:
            levels = two_stream(inputs, torch.tensor([8, 5]))
            sum(lv.features.sum() for lv in levels["rgb"]).backward()
        finally:
            for fusion, lateral in zip(two_stream.fusions, saved):
                fusion.keypoint_to_rgb = lateral
        assert inputs["keypoint"].grad is None
    finally:
        two_stream.eval()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fused_blocks": (1,)},  # laterals need both streams
        {"pyramid_levels": {"rgb": 3}},  # only 2 blocks
        {"pyramid_levels": {"keypoint": 2}},  # no such stream
    ],
)
def test_invalid_arrangements(kwargs) -> None:
    with pytest.raises(ValueError):
        StreamBackbone({"rgb": S3DStream(3, use_block=2)}, **kwargs)
