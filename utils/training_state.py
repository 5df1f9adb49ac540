"""What a resumable run must carry between processes: RNG states and the data position.

Resuming must continue exactly where the run was: the model/optimiser/scheduler states are
saved by the trainer; this module holds the rest — every random generator the step uses and
the position (epoch, batches done) in the deterministic sample order.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
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
    ``batch_size`` (the loader's) lets the trainer speak in batches (:meth:`set_position`).
    """

    def __init__(self, sampler: Sampler[int], batch_size: int = 1) -> None:
        self.sampler = sampler
        self.batch_size = batch_size
        self.epoch = 0
        self.start = 0

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def set_position(self, epoch: int, batches_done: int = 0) -> None:
        """Start ``epoch`` after its first ``batches_done`` batches."""
        self.set_epoch(epoch, batches_done * self.batch_size)

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


class BucketedBatchSampler(Sampler[list[int]]):
    """Batches of clips of similar length, in a deterministic order per (seed, epoch).

    Every epoch shuffles the indices (as DistributedSampler does, padding with the first ones
    to a whole number of global batches), cuts the order into pools of ``pool`` global
    batches, sorts each pool by length, cuts it into global batches of
    ``batch_size * world_size`` clips and shuffles the batches. Rank ``r`` takes clips
    ``r * batch_size .. (r + 1) * batch_size - 1`` of every global batch, so N processes with
    batch b see the batches one process with batch N * b sees. Padding in a batch stays
    small: clips of a batch come from the same part of the length distribution.

    Args:
        lengths: a length per sample (frames, steps or tokens).
        batch_size: clips per batch of this rank.
        pool: global batches sorted together (1: no bucketing, only the batch shuffle).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        pool: int,
        seed: int,
        world_size: int = 1,
        rank: int = 0,
    ) -> None:
        if batch_size < 1 or pool < 1:
            raise ValueError("batch_size and pool must be positive")
        self.lengths = torch.as_tensor(list(lengths), dtype=torch.long)
        self.batch_size, self.pool, self.seed = batch_size, pool, seed
        self.world_size, self.rank = world_size, rank
        self.epoch = 0
        self.start = 0

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.lengths) / (self.batch_size * self.world_size))

    def set_position(self, epoch: int, batches_done: int = 0) -> None:
        self.epoch, self.start = epoch, batches_done

    def global_batches(self, epoch: int) -> list[list[int]]:
        """The epoch's global batches (every rank's clips), in order."""
        generator = torch.Generator().manual_seed(self.seed + epoch)
        size = self.batch_size * self.world_size
        total = self.batches_per_epoch * size
        order = torch.randperm(len(self.lengths), generator=generator)
        order = torch.cat([order, order[: total - len(order)]])  # pad as DistributedSampler
        batches = []
        for start in range(0, total, size * self.pool):
            chunk = order[start : start + size * self.pool]
            chunk = chunk[torch.argsort(self.lengths[chunk], descending=True, stable=True)]
            batches += [chunk[i : i + size].tolist() for i in range(0, len(chunk), size)]
        shuffle = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i] for i in shuffle]

    def __iter__(self) -> Iterator[list[int]]:
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        for batch in self.global_batches(self.epoch)[self.start :]:
            yield batch[lo:hi]

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start
