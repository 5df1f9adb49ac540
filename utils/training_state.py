"""What a resumable run must carry between processes: RNG states and the data position.

Resuming must continue exactly where the run was: the model/optimiser/scheduler states are
saved by the trainer; this module holds the rest — every random generator the step uses and
the position (epoch, batches done) in the deterministic sample order.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Sampler


def capture_rng_state() -> dict:
    """The state of every global random generator of this process."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu() if hasattr(state["torch"], "cpu") else state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def step_generator(seed: int, global_step: int, rank: int) -> torch.Generator:
    """A CPU generator for the training-time augmentation of one step, derived from the step.

    Deriving it (instead of carrying one generator along) makes a resumed run draw the same
    crops as an uninterrupted one without saving generator state. It lives on the CPU on
    every device: the augmentation draws a few scalars per batch (crop box, jitter), and
    drawing them from a GPU generator would need a device sync for each.
    """
    generator = torch.Generator()
    generator.manual_seed((seed * 1_000_003 + global_step * 7919 + rank) % 2**63)
    return generator


@dataclass
class DataPosition:
    """Where in the sample order training stands: ``batches_done`` batches of ``epoch``."""

    epoch: int = 0
    batches_done: int = 0


class ResumableSampler(Sampler[int]):
    """Wraps a per-epoch deterministic sampler and can start an epoch after its first k items.

    The wrapped sampler (e.g. DistributedSampler, also for one process) must give the same
    order for the same epoch; skipping happens on indices, so no sample is loaded twice.
    """

    def __init__(self, sampler: Sampler[int]) -> None:
        self.sampler = sampler
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        for position, index in enumerate(self.sampler):
            if position >= self.start:
                yield index

    def __len__(self) -> int:
        return len(self.sampler) - self.start
