"""Lateral connections between the RGB and the keypoint S3D streams (TwoStream-SLR).

After a fused block, each stream adds a convolution of the other stream's output to its
own. The RGB stream has twice the spatial resolution of the keypoint stream (224 vs 112
pixels in), so RGB -> keypoint is a strided convolution and keypoint -> RGB a strided
transposed convolution; time is not resampled. Both directions read the features as they
were before this fusion.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from modelling.cpu_convolution import convolve

Direction = Literal["rgb_to_keypoint", "keypoint_to_rgb"]
SPACE_RATIO = 2  # RGB pixels per keypoint-heatmap pixel, along each axis


class LateralConnection(nn.Module):
    """``target + conv(source)`` with ``source`` brought to ``target``'s resolution.

    Args:
        channels: channels of both streams at this block.
        direction: ``'rgb_to_keypoint'`` (Conv3d, stride (1, 2, 2)) or
            ``'keypoint_to_rgb'`` (ConvTranspose3d, stride (1, 2, 2), output padding (0, 1, 1)).
        kernel_size: (time, height, width); padding is ``k // 2``. No bias.
    """

    def __init__(
        self,
        channels: int,
        direction: Direction,
        kernel_size: tuple[int, int, int] = (7, 3, 3),
    ) -> None:
        super().__init__()
        stride = (1, SPACE_RATIO, SPACE_RATIO)
        padding = tuple(k // 2 for k in kernel_size)
        if direction == "rgb_to_keypoint":
            self.conv = nn.Conv3d(channels, channels, kernel_size, stride, padding, bias=False)
        elif direction == "keypoint_to_rgb":
            self.conv = nn.ConvTranspose3d(
                channels,
                channels,
                kernel_size,
                stride,
                padding,
                output_padding=(0, SPACE_RATIO - 1, SPACE_RATIO - 1),
                bias=False,
            )
        else:
            raise ValueError(f"unknown direction {direction!r}")
        self.direction = direction
        nn.init.kaiming_normal_(self.conv.weight)  # as published

    def forward(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """``target`` ``(B, C, T, H, W)`` + conv(``source``) -> ``(B, C, T, H, W)``."""
        return target + convolve(self.conv, source)


class BilateralFusion(nn.Module):
    """Both lateral directions at one block; either may be switched off."""

    def __init__(
        self,
        channels: int,
        kernel_size: tuple[int, int, int] = (7, 3, 3),
        keypoint_to_rgb: bool = True,
        rgb_to_keypoint: bool = True,
    ) -> None:
        super().__init__()
        self.keypoint_to_rgb = (
            LateralConnection(channels, "keypoint_to_rgb", kernel_size) if keypoint_to_rgb else None
        )
        self.rgb_to_keypoint = (
            LateralConnection(channels, "rgb_to_keypoint", kernel_size) if rgb_to_keypoint else None
        )

    def forward(
        self, rgb: torch.Tensor, keypoint: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``rgb`` ``(B, C, T, 2h, 2w)``, ``keypoint`` ``(B, C, T, h, w)`` -> both fused."""
        fused_rgb = rgb if self.keypoint_to_rgb is None else self.keypoint_to_rgb(rgb, keypoint)
        fused_keypoint = (
            keypoint if self.rgb_to_keypoint is None else self.rgb_to_keypoint(keypoint, rgb)
        )
        return fused_rgb, fused_keypoint
