"""The visual head: pooled S3D features -> gloss features and CTC gloss probabilities.

Linear -> masked BatchNorm -> ReLU -> sinusoidal positions -> Dropout -> temporal
feed-forward (Conv1d, pre-LayerNorm, residual) -> LayerNorm -> Linear classifier, as
published. The BatchNorm uses only the valid time steps in training (padding would bias
its statistics); in evaluation it applies the running statistics everywhere.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from modelling.two_stream import length_mask
from utils.distributed import at_least_float32

LAYER_NORM_EPS = 1e-6
MAX_POSITIONS = 5000


@dataclass
class GlossHeadOutput:
    """What a head (or an ensemble of heads) predicts for a batch."""

    logits: torch.Tensor  # (B, T', V)
    log_probs: torch.Tensor  # (B, T', V) float32 (float64 networks: float64), log_softmax
    probs: torch.Tensor  # (B, T', V) float32 (float64 networks: float64)
    lengths: torch.Tensor  # (B,) valid steps
    feature: torch.Tensor | None = None  # (B, T', hidden) gloss feature; None for ensembles


class MaskedBatchNorm(nn.Module):
    """BatchNorm over the valid ``(b, t)`` positions of ``(B, T, C)`` sequences.

    The inner ``nn.BatchNorm1d`` is what ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``
    replaces under DDP. In training, padded positions pass through unchanged.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(num_features)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, T, C)``, ``mask`` ``(B, T)`` bool -> ``(B, T, C)``."""
        if not self.training:
            return self.bn(x.reshape(-1, x.shape[-1])).reshape(x.shape)
        normed = self.bn(x[mask]).to(x.dtype)  # (N_valid, C), in (b, t) order
        return x.masked_scatter(mask[..., None], normed)


class PositionalEncoding(nn.Module):
    """Adds the sinusoidal position encoding of Vaswani et al. to ``(B, T, C)`` inputs."""

    def __init__(self, size: int, max_len: int = MAX_POSITIONS) -> None:
        super().__init__()
        if size % 2:
            raise ValueError(f"sinusoidal positions need an even size, got {size}")
        self.register_buffer("pe", sinusoid_table(max_len, size), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.pe.shape[0]:
            raise ValueError(f"sequence of {x.shape[1]} steps exceeds {self.pe.shape[0]}")
        return x + self.pe[: x.shape[1]]


def sinusoid_table(max_len: int, size: int) -> torch.Tensor:
    """``(max_len, size)``: sin on even channels, cos on odd ones (float32, as published).

    A fresh copy of a cached table: every head and every published checkpoint check needs
    the same few tables, each a second of sin/cos on two cores.
    """
    return _sinusoid_table(max_len, size).clone()


@functools.lru_cache(maxsize=8)
def _sinusoid_table(max_len: int, size: int) -> torch.Tensor:
    position = torch.arange(max_len, dtype=torch.float32)[:, None]
    frequency = torch.exp(
        torch.arange(0, size, 2, dtype=torch.float32) * -(math.log(10000.0) / size)
    )
    table = torch.zeros(max_len, size)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table


class TemporalFeedForward(nn.Module):
    """Pre-LayerNorm residual block of temporal convolutions over ``(B, T, C)``.

    ``kernel_sizes`` ``(k_1, ..., k_n)`` gives n convolutions size -> ff_size -> ... ->
    size ('same' padding), ReLU + Dropout between them and Dropout after the last. A single
    kernel size means two convolutions of that size (as published).
    """

    def __init__(
        self, size: int, ff_size: int, kernel_sizes: Sequence[int], dropout: float = 0.1
    ) -> None:
        super().__init__()
        kernel_sizes = tuple(kernel_sizes)
        if len(kernel_sizes) == 1:
            kernel_sizes = kernel_sizes * 2
        channels = [size] + [ff_size] * (len(kernel_sizes) - 1) + [size]
        layers: list[nn.Module] = []
        for i, kernel in enumerate(kernel_sizes):
            layers.append(nn.Conv1d(channels[i], channels[i + 1], kernel, padding="same"))
            if i < len(kernel_sizes) - 1:
                layers.append(nn.ReLU())
            layers.append(nn.Dropout(dropout))
        self.layer_norm = nn.LayerNorm(size, eps=LAYER_NORM_EPS)
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layers(self.layer_norm(x).transpose(1, 2)).transpose(1, 2)
        return x + y


class VisualHead(nn.Module):
    """``(B, T', input_size)`` features -> gloss features and gloss distributions.

    Args:
        input_size: channels of the input features (832 for S3D block 4).
        hidden_size: size of the gloss feature.
        ff_size: inner size of the feed-forward block.
        vocab_size: gloss classes, blank (id 0) included.
        kernel_sizes: feed-forward convolution kernel sizes (see :class:`TemporalFeedForward`).
        positional_encoding: add sinusoidal positions.
        dropout: dropout after the positions and inside the feed-forward block.
        frozen: everything but the classifier gets no gradient, stays in eval mode and
            passes no gradient to the input (published ``frozen``).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        ff_size: int,
        vocab_size: int,
        kernel_sizes: Sequence[int] = (3, 3),
        positional_encoding: bool = True,
        dropout: float = 0.1,
        frozen: bool = False,
    ) -> None:
        super().__init__()
        self.projection = nn.Linear(input_size, hidden_size)
        self.norm = MaskedBatchNorm(hidden_size)
        self.activation = nn.ReLU()
        self.positions = PositionalEncoding(hidden_size) if positional_encoding else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.feedforward = TemporalFeedForward(hidden_size, ff_size, kernel_sizes, dropout)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=LAYER_NORM_EPS)
        self.classifier = nn.Linear(hidden_size, vocab_size)
        self.frozen = frozen
        if frozen:
            for module in self._encoder_modules():
                module.requires_grad_(False)
                module.eval()

    def _encoder_modules(self) -> list[nn.Module]:
        return [
            self.projection,
            self.norm,
            self.activation,
            self.positions,
            self.dropout,
            self.feedforward,
            self.layer_norm,
        ]

    def train(self, mode: bool = True) -> VisualHead:
        super().train(mode)
        if self.frozen:
            for module in self._encoder_modules():
                module.eval()
        return self

    def encode(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B, T', input_size)`` -> gloss feature ``(B, T', hidden_size)``."""
        x = self.activation(self.norm(self.projection(x), mask))
        x = self.dropout(self.positions(x))
        return self.layer_norm(self.feedforward(x))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> GlossHeadOutput:
        """``x`` ``(B, T', input_size)``, ``lengths`` ``(B,)`` -> :class:`GlossHeadOutput`."""
        mask = length_mask(lengths, x.shape[1])
        if self.frozen:
            with torch.no_grad():
                feature = self.encode(x, mask)
        else:
            feature = self.encode(x, mask)
        logits = self.classifier(feature)
        wide = at_least_float32(logits)
        return GlossHeadOutput(
            logits=logits,
            log_probs=wide.log_softmax(-1),
            probs=wide.softmax(-1),
            lengths=lengths,
            feature=feature,
        )
