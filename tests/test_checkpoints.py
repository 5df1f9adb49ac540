"""Checkpoint files: atomic writes survive a kill; keep-last and best bookkeeping."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from utils.checkpoints import (
    CheckpointManager,
    atomic_save,
    best_checkpoint,
    load_checkpoint,
    model_state_of,
)
from utils.errors import CheckpointError
from utils.files import write_safetensors
from utils.training_state import capture_rng_state

REPO_ROOT = Path(__file__).resolve().parents[1]


def _state(value: float) -> dict:
    return {"model_state": {"w": torch.full((4,), value)}, "global_step": int(value)}


def test_atomic_save_roundtrip(tmp_path: Path):
    path = atomic_save(_state(3.0), tmp_path / "a.ckpt")
    assert torch.equal(load_checkpoint(path)["model_state"]["w"], torch.full((4,), 3.0))
    assert not list(tmp_path.glob(".*tmp"))


def test_kill_during_save_leaves_previous_checkpoint(tmp_path: Path):
    """A process SIGKILLed in the middle of writing must not damage the existing file."""
    target = tmp_path / "ckpts" / "step_00000001.ckpt"
    atomic_save(_state(1.0), target)
    script = textwrap.dedent(
        f"""
        import os, signal, sys, torch
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from utils import checkpoints
        real_save = torch.save
        def dying_save(obj, handle):
            handle.write(b"partial bytes of a checkpoint")
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        checkpoints.torch.save = dying_save
        checkpoints.atomic_save({{"model_state": {{"w": torch.zeros(4)}}}}, {str(target)!r})
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert result.returncode == -signal.SIGKILL
    assert torch.equal(load_checkpoint(target)["model_state"]["w"], torch.full((4,), 1.0))
    strays = list(target.parent.glob(".*.tmp"))
    assert strays, "the killed writer leaves its temporary file behind"
    manager = CheckpointManager(target.parent, keep_last=2)
    assert manager.latest() == target
    assert not list(target.parent.glob(".*.tmp")), "the next manager removes stray temporaries"


def test_keep_last_and_best(tmp_path: Path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step, best in [(10, True), (20, False), (30, True), (40, False)]:
        manager.save(_state(float(step)), step, is_best=best)
    names = [p.name for p in manager.step_checkpoints()]
    assert names == ["step_00000030.ckpt", "step_00000040.ckpt"]
    assert load_checkpoint(manager.best_path)["global_step"] == 30
    assert manager.latest().name == "step_00000040.ckpt"


def test_missing_and_corrupt_checkpoints_name_the_path(tmp_path: Path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.ckpt")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(os.urandom(64))
    with pytest.raises(CheckpointError, match="garbage.ckpt: cannot read checkpoint"):
        load_checkpoint(garbage)


def test_model_state_required(tmp_path: Path):
    with pytest.raises(CheckpointError, match="no 'model_state'"):
        model_state_of({"weights": {}}, tmp_path / "x.ckpt")


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path: Path):
    marker = tmp_path / "ran"
    path = tmp_path / "downloaded.ckpt"
    torch.save({"model_state": {"w": torch.ones(1)}, "hook": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match=r"downloaded\.ckpt: cannot read checkpoint"):
        load_checkpoint(path)
    assert not marker.exists(), "loading must not run the pickled callable"


def test_a_training_checkpoint_loads_weights_only(tmp_path: Path):
    """What the trainer saves (RNG states, optimiser, config) reads back without unsafe types."""
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    state = {
        "model_state": model.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "rng_states": [capture_rng_state()],
        "config": {"training": {"lr": 1e-3, "betas": [0.9, 0.98], "name": "x"}},
        "best_score": 12.5,
    }
    loaded = load_checkpoint(atomic_save(state, tmp_path / "step.ckpt"))
    assert loaded["rng_states"][0]["numpy"][0] == "MT19937"
    assert torch.equal(loaded["model_state"]["weight"], model.weight.detach())


def test_packed_weights_load_as_a_checkpoint_and_stand_in_for_best(tmp_path: Path):
    model = torch.nn.Linear(3, 2)
    stage = tmp_path / "s2g"
    assert best_checkpoint(stage) == stage / "ckpts" / "best.ckpt"
    write_safetensors(stage / "model.safetensors", model.state_dict())
    assert best_checkpoint(stage) == stage / "model.safetensors"  # an unpacked run
    state = model_state_of(load_checkpoint(best_checkpoint(stage)), stage)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    atomic_save({"model_state": model.state_dict()}, stage / "ckpts" / "best.ckpt")
    assert best_checkpoint(stage) == stage / "ckpts" / "best.ckpt"  # a trained run's own
