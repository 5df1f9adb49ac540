"""Checkpoint files: atomic writes survive a kill; keep-last and best bookkeeping."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from utils.checkpoints import CheckpointManager, atomic_save, load_checkpoint, model_state_of
from utils.errors import CheckpointError

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
