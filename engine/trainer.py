"""The training loop: steps, validation, checkpoints, resume, logging.

The trainer knows nothing about sign language: it drives a *task model* — an ``nn.Module``
whose ``forward(batch)`` returns an object with a ``losses`` dict (named terms plus
``"total"``) and whose ``optimizer_modules()`` names the modules that get their own learning
rate — and an ``evaluate(model, split)`` callable returning an :class:`Evaluation`.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm import tqdm

from engine.evaluation import Evaluation
from engine.optimization import build_gradient_clipper, build_optimizer, build_scheduler
from utils.checkpoints import (
    AVERAGED_STATE,
    CHECKPOINT_FOLDER,
    CheckpointManager,
    load_checkpoint,
)
from utils.config import Config, TrainingConfig, to_dict
from utils.distributed import (
    DistributedContext,
    autocast_context,
    broadcast_object,
    gather_objects,
    has_native_bf16,
    mean_over_ranks,
    move_to_device,
    resolve_precision,
)
from utils.errors import CheckpointError
from utils.logs import ScalarWriter
from utils.training_state import (
    BucketedBatchSampler,
    DataPosition,
    ResumableSampler,
    capture_rng_state,
    restore_rng_state,
    step_generator,
)

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps had a non-finite loss."""


EvaluateFn = Callable[[nn.Module, str], Evaluation]


class LossWindow:
    """Running sums of the named loss terms between two log points (kept on the device).

    Only steps whose loss was finite count; the mask stays a tensor, so adding a step never
    waits for the device.
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count: torch.Tensor | int = 0

    def add(self, losses: Mapping[str, torch.Tensor], finite: torch.Tensor | bool = True) -> None:
        keep = torch.as_tensor(finite, device=next(iter(losses.values())).device).float()
        for name, value in losses.items():
            value = torch.where(keep > 0, value.detach().float(), 0.0)
            self.sums[name] = self.sums[name] + value if name in self.sums else value
        self.count = self.count + keep

    def pop_means(self) -> dict[str, float]:
        count = float(self.count)
        means = {name: (total / max(count, 1.0)).item() for name, total in self.sums.items()}
        self.sums, self.count = {}, 0
        return means


@dataclass
class NonFiniteSteps:
    """Steps with a non-finite loss: recorded on the device, looked at (one sync) at log points.

    Every skipped step is logged with its loss terms, and ``limit`` of them in a row abort
    training with :class:`NonFiniteLossError`, as if each step had been checked at once.
    """

    limit: int
    in_a_row: int = 0
    total: int = 0
    pending: list[tuple[int, torch.Tensor, dict[str, torch.Tensor]]] = field(default_factory=list)

    def record(self, step: int, finite: torch.Tensor, losses: Mapping[str, torch.Tensor]) -> None:
        self.pending.append((step, finite, {k: v.detach() for k, v in losses.items()}))

    def check(self) -> None:
        if not self.pending:
            return
        flags = torch.stack([f.reshape(()) for _, f, _ in self.pending]).tolist()
        pending, self.pending = self.pending, []
        for (step, _, losses), finite in zip(pending, flags):
            if finite:
                self.in_a_row = 0
                continue
            self.in_a_row += 1
            self.total += 1
            terms = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
            logger.warning("step %d: non-finite loss, step skipped (%s)", step, terms)
            if self.in_a_row >= self.limit:
                raise NonFiniteLossError(
                    f"{self.in_a_row} non-finite losses in a row, the last at step {step} "
                    f"({terms}); lower the learning rate or check the data"
                )


class Trainer:
    """Runs ``cfg.training`` on a task model; rank 0 logs, validates and saves."""

    def __init__(
        self,
        cfg: Config,
        model: nn.Module,
        train_loader: DataLoader,
        sampler: ResumableSampler | BucketedBatchSampler,
        evaluate: EvaluateFn,
        ctx: DistributedContext,
        model_dir: Path,
        find_unused_parameters: bool = False,
    ) -> None:
        self.cfg = cfg
        self.tcfg: TrainingConfig = cfg.training
        self.ctx = ctx
        # fp32 or bf16, decided once (auto: bf16 only where the device has it natively)
        self.precision = resolve_precision(self.tcfg.mixed_precision, ctx.device)
        self.model = model
        self.train_loader = train_loader
        self.sampler = sampler
        self.evaluate = evaluate
        self.model_dir = model_dir
        optimization = self.tcfg.optimization
        self.optimizer = build_optimizer(optimization, model.optimizer_modules())
        self.scheduler = build_scheduler(optimization, self.optimizer)
        self.clip_gradients = build_gradient_clipper(optimization)
        self.trainable = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.network = self._wrap_ddp(model, find_unused_parameters)
        self.averaged = build_weight_average(model, self.tcfg.ema_decay)
        self.checkpoints = CheckpointManager(
            model_dir / CHECKPOINT_FOLDER, self.tcfg.keep_last_ckpts
        )
        self.writer = ScalarWriter(model_dir / "tensorboard" if ctx.is_main else None)
        self.position = DataPosition()
        self.global_step = 0
        self.best_score: float | None = None
        self.best_step: int | None = None
        self.nonfinite = NonFiniteSteps(self.tcfg.max_nonfinite_steps)
        # fused Adam skips a step on the device when told found_inf: no wait for the device
        self.skip_on_device = (
            isinstance(self.optimizer, (torch.optim.Adam, torch.optim.AdamW))
            and bool(self.optimizer.defaults.get("fused"))
            and self.averaged is None
        )
        self.window_started = time.perf_counter()
        self.window_samples = 0
        self.validated_step: int | None = None
        self.progress: tqdm | None = None
        self.losses = LossWindow()

    # -- set-up ---------------------------------------------------------------------------
    def _wrap_ddp(self, model: nn.Module, find_unused: bool) -> nn.Module:
        if not self.ctx.is_distributed:
            return model
        device_ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
        return DistributedDataParallel(
            model, device_ids=device_ids, find_unused_parameters=find_unused
        )

    @property
    def steps_per_epoch(self) -> int:
        return self.sampler.batches_per_epoch

    # -- the loop -------------------------------------------------------------------------
    def train(self) -> Path | None:
        """Train to the end of the schedule; returns the best checkpoint (rank 0)."""
        logger.info(
            "training %d epochs of %d steps (batch %d x %d processes, %s)",
            self.tcfg.total_epoch,
            self.steps_per_epoch,
            self.tcfg.batch_size,
            self.ctx.world_size,
            self.precision,
        )
        if self.tcfg.mixed_precision == "bf16" and not has_native_bf16(self.ctx.device):
            logger.warning(
                "training.mixed_precision: bf16 on %s, which emulates bf16: expect it to run "
                "many times slower than fp32 (auto picks bf16 only where it is native)",
                self.ctx.device,
            )
        while self.position.epoch < self.tcfg.total_epoch and not self._reached_max_steps():
            self._train_epoch()
        self.writer.close()
        # rank 0 writes the checkpoints: every rank takes its word for which one is best
        best = self.checkpoints.best_path if self.checkpoints.best_path.exists() else None
        return broadcast_object(best if self.ctx.is_main else None)

    def _reached_max_steps(self) -> bool:
        return self.tcfg.max_steps is not None and self.global_step >= self.tcfg.max_steps

    def _train_epoch(self) -> None:
        epoch, start = self.position.epoch, self.position.batches_done
        if start == 0:
            # published order: the schedule steps at the start of every epoch (torch warns
            # about stepping before the first optimiser step; here that is intended)
            for group, scheduled in zip(self.optimizer.param_groups, self.scheduler.get_last_lr()):
                group["lr"] = scheduled  # undo a warm-up factor: the cosine update is recursive
            with warnings.catch_warnings():
                warnings.filterwarnings(
                    "ignore", message=r"Detected call of `lr_scheduler\.step\(\)`"
                )
                self.scheduler.step()
        self.sampler.set_position(epoch, start)
        if hasattr(self.train_loader.dataset, "set_epoch"):
            self.train_loader.dataset.set_epoch(epoch)
        self.model.train()
        self.progress = progress = self._progress_bar(epoch, start)
        for batch in self.train_loader:
            self._train_step(batch)
            self.position.batches_done += 1
            progress.update(1)
            if (
                self.tcfg.validation.unit == "step"
                and self.global_step % self.tcfg.validation.freq == 0
            ):
                self._validate_and_save()
            if self._reached_max_steps():
                break
        progress.close()
        finished = self.position.batches_done >= self.steps_per_epoch
        if finished:
            self.position = DataPosition(epoch + 1, 0)
        last = self.position.epoch >= self.tcfg.total_epoch or self._reached_max_steps()
        due = self.tcfg.validation.unit == "epoch" and (epoch + 1) % self.tcfg.validation.freq == 0
        if due or (last and self.validated_step != self.global_step):
            self._validate_and_save()

    def _progress_bar(self, epoch: int, start: int) -> tqdm:
        return tqdm(
            total=self.steps_per_epoch,
            initial=start,
            desc=f"epoch {epoch + 1}/{self.tcfg.total_epoch}",
            disable=not (self.ctx.is_main and sys.stderr.isatty()),
            dynamic_ncols=True,
            leave=False,
        )

    # -- one step -------------------------------------------------------------------------
    def _train_step(self, batch: Mapping[str, Any]) -> None:
        batch = move_to_device(batch, self.ctx.device)
        generator = step_generator(self.tcfg.random_seed, self.global_step, self.ctx.rank)
        with autocast_context(self.precision, self.ctx.device):
            losses = self.network(batch, generator=generator).losses
        losses["total"].float().backward()
        finite = self._all_finite(losses["total"])
        if self.skip_on_device:
            self._optimizer_step(found_inf=(~finite).float())
        elif bool(finite):  # the optimiser cannot skip by itself: look now
            self._optimizer_step()
        self.losses.add(losses, finite)
        self.nonfinite.record(self.global_step, finite, losses)
        if not self.skip_on_device:
            self.nonfinite.check()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        self.window_samples += len(batch["names"])
        if self.global_step % self.tcfg.log_every == 0:
            self.nonfinite.check()
            self._log_training()

    def _all_finite(self, total: torch.Tensor) -> torch.Tensor:
        """A device bool: the loss is finite on every rank (all ranks must skip together)."""
        finite = torch.isfinite(total.detach()).reshape(())
        if self.ctx.is_distributed:
            flag = finite.to(torch.float32).reshape(1)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            finite = flag.reshape(()) > 0
        return finite

    def _optimizer_step(self, found_inf: torch.Tensor | None = None) -> None:
        if self.clip_gradients is not None:
            self.clip_gradients(self.trainable)
        self._warm_up()
        if found_inf is not None:
            self.optimizer.found_inf = found_inf  # read by the fused kernel: skip when 1
        self.optimizer.step()
        if self.averaged is not None:
            self.averaged.update_parameters(self.model)

    def _warm_up(self) -> None:
        """Scale the scheduled learning rates linearly over the first ``warmup_steps`` steps."""
        warmup = self.tcfg.optimization.warmup_steps
        if warmup and self.global_step <= warmup:
            factor = min(1.0, (self.global_step + 1) / warmup)
            for group, scheduled in zip(self.optimizer.param_groups, self.scheduler.get_last_lr()):
                group["lr"] = scheduled * factor

    def _log_training(self) -> None:
        means = self.losses.pop_means()
        now = time.perf_counter()
        samples_per_second = self.window_samples / max(now - self.window_started, 1e-9)
        self.window_started, self.window_samples = now, 0
        if self.ctx.is_distributed:  # log the global loss, not rank 0's share
            names = sorted(means)
            means = dict(zip(names, mean_over_ranks([means[n] for n in names], self.ctx.device)))
        if not self.ctx.is_main:
            return
        self.writer.add_many("train", means, self.global_step)
        for group in self.optimizer.param_groups:
            self.writer.add(
                f"train/lr_{group.get('name', 'default')}", group["lr"], self.global_step
            )
        self.writer.add("train/nonfinite_steps", self.nonfinite.total, self.global_step)
        lr = self.optimizer.param_groups[0]["lr"]
        if self.progress is not None:
            self.progress.set_postfix(
                loss=f"{means.get('total', float('nan')):.3f}",
                lr=f"{lr:.2e}",
                samples_s=f"{samples_per_second:.1f}",
            )
        logger.info(
            "step %d: loss %.4f, lr %.3g, %.1f samples/s",
            self.global_step,
            means.get("total", float("nan")),
            lr,
            samples_per_second,
        )

    # -- validation and checkpoints ---------------------------------------------------------
    def _validate_and_save(self) -> None:
        self.nonfinite.check()  # the checkpoint records every skipped step so far
        # every rank validates (and decides from memory, never from files rank 0 may still write)
        self.validated_step = self.global_step
        evaluation = self.evaluate(self.validated_model, "dev")
        self.model.train()
        improved = evaluation.improves_on(self.best_score)
        if improved:
            self.best_score, self.best_step = evaluation.score, self.global_step
        state = self._checkpoint_state()  # collective: every rank contributes its RNG state
        if self.ctx.is_main:
            self.writer.add_many("dev", evaluation.metrics, self.global_step)
            self.writer.flush()
            logger.info(
                "validation at step %d: %s (best %s %.2f at step %d)",
                self.global_step,
                ", ".join(f"{k} {v:.2f}" for k, v in evaluation.metrics.items()),
                evaluation.primary,
                self.best_score,
                self.best_step,
            )
            self.checkpoints.save(state, self.global_step, is_best=improved)
        self.window_started = time.perf_counter()  # throughput counts training time only

    @property
    def validated_model(self) -> nn.Module:
        """The weights that are validated, selected and predicted with."""
        return self.model if self.averaged is None else self.averaged.module

    def _checkpoint_state(self) -> dict:
        rng_states = gather_objects(capture_rng_state())
        averaged = {}
        if self.averaged is not None:
            averaged = {
                AVERAGED_STATE: self.averaged.module.state_dict(),
                "averaged_updates": int(self.averaged.n_averaged),
            }
        return {
            **averaged,
            "model_state": self.model.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "scheduler_state": self.scheduler.state_dict(),
            "global_step": self.global_step,
            "epoch": self.position.epoch,
            "batches_done": self.position.batches_done,
            "best_score": self.best_score,
            "best_step": self.best_step,
            "nonfinite_total": self.nonfinite.total,
            "rng_states": rng_states,
            "world_size": self.ctx.world_size,
            "config": to_dict(self.cfg),
        }

    # -- resume ---------------------------------------------------------------------------
    def resume(self) -> bool:
        """Continue from the newest checkpoint in ``model_dir/ckpts``; False if there is none."""
        path = self.checkpoints.latest()
        if path is None:
            logger.info("no checkpoint in %s: starting from scratch", self.checkpoints.directory)
            return False
        state = load_checkpoint(path, map_location=self.ctx.device)
        self._load_state(state, path)
        logger.info(
            "resumed from %s (epoch %d, %d batches done, step %d)",
            path,
            self.position.epoch + 1,
            self.position.batches_done,
            self.global_step,
        )
        return True

    def _load_state(self, state: dict, path: Path) -> None:
        if state.get("world_size", 1) != self.ctx.world_size:
            raise CheckpointError(
                f"{path}: saved by {state.get('world_size')} processes, resumed with {self.ctx.world_size}; "
                "resume with the same number of processes"
            )
        self.model.load_state_dict(state["model_state"])
        self._load_average(state, path)
        self.optimizer.load_state_dict(state["optimizer_state"])
        self.scheduler.load_state_dict(state["scheduler_state"])
        self.global_step = state["global_step"]
        self.position = DataPosition(state["epoch"], state["batches_done"])
        if self.position.batches_done >= self.steps_per_epoch:
            self.position = DataPosition(self.position.epoch + 1, 0)
        self.best_score, self.best_step = state["best_score"], state["best_step"]
        self.nonfinite.total = state.get("nonfinite_total", 0)
        restore_rng_state(state["rng_states"][self.ctx.rank])

    def _load_average(self, state: dict, path: Path) -> None:
        if self.averaged is None:
            return
        if AVERAGED_STATE not in state:
            raise CheckpointError(
                f"{path}: has no moving average of the weights, but training.ema_decay is set; "
                "resume with the checkpoint's settings or start a new model_dir"
            )
        self.averaged.module.load_state_dict(state[AVERAGED_STATE])
        self.averaged.n_averaged.fill_(state["averaged_updates"])


def build_weight_average(model: nn.Module, decay: float | None) -> AveragedModel | None:
    """An exponential moving average of ``model``'s parameters (None without a decay).

    Updated after every optimiser step; buffers (BatchNorm statistics) are copied from the
    model rather than averaged.
    """
    if decay is None:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)
