"""Running as one process or under ``torchrun`` (DDP), and where tensors live.

``torchrun`` sets RANK, LOCAL_RANK and WORLD_SIZE (and handles multi-node rendezvous);
we only read them. NCCL is used on GPUs, gloo on CPU.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from utils.errors import ConfigurationError


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the job."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def select_device(preference: str, local_rank: int = 0) -> torch.device:
    """``auto``: the local GPU when there is one, else the CPU."""
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Tensors (also inside dicts, lists and named tuples) moved to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(move_to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


def set_threads(threads: int | None, option: str = "--threads") -> None:
    """Torch's intra-op threads, where given (one on a busy CPU: docs/live.md)."""
    if threads is None:
        return
    if threads < 1:
        raise ConfigurationError(f"{option}: expected 1 or more, got {threads}")
    torch.set_num_threads(threads)


def has_native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16 natively.

    CPUs without AVX512-BF16 or AMX-BF16 emulate it: on an AVX2-only CPU a bf16-autocast
    3D convolution ran 43x slower than in fp32 (0.15 s against 6.7 s for five
    ``Conv3d(3, 64, 3)`` on a ``(4, 3, 16, 32, 32)`` batch).
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        capabilities = torch.cpu.get_capabilities()
        return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))
    return False


def resolve_precision(mode: str, device: torch.device) -> str:
    """``training.mixed_precision`` -> ``fp32`` or ``bf16`` (``auto``: bf16 where native)."""
    if mode == "auto":
        return "bf16" if has_native_bf16(device) else "fp32"
    return mode


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 when it is narrower (bf16 / fp16 autocast), else as it is (float64).

    Softmax, CTC and cross-entropy need float32 under autocast; a float64 network (the
    comparison with the original's float64 gradients) keeps float64.
    """
    return x.to(torch.promote_types(x.dtype, torch.float32))


def autocast_context(mode: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on the model's device when configured (or ``auto`` and native), else
    nothing."""
    if resolve_precision(mode, device) == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def init_distributed(device_preference: str = "auto") -> DistributedContext:
    """Join the process group torchrun describes in the environment (if any)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = select_device(device_preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(
        rank=rank, local_rank=local_rank, world_size=world_size, device=device
    )


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (a single-item list when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def mean_over_ranks(values: Sequence[float], device: torch.device) -> list[float]:
    """Average a few scalars over all ranks (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return (tensor / dist.get_world_size()).tolist()
