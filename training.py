"""Train one stage from a YAML config.

    python training.py --config experiments/configs/TwoStream/phoenix-2014t_video.yaml
    torchrun --nproc_per_node 8 training.py --config ... [--override training.batch_size=2 training.total_epoch=1] [--resume]

At the end the best checkpoint (by dev WER or BLEU-4) is evaluated on dev and test; the
table is printed and written to ``<model_dir>/results.json``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

import torch
from torch import nn

from engine.experiment import (
    build_task_model,
    build_vocabularies,
    count_parameters,
    load_model_weights,
)
from engine.inference import evaluate_loader, predict_splits, split_loader
from engine.run_folder import write_inference_config
from engine.task_data import build_dataset, build_loader
from engine.trainer import Trainer
from utils.checkpoints import CHECKPOINT_FOLDER
from utils.cli import add_override_argument, run_command
from utils.config import Config, check_files, dump_config, load_config
from utils.distributed import DistributedContext, barrier, init_distributed
from utils.errors import ConfigurationError
from utils.logs import setup_logging
from utils.training_state import seed_everything

logger = logging.getLogger("training")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="experiment YAML")
    add_override_argument(parser)
    parser.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in model_dir"
    )
    return parser.parse_args(argv)


def prepare_model_dir(cfg: Config, resume: bool, source: str, ctx: DistributedContext) -> Path:
    """The run folder; an existing run is only continued (--resume) or replaced (overwrite)."""
    model_dir = Path(cfg.training.model_dir)
    has_checkpoints = any((model_dir / CHECKPOINT_FOLDER).glob("*.ckpt"))
    if has_checkpoints and not resume:
        if not cfg.training.overwrite:
            raise ConfigurationError(
                f"{source}: training.model_dir: {model_dir} already holds checkpoints; "
                "continue with --resume or set training.overwrite: true to start again"
            )
        if ctx.is_main:
            shutil.rmtree(model_dir / CHECKPOINT_FOLDER)
            shutil.rmtree(model_dir / "tensorboard", ignore_errors=True)
    barrier()
    model_dir.mkdir(parents=True, exist_ok=True)
    return model_dir


def build_model(cfg: Config, model_dir: Path, ctx: DistributedContext):
    """Vocabularies (rank 0 builds/saves the ones made from train first) and the task model."""
    if ctx.is_main:
        vocabs = build_vocabularies(cfg, model_dir, save=True)
    barrier()
    if not ctx.is_main:
        vocabs = build_vocabularies(cfg, model_dir, save=False)
    model = build_task_model(cfg, vocabs).to(ctx.device)
    if ctx.is_distributed and ctx.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    total, trainable = count_parameters(model)
    logger.info("%s model: %d parameters (%d trainable)", cfg.task, total, trainable)
    return vocabs, model


def run(args: argparse.Namespace) -> None:
    cfg = load_config(args.config, args.override)
    if cfg.task == "S2T_Ensemble":
        raise ConfigurationError(
            f"{args.config}: task: S2T_Ensemble is not trained: it decodes trained S2T networks "
            f"together. Train each member with task S2T, then run "
            f"python prediction.py --config {args.config}"
        )
    ctx = init_distributed(cfg.training.device)
    torch.backends.cudnn.benchmark = cfg.training.cudnn_benchmark
    resume = args.resume or cfg.training.from_ckpt
    model_dir = prepare_model_dir(cfg, resume, args.config, ctx)
    setup_logging(model_dir / "train.log", ctx.is_main)
    check_files(cfg, ["train", "dev", "test"], args.config)
    seed_everything(cfg.training.random_seed + ctx.rank)
    vocabs, model = build_model(cfg, model_dir, ctx)
    if ctx.is_main:
        dump_config(cfg, model_dir / "config.yaml")
        write_inference_config(cfg, vocabs, model_dir)  # the stage travels (run_folder.py)
    train_set = build_dataset(cfg, "train", vocabs, is_train=True)
    train_loader, sampler = build_loader(
        train_set,
        cfg.training.batch_size,
        shuffle=cfg.training.shuffle,
        num_workers=cfg.training.num_workers,
        seed=cfg.training.random_seed,
        ctx=ctx,
        length_buckets=cfg.training.length_buckets,
    )
    dev_loader = split_loader(cfg, "dev", vocabs, ctx)
    trainer = Trainer(
        cfg,
        model,
        train_loader,
        sampler,
        evaluate=lambda m, split: evaluate_loader(
            m, dev_loader, cfg, cfg.training.validation.cfg, ctx
        ),
        ctx=ctx,
        model_dir=model_dir,
        find_unused_parameters=cfg.task == "S2T",
    )
    if resume:
        trainer.resume()
    best = trainer.train()
    if best is not None:
        load_model_weights(model, best)
        logger.info("evaluating the best checkpoint %s on dev and test", best)
        predict_splits(model, cfg, vocabs, ctx, ["dev", "test"], model_dir)


def main(argv: list[str] | None = None) -> int:
    return run_command(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
