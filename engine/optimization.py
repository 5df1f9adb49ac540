"""Optimiser, learning-rate schedule and gradient clipping, as published.

Published recipe: Adam with betas (0.9, 0.998), weight decay 1e-3, one learning rate per
top-level module (``learning_rate: {default, recognition, mapper, translation}``), cosine
annealing stepped once per epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, LRScheduler

from utils.config import OptimizationConfig
from utils.errors import ConfigurationError

logger = logging.getLogger(__name__)


def _adam_options(cfg: OptimizationConfig) -> dict:
    return {"betas": cfg.betas, "eps": cfg.eps, "amsgrad": cfg.amsgrad}


OPTIMIZERS: Mapping[str, tuple[type[Optimizer], Callable[[OptimizationConfig], dict]]] = (
    MappingProxyType(
        {
            "adam": (torch.optim.Adam, _adam_options),
            # the original release builds torch.optim.Adam for "adamw" (weight decay added to
            # the gradient, not decoupled): its configs train the same here
            "adamw": (torch.optim.Adam, _adam_options),
            "adamw_decoupled": (torch.optim.AdamW, _adam_options),
            "sgd": (torch.optim.SGD, lambda cfg: {}),
        }
    )
)
"""``training.optimization.optimizer`` (lower-cased) -> (optimiser class, its options).

The names are :data:`utils.config.OPTIMIZER_NAMES`, which the config check accepts."""


def parameter_groups(cfg: OptimizationConfig, modules: Mapping[str, nn.Module]) -> list[dict]:
    """One group per named module, with its learning rate (or the default one).

    A group name is a top-level module (``recognition``, ``mapper``, ``translation``) or a
    submodule of one (``recognition.backbone``); a parameter takes the rate of the most
    specific group containing it. Frozen parameters are left out: they never receive
    gradients, so the optimiser would skip them anyway.
    """
    default = cfg.learning_rate["default"]
    owner: dict[int, str] = {}
    for group in sorted(cfg.learning_rate, key=lambda n: n.count(".")):  # specific ones last
        if group != "default":
            for param in _submodule(modules, group).parameters():
                owner[id(param)] = group
    groups: dict[str, list[nn.Parameter]] = {}
    for name, module in modules.items():
        for param in module.parameters():
            if param.requires_grad:
                groups.setdefault(owner.get(id(param), name), []).append(param)
    return [
        {"params": params, "lr": cfg.learning_rate.get(group, default), "name": group}
        for group, params in groups.items()
    ]


def _submodule(modules: Mapping[str, nn.Module], dotted: str) -> nn.Module:
    top, _, rest = dotted.partition(".")
    if top not in modules:
        raise ConfigurationError(
            f"training.optimization.learning_rate.{dotted}: this task has no module {top!r} "
            f"(it has {', '.join(modules)})"
        )
    try:
        return modules[top].get_submodule(rest) if rest else modules[top]
    except AttributeError as error:
        children = ", ".join(n for n, _ in modules[top].named_children())
        raise ConfigurationError(
            f"training.optimization.learning_rate.{dotted}: no submodule {rest!r} in {top} "
            f"(its children: {children})"
        ) from error


def build_optimizer(cfg: OptimizationConfig, modules: Mapping[str, nn.Module]) -> Optimizer:
    """The configured optimiser over the trainable parameters of ``modules``."""
    name = cfg.optimizer.lower()
    if name == "adamw" and cfg.weight_decay:
        logger.warning(
            "training.optimization.optimizer: adamw trains as the original release does, "
            "with torch.optim.Adam (weight decay %g added to the gradients); set "
            "adamw_decoupled for torch.optim.AdamW's decoupled weight decay",
            cfg.weight_decay,
        )
    optimizer_class, extra_options = OPTIMIZERS[name]
    groups = parameter_groups(cfg, modules)
    options = {
        "lr": cfg.learning_rate["default"],
        "weight_decay": cfg.weight_decay,
        **extra_options(cfg),
    }
    try:
        # the fused kernel updates all parameters at once (CPU too): faster, same update rule
        return optimizer_class(groups, fused=True, **options)
    except (RuntimeError, TypeError, ValueError):
        return optimizer_class(groups, **options)


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
