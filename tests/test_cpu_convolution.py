"""The matrix-product weight gradient matches PyTorch's convolutions and is used only where
it applies."""

import pytest
import torch
from torch import nn

from modelling.cpu_convolution import convolve, weight_gradient

CASES = [
    # (module, input shape): the lateral and pyramid geometries, odd sizes included
    (lambda: nn.Conv3d(6, 5, (3, 3, 3), (1, 2, 2), (1, 1, 1), bias=False), (2, 6, 5, 7, 6)),
    (lambda: nn.Conv3d(4, 3, (7, 3, 3), (1, 2, 2), (3, 1, 1), bias=False), (1, 4, 9, 4, 4)),
    (
        lambda: nn.ConvTranspose3d(
            6, 5, (3, 3, 3), (1, 2, 2), (1, 1, 1), output_padding=(0, 1, 1), bias=False
        ),
        (2, 6, 5, 3, 4),
    ),
    (
        lambda: nn.ConvTranspose3d(
            5, 4, (3, 1, 1), (2, 1, 1), (1, 0, 0), output_padding=(1, 0, 0), bias=False
        ),
        (2, 5, 4, 2, 2),
    ),
]


@pytest.mark.parametrize(("make", "shape"), CASES)
def test_outputs_and_both_gradients_match_the_module(make, shape):
    torch.manual_seed(0)
    module = make().double()
    inputs = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    expected = module(inputs)
    grad = torch.randn_like(expected)
    expected_input, expected_weight = torch.autograd.grad(expected, (inputs, module.weight), grad)
    output = convolve(module, inputs)
    assert type(output.grad_fn).__name__ == "_ConvolutionBackward"  # the path under test
    got_input, got_weight = torch.autograd.grad(output, (inputs, module.weight), grad)
    torch.testing.assert_close(output, expected)
    torch.testing.assert_close(got_input, expected_input)
    torch.testing.assert_close(got_weight, expected_weight)


def test_weight_gradient_is_the_convolution_weight_gradient():
    torch.manual_seed(1)
    inputs = torch.randn(2, 3, 6, 5, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 3, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    out = torch.nn.functional.conv3d(inputs, weight, stride=(1, 2, 2), padding=(1, 1, 1))
    grad = torch.randn_like(out)
    (expected,) = torch.autograd.grad(out, weight, grad)
    got = weight_gradient(inputs.detach(), grad, (3, 3, 3), (1, 2, 2), (1, 1, 1))
    torch.testing.assert_close(got, expected)


def test_a_frozen_weight_gets_no_gradient_and_the_input_still_does():
    module = nn.Conv3d(3, 3, 3, padding=1, bias=False)
    module.weight.requires_grad_(False)
    inputs = torch.randn(1, 3, 4, 4, 4, requires_grad=True)
    convolve(module, inputs).sum().backward()
    assert module.weight.grad is None and inputs.grad is not None


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.Conv3d(3, 3, 3, padding=1, bias=True),  # bias
        lambda: nn.Conv3d(4, 4, 3, padding=1, groups=2, bias=False),  # groups
        lambda: nn.Conv3d(3, 3, 3, padding=2, dilation=2, bias=False),  # dilation
    ],
)
def test_other_geometries_fall_back_to_the_module(make):
    module = make()
    inputs = torch.randn(1, module.in_channels, 4, 4, 4, requires_grad=True)
    output = convolve(module, inputs)
    assert type(output.grad_fn).__name__ == "ConvolutionBackward0"  # PyTorch's own
    torch.testing.assert_close(output, module(inputs))


@pytest.fixture(autouse=True)
def avx2_only_cpu(monkeypatch):
    """The tests describe the CPUs the path is for, whatever this machine is."""
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True})


def test_an_avx512_cpu_keeps_onednn(monkeypatch):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True, "avx512_f": True})
    module = nn.Conv3d(3, 3, 3, padding=1, bias=False)
    output = convolve(module, torch.randn(1, 3, 4, 4, 4, requires_grad=True))
    assert type(output.grad_fn).__name__ == "ConvolutionBackward0"


def test_autocast_and_no_grad_fall_back_to_the_module():
    module = nn.Conv3d(3, 3, 3, padding=1, bias=False)
    inputs = torch.randn(1, 3, 4, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert convolve(module, inputs).dtype == torch.bfloat16
    with torch.no_grad():
        torch.testing.assert_close(convolve(module, inputs), module(inputs))
