"""Linear weights kept in bf16 and computed in float32: half the translation networks' memory.

The three S2T networks of a TwoStream run are mBART-large decoders and encoders: 4.4 GB of
float32 weights, almost all of it in ``nn.Linear`` layers. :func:`store_linear_weights` keeps
each such weight in a narrower type (bf16: 2 bytes a value) and hands the layer a float32
copy each time it runs. The arithmetic stays float32, so the result equals that of a float32
network whose linear weights were rounded to bf16 once; it differs from the trained network
only by that rounding. Under bf16 autocast the layer gets the bf16 weight as it is (no cast
there and back).

Why not bf16 arithmetic: on a CPU without native bf16 it is emulated. On the AVX2-only
development machine, 24 mBART-sized linears (100 M values, one thread) took 0.38 s on 62 rows
(an encoder's input) in float32, 1.98 s with bf16 autocast and 0.38 s stored in bf16 and
computed in float32; on 5 rows (a decoding step of 5 beams) 0.10 s, 0.13 s and 0.15 s.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize


class StoredNarrow(nn.Module):
    """The parametrization: the stored tensor is ``dtype``; the layer reads it as float32."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype

    def forward(self, stored: torch.Tensor) -> torch.Tensor:
        device = stored.device.type
        if torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == stored.dtype:
            return stored  # autocast would cast the float32 copy back to this very type
        return stored.float()

    def right_inverse(self, weight: torch.Tensor) -> tuple[torch.Tensor]:
        # a one-tuple: parametrize refuses a single stored tensor of another type, not a list
        return (weight.to(self.dtype),)


def _shared_parameters(model: nn.Module) -> set[int]:
    """Parameters that more than one module holds (tied embeddings and output layers)."""
    owners: dict[int, int] = {}
    for _, param in model.named_parameters(remove_duplicate=False):
        owners[id(param)] = owners.get(id(param), 0) + 1
    return {key for key, count in owners.items() if count > 1}


def store_linear_weights(
    model: nn.Module,
    dtype: torch.dtype = torch.bfloat16,
    read: Callable[[str], torch.Tensor | None] | None = None,
) -> int:
    """Keep the weights of ``model``'s linear layers in ``dtype``; returns the bytes saved.

    Tied weights (an output layer sharing its embedding's matrix) stay as they are: the
    embedding reads them directly. Every other parameter and buffer is copied out of the
    checkpoint file it may be memory-mapped from, so that the mapping, whose pages count as
    resident once read, is released (:func:`engine.experiment.load_task_model` maps them).
    ``read``: a state-dict key -> that tensor read apart from the mapping
    (:class:`utils.files.SafetensorsTensors`), so that the mapped float32 weights are never
    touched: then at most one float32 weight is resident besides the narrowed ones.
    """
    shared = _shared_parameters(model)
    saved = 0
    for name, module in list(model.named_modules()):  # registering adds modules
        weight = getattr(module, "weight", None)
        if isinstance(module, nn.Linear) and isinstance(weight, nn.Parameter):
            if id(weight) in shared or weight.dtype != torch.float32:
                continue
            fresh = read(f"{name}.weight" if name else "weight") if read is not None else None
            if fresh is not None and fresh.shape == weight.shape and fresh.dtype == weight.dtype:
                module.weight = nn.Parameter(fresh, requires_grad=weight.requires_grad)
            saved += weight.numel() * (weight.element_size() - torch.finfo(dtype).bits // 8)
            parametrize.register_parametrization(module, "weight", StoredNarrow(dtype))
    _copy_out(model, keep=dtype)
    return saved


def _copy_out(model: nn.Module, keep: torch.dtype) -> None:
    """Every parameter and buffer not of type ``keep`` replaced by a copy (tied ones stay
    tied). A new tensor, not ``.data =``: a tensor read from a file can be a view whose base
    (which holds the whole mapped file) outlives a swap of its data."""
    copies: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        for module in model.modules():
            for table in (module._parameters, module._buffers):
                for name, tensor in table.items():
                    if tensor is None or tensor.dtype == keep:
                        continue
                    if id(tensor) not in copies:
                        copy = tensor.detach().clone()
                        if isinstance(tensor, nn.Parameter):
                            copy = nn.Parameter(copy, requires_grad=tensor.requires_grad)
                        copies[id(tensor)] = copy
                    table[name] = copies[id(tensor)]


STORED_SUFFIX = ".parametrizations.weight.original0"


def _plain_name(key: str) -> str:
    return key.removesuffix(STORED_SUFFIX) + ".weight" if key.endswith(STORED_SUFFIX) else key


def state_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """The shapes of ``model``'s state dict, a narrowed weight under its own name
    (``….weight``, not the parametrization's key), tied entries included."""
    return {_plain_name(key): tuple(tensor.shape) for key, tensor in model.state_dict().items()}
