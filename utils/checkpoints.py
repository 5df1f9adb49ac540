"""Saving and loading checkpoints.

Writes are atomic (:func:`utils.files.atomic_write`): a process killed during a save leaves
the previous checkpoint intact (at worst a stray ``*.tmp`` file that is ignored and cleaned up
later). Reads never run code from the file (``torch.load(weights_only=True)``; ``.safetensors``
weights of a packed run hold no code at all).

Layout of a run's ``ckpts/`` folder::

    step_00001200.ckpt   one file per validation, named by global step (sorts by time)
    best.ckpt            a copy of the best one so far
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from utils.errors import CheckpointError
from utils.files import (
    SAFETENSORS_SUFFIX,
    TMP_SUFFIX,
    atomic_write,
    load_torch_file,
    read_safetensors,
)

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)\.ckpt$")
BEST_NAME = "best.ckpt"
CHECKPOINT_FOLDER = "ckpts"
PACKED_WEIGHTS = "model.safetensors"  # a packed stage's weights (scripts/pack_run.py)


def best_checkpoint(model_dir: str | Path) -> Path:
    """Where a run keeps its best weights: ``<model_dir>/ckpts/best.ckpt``, or, in a run
    unpacked from an archive (no ``ckpts/``), its ``<model_dir>/model.safetensors``."""
    best = Path(model_dir) / CHECKPOINT_FOLDER / BEST_NAME
    packed = Path(model_dir) / PACKED_WEIGHTS
    return packed if packed.is_file() and not best.is_file() else best


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file, fsync, then rename over ``path``."""
    return atomic_write(path, lambda handle: torch.save(obj, handle))


def atomic_copy(source: str | Path, target: str | Path) -> Path:
    """Copy a file so that ``target`` is either the old or the complete new file."""
    with open(source, "rb") as original:
        return atomic_write(target, lambda handle: shutil.copyfileobj(original, handle))


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False
) -> dict:
    """Read a checkpoint file without running code from it (``weights_only=True``).

    A missing, unreadable or unsafe file is a CheckpointError naming it. ``mmap``: tensors
    stay in the file until used (:func:`utils.files.load_torch_file`; safetensors always are).
    """
    if Path(path).suffix == SAFETENSORS_SUFFIX:  # a packed stage's weights: the model state
        return {"model_state": read_safetensors(path, "weights", CheckpointError, map_location)}
    state = load_torch_file(path, "checkpoint", CheckpointError, map_location, mmap)
    if not isinstance(state, Mapping):
        raise CheckpointError(
            f"{path}: expected a dict in the checkpoint, got {type(state).__name__}"
        )
    return dict(state)


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Modules built inside keep their parameters on the ``meta`` device: no memory, and
    their random initialisation costs nothing (for a model whose weights are loaded next,
    with ``load_state_dict(..., assign=True)``: the mBART-large networks of one-video
    inference spent most of their building time drawing random weights).

    Only parameters move: buffers (positional encodings, BatchNorm statistics) and every
    other tensor computed while building stay real, so code that builds tables from its
    vocabularies runs as usual. Check :func:`meta_parameters` after loading.
    """
    global _META_DEPTH
    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(module, name, param)
        if param is not None and not param.is_meta:
            module._parameters[name] = nn.Parameter(
                param.to("meta"), requires_grad=param.requires_grad
            )

    nn.Module.register_parameter = register
    _META_DEPTH += 1
    try:
        yield
    finally:
        _META_DEPTH -= 1
        nn.Module.register_parameter = original


_META_DEPTH = 0


def building_on_meta() -> bool:
    """Whether a model is being built inside :func:`parameters_on_meta` (every weight is
    loaded next: pretrained weights need not be read)."""
    return _META_DEPTH > 0


def meta_parameters(module: nn.Module) -> list[str]:
    """Names of the parameters and buffers of ``module`` still on the ``meta`` device."""
    tensors = [*module.named_parameters(), *module.named_buffers()]
    return [name for name, tensor in tensors if tensor.is_meta]


AVERAGED_STATE = "averaged_model_state"
"""Checkpoint key of the moving-average weights (``training.ema_decay``)."""


def model_state_of(checkpoint: Mapping, path: str | Path) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint of this project or of the original release.

    A checkpoint trained with a moving average of the weights gives the averaged weights:
    those were validated and selected. (Resuming reads ``model_state``, the raw weights.)
    """
    averaged = checkpoint.get(AVERAGED_STATE)
    if isinstance(averaged, Mapping):
        return dict(averaged)
    state = checkpoint.get("model_state")
    if not isinstance(state, Mapping):
        raise CheckpointError(
            f"{path}: no 'model_state' in the checkpoint (keys: {sorted(checkpoint)[:10]})"
        )
    return dict(state)


class CheckpointManager:
    """Keeps the last ``keep_last`` step checkpoints and ``best.ckpt`` in ``directory``."""

    def __init__(self, directory: str | Path, keep_last: int) -> None:
        self.directory = Path(directory)
        self.keep_last = keep_last
        self._remove_stray_temporaries()

    def step_path(self, global_step: int) -> Path:
        return self.directory / f"step_{global_step:08d}.ckpt"

    @property
    def best_path(self) -> Path:
        return self.directory / BEST_NAME

    def save(self, state: dict, global_step: int, is_best: bool) -> Path:
        """Write the checkpoint of ``global_step``, refresh best.ckpt, drop the oldest."""
        path = atomic_save(state, self.step_path(global_step))
        if is_best:
            atomic_copy(path, self.best_path)
        for old in self.step_checkpoints()[: -self.keep_last]:
            old.unlink(missing_ok=True)
        return path

    def step_checkpoints(self) -> list[Path]:
        """Existing step checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [p for p in self.directory.iterdir() if CHECKPOINT_PATTERN.match(p.name)]
        return sorted(found, key=lambda p: int(CHECKPOINT_PATTERN.match(p.name).group(1)))

    def latest(self) -> Path | None:
        checkpoints = self.step_checkpoints()
        return checkpoints[-1] if checkpoints else None

    def _remove_stray_temporaries(self) -> None:
        if self.directory.is_dir():
            for stray in self.directory.glob(f".*{TMP_SUFFIX}"):
                logger.warning("removing %s left by an interrupted save", stray)
                stray.unlink(missing_ok=True)
