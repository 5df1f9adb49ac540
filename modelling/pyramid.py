"""The top-down feature pyramid over S3D blocks (published "pyramid v1").

Each upper level is upsampled to the size of the level below it and added to it, from the
top down, so lower levels see the context of the upper ones. The upsampling is a learned
transposed convolution in space (x2) then in time (x2 where S3D halved time between the
two blocks, i.e. from block 4 to block 3; x1 elsewhere), each followed by BatchNorm and
ReLU. Auxiliary recognition heads read the lower levels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from modelling.cpu_convolution import convolve
from modelling.s3d_stream import BLOCK_CHANNELS, BLOCK_TIME_STRIDES

BN_EPS = 1e-3
BN_MOMENTUM = 1e-3
SPACE_SCALE = 2  # every S3D block boundary halves height and width


class UpsampleLevel(nn.Module):
    """``(B, C_in, T, H, W)`` -> ``(B, C_out, T * time_scale, 2H, 2W)``."""

    def __init__(
        self, in_channels: int, out_channels: int, time_scale: int, kernel_size: int = 3
    ) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.spatial = nn.ConvTranspose3d(
            in_channels,
            out_channels,
            kernel_size=(1, kernel_size, kernel_size),
            stride=(1, SPACE_SCALE, SPACE_SCALE),
            padding=(0, pad, pad),
            output_padding=(0, SPACE_SCALE - 1, SPACE_SCALE - 1),
            bias=False,
        )
        self.spatial_norm = nn.BatchNorm3d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.temporal = nn.ConvTranspose3d(
            out_channels,
            out_channels,
            kernel_size=(kernel_size, 1, 1),
            stride=(time_scale, 1, 1),
            padding=(pad, 0, 0),
            output_padding=(time_scale - 1, 0, 0),
            bias=False,
        )
        self.temporal_norm = nn.BatchNorm3d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activation(self.spatial_norm(convolve(self.spatial, x)))
        return self.activation(self.temporal_norm(convolve(self.temporal, x)))


class FeaturePyramid(nn.Module):
    """Top-down fusion of the outputs of consecutive S3D blocks.

    Args:
        blocks: the S3D blocks (1-based, consecutive, bottom to top) whose outputs are fused,
            e.g. ``(2, 3, 4)`` for the published three levels.

    ``upsample[i]`` maps level ``L-1-i`` to level ``L-2-i`` (the top one first, as published).
    """

    def __init__(self, blocks: Sequence[int]) -> None:
        super().__init__()
        blocks = tuple(blocks)
        if len(blocks) < 2 or blocks != tuple(range(blocks[0], blocks[0] + len(blocks))):
            raise ValueError(f"expected at least two consecutive blocks, got {blocks}")
        self.blocks = blocks
        top_down = blocks[::-1]
        self.upsample = nn.ModuleList(
            UpsampleLevel(
                BLOCK_CHANNELS[upper - 1],
                BLOCK_CHANNELS[lower - 1],
                time_scale=BLOCK_TIME_STRIDES[upper - 1] // BLOCK_TIME_STRIDES[lower - 1],
            )
            for upper, lower in zip(top_down, top_down[1:])
        )

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Block outputs bottom to top ``[(B, C_l, T_l, H_l, W_l)]`` -> fused, same shapes."""
        if len(features) != len(self.blocks):
            raise ValueError(f"expected {len(self.blocks)} levels, got {len(features)}")
        fused = list(features)
        for i, upsample in enumerate(self.upsample):
            upper = len(fused) - 1 - i
            fused[upper - 1] = fused[upper - 1] + upsample(fused[upper])
        return fused
