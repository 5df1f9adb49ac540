"""Visual head: masked BatchNorm, positions, temporal feed-forward, outputs, freezing."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from modelling.visual_head import (
    MaskedBatchNorm,
    TemporalFeedForward,
    VisualHead,
    sinusoid_table,
)


def _head(**kwargs) -> VisualHead:
    options = {"input_size": 12, "hidden_size": 8, "ff_size": 16, "vocab_size": 7} | kwargs
    return VisualHead(**options)


def test_masked_batchnorm_uses_valid_steps_only_in_training() -> None:
    norm = MaskedBatchNorm(3).train()
    x = torch.randn(2, 4, 3)
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    out = norm(x, mask)
    valid = x[mask]
    expected = (valid - valid.mean(0)) / torch.sqrt(valid.var(0, unbiased=False) + 1e-5)
    assert torch.allclose(out[mask], expected, atol=1e-5)
    assert torch.equal(out[~mask], x[~mask])  # padding passes unchanged
    assert torch.allclose(norm.bn.running_mean, 0.1 * valid.mean(0), atol=1e-6)


def test_masked_batchnorm_in_eval_uses_running_stats_everywhere() -> None:
    norm = MaskedBatchNorm(3).eval()
    norm.bn.running_mean.fill_(1.0)
    norm.bn.running_var.fill_(4.0)
    x = torch.randn(2, 4, 3)
    mask = torch.zeros(2, 4, dtype=torch.bool)
    assert torch.allclose(norm(x, mask), (x - 1.0) / math.sqrt(4.0 + 1e-5), atol=1e-6)


def test_sync_batchnorm_conversion_keeps_the_masking() -> None:
    head = nn.SyncBatchNorm.convert_sync_batchnorm(_head())
    assert isinstance(head.norm, MaskedBatchNorm)
    assert isinstance(head.norm.bn, nn.SyncBatchNorm)


def test_sinusoid_table() -> None:
    table = sinusoid_table(50, 6)
    assert table.shape == (50, 6)
    assert table[7, 0].item() == pytest.approx(math.sin(7.0))
    assert table[7, 1].item() == pytest.approx(math.cos(7.0))
    assert table[7, 4].item() == pytest.approx(math.sin(7.0 / 10000 ** (4 / 6)), rel=1e-5)


def test_feedforward_layout_for_int_and_list_kernels() -> None:
    two = TemporalFeedForward(8, 16, (3,))
    convs = [m for m in two.layers if isinstance(m, nn.Conv1d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in convs] == [
        (8, 16, 3),
        (16, 8, 3),
    ]
    # published indices: conv 0, ReLU, Dropout, conv 3, Dropout
    assert isinstance(two.layers[3], nn.Conv1d) and isinstance(two.layers[4], nn.Dropout)
    three = TemporalFeedForward(8, 16, (5, 3, 1))
    convs = [m for m in three.layers if isinstance(m, nn.Conv1d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in convs] == [
        (8, 16, 5),
        (16, 16, 3),
        (16, 8, 1),
    ]
    assert all(c.padding == "same" for c in convs)
    assert three.layer_norm.eps == 1e-6


def test_feedforward_is_residual_over_prenormalised_input() -> None:
    block = TemporalFeedForward(8, 16, (3, 3)).eval()
    x = torch.randn(2, 5, 8)
    expected = x + block.layers(block.layer_norm(x).transpose(1, 2)).transpose(1, 2)
    assert torch.allclose(block(x), expected)


def test_head_outputs() -> None:
    head = _head().eval()
    lengths = torch.tensor([5, 3])
    out = head(torch.randn(2, 5, 12), lengths)
    assert out.feature.shape == (2, 5, 8)
    assert out.logits.shape == out.log_probs.shape == out.probs.shape == (2, 5, 7)
    assert torch.allclose(out.log_probs, out.logits.log_softmax(-1))
    assert torch.allclose(out.probs.sum(-1), torch.ones(2, 5))
    assert out.lengths is lengths
    assert head.layer_norm.eps == 1e-6


def test_head_computation_order() -> None:
    head = _head().eval()
    x, lengths = torch.randn(2, 5, 12), torch.tensor([5, 5])
    y = torch.relu(head.norm.bn(head.projection(x).reshape(-1, 8)).reshape(2, 5, 8))
    y = head.layer_norm(head.feedforward(y + sinusoid_table(5, 8)))
    assert torch.allclose(head(x, lengths).feature, y, atol=1e-6)


def test_positional_encoding_can_be_off() -> None:
    head = _head(positional_encoding=False).eval()
    assert isinstance(head.positions, nn.Identity)
    assert "positions.pe" not in head.state_dict()  # the table is a constant, not saved


def test_dropout_is_active_only_in_training() -> None:
    head = _head(dropout=0.5)
    x, lengths = torch.randn(2, 5, 12), torch.tensor([5, 4])
    head.eval()
    assert torch.equal(head(x, lengths).logits, head(x, lengths).logits)
    head.train()
    assert not torch.equal(head(x, lengths).logits, head(x, lengths).logits)


def test_frozen_head_trains_only_its_classifier() -> None:
    head = _head(frozen=True)
    head.train()
    assert not head.feedforward.training and not head.norm.training
    assert [n for n, p in head.named_parameters() if p.requires_grad] == [
        "classifier.weight",
        "classifier.bias",
    ]
    x = torch.randn(2, 5, 12, requires_grad=True)
    head(x, torch.tensor([5, 4])).logits.sum().backward()
    assert x.grad is None  # as published: the frozen part runs without gradients
    assert head.classifier.weight.grad is not None
