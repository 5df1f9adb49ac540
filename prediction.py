"""Evaluate a trained model: the paper-style table, results.json and per-sample hypotheses.

    python prediction.py --config experiments/configs/TwoStream/phoenix-2014t_s2g.yaml
    python prediction.py --config CFG --ckpt path/to/best.ckpt --splits dev,test --output DIR --save-logits

``--ckpt`` accepts checkpoints of this project and of the original release (default:
``<model_dir>/ckpts/best.ckpt``; ensembles read their members from the config). Metrics are
in percent: ``wer_<head>`` for recognition, ``bleu1``..``bleu4`` and ``rouge`` for
translation. With ``testing.tuning`` in the config, decoding settings are chosen on dev.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from engine.experiment import build_task_model, build_vocabularies, load_model_weights
from engine.inference import predict_splits
from utils.checkpoints import best_checkpoint
from utils.cli import add_override_argument, run_command
from utils.config import check_files, load_config
from utils.distributed import init_distributed
from utils.errors import ConfigurationError
from utils.logs import setup_logging

logger = logging.getLogger("prediction")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="experiment YAML")
    parser.add_argument("--ckpt", help="checkpoint (default: <model_dir>/ckpts/best.ckpt)")
    parser.add_argument("--splits", default="dev,test", help="comma-separated, e.g. dev,test")
    parser.add_argument("--output", help="output folder (default: <model_dir>/prediction)")
    parser.add_argument(
        "--save-logits", action="store_true", help="write <output>/<split>/logits.pt (S2G)"
    )
    add_override_argument(parser)
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    cfg = load_config(args.config, args.override)
    if args.save_logits and cfg.task != "S2G":
        raise ConfigurationError(
            f"--save-logits: writes gloss log-probabilities of sign-to-gloss models; "
            f"{args.config} is a {cfg.task} config"
        )
    ctx = init_distributed(cfg.training.device)
    model_dir = Path(cfg.training.model_dir)
    output = Path(args.output) if args.output else model_dir / "prediction"
    setup_logging(output / "prediction.log", ctx.is_main)
    splits = [s for s in args.splits.split(",") if s]
    check_files(cfg, splits, args.config)
    vocabs = build_vocabularies(cfg, model_dir, save=False)
    model = build_task_model(cfg, vocabs).to(ctx.device)
    if cfg.task != "S2T_Ensemble":
        checkpoint = Path(args.ckpt) if args.ckpt else best_checkpoint(model_dir)
        load_model_weights(model, checkpoint)
        logger.info("weights from %s", checkpoint)
    return predict_splits(model, cfg, vocabs, ctx, splits, output, save_logits=args.save_logits)


def main(argv: list[str] | None = None) -> int:
    return run_command(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
