"""Optimiser groups, the per-epoch cosine schedule and gradient clipping."""

import math

import pytest
import torch
from torch import nn

from engine.optimization import OPTIMIZERS, build_gradient_clipper, build_optimizer, build_scheduler
from utils.config import OPTIMIZER_NAMES, OptimizationConfig
from utils.errors import ConfigurationError


def _modules() -> dict[str, nn.Module]:
    frozen = nn.Linear(2, 2)
    frozen.weight.requires_grad_(False)
    return {"recognition": nn.Linear(3, 3), "mapper": nn.Linear(3, 4), "translation": frozen}


def test_groups_take_their_own_learning_rate_and_skip_frozen_parameters():
    cfg = OptimizationConfig(
        learning_rate={"default": 3e-4, "mapper": 1e-3}, betas=(0.9, 0.998), weight_decay=1e-3
    )
    optimizer = build_optimizer(cfg, _modules())
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs == {"recognition": 3e-4, "mapper": 1e-3, "translation": 3e-4}
    translation = next(g for g in optimizer.param_groups if g["name"] == "translation")
    assert len(translation["params"]) == 1  # the bias only; the frozen weight is left out
    assert isinstance(optimizer, torch.optim.Adam)
    assert (
        optimizer.defaults["betas"] == (0.9, 0.998) and optimizer.defaults["weight_decay"] == 1e-3
    )


def test_cosine_schedule_per_epoch():
    cfg = OptimizationConfig(learning_rate={"default": 1.0}, t_max=4)
    optimizer = build_optimizer(cfg, {"recognition": nn.Linear(2, 2)})
    scheduler = build_scheduler(cfg, optimizer)
    seen = []
    for _ in range(4):
        scheduler.step()
        seen.append(optimizer.param_groups[0]["lr"])
    expected = [(1 + math.cos(math.pi * e / 4)) / 2 for e in range(1, 5)]
    assert seen == pytest.approx(expected)


def test_gradient_clipping():
    layer = nn.Linear(2, 1)
    layer.weight.grad = torch.tensor([[30.0, 40.0]])
    layer.bias.grad = torch.zeros(1)
    clip = build_gradient_clipper(
        OptimizationConfig(learning_rate={"default": 1.0}, clip_grad_norm=5.0)
    )
    clip(layer.parameters())
    assert layer.weight.grad.norm().item() == pytest.approx(5.0, rel=1e-4)
    assert build_gradient_clipper(OptimizationConfig(learning_rate={"default": 1.0})) is None


def test_submodule_groups_take_precedence_and_unknown_ones_are_named():
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    cfg = OptimizationConfig(learning_rate={"default": 1e-3, "recognition.1": 1e-5})
    optimizer = build_optimizer(cfg, {"recognition": net})
    lrs = {g["name"]: (g["lr"], len(g["params"])) for g in optimizer.param_groups}
    assert lrs == {"recognition": (1e-3, 2), "recognition.1": (1e-5, 2)}
    bad = OptimizationConfig(learning_rate={"default": 1e-3, "recognition.head": 1e-5})
    with pytest.raises(
        ConfigurationError, match=r"learning_rate.recognition.head: no submodule 'head'"
    ):
        build_optimizer(bad, {"recognition": net})


def test_every_optimizer_name_the_config_accepts_builds():
    assert set(OPTIMIZERS) == set(OPTIMIZER_NAMES)
    model = nn.Linear(2, 2)
    for name in OPTIMIZER_NAMES:
        cfg = OptimizationConfig(learning_rate={"default": 0.1}, optimizer=name.upper())
        optimizer = build_optimizer(cfg, {"recognition": model})
        assert isinstance(optimizer, OPTIMIZERS[name][0])
        assert optimizer.param_groups[0]["lr"] == 0.1


def test_adamw_is_the_original_releases_adam_and_decoupled_decay_has_its_own_name(caplog):
    model = nn.Linear(2, 2)
    cfg = OptimizationConfig(learning_rate={"default": 0.1}, optimizer="AdamW", weight_decay=0.1)
    with caplog.at_level("WARNING"):
        optimizer = build_optimizer(cfg, {"recognition": model})
    assert type(optimizer) is torch.optim.Adam
    assert "adamw_decoupled" in caplog.text
    decoupled = OptimizationConfig(
        learning_rate={"default": 0.1}, optimizer="adamw_decoupled", weight_decay=0.1
    )
    assert type(build_optimizer(decoupled, {"recognition": model})) is torch.optim.AdamW
