"""Resumable-run state: RNG capture/restore, seeding, per-step generators, sampler position."""

import pickle
import random

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler, SequentialSampler

from utils.training_state import (
    BucketedBatchSampler,
    DataPosition,
    ResumableSampler,
    capture_rng_state,
    restore_rng_state,
    seed_everything,
    step_generator,
)

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _keep_global_generators():
    """The tests reseed the global generators; later tests get them back as they were."""
    python, numpy = random.getstate(), np.random.get_state()
    yield
    random.setstate(python)
    np.random.set_state(numpy)


def _draw() -> tuple:
    """One value from each global generator."""
    return (random.random(), float(np.random.rand()), torch.rand(3).tolist())


# -- RNG state -----------------------------------------------------------------------------
def test_capture_and_restore_round_trip():
    seed_everything(123)
    _draw()  # move away from the freshly seeded state
    state = capture_rng_state()
    expected = [_draw() for _ in range(3)]
    _draw()  # disturb every generator
    restore_rng_state(state)
    assert [_draw() for _ in range(3)] == expected


def test_restored_state_survives_a_checkpoint_file(tmp_path):
    """The state goes through torch.save/torch.load in a checkpoint (another process)."""
    seed_everything(7)
    state = capture_rng_state()
    expected = _draw()
    path = tmp_path / "state.pt"
    torch.save({"rng_state": state}, path)
    seed_everything(8)
    restore_rng_state(torch.load(path, weights_only=False)["rng_state"])
    assert _draw() == expected


def test_captured_state_is_a_snapshot():
    state = capture_rng_state()
    frozen = pickle.dumps(state["python"]), state["torch"].clone()
    _draw()
    assert pickle.dumps(state["python"]) == frozen[0]
    assert torch.equal(state["torch"], frozen[1]), "drawing must not change a captured state"
    assert set(state) >= {"python", "numpy", "torch"}


# -- seeding -------------------------------------------------------------------------------
def test_seed_everything_seeds_all_three_generators():
    seed_everything(2024)
    first = _draw()
    seed_everything(2024)
    assert _draw() == first
    seed_everything(2025)
    assert _draw() != first
    # the same values as seeding each library directly
    random.seed(2024)
    np.random.seed(2024)
    torch.manual_seed(2024)
    assert _draw() == first


def test_seed_everything_accepts_seeds_beyond_numpy_range():
    """numpy only takes seeds below 2**32: larger seeds are reduced modulo 2**32."""
    seed_everything(2**32 + 5)
    value = float(np.random.rand())
    np.random.seed(5)
    assert value == float(np.random.rand())


# -- per-step generators -------------------------------------------------------------------
def test_step_generator_depends_on_seed_step_and_rank_only():
    def draws(seed, step, rank):
        return torch.rand(4, generator=step_generator(seed, step, rank)).tolist()

    reference = draws(1, 10, 0)
    torch.rand(5)  # the global generator must not matter
    assert draws(1, 10, 0) == reference
    assert draws(1, 11, 0) != reference
    assert draws(1, 10, 1) != reference
    assert draws(2, 10, 0) != reference


def test_step_generator_leaves_the_global_generator_alone():
    torch.manual_seed(0)
    expected = torch.rand(2)
    torch.manual_seed(0)
    torch.rand(3, generator=step_generator(5, 3, 0))
    assert torch.equal(torch.rand(2), expected)


def test_step_generator_takes_large_seeds_and_steps():
    generator = step_generator(2**62, 10**9, 7)
    assert 0 <= generator.initial_seed() < 2**63


def test_step_generator_is_a_cpu_generator():
    """Also on a GPU run: the augmentation draws its few scalars on the CPU."""
    assert step_generator(1, 2, 3).device == CPU


# -- data position -------------------------------------------------------------------------
def test_data_position_defaults_to_the_start():
    assert DataPosition() == DataPosition(epoch=0, batches_done=0)


def _distributed_order(size: int, epoch: int, seed: int = 3) -> list[int]:
    sampler = DistributedSampler(range(size), num_replicas=1, rank=0, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return list(sampler)


def test_resumable_sampler_skips_the_first_items_of_the_epoch():
    base = DistributedSampler(range(10), num_replicas=1, rank=0, shuffle=True, seed=3)
    sampler = ResumableSampler(base)
    sampler.set_epoch(2)
    full = list(sampler)
    assert full == _distributed_order(10, 2)
    assert sorted(full) == list(range(10)) and len(sampler) == 10

    sampler.set_epoch(2, start=4)
    assert list(sampler) == full[4:]
    assert len(sampler) == 6
    assert (sampler.epoch, sampler.start) == (2, 4)

    sampler.set_epoch(3)  # a new epoch starts from its beginning again, in another order
    assert len(sampler) == 10
    assert list(sampler) == _distributed_order(10, 3) != full


def test_resumable_sampler_passes_the_epoch_to_the_wrapped_sampler():
    base = DistributedSampler(range(6), num_replicas=1, rank=0, shuffle=True, seed=0)
    ResumableSampler(base).set_epoch(5, start=1)
    assert base.epoch == 5


def test_resumable_sampler_wraps_samplers_without_epochs():
    sampler = ResumableSampler(SequentialSampler(range(5)))
    sampler.set_epoch(1, start=2)
    assert list(sampler) == [2, 3, 4]
    assert len(sampler) == 3


@pytest.mark.parametrize("start", [0, 3, 7])
def test_resumed_epoch_equals_the_rest_of_an_uninterrupted_one(start):
    """Two ranks: each rank's shard, resumed after ``start`` items, continues its own order."""
    for rank in (0, 1):
        base = DistributedSampler(range(15), num_replicas=2, rank=rank, shuffle=True, seed=9)
        base.set_epoch(1)
        uninterrupted = list(base)
        resumed = ResumableSampler(
            DistributedSampler(range(15), num_replicas=2, rank=rank, shuffle=True, seed=9)
        )
        resumed.set_epoch(1, start=start)
        assert list(resumed) == uninterrupted[start:]


LENGTHS = [3, 40, 7, 22, 15, 9, 31, 5, 18, 27, 12, 36, 2, 25, 11]


def test_bucketed_batches_are_deterministic_and_cover_the_epoch():
    sampler = BucketedBatchSampler(LENGTHS, batch_size=2, pool=3, seed=4)
    sampler.set_position(1)
    first, again = list(sampler), list(sampler)
    assert first == again and len(first) == sampler.batches_per_epoch == 8
    flat = [i for batch in first for i in batch]
    assert sorted(set(flat)) == list(range(len(LENGTHS)))  # every clip, one padded twice
    assert len(flat) == 16
    sampler.set_position(2)
    assert list(sampler) != first


def test_bucketed_batches_hold_clips_of_similar_length():
    lengths = torch.randint(10, 400, (600,), generator=torch.Generator().manual_seed(0)).tolist()
    bucketed = BucketedBatchSampler(lengths, batch_size=4, pool=25, seed=1)
    shuffled = BucketedBatchSampler(lengths, batch_size=4, pool=1, seed=1)

    def padding(sampler) -> float:
        """Padded frames per real frame (the collate pads every clip to the longest)."""
        sampler.set_position(0)
        batches = [[lengths[i] for i in b] for b in sampler]
        return sum(len(b) * max(b) - sum(b) for b in batches) / sum(sum(b) for b in batches)

    assert padding(bucketed) < 0.1 < 0.4 < padding(shuffled)


def test_bucketed_ranks_split_the_global_batches_of_one_process():
    one = BucketedBatchSampler(LENGTHS, batch_size=4, pool=2, seed=7)
    ranks = [BucketedBatchSampler(LENGTHS, 2, 2, 7, world_size=2, rank=r) for r in range(2)]
    for sampler in (one, *ranks):
        sampler.set_position(3)
    for batch, first, second in zip(one, *ranks, strict=True):
        assert batch == first + second


def test_bucketed_resume_skips_whole_batches():
    sampler = BucketedBatchSampler(LENGTHS, batch_size=3, pool=2, seed=2)
    sampler.set_position(5)
    full = list(sampler)
    sampler.set_position(5, batches_done=2)
    assert list(sampler) == full[2:] and len(sampler) == len(full) - 2
    with pytest.raises(ValueError):
        BucketedBatchSampler(LENGTHS, batch_size=0, pool=2, seed=0)
