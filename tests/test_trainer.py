"""The training loop on a tiny stand-in task model: steps, non-finite losses, checkpoints, resume."""

from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from engine.evaluation import Evaluation
from engine.task_data import build_loader
from engine.trainer import LossWindow, NonFiniteLossError, Trainer
from utils.checkpoints import load_checkpoint
from utils.config import config_from_dict
from utils.distributed import DistributedContext, move_to_device
from utils.errors import CheckpointError, ConfigurationError

CPU = DistributedContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))


class PointDataset(Dataset):
    """x -> y = 3x + 1 with a little noise, as batches of dicts."""

    def __init__(self, size: int = 12) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(size, 2, generator=generator)
        self.y = self.x @ torch.tensor([[3.0], [-1.0]]) + 1

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict:
        return {"name": f"p{index}", "x": self.x[index], "y": self.y[index]}

    @staticmethod
    def collate_fn(items: list[dict]) -> dict:
        return {
            "names": [it["name"] for it in items],
            "x": torch.stack([it["x"] for it in items]),
            "y": torch.stack([it["y"] for it in items]),
        }


class Regressor(nn.Module):
    """A task model: linear layer + dropout; ``poison`` makes the loss NaN."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.dropout = nn.Dropout(0.2)
        self.poison = False

    def forward(self, batch, generator=None):
        noise = torch.rand(1, generator=generator).item() * 1e-3  # uses the step generator
        prediction = self.layer(self.dropout(batch["x"])) + noise
        loss = ((prediction - batch["y"]) ** 2).mean()
        if self.poison:
            loss = loss * float("nan")
        return SimpleNamespace(losses={"mse": loss, "total": loss})

    def optimizer_modules(self):
        return {"recognition": self}


def _config(tmp_path: Path, **training) -> object:
    raw = {
        "task": "S2G",
        "data": {"dataset_name": "demo", "zip_file": "unused.zip"},
        "model": {"RecognitionNetwork": {"GlossTokenizer": {"gloss2id_file": "unused"}, "s3d": {}}},
        "training": {
            "model_dir": str(tmp_path),
            "batch_size": 4,
            "total_epoch": 3,
            "log_every": 1,
            "random_seed": 5,
            "validation": {"unit": "step", "freq": 2},
            "optimization": {"learning_rate": {"default": 0.05}, "scheduler": "none"},
            **training,
        },
    }
    return config_from_dict(raw, "test.yaml")


def _trainer(tmp_path: Path, model: nn.Module | None = None, **training) -> Trainer:
    cfg = _config(tmp_path, **training)
    dataset = PointDataset()
    loader, sampler = build_loader(dataset, 4, shuffle=True, num_workers=0, seed=5, ctx=CPU)
    torch.manual_seed(0)  # as training.py seeds before building the model
    model = model or Regressor()

    def evaluate(m: nn.Module, split: str) -> Evaluation:
        with torch.no_grad():
            batch = PointDataset.collate_fn([dataset[i] for i in range(len(dataset))])
            error = ((m.layer(batch["x"]) - batch["y"]) ** 2).mean().item()
        return Evaluation({"mse": error}, primary="mse", higher_is_better=False)

    return Trainer(cfg, model, loader, sampler, evaluate, CPU, tmp_path)


def _record_losses(trainer: Trainer) -> list[float]:
    seen: list[float] = []
    original = trainer.losses.add

    def add(losses, finite=True):
        seen.append(losses["total"].item())
        original(losses, finite)

    trainer.losses.add = add
    return seen


def test_training_reduces_the_loss_and_keeps_best_and_last(tmp_path: Path):
    trainer = _trainer(tmp_path, keep_last_ckpts=2)
    seen = _record_losses(trainer)
    best = trainer.train()
    assert len(seen) == 9  # 3 epochs x 3 batches
    assert seen[-1] < seen[0]
    checkpoints = trainer.checkpoints.step_checkpoints()
    assert [p.name for p in checkpoints] == ["step_00000008.ckpt", "step_00000009.ckpt"]
    state = load_checkpoint(best)
    assert state["best_step"] == trainer.best_step and state["config"]["task"] == "S2G"


def test_resume_continues_with_identical_losses(tmp_path: Path):
    uninterrupted = _trainer(tmp_path / "a")
    expected = _record_losses(uninterrupted)
    uninterrupted.train()

    first = _trainer(tmp_path / "b", max_steps=4)  # stops after a mid-epoch checkpoint
    seen = _record_losses(first)
    first.train()
    second = _trainer(tmp_path / "b")
    assert second.resume()
    assert second.global_step == 4 and second.position.batches_done == 1
    continued = _record_losses(second)
    second.train()
    assert seen + continued == pytest.approx(expected, abs=1e-7)


def test_nonfinite_losses_are_skipped_then_abort(tmp_path: Path, caplog):
    model = Regressor()
    trainer = _trainer(tmp_path, model=model, max_nonfinite_steps=3)
    before = model.layer.weight.detach().clone()
    model.poison = True
    with pytest.raises(
        NonFiniteLossError, match=r"3 non-finite losses in a row, the last at step 2 \(mse=nan"
    ):
        trainer.train()
    assert torch.equal(model.layer.weight, before), "skipped steps must not change the weights"
    assert "step 0: non-finite loss, step skipped" in caplog.text


def test_loss_window_means():
    window = LossWindow()
    window.add({"a": torch.tensor(1.0)})
    window.add({"a": torch.tensor(3.0)})
    assert window.pop_means() == {"a": 2.0}
    assert window.pop_means() == {}


def test_move_to_device_handles_nested_batches():
    """Every tensor, however nested, lands on the target device; the rest is kept as is."""
    Pair = namedtuple("Pair", "values mask")
    batch = {
        "x": torch.ones(1),
        "names": ["a"],
        "nested": [torch.zeros(1), (torch.ones(2), "b")],
        "features": {"rgb": Pair(torch.ones(3), torch.zeros(3))},
    }
    moved = move_to_device(batch, torch.device("meta"))
    assert moved["x"].is_meta and moved["nested"][0].is_meta and moved["nested"][1][0].is_meta
    assert isinstance(moved["features"]["rgb"], Pair)
    assert moved["features"]["rgb"].values.is_meta and moved["features"]["rgb"].mask.is_meta
    assert moved["names"] == ["a"] and moved["nested"][1][1] == "b"
    assert moved["nested"][1][0].shape == (2,) and not batch["x"].is_meta


def test_warmup_scales_the_learning_rate_linearly(tmp_path: Path):
    trainer = _trainer(
        tmp_path,
        optimization={"learning_rate": {"default": 0.05}, "scheduler": "none", "warmup_steps": 4},
    )
    rates = []
    original = trainer.optimizer.step

    def step(*args, **kwargs):
        rates.append(trainer.optimizer.param_groups[0]["lr"])
        return original(*args, **kwargs)

    trainer.optimizer.step = step
    trainer.train()
    assert rates[:6] == pytest.approx([0.0125, 0.025, 0.0375, 0.05, 0.05, 0.05])


# --------------------------------------------------------------------------------------------
# moving average of the weights
# --------------------------------------------------------------------------------------------
def _weights_after_every_step(trainer: Trainer) -> list[torch.Tensor]:
    """Record the raw weights after each optimiser step."""
    seen: list[torch.Tensor] = []
    original = trainer.optimizer.step

    def step(*args, **kwargs):
        result = original(*args, **kwargs)
        seen.append(trainer.model.layer.weight.detach().clone())
        return result

    trainer.optimizer.step = step
    return seen


def test_moving_average_is_validated_saved_and_predicted_with(tmp_path: Path):
    from utils.checkpoints import AVERAGED_STATE, model_state_of

    trainer = _trainer(tmp_path, ema_decay=0.5)
    raw = _weights_after_every_step(trainer)
    validated: list[torch.Tensor] = []
    evaluate = trainer.evaluate

    def recording(model: nn.Module, split: str) -> Evaluation:
        validated.append(model.layer.weight.clone())
        return evaluate(model, split)

    trainer.evaluate = recording
    trainer.train()
    expected = raw[0]
    for weights in raw[1:]:
        expected = 0.5 * expected + 0.5 * weights
    averaged = trainer.averaged.module.layer.weight
    torch.testing.assert_close(averaged, expected)
    assert not torch.allclose(averaged, trainer.model.layer.weight)
    torch.testing.assert_close(validated[-1], averaged)
    state = load_checkpoint(trainer.checkpoints.step_checkpoints()[-1])
    torch.testing.assert_close(state["model_state"]["layer.weight"], trainer.model.layer.weight)
    torch.testing.assert_close(model_state_of(state, "last")["layer.weight"], averaged)
    assert state["averaged_updates"] == len(raw) and AVERAGED_STATE in state


def test_resume_restores_the_moving_average(tmp_path: Path):
    uninterrupted = _trainer(tmp_path / "a", ema_decay=0.7)
    uninterrupted.train()
    first = _trainer(tmp_path / "b", ema_decay=0.7, max_steps=4)
    first.train()
    second = _trainer(tmp_path / "b", ema_decay=0.7)
    assert second.resume()
    second.train()
    torch.testing.assert_close(
        second.averaged.module.layer.weight, uninterrupted.averaged.module.layer.weight
    )
    assert int(second.averaged.n_averaged) == int(uninterrupted.averaged.n_averaged) == 9


def test_resume_with_a_moving_average_needs_one_in_the_checkpoint(tmp_path: Path):
    _trainer(tmp_path, max_steps=2).train()
    second = _trainer(tmp_path, ema_decay=0.9)
    with pytest.raises(CheckpointError, match="moving average"):
        second.resume()


@pytest.mark.parametrize("decay", [0.0, 1.0])
def test_ema_decay_must_be_inside_zero_one(tmp_path: Path, decay: float):
    with pytest.raises(ConfigurationError, match=r"training\.ema_decay"):
        _config(tmp_path, ema_decay=decay)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_nonfinite_steps_between_log_points_are_still_all_seen(tmp_path: Path, optimizer, caplog):
    """Fused Adam skips on the device and is looked at every log_every steps; SGD at once."""
    model = Regressor()
    trainer = _trainer(
        tmp_path,
        model=model,
        max_nonfinite_steps=3,
        log_every=4,
        optimization={
            "learning_rate": {"default": 0.05},
            "scheduler": "none",
            "optimizer": optimizer,
        },
    )
    assert trainer.skip_on_device == (optimizer == "adam")
    before = model.layer.weight.detach().clone()
    model.poison = True
    with pytest.raises(
        NonFiniteLossError, match=r"3 non-finite losses in a row, the last at step 2"
    ):
        trainer.train()
    assert torch.equal(model.layer.weight, before)
    assert trainer.global_step == (4 if optimizer == "adam" else 2)  # raised at step 2
    assert caplog.text.count("non-finite loss, step skipped") == 3
