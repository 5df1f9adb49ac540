"""The visual backbone: one S3D stream (SingleStream) or two with lateral fusion (TwoStream).

The streams run block by block. After each fused block (published: blocks 1, 2, 3, the
"c1, c2, c3" of the config) the RGB and keypoint features exchange information through
:class:`~modelling.lateral_fusion.BilateralFusion`. A stream with auxiliary heads then
fuses its top ``num_levels`` block outputs top-down with a
:class:`~modelling.pyramid.FeaturePyramid`. Every level is mean-pooled over space to a
``(B, T', C)`` sequence with its own valid lengths ``floor(length * T' / T)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from modelling.lateral_fusion import BilateralFusion
from modelling.pyramid import FeaturePyramid
from modelling.s3d_stream import BLOCK_CHANNELS, S3DStream

FUSED_STREAMS = ("rgb", "keypoint")


@dataclass
class FeatureLevel:
    """One pooled level of a stream."""

    block: int  # the S3D block (1..4) the level comes from
    features: torch.Tensor  # (B, T', C)
    lengths: torch.Tensor  # (B,) valid steps per sample
    mask: torch.Tensor  # (B, T') bool, True on valid steps


def output_lengths(lengths: torch.Tensor, time_in: int, time_out: int) -> torch.Tensor:
    """``floor(lengths * time_out / time_in)`` in exact integer arithmetic: ``(B,)`` int64."""
    return torch.div(lengths.long() * time_out, time_in, rounding_mode="floor")


def length_mask(lengths: torch.Tensor, time: int) -> torch.Tensor:
    """``(B,)`` lengths -> ``(B, time)`` bool, True where ``t < length``."""
    return torch.arange(time, device=lengths.device) < lengths[:, None]


class StreamBackbone(nn.Module):
    """S3D stream(s) -> pooled feature levels per stream.

    Args:
        streams: ``{'rgb': S3DStream, ...}``; two streams must be ``rgb`` and ``keypoint``
            with the same ``use_block``.
        pyramid_levels: per stream, the number of top blocks fused by a pyramid (>= 2);
            streams not listed give only their top block.
        fused_blocks: blocks (1-based, increasing) followed by a bilateral fusion.
        lateral_kernel: kernel size (time, height, width) of the lateral convolutions.
        keypoint_to_rgb, rgb_to_keypoint: which lateral directions exist.
    """

    def __init__(
        self,
        streams: Mapping[str, S3DStream],
        pyramid_levels: Mapping[str, int] | None = None,
        fused_blocks: Sequence[int] = (),
        lateral_kernel: tuple[int, int, int] = (7, 3, 3),
        keypoint_to_rgb: bool = True,
        rgb_to_keypoint: bool = True,
    ) -> None:
        super().__init__()
        use_blocks = {stream.use_block for stream in streams.values()}
        if len(use_blocks) != 1:
            raise ValueError(f"all streams need the same use_block, got {use_blocks}")
        if fused_blocks and set(streams) != set(FUSED_STREAMS):
            raise ValueError(f"lateral fusion needs streams {FUSED_STREAMS}, got {list(streams)}")
        self.use_block = use_blocks.pop()
        if list(fused_blocks) != sorted(set(fused_blocks)) or not set(fused_blocks) <= set(
            range(1, self.use_block + 1)
        ):
            raise ValueError(f"fused blocks must be increasing within 1..{self.use_block}")
        self.streams = nn.ModuleDict(streams)
        self.num_levels = {name: 1 for name in streams} | dict(pyramid_levels or {})
        for name, levels in self.num_levels.items():
            if name not in streams or not 1 <= levels <= self.use_block:
                raise ValueError(f"cannot take {levels} levels of stream {name!r}")
        self.pyramids = nn.ModuleDict(
            {
                name: FeaturePyramid(self.level_blocks(name))
                for name, levels in self.num_levels.items()
                if levels > 1
            }
        )
        self.fused_blocks = tuple(fused_blocks)
        self.fusions = nn.ModuleList(
            BilateralFusion(
                BLOCK_CHANNELS[block - 1], lateral_kernel, keypoint_to_rgb, rgb_to_keypoint
            )
            for block in self.fused_blocks
        )

    def level_blocks(self, stream: str) -> tuple[int, ...]:
        """The blocks whose (fused) outputs ``stream`` returns, bottom to top."""
        return tuple(range(self.use_block - self.num_levels[stream] + 1, self.use_block + 1))

    def out_channels(self, stream: str) -> tuple[int, ...]:
        """Channels of ``stream``'s levels, bottom to top."""
        return tuple(BLOCK_CHANNELS[block - 1] for block in self.level_blocks(stream))

    def forward(
        self, inputs: Mapping[str, torch.Tensor], lengths: torch.Tensor, top_only: bool = False
    ) -> dict[str, list[FeatureLevel]]:
        """Run the streams.

        Args:
            inputs: per stream ``(B, C, T, H, W)`` (keypoint maps at half the RGB size).
            lengths: ``(B,)`` valid frames per sample.
            top_only: only the top level (the pyramid changes the levels below it only, so
                the top one is the same; inference that reads the main heads alone).

        Returns:
            per stream, its levels bottom to top (the last one feeds the main head).
        """
        time_in = next(iter(inputs.values())).shape[2]
        block_outputs = self._run_blocks(inputs)
        return {
            name: self._pool_levels(name, outputs, lengths, time_in, top_only)
            for name, outputs in block_outputs.items()
        }

    def _run_blocks(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, list[torch.Tensor]]:
        x = {name: inputs[name] for name in self.streams}
        outputs: dict[str, list[torch.Tensor]] = {name: [] for name in self.streams}
        fusions = dict(zip(self.fused_blocks, self.fusions))
        for block in range(1, self.use_block + 1):
            for name, stream in self.streams.items():
                x[name] = stream.forward_block(x[name], block)
            if block in fusions:
                x["rgb"], x["keypoint"] = fusions[block](x["rgb"], x["keypoint"])
            for name in self.streams:
                outputs[name].append(x[name])
        return outputs

    def _pool_levels(
        self,
        name: str,
        outputs: list[torch.Tensor],
        lengths: torch.Tensor,
        time_in: int,
        top_only: bool = False,
    ) -> list[FeatureLevel]:
        blocks = self.level_blocks(name)[-1:] if top_only else self.level_blocks(name)
        maps = [outputs[block - 1] for block in blocks]
        if name in self.pyramids and not top_only:
            maps = self.pyramids[name](maps)
        levels = []
        for block, feature_map in zip(blocks, maps):
            features = feature_map.mean(dim=(-2, -1)).transpose(1, 2)  # (B, T', C)
            valid = output_lengths(lengths, time_in, features.shape[1])
            levels.append(
                FeatureLevel(block, features, valid, length_mask(valid, features.shape[1]))
            )
        return levels
