"""Optimiser, learning-rate schedule and gradient clipping, as published.

Published recipe: Adam with betas (0.9, 0.998), weight decay 1e-3, one learning rate per
top-level module (``learning_rate: {default, recognition, mapper, translation}``), cosine
annealing stepped once per epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, LRScheduler

from utils.config import OptimizationConfig

OPTIMIZERS: dict[str, type[Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
}


def parameter_groups(cfg: OptimizationConfig, modules: Mapping[str, nn.Module]) -> list[dict]:
    """One group per named module, with its learning rate (or the default one).

    Frozen parameters are left out: they never receive gradients, so the optimiser would
    skip them anyway.
    """
    default = cfg.learning_rate["default"]
    groups = []
    for name, module in modules.items():
        params = [p for p in module.parameters() if p.requires_grad]
        if params:
            groups.append(
                {"params": params, "lr": cfg.learning_rate.get(name, default), "name": name}
            )
    return groups


def build_optimizer(cfg: OptimizationConfig, modules: Mapping[str, nn.Module]) -> Optimizer:
    """The configured optimiser over the trainable parameters of ``modules``."""
    kind = cfg.optimizer.lower()
    groups = parameter_groups(cfg, modules)
    default = cfg.learning_rate["default"]
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=default, weight_decay=cfg.weight_decay)
    return OPTIMIZERS[kind](
        groups,
        lr=default,
        betas=cfg.betas,
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
        amsgrad=cfg.amsgrad,
    )


def build_scheduler(cfg: OptimizationConfig, optimizer: Optimizer) -> LRScheduler:
    """Per-epoch schedule; ``none`` keeps the learning rates constant."""
    if cfg.scheduler == "cosineannealing":
        return CosineAnnealingLR(optimizer, T_max=cfg.t_max, eta_min=cfg.eta_min)
    return LambdaLR(optimizer, lambda epoch: 1.0)


def build_gradient_clipper(
    cfg: OptimizationConfig,
) -> Callable[[Iterable[torch.Tensor]], None] | None:
    """A function clipping gradients in place, or None when clipping is off."""
    if cfg.clip_grad_norm is not None:
        max_norm = cfg.clip_grad_norm
        return lambda params: nn.utils.clip_grad_norm_(list(params), max_norm=max_norm)
    if cfg.clip_grad_val is not None:
        value = cfg.clip_grad_val
        return lambda params: nn.utils.clip_grad_value_(list(params), clip_value=value)
    return None
