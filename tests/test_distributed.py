"""One process or torchrun: the context read from the environment and the collective helpers.

One process: the defaults (rank 0 of 1, nothing initialised) and the helpers as identities.
Two processes (gloo on the CPU, started here with the environment torchrun sets): the
helpers gather, broadcast and average across ranks.
"""

import dataclasses
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from utils.distributed import (
    DistributedContext,
    autocast_context,
    barrier,
    broadcast_object,
    gather_objects,
    has_native_bf16,
    init_distributed,
    mean_over_ranks,
    resolve_precision,
    select_device,
    shutdown_distributed,
)

TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def single_process_env(monkeypatch):
    """No torchrun variables in the environment."""
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)


# -- one process ---------------------------------------------------------------------------
def test_single_process_context_defaults(single_process_env):
    ctx = init_distributed("cpu")
    assert ctx == DistributedContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    assert ctx.is_main and not ctx.is_distributed
    assert not dist.is_initialized(), "one process must not start a process group"


def test_torchrun_variables_of_a_one_process_job_are_read(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    ctx = init_distributed("cpu")
    assert (ctx.rank, ctx.local_rank, ctx.world_size) == (0, 0, 1)
    assert not dist.is_initialized()


def test_auto_device_without_a_gpu_is_the_cpu(single_process_env, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert init_distributed("auto").device == torch.device("cpu")
    assert select_device("auto", local_rank=3) == torch.device("cpu")


def test_select_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device("cpu") == torch.device("cpu")  # an explicit cpu wins over a GPU
    assert select_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert select_device("cuda", local_rank=2) == torch.device("cuda", 2)


@pytest.mark.parametrize(
    ("capabilities", "native"),
    [({"avx2": True}, False), ({"avx512_bf16": True}, True), ({"amx_bf16": True}, True)],
)
def test_auto_precision_is_bf16_only_where_the_cpu_has_it(monkeypatch, capabilities, native):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    cpu = torch.device("cpu")
    assert has_native_bf16(cpu) is native
    assert resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    # an explicit choice is kept whatever the hardware
    assert resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("fp32", cpu) == "fp32"
    layer = torch.nn.Linear(4, 4)
    with autocast_context("auto", cpu):
        out = layer(torch.randn(2, 4))
    assert out.dtype == (torch.bfloat16 if native else torch.float32)


def test_context_properties_follow_rank_and_world_size():
    worker = DistributedContext(rank=3, local_rank=1, world_size=4, device=torch.device("cpu"))
    assert not worker.is_main and worker.is_distributed
    main = dataclasses.replace(worker, rank=0, local_rank=0)
    assert main.is_main and main.is_distributed
    with pytest.raises(dataclasses.FrozenInstanceError):
        worker.rank = 0


def test_helpers_are_identities_without_a_process_group():
    assert not dist.is_initialized()
    payload = {"name": "a", "values": [1, 2]}
    assert gather_objects(payload) == [payload]
    assert gather_objects(payload)[0] is payload
    assert broadcast_object(payload) is payload
    assert broadcast_object(payload, src=0) is payload
    means = mean_over_ranks((1.5, -2.0, 7), torch.device("cpu"))
    assert means == [1.5, -2.0, 7] and isinstance(means, list)
    barrier()  # no-op, must not raise
    shutdown_distributed()  # no-op, must not raise
    assert not dist.is_initialized()


# -- two processes -------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_rank_worker(rank: int, port: int, out_dir: str) -> None:
    """One rank of a 2-process job, set up as torchrun would on two nodes with one process
    each (so the local rank is 0 on both); writes what it observed."""
    os.environ.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": "0",
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    observed = {
        "context": (ctx.rank, ctx.local_rank, ctx.world_size, ctx.is_main, ctx.is_distributed),
        "backend": dist.get_backend(),
        "gathered": gather_objects({"rank": rank, "names": [f"s{rank}"]}),
        "broadcast": broadcast_object(f"from rank {rank}", src=1),
        "mean": mean_over_ranks([float(rank), 10.0 * (rank + 1)], ctx.device),
    }
    barrier()
    shutdown_distributed()
    observed["initialised_after_shutdown"] = dist.is_initialized()
    torch.save(observed, Path(out_dir) / f"rank{rank}.pt")


def test_two_processes_gather_broadcast_and_average(tmp_path: Path):
    # fork: the workers start with the modules already imported (spawn re-imports torch)
    mp.start_processes(
        _two_rank_worker,
        args=(_free_port(), str(tmp_path)),
        nprocs=2,
        join=True,
        start_method="fork",
    )
    for rank in (0, 1):
        seen = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert seen["context"] == (rank, 0, 2, rank == 0, True)
        assert seen["backend"] == "gloo"
        # every rank gets every rank's object, in rank order
        assert seen["gathered"] == [{"rank": 0, "names": ["s0"]}, {"rank": 1, "names": ["s1"]}]
        assert seen["broadcast"] == "from rank 1"
        # means of (0, 1) and (10, 20)
        assert seen["mean"] == pytest.approx([0.5, 15.0])
        assert seen["initialised_after_shutdown"] is False
