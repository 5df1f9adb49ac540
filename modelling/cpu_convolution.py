"""3D convolutions whose weight gradient is one matrix product on the CPU.

On a CPU, oneDNN's weight gradient of a dense 3D convolution with many channels over a small
feature map is slow: for the demo's block-3 lateral (480 -> 480 channels, kernel (3, 3, 3),
stride (1, 2, 2), input ``(4, 480, 26, 4, 4)``) it took 0.555 s, against 0.069 s for the
input gradient and 0.088 s for the same weight gradient as an unfold and a matrix product
(AVX2-only AMD EPYC, 2 threads, fp32). :func:`convolve` computes the forward pass and the
input gradient with PyTorch's own kernels and only the weight gradient by
``grad_output @ im2col(input)``. It is used where it was measured to pay — on CPU tensors
outside autocast, on CPUs without AVX-512 (on an AVX-512 machine oneDNN ran the published
480-channel lateral near the cores' peak, docs/performance.md), for the lateral connections
and the pyramid's upsampling — and the module (its weights, its state-dict keys) is unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

Triple = tuple[int, int, int]


def weight_gradient(
    inputs: torch.Tensor, grad_output: torch.Tensor, kernel: Triple, stride: Triple, padding: Triple
) -> torch.Tensor:
    """The weight gradient of ``conv3d(inputs, w, stride, padding)``.

    Args:
        inputs: ``(B, C_in, T, H, W)``.
        grad_output: ``(B, C_out, T', H', W')``.

    Returns:
        ``(C_out, C_in, *kernel)``.
    """
    padded = F.pad(inputs, (padding[2], padding[2], padding[1], padding[1], padding[0], padding[0]))
    columns = padded.unfold(2, kernel[0], stride[0]).unfold(3, kernel[1], stride[1])
    columns = columns.unfold(4, kernel[2], stride[2])  # (B, C_in, T'', H'', W'', kt, kh, kw)
    time, height, width = grad_output.shape[2:]
    columns = columns[:, :, :time, :height, :width]
    channels_in, channels_out = inputs.shape[1], grad_output.shape[1]
    # (C_in * kt * kh * kw, B * T' * H' * W')
    columns = columns.permute(1, 5, 6, 7, 0, 2, 3, 4).reshape(
        channels_in * kernel[0] * kernel[1] * kernel[2], -1
    )
    outputs = grad_output.transpose(0, 1).reshape(channels_out, -1)
    return (outputs @ columns.t()).reshape(channels_out, channels_in, *kernel)


class _Convolution(torch.autograd.Function):
    """``conv3d`` or ``conv_transpose3d`` (groups 1, dilation 1) with the weight gradient above."""

    @staticmethod
    def forward(
        ctx: Any,
        inputs: torch.Tensor,
        weight: torch.Tensor,
        stride: Triple,
        padding: Triple,
        output_padding: Triple | None,
    ) -> torch.Tensor:
        ctx.save_for_backward(inputs, weight)
        ctx.geometry = (stride, padding, output_padding)
        if output_padding is None:
            return F.conv3d(inputs, weight, None, stride, padding)
        return F.conv_transpose3d(inputs, weight, None, stride, padding, output_padding)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor):
        inputs, weight = ctx.saved_tensors
        stride, padding, output_padding = ctx.geometry
        transposed = output_padding is not None
        grad_output = grad_output.contiguous()
        grad_inputs = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_inputs = torch.ops.aten.convolution_backward(
                grad_output,
                inputs,
                weight,
                None,
                stride,
                padding,
                (1, 1, 1),
                transposed,
                output_padding or (0, 0, 0),
                1,
                (True, False, False),
            )[0]
        if ctx.needs_input_grad[1]:
            kernel = tuple(weight.shape[2:])
            if transposed:
                # a transposed convolution's weight (C_in, C_out, k) gets the gradient of a
                # convolution of grad_output (its output) producing the inputs' shape
                grad_weight = weight_gradient(grad_output, inputs, kernel, stride, padding)
            else:
                grad_weight = weight_gradient(inputs, grad_output, kernel, stride, padding)
        return grad_inputs, grad_weight, None, None, None


def convolve(module: nn.Conv3d | nn.ConvTranspose3d, inputs: torch.Tensor) -> torch.Tensor:
    """``module(inputs)``; on the CPU outside autocast, with the matrix-product weight gradient.

    Args:
        module: a bias-free, ungrouped, undilated ``Conv3d`` or ``ConvTranspose3d``.
        inputs: ``(B, C_in, T, H, W)``.
    """
    usable = (
        inputs.device.type == "cpu"
        and not torch.cpu.get_capabilities().get("avx512_f")
        and not torch.is_autocast_enabled("cpu")
        and torch.is_grad_enabled()
        and module.weight.requires_grad
        and module.bias is None
        and module.groups == 1
        and module.dilation == (1, 1, 1)
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
    )
    if not usable:
        return module(inputs)
    transposed = isinstance(module, nn.ConvTranspose3d)
    output_padding = tuple(module.output_padding) if transposed else None
    return _Convolution.apply(
        inputs, module.weight, tuple(module.stride), tuple(module.padding), output_padding
    )
